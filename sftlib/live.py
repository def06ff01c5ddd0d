"""Live training plots: one `TrainerCallback` that draws loss, learning rate and more.

In a notebook (JupyterLab or papermill) the figure is redrawn in place through an
IPython display handle (`display(..., display_id=True)` + `handle.update`), not widgets:
ordinary `image/png` outputs survive saving and headless runs, where widget state is lost
(papermill#296, #400). Redraws are throttled to at most one per `interval_s`, and the time
spent drawing is measured (`plot_seconds`) so its share of training can be reported.
Outside a notebook it prints one concise text line per log instead.

Always, on the main process only, every log record goes to `metrics.jsonl` (one JSON
object per line) and the final figure to a PNG. `plot_metrics` redraws the same panels
from one or several `metrics.jsonl` files to compare runs.

Panels: training loss (raw and smoothed) with evaluation loss, evaluation metric,
learning rate, throughput (samples/s and non-pad tokens/s), gradient norm.

Not supported: live widgets, TensorBoard / W&B (Trainer's `report_to` does those).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from transformers import TrainerCallback

from sftlib.metrics_log import (  # noqa: F401  (re-exported: live.read_records etc.)
    HEADLESS_ENV,
    SMOOTHING,
    ema,
    headless,
    in_notebook,
    read_metrics,
    read_records,
)
from sftlib.plots import legend_if_labelled


def draw_panels(runs: dict[str, pd.DataFrame], metric: str = "accuracy",
                fig: plt.Figure | None = None) -> plt.Figure:
    """Draw the six training panels for one or several runs (label -> records)."""
    if fig is None:
        fig = plt.figure(figsize=(13, 6.5))
    fig.clear()
    axes = fig.subplots(2, 3).ravel()
    for label, frame in runs.items():
        prefix = f"{label}: " if len(runs) > 1 else ""
        train = frame[frame["loss"].notna()] if "loss" in frame else frame.iloc[0:0]
        evals = frame[frame["eval_loss"].notna()] if "eval_loss" in frame else frame.iloc[0:0]
        if len(train):
            line, = axes[0].plot(train["step"], train["loss"], alpha=0.3, lw=1)
            axes[0].plot(train["step"], ema(train["loss"]), color=line.get_color(),
                         label=f"{prefix}train (smoothed)")
        if len(evals):
            axes[0].plot(evals["step"], evals["eval_loss"], "o--", label=f"{prefix}validation")
            if f"eval_{metric}" in evals:
                axes[1].plot(evals["step"], evals[f"eval_{metric}"], "o-", label=label)
        for ax, column in ((axes[2], "learning_rate"), (axes[3], "samples_per_s"),
                           (axes[4], "tokens_per_s"), (axes[5], "grad_norm")):
            if column in train and train[column].notna().any():
                ax.plot(train["step"], train[column], label=label)
    unit = "response token" if metric == "perplexity" else "example"  # instruction: per token
    titles = [("Loss (cross-entropy)", f"loss (nats / {unit})"),
              (f"Validation {metric}", metric), ("Learning rate", "learning rate"),
              ("Throughput", "samples / s"), ("Throughput (non-pad tokens)", "tokens / s"),
              ("Gradient norm (before clipping)", "L2 norm")]
    for ax, (title, ylabel) in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    legend_if_labelled(axes[0], fontsize=8)
    if len(runs) > 1:
        legend_if_labelled(axes[1], fontsize=8)
    fig.tight_layout()
    return fig


def plot_metrics(paths: list[str | Path] | dict[str, str | Path],
                 metric: str = "accuracy") -> plt.Figure:
    """Redraw the panels from metrics.jsonl files (a list, or label -> path) side by side."""
    if not isinstance(paths, dict):
        paths = {Path(p).parent.name or str(p): p for p in paths}
    return draw_panels({label: read_metrics(p) for label, p in paths.items()}, metric)


class LivePlotCallback(TrainerCallback):
    """Records every log, redraws the panels in place (throttled), writes metrics.jsonl."""

    def __init__(self, metrics_path: str | Path, figure_path: str | Path | None = None,
                 interval_s: float = 2.0, metric: str = "accuracy",
                 notebook: bool | None = None, print_fn=print, max_share: float = 0.015,
                 ) -> None:
        self.metrics_path = Path(metrics_path)
        self.figure_path = Path(figure_path) if figure_path else None
        self.interval_s = interval_s
        self.max_share = max_share
        self.metric = metric
        self.notebook = in_notebook() if notebook is None else notebook
        self.print_fn = print_fn
        self.records: list[dict[str, Any]] = []
        self.redraws = 0
        self.plot_seconds = 0.0
        self.train_seconds = 0.0
        self._handle = None
        self._fig: plt.Figure | None = None
        self._last_draw = 0.0
        self._last_cost = 0.0  # seconds the last redraw took: what the next one will cost
        self._plot_seconds_before = 0.0  # drawing done in earlier train() calls
        self._start = 0.0
        self._step_began = 0.0
        self._step_seconds = 0.0  # pure training time since the last log (no eval, no plots)
        self._last_log: tuple[int, int] | None = None
        self._training = False

    # Trainer events -------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        # the figure belongs to the output of the cell that trains: a new display handle per
        # train() call, and evaluations outside train() (before / after) are logged, not drawn
        self._training = True
        self._handle = None
        self._start = time.perf_counter()
        self._plot_seconds_before = self.plot_seconds
        self._last_log = (state.global_step, state.num_input_tokens_seen or 0)
        if state.is_world_process_zero:
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            self._keep_records_up_to(state.global_step)
            self._samples_per_step = (args.per_device_train_batch_size
                                      * args.gradient_accumulation_steps * args.world_size)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._step_seconds += time.perf_counter() - self._step_began

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        record = {"step": state.global_step, "max_steps": state.max_steps,
                  "epoch": state.epoch, "time_s": round(now - self._start, 3), **logs}
        if "loss" in logs and self._last_log is not None:
            last_step, last_tokens = self._last_log
            steps = state.global_step - last_step
            if steps > 0 and self._step_seconds > 0:
                # throughput over training steps only: evaluation and redraws excluded
                record["samples_per_s"] = steps * self._samples_per_step / self._step_seconds
                tokens = (state.num_input_tokens_seen or 0) - last_tokens
                record["tokens_per_s"] = tokens / self._step_seconds if tokens > 0 else None
            self._last_log = (state.global_step, state.num_input_tokens_seen or 0)
            self._step_seconds = 0.0
        self.records.append(record)
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if not self._training:
            return
        if self.notebook:
            if draw_due(now - self._start, now - self._last_draw, self.plot_seconds
                        - self._plot_seconds_before, self._last_cost, self.interval_s,
                        self.max_share):
                self._redraw()
        else:
            self.print_fn(_text_line(record, self.metric))

    def on_train_end(self, args, state, control, **kwargs):
        self._training = False
        self.train_seconds = time.perf_counter() - self._start
        if not state.is_world_process_zero or not self.records:
            return
        if self.notebook:
            self._redraw()  # the final state is always drawn
        if self.figure_path is not None:
            fig = self._fig or draw_panels({"run": self.frame()}, self.metric)
            self.figure_path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(self.figure_path, dpi=110)

    def _keep_records_up_to(self, step: int) -> None:
        """A resumed run continues the log from its checkpoint's step: what a killed process
        wrote after the checkpoint is dropped (it is about to be redone), and so is a
        half-written last line. At the checkpoint's own step the training-loop records
        (training loss, evaluation) were logged before the checkpoint and stay; the closing
        ones (Trainer's summary, the final evaluations) were logged after it and go."""
        if not self.metrics_path.is_file() or step == 0:
            self.metrics_path.write_text("")
            return
        self.records = [record for record in read_records(self.metrics_path)
                        if record["step"] < step
                        or (record["step"] == step and _training_loop_record(record))]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    # drawing ----------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)

    def _redraw(self) -> None:
        from IPython.display import display

        began = time.perf_counter()
        self._fig = draw_panels({"run": self.frame()}, self.metric, self._fig)
        alt = {"image/png": {"alt": f"Training curves: loss, validation {self.metric}, "
                                    "learning rate, throughput, gradient norm per step"}}
        if self._handle is None:
            self._handle = display(self._fig, display_id=True, metadata=alt)
        else:
            self._handle.update(self._fig, metadata=alt)
        plt.close(self._fig)  # keep only our handle's copy; no duplicate at cell end
        self.redraws += 1
        finished = time.perf_counter()
        self.plot_seconds += finished - began
        self._last_draw = finished
        self._last_cost = finished - began

    @property
    def plot_share(self) -> float:
        """Share of training wall time spent drawing (the throttle keeps it small)."""
        return self.plot_seconds / self.train_seconds if self.train_seconds else 0.0


def draw_due(elapsed: float, since_last_draw: float, plot_seconds: float, last_cost: float,
             interval_s: float, max_share: float) -> bool:
    """Whether to redraw now: `interval_s` since the last draw, and the drawing so far plus the
    next draw (assumed to cost what the last one did) within `max_share` of the training time
    so far. Cumulative, so the first draw (at once) is paid for by waiting afterwards; only the
    closing draw at the end of training comes on top."""
    return (since_last_draw >= interval_s
            and plot_seconds + last_cost <= max_share * elapsed)


def _training_loop_record(record: dict[str, Any]) -> bool:
    """A training-loss or evaluation record (Trainer logs both before it saves a checkpoint
    at that step), not a closing one."""
    return "loss" in record or "eval_loss" in record


def _text_line(record: dict[str, Any], metric: str) -> str:
    parts = [f"step {record['step']:>5}", f"epoch {record.get('epoch') or 0:.2f}"]
    for key, fmt in (("loss", "loss {:.4f}"), ("learning_rate", "lr {:.2e}"),
                     ("grad_norm", "grad {:.2f}"), ("samples_per_s", "{:.1f} samples/s")):
        if record.get(key) is not None:
            parts.append(fmt.format(record[key]))
    for prefix in ("eval", "validation", "test"):  # Trainer's evaluate(metric_key_prefix=...)
        if record.get(f"{prefix}_loss") is not None:
            parts.append(f"{prefix}_loss {record[f'{prefix}_loss']:.4f}")
        if record.get(f"{prefix}_{metric}") is not None:
            name = metric if prefix == "eval" else f"{prefix}_{metric}"
            parts.append(f"{name} {record[f'{prefix}_{metric}']:.4f}")
    if record.get("train_loss") is not None:  # only Trainer's closing summary has it
        parts.append(f"training done in {record['train_runtime']:.0f} s, "
                     f"mean loss {record['train_loss']:.4f}")
    return " | ".join(parts)
