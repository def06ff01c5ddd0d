"""Task "classification": a pretrained encoder with a fresh classification head.

Data: text + label (`sftlib.data`); encoding: the tokenizer truncating at max_length, padded
per batch (`DataCollatorWithPadding`); model: `AutoModelForSequenceClassification` with one
output per label name; metrics: loss, accuracy and macro-F1; saved with
`Trainer.save_model` (loads with `transformers.pipeline("text-classification")`).
Preflight also looks for leakage and conflicting labels (warned, or `DataQualityError`
with `strict_data`). With `teacher`, the train split also carries a fine-tuned teacher's
logits and the loss distills them (`sftlib.distill`); preflight checks the teacher first.
Notebooks: `notebooks/classification/`.

Not supported: multi-label or regression heads, sentence pairs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from sftlib import assets, data, data_report, distill, sources, tokens
from sftlib.tasks import Log

# torch, transformers and scikit-learn are imported where they are used: the preflight
# (`sftlib run` checking inputs, a sweep checking every point's) needs none of them, and
# importing them takes most of its time on a small CPU.

EVAL_KEYS = ("loss", "accuracy", "f1")


def compute_metrics(eval_pred) -> dict[str, float]:
    """Accuracy and macro-F1 from Trainer's (logits, labels)."""
    from sklearn.metrics import accuracy_score, f1_score

    logits, labels = eval_pred
    predictions = np.asarray(logits).argmax(axis=-1)
    return {"accuracy": float(accuracy_score(labels, predictions)),
            "f1": float(f1_score(labels, predictions, average="macro"))}


def prediction_rows(logits: np.ndarray, labels: np.ndarray, texts: list[str]) -> pd.DataFrame:
    """One row per example, in split order: `row` (position in the split), `id` (the text's
    sha1, first 12 hex digits: two runs pair only on the same texts), label, prediction,
    correct, loss (cross-entropy, nats) and confidence (top softmax probability)."""
    import torch

    logits = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    log_probs = torch.log_softmax(logits, dim=-1)
    return pd.DataFrame({
        "row": np.arange(len(texts)),
        "id": [hashlib.sha1(text.encode("utf-8")).hexdigest()[:12] for text in texts],
        "label": labels_t.numpy(),
        "prediction": logits.argmax(-1).numpy(),
        "correct": (logits.argmax(-1) == labels_t).numpy(),
        "loss": (-log_probs.gather(1, labels_t[:, None])[:, 0]).numpy(),
        "confidence": log_probs.exp().max(-1).values.numpy(),
    })


def build_classifier(cfg: Any, label_names: list[str], attn_implementation: str = "sdpa"):
    """The pretrained encoder with a fresh classification head for `label_names`.

    transformers' load report ("classifier.weight MISSING: newly initialized") is kept
    quiet: a new head is the point of fine-tuning, and notebook 03 says so in words."""
    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    set_seed(cfg.seed)  # the head's initialization depends on it
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return _pretrained_classifier(cfg, label_names, attn_implementation)
    finally:
        hf_logging.set_verbosity(previous)


def _pretrained_classifier(cfg: Any, label_names: list[str], attn_implementation: str):
    import torch
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        assets.resolve_model(cfg.model),
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        attn_implementation=attn_implementation,
        # fp32 master weights whatever the checkpoint holds (transformers 5 loads an fp16/bf16
        # checkpoint in its own dtype); bf16/fp16 come from autocast, not from the weights
        dtype=torch.float32,
    )


