"""Weight averaging: an exponential moving average (EMA) of the trained weights.

After optimizer step t (0-based: t steps were taken before it) the average e of every
trainable parameter w moves towards the new weights:

    e_{t+1} = d_t * e_t + (1 - d_t) * w_{t+1},   d_t = min(ema_decay, (1 + t) / (10 + t)),

starting from e_0 = the weights before the first step. The warm-up in d_t (TensorFlow's
`ExponentialMovingAverage` with num_updates, timm's ModelEmaV2 warm-up) is used because a
fine-tuning run is short: with a fixed d = 0.999 the average after T steps still holds
d**T of the starting weights, the randomly initialized head included, for every T of a few
hundred steps; with the warm-up the average spans about the last tenth of the steps taken
until d_t reaches ema_decay.

The average is an fp32 copy of the trainable parameters on their device (buffers and frozen
weights do not change). `sftlib.train.WorkbenchTrainer` swaps it into the model for every
evaluation and checkpoint, so the best checkpoint is chosen by the averaged weights and
holds them (`model.safetensors`), with the trained weights next to them
(`TRAINING_WEIGHTS`) for resuming; the final model is the averaged one.

Written here rather than with `torch.optim.swa_utils.AveragedModel`: that deep-copies the
whole module, its first update copies the weights instead of averaging them, and its decay
is fixed; the update itself is the same `torch._foreach_lerp_` as its
`get_ema_multi_avg_fn`. Not supported: SWA (uniform averages), sharded models (FSDP,
DeepSpeed ZeRO-3: refused when the trainer is built).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sftlib.config import ConfigError

# the weights the optimizer trains, saved next to the averaged model.safetensors of a
# checkpoint: what a resumed run continues training
TRAINING_WEIGHTS = "training_weights.safetensors"
WARMUP = 10  # d_t = (1 + t) / (WARMUP + t) until it reaches ema_decay


def refuse_sharded_weights(fsdp: bool, zero_stage: int | None) -> None:
    """Stop a run whose parameters are sharded across processes: each process would average
    only its own shard, and the saved "average" would not be one."""
    if fsdp or zero_stage == 3:
        by = "FSDP" if fsdp else "DeepSpeed ZeRO-3"
        raise ConfigError(f"weight_averaging=ema: not supported with {by} (the parameters are "
                          "sharded across processes). Set weight_averaging=none, or train with "
                          "plain data parallelism (DDP, ZeRO-1 / 2)")


def decay_at(step: int, ema_decay: float) -> float:
    """d_t of the update after `step` optimizer steps were taken (module docstring)."""
    return min(ema_decay, (1 + step) / (WARMUP + step))


class WeightAverage:
    """The EMA of a model's trainable parameters (by name), in fp32."""

    def __init__(self, model: torch.nn.Module, ema_decay: float) -> None:
        self.ema_decay = ema_decay
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            self.average = {n: p.detach().float().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the current weights, after optimizer step `step`."""
        weight = 1.0 - decay_at(step, self.ema_decay)
        names = list(self.params)
        torch._foreach_lerp_([self.average[n] for n in names],
                             [self.params[n].detach().float() for n in names], weight)

    @contextmanager
    def swapped_in(self):
        """The averaged weights in the model for the block; the trained ones back after."""
        trained = self._copy_params()
        self._load_params(self.average)
        try:
            yield
        finally:
            self._load_params(trained)

    def copy_to_model(self) -> None:
        """Replace the model's weights by the average for good (the end of training)."""
        self._load_params(self.average)

    def save_training_weights(self, folder: str | Path) -> None:
        """The trained (not averaged) weights into `folder`, for resuming."""
        save_file({n: t.contiguous() for n, t in self._copy_params().items()},
                  str(Path(folder) / TRAINING_WEIGHTS))

    def resume_from(self, folder: str | Path) -> None:
        """Resuming from a checkpoint whose averaged weights are in the model (Trainer
        loaded model.safetensors): they become the average, and the checkpoint's trained
        weights go back into the model."""
        path = Path(folder) / TRAINING_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {TRAINING_WEIGHTS}: it was not written "
                                    "by a run with weight_averaging=ema, so it cannot be resumed "
                                    "with it")
        with torch.no_grad():
            self.average = {n: p.detach().float().clone() for n, p in self.params.items()}
        trained = load_file(str(path), device=str(next(iter(self.params.values())).device))
        if set(trained) != set(self.params):
            raise ValueError(f"{path}: its parameters are not this model's")
        self._load_params(trained)

    def _copy_params(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def _load_params(self, values: dict[str, torch.Tensor]) -> None:
        for name, param in self.params.items():
            param.copy_(values[name])
