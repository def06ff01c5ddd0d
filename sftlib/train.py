"""Build and run a `transformers.Trainer` from a RunConfig, for both tasks.

Trainer brings the loop, checkpointing, accelerate / torchrun / FSDP; this module only
chooses settings and adds what Trainer lacks:
- the seed tutorial's schedules (`sftlib.schedules`) via `create_scheduler`;
- device, precision and attention chosen automatically, with one log line saying what
  was chosen (`Hardware.describe`);
- the RunConfig saved into every checkpoint folder, so each artifact carries its manifest;
- resumed runs that end where uninterrupted ones end (`WorkbenchTrainer` says what Trainer
  lacks for that), earlier runs in the same folder kept (`archive_previous_run`), a full
  disk named in one line (`DiskFullError`).

Performance defaults, each measured in `benchmarks/` (figures in `reports/benchmarks/`):
dynamic padding (the task's collator pads each batch to its longest example), length-grouped
batches, bf16 autocast with fp32 master weights on
GPUs and on CPUs with AMX / AVX512-BF16 (`cpu_has_native_bf16`), tf32 matmuls on CUDA, fused
AdamW on CUDA and CPU, SDPA attention, torch.compile off (`torch_compile` turns it on). Weight
decay skips biases and LayerNorm weights (Trainer's `get_decay_parameter_names`).

Recipe options (classification): layer-wise LR decay builds the optimizer's param groups
(`sftlib.layerwise`); weight averaging keeps an EMA of the weights that every evaluation,
checkpoint and the final model use (`sftlib.averaging`).

What differs by task (data, encoding, model, collator, evaluation, saving) comes from the
task object (`sftlib.tasks`), chosen once from `cfg.task`; nothing here branches on the task.

Not supported: custom training loops (Trainer's is used), training several models at once.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from safetensors import SafetensorError
from torch.utils.data import SequentialSampler
from transformers import (
    EarlyStoppingCallback,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import has_length

from sftlib import averaging, distill, layerwise, schedules, tokens
from sftlib.config import RunConfig
from sftlib.filemodes import match_umask
from sftlib.hardware import cpu_has_native_bf16  # detect_hardware asks it
from sftlib.report import write_json_atomic
from sftlib.tasks import get_task

log = logging.getLogger("sftlib.train")
CONFIG_FILENAME = "run_config.json"


@dataclass(frozen=True)
class Hardware:
    """What the run will use, decided once from the machine and the config."""

    device: str  # "cuda", "mps" or "cpu"
    name: str
    bf16: bool
    fp16: bool
    attn_implementation: str

    def describe(self) -> str:
        precision = "bf16 autocast" if self.bf16 else "fp16 autocast" if self.fp16 else "fp32"
        return (f"device={self.device} ({self.name}), precision={precision}, "
                f"attention={self.attn_implementation}")


def detect_hardware(precision: str = "auto") -> Hardware:
    """CUDA if present, else MPS, else CPU; with precision "auto", bf16 autocast where the
    GPU or CPU computes bf16 natively, fp32 elsewhere."""
    if torch.cuda.is_available():
        device, name = "cuda", torch.cuda.get_device_name(0)
        has_bf16 = torch.cuda.is_bf16_supported()
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        device, name, has_bf16 = "mps", "Apple MPS", False
    else:
        device, name, has_bf16 = "cpu", f"{os.cpu_count()} CPU threads", cpu_has_native_bf16()
    if precision == "bf16" and device == "cuda" and not has_bf16:
        raise ValueError("precision: bf16 was asked for but this GPU does not support it; "
                         "use precision=fp16 or auto")
    if precision == "fp16" and device == "cpu":
        raise ValueError("precision: fp16 needs a GPU; use precision=fp32 or auto on CPU")
    bf16 = precision == "bf16" or (precision == "auto" and has_bf16)
    fp16 = precision == "fp16"
    return Hardware(device, name, bf16, fp16, "sdpa")


def training_arguments(cfg: RunConfig, output_dir: str | Path, hardware: Hardware,
                       ) -> TrainingArguments:
    """Map RunConfig onto TrainingArguments (the performance defaults live here)."""
    evaluating = cfg.eval_strategy != "no"
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        # torch's fused AdamW: one kernel over all tensors instead of a loop of small ops;
        # the same update (reports/benchmarks/notes.md)
        optim="adamw_torch_fused" if hardware.device in ("cuda", "cpu") else "adamw_torch",
        bf16=hardware.bf16,
        fp16=hardware.fp16,
        tf32=True if hardware.device == "cuda" else None,
        # packed rows are all about max_length long: grouping them by length gains nothing
        train_sampling_strategy="group_by_length" if cfg.group_by_length and not cfg.packing
        else "random",
        torch_compile=cfg.torch_compile,
        eval_strategy=cfg.eval_strategy,
        eval_steps=cfg.eval_steps if cfg.eval_strategy == "steps" else None,
        save_strategy=cfg.eval_strategy if evaluating else "epoch",
        save_steps=cfg.eval_steps if cfg.eval_strategy == "steps" else None,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=evaluating,
        metric_for_best_model=cfg.metric_for_best if evaluating else None,
        greater_is_better=cfg.metric_for_best != "loss",
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        # per-example means must not be token-averaged across processes (torchrun would
        # scale them by the number of processes); token means must
        average_tokens_across_devices=get_task(cfg.task).token_averaged_loss,
        seed=cfg.seed,
        full_determinism=cfg.deterministic,
        # a resumed run's early stopping goes on counting evaluations without improvement
        restore_callback_states_from_checkpoint=True,
        report_to="none",
        disable_tqdm=True,  # the live plot is the progress display
        dataloader_num_workers=0,
        # accelerate runs multi-process CPU training (torchrun, gloo) only when told "cpu"
        use_cpu=hardware.device == "cpu",
        dataloader_pin_memory=hardware.device == "cuda",
    )


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Trainer's length-grouped sampler, shuffled by a generator seeded with seed + epoch.

    Trainer's own draws its shuffle from the global torch RNG when an epoch starts, so a run
    resumed in the middle of epoch 1 or later shuffles that epoch differently from the
    uninterrupted run (the RNG is then where `set_seed` left it, not where epoch 0's
    dropout left it). Seeded per epoch, as accelerate's SeedableRandomSampler does for the
    "random" strategy, every process and every resume draws the same order; Trainer calls
    `set_epoch` at each epoch's start (through accelerate's loader, skipped batches too)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


LOSS_STATE_FILENAME = "loss_state_{process}.json"


class WorkbenchTrainer(Trainer):
    """Trainer whose scheduler is `sftlib.schedules`, whose logs carry the task's derived
    values, whose checkpoints hold the config, and whose resumed runs reproduce the
    uninterrupted one (every logged value and metric but the timings, on a deterministic
    device; tests/test_resume.py kills runs to check it). For that it adds to Trainer:

    - the length-grouped shuffle seeded per epoch (`EpochSeededLengthGroupedSampler`);
    - the loss sums in each checkpoint (`loss_state_<process>.json`): Trainer starts them at
      zero on resume, so the first logged loss after a checkpoint between two logging steps
      and the final `train_loss` covered only part of the steps;
    - `train_loss` (Trainer's closing record, `TrainOutput`) is the mean over all the run's
      steps, not over the resumed call's;
    - a run resumed from its last checkpoint (killed before the model was saved) takes no
      more steps; Trainer took one past `max_steps` when they end inside an epoch;
    - the best checkpoint is found again by its step in the run folder, so a moved folder
      keeps it;
    - with `weight_averaging=ema`, the average in each checkpoint (as its model weights,
      the trained ones in `averaging.TRAINING_WEIGHTS`), put back on resume.
    - distillation (`sftlib.distill`): a train batch that carries `teacher_logits` is scored
      with `distill.distillation_loss`, plus `distill.relation_loss` on the student's sentence
      vectors when it carries `teacher_vectors`; evaluation batches carry none (plain
      cross-entropy).
    - with `grad_accum_steps` > 1, a task whose loss is a per-example mean (classification,
      distillation) has each micro-batch's loss divided by the accumulation steps, as one
      large batch would (Trainer divides only losses it does not take as token-normalized).

    These touch Trainer internals of transformers 5 (`_init_training_state`, the loss sums
    `_total_loss_scalar`, `_tr_loss`, `_globalstep_last_logged`); the resume tests fail
    loudly if a release changes them. Exact only in one process: under torchrun a process
    killed before writing its loss state resumes with Trainer's zeroed sums."""

    def __init__(self, *args: Any, run_config: RunConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_config = run_config
        self.task = get_task(run_config.task)
        if not self.task.token_averaged_loss:
            # A mean over the batch's examples: Trainer must divide it by the accumulation
            # steps. It would not, for a model whose forward takes **kwargs (it takes the loss
            # as scaled by num_items_in_batch), doubling loss and gradients at 2 steps.
            self.loss_is_scaled_for_ga = False
        self._carried_loss: dict[str, float] | None = None
        self._loss_sums_cover_the_run = True  # False: resumed from a checkpoint without them
        self.add_callback(_ContinueLossSums(self))
        # recipe options (sftlib.layerwise, sftlib.averaging)
        if run_config.layerwise_lr_decay != 1.0:  # refuse a model it cannot split, now
            layerwise.assign_blocks(n for n, p in self.model.named_parameters()
                                    if p.requires_grad)
        self.weight_average: averaging.WeightAverage | None = None
        self._averaging = False  # True while training: the model holds the trained weights
        self._best_model_loaded = False
        if run_config.weight_averaging == "ema":
            plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
            averaging.refuse_sharded_weights(self.is_fsdp_enabled,
                                             getattr(plugin, "zero_stage", None))
            self.add_callback(_UpdateWeightAverage(self))

    def create_optimizer(self, model=None):
        """Trainer's optimizer; with layer-wise LR decay, on `layerwise.param_groups`."""
        decay = self.run_config.layerwise_lr_decay
        if self.optimizer is None and decay != 1.0:
            opt_model = self.model if model is None else model
            optimizer_cls, kwargs = (self.optimizer_cls_and_kwargs
                                     or self.get_optimizer_cls_and_kwargs(self.args, opt_model))
            groups = layerwise.param_groups(opt_model, self.args.learning_rate, decay,
                                            self.args.weight_decay,
                                            self.get_decay_parameter_names(opt_model))
            self.optimizer = optimizer_cls(groups, **kwargs)
        return super().create_optimizer(model)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = schedules.make_scheduler(
                optimizer or self.optimizer, self.run_config, num_training_steps)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # distillation ---------------------------------------------------------------------
    def _set_signature_columns_if_needed(self) -> None:
        """Trainer keeps only the columns `forward` takes (remove_unused_columns): the
        teacher's logits and sentence vectors are for `compute_loss`, so they are kept too."""
        super()._set_signature_columns_if_needed()
        for column in distill.TRAIN_ONLY_COLUMNS:
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Trainer's loss; with the teacher's logits in the batch (train split only), the
        distillation loss of the same forward pass instead, plus the relation term on the
        student's sentence vectors (asked of the same forward) when the batch has the
        teacher's."""
        teacher_logits = inputs.pop(distill.TEACHER_COLUMN, None)
        teacher_vectors = inputs.pop(distill.VECTORS_COLUMN, None)
        relation_weight = self.run_config.distill_relation_weight
        if teacher_logits is not None and relation_weight > 0 and teacher_vectors is None:
            # a batch without them would train without the term, silently
            raise RuntimeError("distill_relation_weight is set but the train batch carries "
                               f"no {distill.VECTORS_COLUMN}: the data pipeline dropped them")
        if teacher_vectors is not None:
            inputs = {**inputs, "output_sentence_vectors": True}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        if teacher_logits is not None:
            loss = distill.distillation_loss(outputs.logits, teacher_logits, inputs["labels"],
                                             self.run_config.distill_weight,
                                             self.run_config.distill_temperature)
        if teacher_vectors is not None:
            loss = loss + relation_weight * distill.relation_loss(outputs.sentence_vectors,
                                                                  teacher_vectors)
        return (loss, outputs) if return_outputs else loss

    def _get_eval_sampler(self, eval_dataset):
        """In the dataset's order. Trainer 5 length-groups evaluation batches too when training
        does, in a seeded random order, so `predict` returned its rows shuffled; here the
        evaluation sets are put in length order beforehand instead (`tokens.eval_rows`, the
        classification task's `evaluate_with_predictions`), as cheap to pad and in a known
        order. Under torchrun Trainer's own (accelerate shards the set)."""
        if self.args.world_size > 1 or eval_dataset is None or not has_length(eval_dataset):
            return super()._get_eval_sampler(eval_dataset)
        return SequentialSampler(eval_dataset)

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any,
              **kwargs: Any):
        """Trainer.train; `resume_from_checkpoint=True` means the last *complete* one."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = resume_checkpoint(self.args.output_dir, True)
        self._carried_loss = (_read_loss_state(resume_from_checkpoint, self.args.process_index)
                              if resume_from_checkpoint else None)
        self._loss_sums_cover_the_run = not resume_from_checkpoint or bool(self._carried_loss)
        self.weight_average, self._best_model_loaded = None, False
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        self._end_weight_averaging()
        # `log` has made the closing record's train_loss, this same dict, the run's mean
        return output._replace(training_loss=output.metrics["train_loss"])

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs,
                             resume_from_checkpoint, trial):
        epochs_trained, batches_to_skip = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint,
            trial)
        self._find_best_checkpoint_here()
        if resume_from_checkpoint is not None and self.state.global_step >= max_steps:
            return num_train_epochs, 0  # every step is done: no epoch left to run
        return epochs_trained, batches_to_skip

    # weight averaging (sftlib.averaging) ---------------------------------------------

    def start_weight_averaging(self) -> None:
        """At the start of training: a fresh average, unless a resumed checkpoint's is here."""
        if self.weight_average is None:
            self.weight_average = averaging.WeightAverage(self.model, self.run_config.ema_decay)
        self._averaging = True

    def _end_weight_averaging(self) -> None:
        """The model keeps the averaged weights: the best checkpoint's (Trainer has loaded
        them), else the average of the last step."""
        if self._averaging and not self._best_model_loaded:
            self.weight_average.copy_to_model()
        self._averaging = False

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.run_config.weight_averaging == "ema":  # the model now holds the average
            self.weight_average = averaging.WeightAverage(self.model, self.run_config.ema_decay)
            self.weight_average.resume_from(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        self._best_model_loaded = True

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        if not self._averaging:
            return super().evaluate(*args, **kwargs)
        with self.weight_average.swapped_in():
            return super().evaluate(*args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not self._averaging:
            return super().save_model(output_dir, _internal_call)
        with self.weight_average.swapped_in():
            return super().save_model(output_dir, _internal_call)

    def _find_best_checkpoint_here(self) -> None:
        """The resumed state names its best checkpoint by path; a run folder moved since
        would lose it (Trainer drops a path that is gone), so look it up by step here."""
        if self.state.best_global_step:
            here = Path(self.args.output_dir) / f"checkpoint-{self.state.best_global_step}"
            if here.is_dir():
                self.state.best_model_checkpoint = str(here)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        self.task.add_log_metrics(logs)
        if "train_loss" in logs and self._loss_sums_cover_the_run:
            # the closing record: Trainer's mean is over this train() call's steps only
            logs["train_loss"] = self._total_loss_scalar / max(self.state.global_step, 1)
        super().log(logs, *args, **kwargs)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """Weights tied to loaded ones (a causal LM's output head shares the embedding) are
        not missing: tie them instead of warning about them in the notebook."""
        tied = set(getattr(self.model, "_tied_weights_keys", None) or ())
        missing = set(load_result.missing_keys)
        if missing and missing <= tied:
            self.model.tie_weights()
            load_result = load_result._replace(missing_keys=[])
        super()._issue_warnings_after_load(load_result)

    def _save_checkpoint(self, model, trial):
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        with naming_a_full_disk(folder):
            super()._save_checkpoint(model, trial)
            if not folder.is_dir():
                return
            self._save_loss_state(folder)
            if self._averaging and self.args.should_save:
                self.weight_average.save_training_weights(folder)
            if self.args.should_save:  # rank 0 only; written last: it marks the folder complete
                self.run_config.save(folder / CONFIG_FILENAME)
                match_umask(folder)  # safetensors writes 0600 whatever the umask

    def _save_loss_state(self, folder: Path) -> None:
        """This process's loss sums, as Trainer holds them between two logging steps."""
        state = {"total": self._total_loss_scalar, "since_last_log": self._tr_loss.item(),
                 "last_logged_step": self._globalstep_last_logged}
        path = folder / LOSS_STATE_FILENAME.format(process=self.args.process_index)
        path.write_text(json.dumps(state) + "\n")

    def restore_loss_sums(self) -> None:
        """Put the resumed checkpoint's loss sums back (Trainer has just zeroed them)."""
        if self._carried_loss is None:
            return
        self._total_loss_scalar = self._carried_loss["total"]
        self._tr_loss.fill_(self._carried_loss["since_last_log"])  # float32 to float32: exact
        self._globalstep_last_logged = self._carried_loss["last_logged_step"]


def _read_loss_state(checkpoint: str | Path, process: int) -> dict[str, float] | None:
    """A checkpoint's loss sums for one process; None for checkpoints written without."""
    path = Path(checkpoint) / LOSS_STATE_FILENAME.format(process=process)
    return json.loads(path.read_text()) if path.is_file() else None


class _ContinueLossSums(TrainerCallback):
    """Trainer zeroes its loss sums right before `on_train_begin`: that is when a resumed
    run's are put back."""

    def __init__(self, trainer: WorkbenchTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.restore_loss_sums()


class _UpdateWeightAverage(TrainerCallback):
    """The average starts with training and moves after every optimizer step (Trainer
    counts the step after this callback: `state.global_step` is the steps taken before)."""

    def __init__(self, trainer: WorkbenchTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.start_weight_averaging()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.weight_average.update(state.global_step)


def build_trainer(cfg: RunConfig, model, tokenizer: PreTrainedTokenizerBase,
                  tokenized: datasets.DatasetDict, output_dir: str | Path, hardware: Hardware,
                  callbacks: list[TrainerCallback] | None = None,
                  args: TrainingArguments | None = None) -> WorkbenchTrainer:
    """The Trainer for a RunConfig; `args` replaces `training_arguments(...)` (benchmarks)."""
    callbacks = list(callbacks or [])
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience))
    task = get_task(cfg.task)
    multiple = 8 if hardware.device == "cuda" else None  # tensor cores want multiples of 8
    trainer = WorkbenchTrainer(
        model=model,
        args=args or training_arguments(cfg, output_dir, hardware),
        train_dataset=tokenized["train"].select_columns(
            tokens.model_columns(tokenized["train"])),
        eval_dataset=tokens.eval_rows(tokenized["validation"]),
        processing_class=tokenizer,
        data_collator=task.collator(tokenizer, multiple),
        compute_metrics=task.compute_metrics,
        callbacks=callbacks,
        run_config=cfg,
    )
    trainer.remove_callback(PrinterCallback)  # the live callback prints concise lines instead
    return trainer


def complete_checkpoints(folder: str | Path) -> list[Path]:
    """checkpoint-<step> folders that finished writing (trainer state and config present),
    newest first: a process killed mid-save leaves an incomplete one, which is skipped."""
    folder = Path(folder)
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
             and (p / "trainer_state.json").is_file() and (p / CONFIG_FILENAME).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def resume_checkpoint(checkpoint_dir: str | Path, resume: bool) -> str | None:
    """The last complete checkpoint to resume from, or None when not resuming."""
    if not resume:
        return None
    found = complete_checkpoints(checkpoint_dir)
    if not found:
        raise FileNotFoundError(f"--resume: no complete checkpoint-* folder in {checkpoint_dir}")
    return str(found[0])


# What a training stage writes into its run folder. Moved aside whole by a fresh run:
# (notebook 03 draws the schedule it trains)
TRAINING_OUTPUTS = ("checkpoints", "model", "metrics.jsonl", "predictions", "tensorboard",
                    "figures/training.png", "figures/lr_schedules.png")
# ...and its sections of metrics.json, which also holds sections of other stages (notebooks
# 01 / 02 of the current run write "data", "tokens"): that file is copied, never moved.
TRAINING_SECTIONS = ("before_training", "training", "validation", "test",
                     "teacher")  # distillation: the teacher's scores (sftlib.distill)


def archive_previous_run(output_dir: str | Path, log_fn=print) -> Path | None:
    """A fresh (not resumed) run in a folder that already holds training outputs keeps
    them in previous-<time>/ and says so in one line: nothing is overwritten.

    `TRAINING_OUTPUTS` are moved there (same relative paths); metrics.json is copied there
    whole and the training sections are removed from the folder's own, so they are never
    read as the new run's. Other stages' files (tables, notebook figures) are left alone.
    """
    from datetime import datetime

    output_dir = Path(output_dir)
    moving = [name for name in TRAINING_OUTPUTS if (output_dir / name).exists()]
    sections = _training_sections(output_dir / "metrics.json")
    if not moving and not sections:
        return None
    archive = output_dir / f"previous-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    archive.mkdir(parents=True)
    for name in moving:
        (archive / name).parent.mkdir(parents=True, exist_ok=True)
        (output_dir / name).rename(archive / name)
    done = [f"moved {', '.join(moving)}"] if moving else []
    if sections:
        _archive_metrics_json(output_dir / "metrics.json", archive / "metrics.json", sections)
        done.append(f"copied metrics.json (its {', '.join(sections)} sections removed here)")
    log_fn(f"[train] {output_dir} held an earlier run, kept in {archive}: {'; '.join(done)}")
    return archive


def _training_sections(metrics_path: Path) -> list[str]:
    """The training stage's sections present in a metrics.json (none if there is none)."""
    if not metrics_path.is_file():
        return []
    metrics = json.loads(metrics_path.read_text())
    return [name for name in TRAINING_SECTIONS if name in metrics]


def _archive_metrics_json(metrics_path: Path, archive_path: Path, sections: list[str]) -> None:
    """Copy metrics.json whole to the archive, then drop `sections` from the original."""
    shutil.copy2(metrics_path, archive_path)
    metrics = json.loads(metrics_path.read_text())
    write_json_atomic(metrics_path, {k: v for k, v in metrics.items() if k not in sections})


def check_resume_config(checkpoint: str | None, cfg: RunConfig) -> None:
    """A resumed run must continue the same config (output_dir aside)."""
    if checkpoint is None:
        return
    saved_path = Path(checkpoint) / CONFIG_FILENAME
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text())
    differing = {k: (saved.get(k), v) for k, v in cfg.to_dict().items()
                 if k != "output_dir" and saved.get(k) != v}
    if differing:
        raise ValueError(f"--resume: {checkpoint} was written with a different config "
                         f"(key: (saved, now)) {differing}; resume with the same settings")


def save_final(trainer: Trainer, cfg: RunConfig, folder: str | Path) -> Path:
    """Model + tokenizer + RunConfig in one folder that `from_pretrained` loads (how the
    model is written is the task's: LoRA runs are saved merged). File modes follow the
    umask (`sftlib.filemodes`: safetensors alone would leave the weights 0600). A full disk
    is a `DiskFullError` naming the folder."""
    folder = Path(folder)
    with naming_a_full_disk(folder):
        get_task(cfg.task).save_model(trainer, folder)
        if trainer.args.should_save:
            cfg.save(folder / CONFIG_FILENAME)
            match_umask(folder)
    return folder


class DiskFullError(OSError):
    """Writing `path` failed because its filesystem is full; str() is the one line to show:
    `no space left on DEVICE while writing PATH`."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(errno.ENOSPC, f"no space left on {_filesystem_of(Path(path))} "
                         f"while writing {path}", str(path))

    def __str__(self) -> str:
        return self.strerror


@contextmanager
def naming_a_full_disk(path: str | Path):
    """Saving into `path`: an error that says the disk is full becomes a `DiskFullError`
    naming `path` (or the file the error names); other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise  # already names what was being written, more precisely than `path`
    except (OSError, RuntimeError, SafetensorError) as error:
        if not is_disk_full(error, Path(path)):
            raise
        raise DiskFullError(getattr(error, "filename", None) or path) from error


def is_disk_full(error: BaseException, path: Path) -> bool:
    """An error from writing under `path` that comes from a full filesystem.

    Supported: OSError with errno ENOSPC; safetensors' error, whose text carries the Rust
    io error ("No space left on device", os error 28); torch.save's RuntimeError, which
    carries no errno ("file write failed", "unexpected pos"), counted as disk-full only when
    the filesystem under `path` has no space left now. Not supported: quotas (EDQUOT)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error)
    if "No space left on device" in text or "os error 28" in text:
        return True
    return isinstance(error, RuntimeError) and _free_bytes(path) == 0


def _free_bytes(path: Path) -> int | None:
    """Bytes a non-root writer can still use on the filesystem holding `path`."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    try:
        return shutil.disk_usage(existing).free if existing else None
    except OSError:
        return None


def _filesystem_of(path: Path) -> str:
    """The device and mount point holding `path` ("/dev/vda1 (/)", from /proc/mounts on
    Linux), or the mount point alone where the device is unknown."""
    mount = path.absolute()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        mounts = [line.split()[:2] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        mounts = []
    devices = {point: device for device, point in mounts}
    return f"{devices[str(mount)]} ({mount})" if str(mount) in devices else str(mount)


# one call per stage: what notebook 03 and `sftlib train` both use ---------------------

@dataclass
class TrainingRun:
    """Everything a training stage built, kept together for the notebook to inspect."""

    cfg: RunConfig
    hardware: Hardware
    dataset: datasets.DatasetDict
    tokenizer: PreTrainedTokenizerBase
    tokenized: datasets.DatasetDict
    max_length: int
    trainer: WorkbenchTrainer
    live: Any  # sftlib.live.LivePlotCallback

    @property
    def total_steps(self) -> int:
        return planned_steps(self.cfg, len(self.tokenized["train"]), self.trainer.args.world_size)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def planned_steps(cfg: RunConfig, train_rows: int, world_size: int = 1) -> int:
    """Optimizer steps the run will take (what the schedule spans)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = -(-train_rows // (cfg.batch_size * world_size))
    per_epoch = max(-(-batches // cfg.grad_accum_steps), 1)  # as Trainer counts them
    return math.ceil(cfg.epochs * per_epoch)


def prepare_training(cfg: RunConfig, output_dir: str | Path, notebook: bool | None = None,
                     log_fn=print, resume: bool = False) -> TrainingRun:
    """Data, tokenizer, model and Trainer with the live-plot callback, ready to `.train()`.

    The data is loaded and the task's preflight checks run first (the ones `sftlib run`
    runs: model folder, data refusals, strict_data), so a refused run fails before any
    model is loaded or any output is moved. Then, unless `resume`, earlier training outputs
    in `output_dir` are archived.
    """
    from sftlib.live import LivePlotCallback

    task = get_task(cfg.task)
    output_dir = Path(output_dir)
    dataset = task.load_data(cfg)
    task.preflight(cfg, log_fn, dataset)
    if not resume and _is_main_process():
        archive_previous_run(output_dir, log_fn)
    hardware = detect_hardware(cfg.precision)
    log_fn(f"[train] {hardware.describe()}")
    tokenizer = tokens.load_tokenizer(cfg.model)
    max_length, tokenized = task.encode(cfg, dataset, tokenizer, log_fn)
    model = task.build_model(cfg, dataset, hardware, log_fn)
    live = LivePlotCallback(output_dir / "metrics.jsonl", output_dir / "figures" / "training.png",
                            interval_s=cfg.plot_interval_s, metric=task.live_metric(cfg),
                            notebook=notebook, print_fn=log_fn, max_share=cfg.plot_max_share)
    trainer = build_trainer(cfg, model, tokenizer, tokenized, output_dir / "checkpoints",
                            hardware, callbacks=[live, *tracker_callbacks(cfg, output_dir)])
    return TrainingRun(cfg, hardware, dataset, tokenizer, tokenized, max_length, trainer, live)


def tracker_callbacks(cfg: RunConfig, output_dir: Path) -> list[TrainerCallback]:
    """Trainer's own TensorBoard callback when `report_to="tensorboard"`, writing to
    `<run>/tensorboard/` (Trainer's default is under checkpoints/, which a fresh run in the
    same folder archives). metrics.jsonl stays the record sftlib reads."""
    if cfg.report_to != "tensorboard":
        return []
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(output_dir / "tensorboard")
    return [callback]


def evaluate_splits(run: TrainingRun, splits: tuple[str, ...] = ("validation", "test"),
                    predictions_dir: str | Path | None = None) -> dict[str, dict[str, float]]:
    """The task's metrics of the (best) model on each split (classification: loss,
    accuracy, macro-F1; instruction: loss per response token, perplexity, tokens).

    With `predictions_dir`, the per-example rows of the same pass go to
    `<predictions_dir>/<split>.csv` where the task has them (classification): what
    `sftlib compare` pairs runs on."""
    task = get_task(run.cfg.task)
    if predictions_dir is None:
        return task.evaluate(run.trainer, run.tokenized, splits)
    scores, frames = task.evaluate_with_predictions(run.trainer, run.tokenized, splits)
    if frames and _is_main_process():
        Path(predictions_dir).mkdir(parents=True, exist_ok=True)
        for split, frame in frames.items():
            frame.to_csv(Path(predictions_dir) / f"{split}.csv", index=False)
    return scores


def training_summary(run: TrainingRun, train_output) -> dict[str, Any]:
    """What metrics.json records about the training itself."""
    metrics = train_output.metrics
    return {
        "steps": run.trainer.state.global_step,
        "epochs": round(run.trainer.state.epoch or 0, 3),
        "runtime_s": round(metrics.get("train_runtime", 0.0), 1),
        "samples_per_s": round(metrics.get("train_samples_per_second", 0.0), 2),
        "final_train_loss": round(metrics.get("train_loss", float("nan")), 4),
        "max_length": run.max_length,
        "best_checkpoint": run.trainer.state.best_model_checkpoint,
        "hardware": run.hardware.describe(),
        "plot_share_of_training": round(run.live.plot_share, 4),
        "plot_redraws": run.live.redraws,
    }
