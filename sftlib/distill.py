"""Knowledge distillation: train a classifier on a fine-tuned teacher's soft labels too.

With `teacher=<folder>` (task classification), the training loss of each batch is

    (1 - w) * CE(student logits, gold labels) + w * T^2 * KL(softmax(t / T) || softmax(s / T))

with `w = distill_weight`, `T = distill_temperature`, `t` the teacher's and `s` the student's
logits, KL averaged over the batch's examples (`distillation_loss`). The T^2 factor is the
Hinton et al. (2015) convention: the soft term's gradients shrink as 1/T^2, so scaling by T^2
keeps its share of the gradient the same whatever T is. Evaluation loss (validation, test,
the checkpoint choice with metric_for_best=loss) stays plain cross-entropy: runs with and
without a teacher are scored on the same footing.

The teacher is a run folder (its `model/`) or a saved classifier folder (`resolve_teacher`,
called by the classification preflight): it must hold a sequence classifier whose label names,
in id order, equal the data's, else one `TeacherError` naming both lists, before any training.
Its logits are computed once per example, from the raw texts with the teacher's own tokenizer
and max_length (the student may tokenize differently), through `sftlib.deploy.Predictor`
(eval mode, no grad, batches sorted by length), and cached on disk (`cached_logits`): keyed by
the teacher's files (sha256), the texts and the max length, under `<sftlib cache>/teacher-logits/`
(SFTLIB_CACHE moves it), so epochs, a second run and a sweep's other seeds reuse them. The
train split carries them as the `teacher_logits` column through Trainer to `compute_loss`.
The teacher's own validation / test scores (`teacher_scores`, cached the same way) go into
metrics.json and into notebook 03's teacher-vs-student table.

Not supported: hub ids as teachers (give a local folder), a teacher of the instruction task,
teacher logits recomputed under augmentation or dropout (they are fixed per text),
intermediate-layer (feature) distillation.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sftlib import assets
from sftlib.filemodes import match_umask
from sftlib.report import resolve_path

TEACHER_COLUMN = "teacher_logits"  # the train split's column the loss reads
# files in a model folder that do not change what it computes (a run's bookkeeping, export
# extras): left out of the teacher's fingerprint, so model/ and its export share a cache
NOT_WEIGHTS = ("run_config.json", "labels.json", "onnx_export.json", "training_args.bin",
               "chat_export.json")


class TeacherError(ValueError):
    """The teacher cannot teach this run; the message says why and what to give instead."""


def resolve_teacher(spec: str) -> Path:
    """The classifier folder `teacher` names: the folder itself, or a run folder's `model/`.
    A missing folder, or one without a saved sequence classifier, is a `TeacherError`."""
    folder = resolve_path(spec)
    if not folder.is_dir():
        raise TeacherError(f"teacher: {folder} does not exist; give a finished run's folder "
                           "(reports/<run-id>, its model/ is used) or a saved classifier folder")
    if not (folder / "config.json").is_file() and (folder / "model" / "config.json").is_file():
        folder = folder / "model"
    problem = assets.model_folder_problem(folder)
    if problem:
        raise TeacherError(f"teacher: {folder} is not a saved model: it lacks {problem}; give "
                           "a finished run's folder (reports/<run-id>) or its model/")
    architectures = _model_config(folder).get("architectures") or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise TeacherError(f"teacher: {folder} holds {', '.join(architectures) or 'a model'}, "
                           "not a sequence classifier; give a classification run's folder")
    return folder


def teacher_labels(folder: Path) -> list[str]:
    """The teacher's label names in id order (its config.json's id2label)."""
    id2label = _model_config(folder).get("id2label") or {}
    return [id2label.get(str(i), f"<no id {i}>") for i in range(len(id2label))]


def check_teacher(spec: str, label_names: list[str]) -> dict[str, Any]:
    """The teacher's folder, checked against the data's labels (names and ids); what the
    manifest records. Reads config files only: cheap enough for every sweep point."""
    folder = resolve_teacher(spec)
    labels = teacher_labels(folder)
    if labels != list(label_names):
        raise TeacherError(f"teacher: {folder} predicts labels {labels} (by id), the data has "
                           f"{list(label_names)}; a teacher must have been trained on the same "
                           "label names in the same order")
    return {"path": str(folder), "labels": labels}


def _model_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise TeacherError(f"teacher: cannot read {folder / 'config.json'} ({error})") from None


def teacher_sha256(folder: Path) -> str:
    """One sha256 over the files that make the teacher's logits (weights, config, tokenizer)."""
    files = {name: digest for name, digest in assets.model_files_sha256(str(folder)).items()
             if name not in NOT_WEIGHTS}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def cache_dir() -> Path:
    """Where teacher logits are kept: beside the assets, so SFTLIB_CACHE moves both."""
    return assets.cache_dir() / "teacher-logits"


