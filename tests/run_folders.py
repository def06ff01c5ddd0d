"""Run folders built from chosen numbers (what a finished run leaves: manifest.json,
metrics.json, metrics.jsonl, predictions/<split>.csv), so the comparison's arithmetic is
tested against known answers without training; and a tiny classifier saved as a run's model/
(a teacher for the distillation tests)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from sftlib.config import RunConfig


def write_run(folder: Path, correct: dict[str, np.ndarray], status: str = "ok",
              texts: list[str] | None = None, **config) -> Path:
    """A run folder whose predictions are right exactly where `correct[split]` says."""
    folder.mkdir(parents=True)
    cfg = RunConfig(**config).replace(output_dir=str(folder))
    metrics = {"training": {"runtime_s": 10.0 + cfg.seed, "samples_per_s": 30.0}}
    for split, right in correct.items():
        rows = len(right)
        names = texts or [f"{split} review {i}" for i in range(rows)]
        labels = np.arange(rows) % 2
        frame = pd.DataFrame({
            "row": np.arange(rows),
            "id": [hashlib.sha1(t.encode()).hexdigest()[:12] for t in names],
            "label": labels, "prediction": np.where(right, labels, 1 - labels),
            "correct": right, "loss": np.where(right, 0.1, 2.0), "confidence": 0.9})
        (folder / "predictions").mkdir(exist_ok=True)
        frame.to_csv(folder / "predictions" / f"{split}.csv", index=False)
        metrics[split] = {"accuracy": float(np.mean(right)), "f1": float(np.mean(right)),
                          "loss": float(frame["loss"].mean())}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    records = [{"step": s, "loss": 1.0 / s, "learning_rate": cfg.lr * (1 - s / 10)}
               for s in range(1, 10)] + [{"step": 9, "eval_accuracy": metrics.get(
                   "validation", {}).get("accuracy", 0.5), "eval_loss": 0.5}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "manifest.json").write_text(json.dumps(
        {"run_id": folder.name, "status": status, "pid": None, "config": cfg.to_dict(),
         "started_utc": datetime.now(UTC).isoformat()}))
    return folder


LABELS = ["rotten", "fresh"]  # rotten-tomatoes, in id order


def save_tiny_classifier(base, folder, labels=LABELS):
    """The tiny random BERT (conftest's tiny_model_folder) with a classification head, saved as
    a run's model/ is: weights, tokenizer, run_config.json (which gives its max_length)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    RunConfig(model=str(base), max_length=64).save(folder / "run_config.json")
    return folder


def save_tiny_mean_classifier(base, folder, labels=LABELS):
    """`save_tiny_classifier`, mean-pooled (sftlib.pooling_model's head): a teacher with
    sentence vectors, for the relation term."""
    from transformers import AutoTokenizer

    from sftlib.tasks.classification import build_classifier

    cfg = RunConfig(model=str(base), max_length=64, pooling="mean", seed=1)
    build_classifier(cfg, list(labels)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    cfg.save(folder / "run_config.json")
    return folder
