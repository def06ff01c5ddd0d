"""Learning-rate schedules as pure functions of the step, and the one bridge to torch.

The seed tutorial's three formulas, with t the step after warmup and T the decay steps:

- linear:      eta_t = eta0 - (t / T) * (eta0 - eta_f)
- cosine:      eta_t = eta_f + 1/2 * (eta0 - eta_f) * (1 + cos(t * pi / T))
- exponential: eta_t = eta0 * gamma**t   (gamma given, or derived so that eta_T = eta_f)

plus `constant`. Each takes an optional linear warmup from 0 to eta0 over the first
`warmup_steps`. Because they are plain functions you can plot them before training
(`schedule_curve`). `make_scheduler` turns any of them, or a transformers schedule named
`hf:<name>`, into the `torch.optim.lr_scheduler` object that `transformers.Trainer` steps.

Every scheduler is a multiplier (`LambdaLR`, transformers' schedules too): it scales each
param group's own peak lr by the same factor, so the groups of layer-wise LR decay
(`sftlib.layerwise`) all follow the schedule's shape, each from its own peak.

Not supported: restarts for our own schedules (use `hf:cosine_with_restarts`).
"""

from __future__ import annotations

import math
from functools import partial

import pandas as pd
import torch
from torch.optim.lr_scheduler import LambdaLR

OWN_SCHEDULES = ("linear", "cosine", "exponential", "constant")


def derive_gamma(lr: float, final_lr: float, decay_steps: int) -> float:
    """The per-step factor that takes lr to final_lr in decay_steps: (eta_f/eta0)**(1/T)."""
    if final_lr <= 0:
        raise ValueError("exponential decay needs final_lr > 0 to derive gamma")
    return (final_lr / lr) ** (1.0 / max(decay_steps, 1))


def lr_at(step: int, *, schedule: str, lr: float, total_steps: int, warmup_steps: int = 0,
          final_lr: float = 0.0, gamma: float | None = None) -> float:
    """Learning rate at optimizer step `step` (0-based) of `total_steps`."""
    if schedule not in OWN_SCHEDULES:
        raise ValueError(f"schedule {schedule!r} is not one of {OWN_SCHEDULES}")
    if step < warmup_steps:
        return lr * step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    t = min(step - warmup_steps, decay_steps)
    if schedule == "linear":
        return lr - (t / decay_steps) * (lr - final_lr)
    if schedule == "cosine":
        return final_lr + 0.5 * (lr - final_lr) * (1 + math.cos(t * math.pi / decay_steps))
    if schedule == "exponential":
        factor = gamma if gamma is not None else derive_gamma(lr, final_lr, decay_steps)
        return lr * factor**t
    return lr


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def schedule_kwargs(cfg, total_steps: int) -> dict:
    """The `lr_at` keyword arguments a RunConfig implies (schedule name set separately)."""
    return {"lr": cfg.lr, "total_steps": total_steps,
            "warmup_steps": warmup_steps_for(total_steps, cfg.warmup_ratio),
            "final_lr": cfg.final_lr, "gamma": cfg.gamma}


def schedule_curve(cfg, total_steps: int, schedules: tuple[str, ...] | None = None,
                   ) -> pd.DataFrame:
    """Learning rate per step (rows) for each schedule (columns): for plotting."""
    names = schedules or (cfg.schedule,)
    kwargs = schedule_kwargs(cfg, total_steps)
    if kwargs["gamma"] is None and kwargs["final_lr"] <= 0:
        kwargs["final_lr"] = cfg.lr * 0.01  # so exponential has something to decay to
    curve = {name: [lr_at(step, schedule=name, **kwargs) for step in range(total_steps)]
             for name in names if name in OWN_SCHEDULES}
    return pd.DataFrame(curve, index=pd.RangeIndex(total_steps, name="step"))


def _multiplier(step: int, peak: float, **kwargs) -> float:
    return lr_at(step, lr=peak, **kwargs) / peak


def make_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int):
    """A torch scheduler for cfg.schedule over total_steps (what Trainer calls .step() on)."""
    warmup = warmup_steps_for(total_steps, cfg.warmup_ratio)
    if cfg.schedule.startswith("hf:"):
        from transformers import get_scheduler

        return get_scheduler(cfg.schedule[3:], optimizer, num_warmup_steps=warmup,
                             num_training_steps=total_steps)
    kwargs = schedule_kwargs(cfg, total_steps)
    peak = kwargs.pop("lr")
    # LambdaLR multiplies each group's initial lr; our functions give absolute values.
    return LambdaLR(optimizer, partial(_multiplier, peak=peak, schedule=cfg.schedule, **kwargs))


def schedule_figure(cfg, total_steps: int, compare: bool = True):
    """The configured schedule (bold) and, for comparison, the other three."""
    import matplotlib.pyplot as plt

    from sftlib.plots import finish_axes

    names = OWN_SCHEDULES if compare else (cfg.schedule,)
    curve = schedule_curve(cfg, total_steps, names)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for name in curve.columns:
        chosen = name == cfg.schedule
        ax.plot(curve.index, curve[name], lw=2.5 if chosen else 1, alpha=1 if chosen else 0.6,
                label=f"{name} (chosen)" if chosen else name)
    finish_axes(ax, f"Learning-rate schedules over {total_steps} steps "
                f"(warmup {warmup_steps_for(total_steps, cfg.warmup_ratio)} steps)",
                "optimizer step", "learning rate")
    return fig
