"""Task "classification": a pretrained encoder with a fresh classification head.

Data: text + label (`sftlib.data`); encoding: the tokenizer truncating at max_length, padded
per batch (`DataCollatorWithPadding`); model: with `pooling="cls"` (the default, the seed's)
`AutoModelForSequenceClassification`, whose head reads the [CLS] state through the encoder's
pooler; with `pooling="mean"` `sftlib.pooling_model`'s head on the masked mean of all token
states (what sentence encoders such as MiniLM and MPNet were trained on); one output per label
name; metrics: loss, accuracy and macro-F1; saved with `Trainer.save_model` (loads with
`transformers.pipeline("text-classification")`, mean-pooled folders with
`trust_remote_code=True` or after `import sftlib.deploy`).
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
    from transformers import AutoModel, AutoModelForSequenceClassification

    labels = {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
              "label2id": {name: i for i, name in enumerate(label_names)}}
    # fp32 master weights whatever the checkpoint holds (transformers 5 loads an fp16/bf16
    # checkpoint in its own dtype); bf16/fp16 come from autocast, not from the weights
    # transformers refuses an explicit "sdpa" for encoders without it (MPNet); its own
    # default (None) is SDPA where the model has it and eager attention elsewhere
    load = {"attn_implementation": None if attn_implementation == "sdpa" else attn_implementation,
            "dtype": torch.float32}
    path = assets.resolve_model(cfg.model)
    if cfg.pooling == "cls":
        return AutoModelForSequenceClassification.from_pretrained(path, **labels, **load)
    return _mean_pooled(AutoModel.from_pretrained(path, **load), labels)


def _mean_pooled(encoder, labels: dict[str, Any]):
    """`encoder`'s weights (its pooler left out) under a fresh mean-pooling head. The wrapper
    builds its own encoder from the config, then takes these weights with a strict
    load_state_dict: a missing or extra tensor is an error, never a random layer."""
    from sftlib import pooling_model

    config = pooling_model.MeanPoolingConfig.from_encoder(
        encoder.config, attn_implementation=encoder.config._attn_implementation, **labels)
    model = pooling_model.MeanPoolingForSequenceClassification(config)
    weights = {name: tensor for name, tensor in encoder.state_dict().items()
               if not name.startswith("pooler.")}
    model.encoder.load_state_dict(weights, strict=True)
    return model


def pooling_weights(attention_mask: np.ndarray, pooling: str) -> np.ndarray:
    """The weight of each position's final hidden state in what the head reads: "cls" puts
    all of it on the first token ([CLS]; BERT's pooler then transforms that one state), "mean"
    spreads it evenly over the tokens the mask keeps (`pooling_model.masked_mean`); pad
    positions get zero either way. [batch, sequence] -> [batch, sequence]."""
    mask = np.asarray(attention_mask, dtype=np.float64)
    if pooling == "cls":
        weights = np.zeros_like(mask)
        weights[:, 0] = 1.0
        return weights
    return mask / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)


def pooling_figure(tokenizer: Any, texts: list[str], pooling: str, pads: int = 4,
                   max_tokens: int = 16):
    """Bars: the weight each pooling gives every token of one text, padded with `pads` pad
    tokens as a longer neighbour in its batch would pad it; the run's own pooling is marked.
    The text is the longest of `texts` (the first 200) with at most `max_tokens` tokens, so
    every token label stays readable; the first text, cut, when none is that short."""
    import matplotlib.pyplot as plt

    from sftlib.config import POOLINGS
    from sftlib.plots import finish_axes

    texts = list(texts[:200])
    counts = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    short = [i for i, count in enumerate(counts) if count <= max_tokens]
    text = texts[max(short, key=counts.__getitem__)] if short else texts[0]
    ids = tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"]
    # what DataCollatorWithPadding does to it beside a text `pads` tokens longer
    mask = np.array([[1] * len(ids) + [0] * pads])
    labels = tokenizer.convert_ids_to_tokens(ids + [tokenizer.pad_token_id] * pads)
    length = mask.shape[1]
    fig, axes = plt.subplots(len(POOLINGS), 1, figsize=(max(6.0, 0.45 * length), 5.2),
                             sharex=True)
    for ax, name in zip(axes, POOLINGS):
        weights = pooling_weights(mask, name)[0]
        ax.bar(np.arange(length), weights, color="tab:blue", label="weight")
        ax.axvspan(length - pads - 0.5, length - 0.5, color="lightgrey", alpha=0.6,
                   label="padding (attention mask 0)")
        ax.set_ylim(0, 1.05)
        finish_axes(ax, f"pooling={name}{' (this run)' if name == pooling else ''}",
                    "", "weight (sums to 1)")
    axes[-1].set_xticks(np.arange(length), labels, rotation=60, ha="right")
    axes[-1].set_xlabel("token")
    fig.suptitle("What the classification head reads: each token's weight")
    fig.tight_layout()
    return fig


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
            checked["teacher"] = distill.check_teacher(
                cfg.teacher, checked["label_names"], needs_vectors=cfg.distill_relation_weight > 0)
            distill.labelling_precision(cfg.teacher_precision)  # a GPU without bf16: refused
        return checked

    def inspection_texts(self, cfg: Any, dataset: datasets.DatasetDict,
                         tokenizer: Any) -> datasets.DatasetDict:
        return dataset

    def encode(self, cfg: Any, dataset: datasets.DatasetDict, tokenizer: Any,
               log: Log) -> tuple[int, datasets.DatasetDict]:
        max_length = tokens.resolve_max_length(cfg.max_length, tokenizer, dataset)
        tokenized = tokens.tokenize_splits(dataset, tokenizer, max_length)
        if cfg.teacher is not None:
            tokenized = distill.add_teacher_logits(cfg, dataset, tokenized, tokenizer,
                                                   max_length, log)
        return max_length, tokenized

    def build_model(self, cfg: Any, dataset: datasets.DatasetDict, hardware: Any, log: Log):
        model = build_classifier(cfg, data.label_names(dataset), hardware.attn_implementation)
        used = model.config._attn_implementation
        if used != hardware.attn_implementation:
            log(f"[train] {type(model).__name__} has no {hardware.attn_implementation} "
                f"attention: it uses {used} attention (its own code, no fused kernel)")
        return model

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
        # the train split's model columns, less the teacher's (train only)
        columns = [c for c in trainer.train_dataset.column_names
                   if c not in distill.TRAIN_ONLY_COLUMNS]
        for split in splits:
            rows = tokenized[split].select_columns(columns)
            order = tokens.length_order(rows)  # batches of similar lengths pad little
            output = trainer.predict(rows.select(order), metric_key_prefix=split)
            results[split] = {key.removeprefix(f"{split}_"): value
                              for key, value in output.metrics.items()
                              if key.removeprefix(f"{split}_") in EVAL_KEYS}
            back = np.argsort(order)  # split order again
            frames[split] = prediction_rows(output.predictions[back], output.label_ids[back],
                                            tokenized[split]["text"])
        return results, frames

    def save_model(self, trainer: Any, folder: Path) -> None:
        trainer.save_model(str(folder))

    def headline(self, split: str, scores: dict[str, float]) -> str:
        return (f"{split}: accuracy {scores.get('accuracy', float('nan')):.4f}, "
                f"macro-F1 {scores.get('f1', float('nan')):.4f}")


TASK = ClassificationTask()
