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
(eval mode, no grad, batches sorted by length; in fp32, or under bf16 autocast with
`teacher_precision=bf16`, or `auto` where the GPU or CPU has bf16 units), and cached on disk
(`cached_logits`): keyed by the teacher's files (sha256), the texts, the max length and the
precision (bf16 logits are another entry), under `<sftlib cache>/teacher-logits/`
(SFTLIB_CACHE moves it), so epochs, a second run and a sweep's other seeds reuse them; one
process computes a missing entry (an flock on the empty `<entry>.npy.lock` left beside it)
while the others (torchrun's ranks, concurrent runs) wait and read it, and under torchrun it
runs on the rank's own GPU. The
train split carries them as the `teacher_logits` column through Trainer to `compute_loss`.
The teacher's own validation / test scores (`teacher_scores`, cached the same way) go into
metrics.json and into notebook 03's teacher-vs-student table.

A transfer set (`distill_augment=k`): the teacher can label text that has no gold label,
so each train text also yields k perturbed copies (`augment_texts`, after Tang et al. 2019,
"Distilling task-specific knowledge from BERT into simple neural networks"): with probability
0.25 a random n-gram of the text (n from 1 to 5: short phrases, like the phrase-level labels of
SST), else the text with each word dropped with probability 0.1. The copies are drawn from the
run's seed; their label is -100 (no gold label) and their loss is the soft term alone,
`T^2 * KL`, at full weight: an example's loss always weighs 1, a gold row's split as above
(so `distill_weight` shares the gold rows' loss only; at 0 the copies still learn from the
teacher). The training loss and samples/s that metrics.json reports count the copies too.
Each copy adds a pass's worth of training steps; the teacher labels each seed's copies once.

A relation term (`distill_relation_weight=b`, > 0; mean-pooled student and teacher): each
train batch's loss gains `b * relation_loss`, the mean over the batch's n^2 pairs (i, j) of
(cos(s_i, s_j) - cos(t_i, t_j))^2 (n: one device's micro-batch), with `s` and `t` the
student's and the teacher's sentence vectors (the masked mean each head reads). The
teacher's vectors are cached like its logits (another entry, the same pass:
`cached_outputs`) and ride in the `teacher_vectors` column; the student's come from the same
training forward (`output_sentence_vectors`). Only angles count, so the 384-wide student
needs no projection to a 768-wide teacher: the similarity-preserving loss of Tung & Mori
(2019), "Similarity-preserving knowledge distillation", with cosine similarities. It passes
on how the teacher's representation groups texts, which its logits (one margin, for two
labels) do not carry; measured on the default data with the transfer-set recipe it did not
help (reports/benchmarks/sweep_relation/README.md), so it is off by default and out of the
recipe.

Not supported: hub ids as teachers (give a local folder), a teacher of the instruction task,
teacher logits recomputed under dropout (they are fixed per text), the relation term with a
[CLS] head (student or teacher: its vector passes through a pooler of the architecture's
own), distillation of inner layers' token states (TinyBERT's: the teacher would run at every
step) or through a learned projection (FitNets'), synonym replacement (Tang et al.'s third
perturbation: it needs a tagger and embeddings), and augmentation without a teacher (a copy
has no label to learn).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sftlib import assets
from sftlib.filemodes import match_umask
from sftlib.report import resolve_path

if TYPE_CHECKING:  # the preflight imports this module without torch
    import torch

TEACHER_COLUMN = "teacher_logits"  # the train split's column the loss reads
VECTORS_COLUMN = "teacher_vectors"  # the teacher's sentence vectors (the relation term)
TRAIN_ONLY_COLUMNS = (TEACHER_COLUMN, VECTORS_COLUMN)  # no model input; evaluation has none
MEAN_POOLING_CLASS = "MeanPoolingForSequenceClassification"  # sftlib.pooling_model's head
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


def check_teacher(spec: str, label_names: list[str], needs_vectors: bool = False,
                  ) -> dict[str, Any]:
    """The teacher's folder, checked against the data's labels (names and ids), and with
    `needs_vectors` (the relation term) mean-pooled; what the manifest records. Reads config
    files only: cheap enough for every sweep point."""
    folder = resolve_teacher(spec)
    labels = teacher_labels(folder)
    if labels != list(label_names):
        raise TeacherError(f"teacher: {folder} predicts labels {labels} (by id), the data has "
                           f"{list(label_names)}; a teacher must have been trained on the same "
                           "label names in the same order")
    # by name: sftlib.pooling_model imports torch, which the preflight does without
    if needs_vectors and MEAN_POOLING_CLASS not in (
            _model_config(folder).get("architectures") or []):
        raise TeacherError(f"teacher: {folder} is not a mean-pooled classifier, so it has no "
                           "sentence vectors for distill_relation_weight; give a run trained "
                           "with pooling=mean, or set distill_relation_weight=0")
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