class ClassificationTask:
    name = "classification"
    notebooks = ("01_data_inspection", "02_tokenization", "03_fine_tuning",
                 "04_error_analysis", "05_deployment")
    comparison_notebook = "06_comparing_runs"  # reads many runs: `sftlib compare`
    # a per-example mean: Trainer's token averaging would scale it by the number of
    # processes under torchrun
    token_averaged_loss = False
    compute_metrics = staticmethod(compute_metrics)

    load_data = staticmethod(data.load_from_config)
    load_pool = staticmethod(data.load_pool_from_config)

    def preflight(self, cfg: Any, log: Log,
                  dataset: datasets.DatasetDict | None = None) -> dict[str, Any]:
        """Model folder and data checked (`assets.resolve_model`, `data.load_data`: each
        refusal is one error); leakage and conflicting labels looked for."""
        model_path = assets.resolve_model(cfg.model, log=log)
        dataset = self.load_data(cfg) if dataset is None else dataset
        sizes = sources.require_rows(dataset, cfg.dataset)
        findings = data_report.quick_findings(dataset, self.load_pool(cfg))
        data_report.check_findings(findings, cfg.strict_data)
        for finding in findings:
            log(f"[run] WARNING data: {finding} (strict_data=True makes this an error)")
        checked = {"model_path": model_path, "split_sizes": sizes,
                   "label_names": data.label_names(dataset), "data_findings": findings}
        if cfg.teacher is not None:  # distillation: the teacher must know the same labels
            checked["teacher"] = distill.check_teacher(cfg.teacher, checked["label_names"])
        return checked

    def inspection_texts(self, cfg: Any, dataset: datasets.DatasetDict,
                         tokenizer: Any) -> datasets.DatasetDict:
        return dataset

    def encode(self, cfg: Any, dataset: datasets.DatasetDict, tokenizer: Any,
               log: Log) -> tuple[int, datasets.DatasetDict]:
        max_length = tokens.resolve_max_length(cfg.max_length, tokenizer, dataset)
        tokenized = tokens.tokenize_splits(dataset, tokenizer, max_length)
        if cfg.teacher is not None:
            tokenized = distill.add_teacher_logits(cfg, dataset, tokenized, log)
        return max_length, tokenized

    def build_model(self, cfg: Any, dataset: datasets.DatasetDict, hardware: Any, log: Log):
        return build_classifier(cfg, data.label_names(dataset), hardware.attn_implementation)

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def live_metric(self, cfg: Any) -> str:
        return cfg.metric_for_best if cfg.metric_for_best != "loss" else "accuracy"

    def add_log_metrics(self, logs: dict[str, float]) -> None:
        return None

    def evaluate(self, trainer: Any, tokenized: datasets.DatasetDict,
                 splits: tuple[str, ...]) -> dict[str, dict[str, float]]:
        """Loss, accuracy and macro-F1 per split, through Trainer.predict."""
        return self.evaluate_with_predictions(trainer, tokenized, splits)[0]

    def evaluate_with_predictions(self, trainer: Any, tokenized: datasets.DatasetDict,
                                  splits: tuple[str, ...],
                                  ) -> tuple[dict[str, dict[str, float]], dict[str, pd.DataFrame]]:
        """The metrics and every example's prediction, from one Trainer.predict per split."""
        results, frames = {}, {}
        # the train split's model columns, less the teacher's logits (train only)
        columns = [c for c in trainer.train_dataset.column_names if c != distill.TEACHER_COLUMN]
        for split in splits:
            output = trainer.predict(tokenized[split].select_columns(columns),
                                     metric_key_prefix=split)
            results[split] = {key.removeprefix(f"{split}_"): value
                              for key, value in output.metrics.items()
                              if key.removeprefix(f"{split}_") in EVAL_KEYS}
            frames[split] = prediction_rows(output.predictions, output.label_ids,
                                            tokenized[split]["text"])
        return results, frames

    def save_model(self, trainer: Any, folder: Path) -> None:
        trainer.save_model(str(folder))

    def headline(self, split: str, scores: dict[str, float]) -> str:
        return (f"{split}: accuracy {scores.get('accuracy', float('nan')):.4f}, "
                f"macro-F1 {scores.get('f1', float('nan')):.4f}")


TASK = ClassificationTask()
