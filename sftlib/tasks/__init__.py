"""The task seam: one object per task, chosen once from `cfg.task`.

Everything that differs between tasks lives behind the small `Task` protocol below: how
data is loaded and checked, how examples are encoded, which model and collator train on
them, how a model is evaluated and saved, and which notebook sequence tells the story.
The stage modules (`train`, `pipeline`, `__main__`) ask `get_task(cfg.task)` and never
branch on the task themselves.

Tasks here: `classification` (`sftlib.tasks.classification`: an encoder with a
classification head) and `instruction` (`sftlib.tasks.instruction`: causal-LM SFT on
chats). Adding a task means one module here with a `TASK` object, its RunConfig options
(`sftlib.config`, tagged with the task) and its notebooks in `notebooks/<task>/`.

This package imports no task module until `get_task` asks for it, and task modules never
import `train`, `pipeline` or `__main__` (those import them), so the import graph has no
cycle (`tests/test_architecture.py`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

import datasets
import pandas as pd

TASK_MODULES = {
    "classification": "sftlib.tasks.classification",
    "instruction": "sftlib.tasks.instruction",
}
Log = Callable[[str], None]


class Task(Protocol):
    """What a task provides to the stages. `cfg` is a `sftlib.config.RunConfig`."""

    name: str
    notebooks: tuple[str, ...]  # file stems in notebooks/<name>/, in reading order
    # the notebook after them that reads many runs (`sftlib compare`), or None
    comparison_notebook: str | None
    token_averaged_loss: bool  # loss is a mean over tokens (across processes), not examples
    compute_metrics: Callable[[Any], dict[str, float]] | None  # Trainer's, per evaluation

    def load_data(self, cfg: Any) -> datasets.DatasetDict:
        """train / validation / test with the task's columns (subsets applied)."""

    def load_pool(self, cfg: Any) -> pd.DataFrame | None:
        """A single-pool source's rows before splitting (inspection), else None."""

    def preflight(self, cfg: Any, log: Log,
                  dataset: datasets.DatasetDict | None = None) -> dict[str, Any]:
        """Checks before any notebook or training starts (`sftlib run` and `sftlib train`
        both run them); what they found, for the manifest. `dataset`: the already loaded
        `load_data(cfg)`, else it is loaded here."""

    def inspection_texts(self, cfg: Any, dataset: datasets.DatasetDict,
                         tokenizer: Any) -> datasets.DatasetDict:
        """The dataset whose `text` column is what the model reads (token statistics)."""

    def encode(self, cfg: Any, dataset: datasets.DatasetDict, tokenizer: Any,
               log: Log) -> tuple[int, datasets.DatasetDict]:
        """(max_length in use, the splits as model inputs)."""

    def build_model(self, cfg: Any, dataset: datasets.DatasetDict, hardware: Any,
                    log: Log) -> Any:
        """The pretrained model ready to fine-tune (fp32 weights)."""

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None) -> Any:
        """The data collator that batches encoded examples."""

    def live_metric(self, cfg: Any) -> str:
        """The evaluation metric the live plot shows next to the loss."""

    def add_log_metrics(self, logs: dict[str, float]) -> None:
        """Add derived values to a Trainer log record in place (e.g. perplexity)."""

    def evaluate(self, trainer: Any, tokenized: datasets.DatasetDict,
                 splits: tuple[str, ...]) -> dict[str, dict[str, float]]:
        """Metrics of the trainer's (best) model on each split."""

    def evaluate_with_predictions(self, trainer: Any, tokenized: datasets.DatasetDict,
                                  splits: tuple[str, ...],
                                  ) -> tuple[dict[str, dict[str, float]], dict[str, pd.DataFrame]]:
        """`evaluate`'s metrics and, in the same pass, one row per example of each split
        (row, id, label, prediction, correct, loss) where the task has per-example
        correctness, for paired comparisons of runs (`sftlib.compare`); else no frames."""

    def save_model(self, trainer: Any, folder: Any) -> None:
        """Weights and tokenizer into `folder`, loadable without sftlib."""

    def headline(self, split: str, scores: dict[str, float]) -> str:
        """One line of a split's metrics for the terminal."""


def get_task(name: str) -> Task:
    """The task object for `cfg.task` (imports its module on first use)."""
    if name not in TASK_MODULES:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name]).TASK