def cache_key(sha256: str, texts: list[str], max_length: int, precision: str = "fp32",
              output: str = "logits") -> str:
    """What the teacher's outputs depend on: the teacher's files, the texts (in order), the
    max length, the precision of the pass and which output (logits or sentence vectors); the
    precision is left out for fp32 and the output for logits, so the entries made before
    either existed keep their keys."""
    tags = [tag for tag, plain in ((precision, "fp32"), (output, "logits")) if tag != plain]
    tag = "".join(f"{tag}\n" for tag in tags)  # where only digits can follow
    digest = hashlib.sha256(f"{sha256}\n{tag}{max_length}\n{len(texts)}\n".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def labelling_precision(setting: str) -> str:
    """"fp32" or "bf16": what `teacher_precision` means for the device the teacher labels on
    (Predictor's: a CUDA GPU when there is one, else the CPU). "auto": bf16 where that device
    computes it natively (as training's precision=auto decides); "bf16" on a GPU without it is
    a ConfigError (raised by the preflight, before any training or labelling)."""
    if setting == "fp32":
        return "fp32"
    import torch

    from sftlib import hardware
    from sftlib.config import ConfigError

    on_gpu = torch.cuda.is_available()
    native = torch.cuda.is_bf16_supported() if on_gpu else hardware.cpu_has_native_bf16()
    if setting == "bf16" and on_gpu and not native:
        raise ConfigError("teacher_precision: bf16 was asked for but this GPU does not support "
                          "it; use teacher_precision=fp32, or auto (bf16 where supported)")
    return "bf16" if setting == "bf16" or native else "fp32"


def cached_logits(folder: Path, texts: list[str], batch_size: int = 64, log=print,
                  precision: str = "fp32") -> tuple[np.ndarray, dict[str, Any]]:
    """The teacher's logits for `texts` (rows in their order) and where they came from;
    `precision` ("fp32" or "bf16", see `labelling_precision`) is the forward pass's
    (`cached_outputs`, which also gives sentence vectors)."""
    arrays, info = cached_outputs(folder, texts, batch_size, log, precision, ("logits",))
    return arrays["logits"], {**info, "cache": info["cache"]["logits"]}


def cached_outputs(folder: Path, texts: list[str], batch_size: int = 64, log=print,
                   precision: str = "fp32", outputs: tuple[str, ...] = ("logits",),
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The teacher's `outputs` for `texts` ("logits", "vectors": `Predictor.outputs`), one
    cache entry each, and where they came from.

    Read from the cache when present; the missing ones computed together, in one pass of
    `Predictor`, each written atomically (a temporary file renamed). An flock on the logits
    entry's `<entry>.lock` (whichever outputs are missing: one lock for the texts) makes one
    process compute them: the other ranks of a torchrun job, or a sweep's concurrent runs,
    wait for it and read the cache instead of computing the same arrays again."""
    from sftlib.deploy import check_outputs, trained_max_length

    check_outputs(outputs)
    sha = teacher_sha256(folder)
    max_length = trained_max_length(folder)  # what Predictor uses
    paths = {output: cache_dir() / f"{cache_key(sha, texts, max_length, precision, output)}.npy"
             for output in outputs}
    info = {"path": str(folder), "sha256": sha, "max_length": max_length,
            "precision": precision, "cache": {output: str(path) for output, path in paths.items()}}
    arrays = {output: _read_cached(path, len(texts)) for output, path in paths.items()}
    missing = [output for output, array in arrays.items() if array is None]
    if missing:
        lock = cache_dir() / f"{cache_key(sha, texts, max_length, precision)}.npy.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with _computing_alone(lock, f"{len(texts)} texts", log):
            arrays.update({output: _read_cached(paths[output], len(texts))
                           for output in missing})  # written while this one waited
            missing = [output for output in missing if arrays[output] is None]
            if missing:
                computed, device = _compute_outputs(folder, texts, batch_size, max_length,
                                                    {output: paths[output] for output in missing},
                                                    bf16=precision == "bf16")
                arrays.update(computed)
                log(f"[distill] teacher {' and '.join(missing)} for {len(texts)} texts "
                    f"computed on {device} in {precision}, cached in "
                    f"{', '.join(str(paths[output]) for output in missing)}")
    for output in outputs:
        if output not in missing:
            log(f"[distill] teacher {output} for {len(texts)} texts read from the cache "
                f"{paths[output]}")
    return arrays, {**info, "cached": not missing}


@contextlib.contextmanager
def _computing_alone(lock_path: Path, what: str, log, poll_s: float = 0.5,
                     report_s: float = 60.0):
    """Holds an exclusive flock on `lock_path` (released by the kernel if the process dies),
    saying while it waits for another holder. Where the lock file cannot be made or locked
    (a read-only cache, a file system without flock) it goes on unlocked: the lock only
    saves repeated work, the atomic rename keeps the cache whole."""
    try:
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
    except OSError as error:
        log(f"[distill] cannot create {lock_path} ({error}); computing without the lock")
        yield
        return
    try:
        said_at = None
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if said_at is None or time.monotonic() - said_at >= report_s:
                    log(f"[distill] {'still waiting: ' if said_at else ''}another process is "
                        f"computing the teacher's outputs for {what} ({lock_path})")
                    said_at = time.monotonic()
                time.sleep(poll_s)
            except OSError as error:  # no flock here (some network file systems)
                log(f"[distill] cannot lock {lock_path} ({error}); computing without it")
                break
        yield
    finally:
        os.close(handle)  # and with it the lock


def _read_cached(path: Path, rows: int) -> np.ndarray | None:
    """The cached array at `path` if it is there, readable and has `rows` rows."""
    if not path.is_file():
        return None
    try:
        array = np.load(path)
    except (OSError, ValueError, EOFError):  # unreadable or empty: computed again
        return None
    return array if array.ndim == 2 and array.shape[0] == rows else None


def _compute_outputs(folder: Path, texts: list[str], batch_size: int, max_length: int,
                     paths: dict[str, Path], bf16: bool = False,
                     ) -> tuple[dict[str, np.ndarray], str]:
    """The teacher's outputs named by `paths` for `texts`, from one pass, each saved to its
    path atomically; and the device they ran on."""
    from sftlib.deploy import Predictor

    predictor = Predictor(folder, batch_size=batch_size, max_length=max_length,
                          device=_rank_device(), bf16=bf16)
    arrays = predictor.outputs(list(texts), tuple(paths))
    for output, path in paths.items():
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy.tmp",
                                         delete=False) as tmp:
            np.save(tmp, arrays[output])
        os.replace(tmp.name, path)
        match_umask(path)  # a temporary file is created 0600, whatever the umask says
    return arrays, predictor.device


def _rank_device() -> str | None:
    """This process's own GPU under torchrun (LOCAL_RANK), where Trainer will put its
    model; None (Predictor's default) otherwise."""
    import torch

    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None or not torch.cuda.is_available():
        return None
    # a rank that sees only its own GPU (one per task, as some schedulers give) uses it
    return f"cuda:{int(local_rank)}" if int(local_rank) < torch.cuda.device_count() else None


NO_GOLD_LABEL = -100  # a transfer-set copy's label: the soft term alone teaches it
NGRAM_SHARE, NGRAM_MAX, WORD_DROP = 0.25, 5, 0.1  # Tang et al. (2019)'s p_ng and n; a drop rate


def augment_text(text: str, rng: np.random.Generator) -> str:
    """One perturbed copy: a random n-gram of the words (share NGRAM_SHARE, n up to
    NGRAM_MAX), else the words each dropped with probability WORD_DROP (one always kept)."""
    words = text.split()
    if len(words) <= 1:
        return text
    if rng.random() < NGRAM_SHARE:
        n = int(rng.integers(1, min(NGRAM_MAX, len(words)) + 1))
        start = int(rng.integers(0, len(words) - n + 1))
        return " ".join(words[start:start + n])
    kept = [word for word in words if rng.random() >= WORD_DROP]
    return " ".join(kept) if kept else words[int(rng.integers(0, len(words)))]


def augment_texts(texts: list[str], copies: int, seed: int) -> list[str]:
    """`copies` perturbed copies of each text, copy-major (all first copies, then all second
    ones); the same texts and seed give the same copies."""
    rng = np.random.default_rng([seed, copies])
    return [augment_text(text, rng) for _ in range(copies) for text in texts]


def transfer_rows(cfg: Any, train, tokenizer, max_length: int):
    """The train split's `distill_augment` perturbed copies, tokenized like it, each with
    label NO_GOLD_LABEL."""
    import datasets

    from sftlib import tokens

    texts = augment_texts(list(train["text"]), cfg.distill_augment, cfg.seed)
    copies = datasets.Dataset.from_dict({"text": texts, "label": [NO_GOLD_LABEL] * len(texts)})
    encoded = tokens.tokenize_splits(datasets.DatasetDict({"train": copies}), tokenizer,
                                     max_length)["train"]
    return copies, encoded


def add_teacher_logits(cfg: Any, dataset, tokenized, tokenizer, max_length: int, log=print):
    """The tokenized splits with the teacher's logits of every train text as the
    `teacher_logits` column (train only: evaluation stays plain cross-entropy), and with
    `distill_relation_weight` its sentence vectors as `teacher_vectors`; with
    `distill_augment`, the train split's perturbed copies appended (tokenized with
    `tokenizer` at `max_length`), taught by the teacher alone."""
    import datasets

    folder = resolve_teacher(cfg.teacher)
    texts = list(dataset["train"]["text"])
    train = _with_teacher_columns(cfg, folder, tokenized["train"], texts, log)
    if cfg.distill_augment > 0:
        copies, encoded = transfer_rows(cfg, dataset["train"], tokenizer, max_length)
        encoded = _with_teacher_columns(cfg, folder, encoded, list(copies["text"]), log)
        # a ClassLabel column cannot hold NO_GOLD_LABEL: the ids as plain integers; columns
        # the copies lack (a hub dataset's idx) are no model input
        train = train.select_columns(encoded.column_names)
        train = train.cast_column("label", datasets.Value("int64"))
        train = datasets.concatenate_datasets([train, encoded.cast(train.features)])
        log(f"[distill] transfer set: {len(texts)} train texts and {len(copies)} perturbed "
            f"copies ({cfg.distill_augment} each, seed {cfg.seed}), the copies taught by the "
            "teacher only")
    tokenized["train"] = train
    return tokenized


def _with_teacher_columns(cfg: Any, folder: Path, rows, texts: list[str], log):
    """`rows` (the tokenized `texts`) with the teacher's cached logits, and its sentence
    vectors where the relation term needs them."""
    import datasets

    precision = labelling_precision(cfg.teacher_precision)
    outputs = {TEACHER_COLUMN: "logits"}
    if cfg.distill_relation_weight > 0:
        outputs[VECTORS_COLUMN] = "vectors"
    arrays, _ = cached_outputs(folder, texts, cfg.eval_batch_size, log, precision,
                               tuple(outputs.values()))
    for column, output in outputs.items():
        values = arrays[output]
        if output == "logits":
            rows = rows.add_column(column, values.tolist())
        else:  # as the cache holds them: float64 would double a wide column's size
            rows = rows.add_column(column, list(values),
                                   feature=datasets.List(datasets.Value("float32")))
    return rows


def distillation_loss(student_logits, teacher_logits, labels, weight: float,
                      temperature: float):
    """The batch mean of each example's loss: (1 - w) * CE(student, label) + w * T^2 *
    KL(softmax(teacher/T) || softmax(student/T)), or T^2 * KL alone for an example labelled
    NO_GOLD_LABEL (a transfer-set copy); computed in fp32. With gold labels only, that is
    (1 - w) * mean CE + w * T^2 * mean KL."""
    import torch
    import torch.nn.functional as F

    student = student_logits.float()
    teacher = teacher_logits.to(student.device).float()
    gold = labels != NO_GOLD_LABEL
    hard = F.cross_entropy(student, labels, ignore_index=NO_GOLD_LABEL, reduction="none")
    soft = F.kl_div(F.log_softmax(student / temperature, dim=-1),
                    F.log_softmax(teacher / temperature, dim=-1),
                    reduction="none", log_target=True).sum(dim=-1)
    soft_weight = torch.where(gold, torch.full_like(soft, weight), torch.ones_like(soft))
    return ((1 - weight) * hard + soft_weight * temperature ** 2 * soft).mean()


def relation_loss(student_vectors: torch.Tensor, teacher_vectors: torch.Tensor) -> torch.Tensor:
    """The mean over the batch's pairs (i, j) of (cos(s_i, s_j) - cos(t_i, t_j))^2: how far
    the student's pairwise cosine similarities are from the teacher's, in fp32. Neither the
    vectors' widths nor their lengths matter, so the student needs no projection to the
    teacher's width (similarity-preserving distillation, Tung & Mori 2019, with cosines)."""
    import torch.nn.functional as F

    student = F.normalize(student_vectors.float(), dim=-1)
    teacher = F.normalize(teacher_vectors.to(student.device).float(), dim=-1)
    return ((student @ student.T - teacher @ teacher.T) ** 2).mean()


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
    precision = labelling_precision(cfg.teacher_precision)  # scored as it labels the train rows
    record: dict[str, Any] = {}
    for split in splits:
        texts, labels = list(dataset[split]["text"]), np.asarray(dataset[split]["label"])
        logits, info = cached_logits(folder, texts, cfg.eval_batch_size, log, precision)
        loss = -log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(labels)), labels]
        record[split] = {"loss": float(loss.mean()),
                         **get_task(cfg.task).compute_metrics((logits, labels))}
    return {"path": info["path"], "sha256": info["sha256"], "max_length": info["max_length"],
            "precision": precision, "distill_weight": cfg.distill_weight,
            "distill_temperature": cfg.distill_temperature,
            "distill_augment": cfg.distill_augment,
            "distill_relation_weight": cfg.distill_relation_weight,
            "transfer_copies": cfg.distill_augment * len(dataset["train"]), **record}


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