def cache_key(sha256: str, texts: list[str], max_length: int) -> str:
    """What the logits depend on: the teacher's files, the texts (in order), the max length."""
    digest = hashlib.sha256(f"{sha256}\n{max_length}\n{len(texts)}\n".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def cached_logits(folder: Path, texts: list[str], batch_size: int = 64,
                  log=print) -> tuple[np.ndarray, dict[str, Any]]:
    """The teacher's logits for `texts` (rows in their order) and where they came from.

    Read from the cache when present; else computed once with `Predictor` and written
    atomically (a temporary file renamed), so concurrent runs of a sweep never read half a
    file: two that miss at once compute the same array and the last rename wins."""
    from sftlib.deploy import Predictor, trained_max_length

    sha = teacher_sha256(folder)
    max_length = trained_max_length(folder)  # what Predictor uses
    path = cache_dir() / f"{cache_key(sha, texts, max_length)}.npy"
    info = {"path": str(folder), "sha256": sha, "max_length": max_length, "cache": str(path)}
    if path.is_file():
        try:
            logits = np.load(path)
        except (OSError, ValueError):  # unreadable (a disk error): computed again below
            logits = np.empty((0, 0))
        if logits.ndim == 2 and logits.shape[0] == len(texts):
            log(f"[distill] teacher logits for {len(texts)} texts read from the cache {path}")
            return logits, {**info, "cached": True}
    predictor = Predictor(folder, batch_size=batch_size, max_length=max_length)
    logits = predictor.logits(list(texts))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy.tmp", delete=False) as tmp:
        np.save(tmp, logits)
    os.replace(tmp.name, path)
    match_umask(path)  # a temporary file is created 0600, whatever the umask says
    log(f"[distill] teacher logits for {len(texts)} texts computed on {predictor.device}, "
        f"cached in {path}")
    return logits, {**info, "cached": False}


def add_teacher_logits(cfg: Any, dataset, tokenized, log=print):
    """The tokenized splits with the teacher's logits of every train text as the
    `teacher_logits` column (train only: evaluation stays plain cross-entropy)."""
    folder = resolve_teacher(cfg.teacher)
    logits, _ = cached_logits(folder, list(dataset["train"]["text"]), cfg.eval_batch_size, log)
    tokenized["train"] = tokenized["train"].add_column(TEACHER_COLUMN, logits.tolist())
    return tokenized


def distillation_loss(student_logits, teacher_logits, labels, weight: float,
                      temperature: float):
    """(1 - w) * CE(student, labels) + w * T^2 * KL(softmax(teacher/T) || softmax(student/T)),
    cross-entropy and KL each a mean over the batch's examples; computed in fp32."""
    import torch.nn.functional as F

    student = student_logits.float()
    teacher = teacher_logits.to(student.device).float()
    hard = F.cross_entropy(student, labels)
    soft = F.kl_div(F.log_softmax(student / temperature, dim=-1),
                    F.log_softmax(teacher / temperature, dim=-1),
                    reduction="batchmean", log_target=True)
    return (1 - weight) * hard + weight * temperature ** 2 * soft


def teacher_scores(cfg: Any, dataset, splits: tuple[str, ...] = ("validation", "test"),
                   log=print) -> dict[str, Any]:
    """The teacher's loss, accuracy and macro-F1 on `splits` (the student's rows: subsets
    included), from cached logits; with its path and sha256: metrics.json's `teacher`.
    Empty without a teacher."""
    from scipy.special import log_softmax

    from sftlib.tasks import get_task  # the task's own metrics, as Trainer computes them

    if cfg.teacher is None:
        return {}
    folder = resolve_teacher(cfg.teacher)
    record: dict[str, Any] = {}
    for split in splits:
        texts, labels = list(dataset[split]["text"]), np.asarray(dataset[split]["label"])
        logits, info = cached_logits(folder, texts, cfg.eval_batch_size, log)
        loss = -log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(labels)), labels]
        record[split] = {"loss": float(loss.mean()),
                         **get_task(cfg.task).compute_metrics((logits, labels))}
    return {"path": info["path"], "sha256": info["sha256"], "max_length": info["max_length"],
            "distill_weight": cfg.distill_weight,
            "distill_temperature": cfg.distill_temperature, **record}


def teacher_vs_student(teacher: dict[str, Any], student: dict[str, dict[str, float]],
                       ) -> pd.DataFrame:
    """Rows: (split, model) for teacher and student; columns: loss, accuracy, f1. Empty
    without a teacher."""
    rows = {(split, who): {key: scores.get(key) for key in ("loss", "accuracy", "f1")}
            for split in student if split in teacher
            for who, scores in (("teacher", teacher[split]), ("student", student[split]))}
    index = pd.MultiIndex.from_tuples(list(rows), names=["split", "model"])
    return pd.DataFrame(list(rows.values()), index=index, columns=["loss", "accuracy", "f1"])


def record_teacher_scores(cfg: Any, dataset, report, log=print) -> dict[str, Any]:
    """`teacher_scores`, written to metrics.json's `teacher` section when there is a teacher."""
    record = teacher_scores(cfg, dataset, log=log)
    if record:
        report.metrics("teacher", record)
    return record
