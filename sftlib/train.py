"""Build and run a `transformers.Trainer` from a RunConfig, for both tasks.

Trainer brings the loop, checkpointing, accelerate / torchrun / FSDP; this module only
chooses settings and adds what Trainer lacks:
- the seed tutorial's schedules (`sftlib.schedules`) via `create_scheduler`;
- device, precision and attention chosen automatically, with one log line saying what
  was chosen (`Hardware.describe`);
- the RunConfig saved into every checkpoint folder, so each artifact carries its manifest.

Performance defaults, each measured in `benchmarks/` (README, "Speed"): dynamic padding
(`DataCollatorWithPadding`), length-grouped batches, bf16 autocast with fp32 master weights on
GPUs and on CPUs with AMX / AVX512-BF16 (`cpu_has_native_bf16`), tf32 matmuls and fused AdamW
on CUDA, SDPA attention, torch.compile off (`torch_compile` turns it on). Weight decay skips
biases and LayerNorm weights (Trainer's `get_decay_parameter_names`).

Task "instruction" (causal-LM SFT) branches inside the same functions: chats are encoded
with response-only labels by `sftlib.instruct` (optionally packed), the model is an
`AutoModelForCausalLM` with the KV cache off while training (transformers 5 skips the
packed-sequence mask whenever a cache exists), optionally wrapped in LoRA adapters
(`apply_lora`, peft), and `save_final` merges the adapters so the saved folder is a plain
model. Its metrics are the exact mean cross-entropy per response token and its exponential,
the perplexity (`lm_loss`); Trainer's own eval_loss, plotted live, is a mean of batch means.
Trainer plus `sftlib.instruct.CausalLMCollator`, not TRL's SFTTrainer: see `sftlib.instruct`.

Not supported: multi-label or regression heads, sentence pairs, reward / preference
training, QLoRA (4-bit bases).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from sftlib import assets, schedules
from sftlib.config import RunConfig
from sftlib.instruct import CausalLMCollator

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


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True on x86 CPUs with AMX or AVX512-BF16 (Linux flags), where bf16 matmuls run in
    hardware: bf16 autocast trained MiniLM 1.2x faster than fp32 on such a 2-core machine
    (benchmarks/bench_train.py --ablations). Elsewhere bf16 is emulated and slower."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return any(flag in cpuinfo.split() for flag in ("amx_bf16", "avx512_bf16"))


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


def compute_metrics(eval_pred) -> dict[str, float]:
    """Accuracy and macro-F1 from Trainer's (logits, labels)."""
    logits, labels = eval_pred
    predictions = np.asarray(logits).argmax(axis=-1)
    return {"accuracy": float(accuracy_score(labels, predictions)),
            "f1": float(f1_score(labels, predictions, average="macro"))}


def build_model(cfg: RunConfig, label_names: list[str], hardware: Hardware):
    """The pretrained encoder with a fresh classification head for `label_names`."""
    set_seed(cfg.seed)  # the head's initialization depends on it
    return AutoModelForSequenceClassification.from_pretrained(
        assets.resolve_model(cfg.model),
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        attn_implementation=hardware.attn_implementation,
        # fp32 master weights whatever the checkpoint holds (transformers 5 loads an fp16/bf16
        # checkpoint in its own dtype); bf16/fp16 come from autocast, not from the weights
        dtype=torch.float32,
    )


def build_causal_lm(cfg: RunConfig, hardware: Hardware):
    """The pretrained causal LM (fp32 weights; autocast decides the compute precision),
    with the KV cache off for training: with a cache, transformers 5 ignores the example
    boundaries that packed position_ids mark. Wrapped in LoRA adapters when cfg.lora."""
    set_seed(cfg.seed)  # LoRA's adapter initialization depends on it
    model = AutoModelForCausalLM.from_pretrained(
        assets.resolve_model(cfg.model), attn_implementation=hardware.attn_implementation,
        dtype=torch.float32)
    model.config.use_cache = False
    return apply_lora(model, cfg) if cfg.lora else model


def apply_lora(model, cfg: RunConfig):
    """peft LoRA adapters on `cfg.lora_target_modules` ("all-linear": every linear layer but
    the output head); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_target_modules.strip()
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=targets if targets == "all-linear"
                        else [t.strip() for t in targets.split(",") if t.strip()],
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def trainable_share(model) -> dict[str, float]:
    """Trainable and total parameters, and the trainable share (LoRA: a few percent)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "share": trainable / total}


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
        optim="adamw_torch_fused" if hardware.device == "cuda" else "adamw_torch",
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
        # classification loss is a per-example mean; Trainer's token averaging would scale it
        # by the number of processes under torchrun (seen: loss 1.39 instead of 0.69 on 2 ranks).
        # The causal-LM loss is a mean over response tokens: averaged over all processes' tokens
        average_tokens_across_devices=cfg.task == "instruction",
        seed=cfg.seed,
        full_determinism=cfg.deterministic,
        report_to="none",
        disable_tqdm=True,  # the live plot is the progress display
        dataloader_num_workers=0,
        # accelerate runs multi-process CPU training (torchrun, gloo) only when told "cpu"
        use_cpu=hardware.device == "cpu",
        dataloader_pin_memory=hardware.device == "cuda",
    )


class WorkbenchTrainer(Trainer):
    """Trainer whose scheduler is `sftlib.schedules` and whose checkpoints hold the config."""

    def __init__(self, *args: Any, run_config: RunConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_config = run_config

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = schedules.make_scheduler(
                optimizer or self.optimizer, self.run_config, num_training_steps)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds the perplexity next to every evaluation loss of the instruction task."""
        if self.run_config.task == "instruction":
            for key in [k for k in logs if k.endswith("_loss") and k != "train_loss"]:
                logs[key.removesuffix("loss") + "perplexity"] = math.exp(min(logs[key], 50.0))
        super().log(logs, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:  # rank 0 only
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            if folder.is_dir():
                self.run_config.save(folder / CONFIG_FILENAME)


def build_trainer(cfg: RunConfig, model, tokenizer: PreTrainedTokenizerBase,
                  tokenized: datasets.DatasetDict, output_dir: str | Path, hardware: Hardware,
                  callbacks: list[TrainerCallback] | None = None,
                  args: TrainingArguments | None = None) -> WorkbenchTrainer:
    """The Trainer for a RunConfig; `args` replaces `training_arguments(...)` (benchmarks)."""
    callbacks = list(callbacks or [])
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience))
    multiple = 8 if hardware.device == "cuda" else None
    if cfg.task == "instruction":
        collator = CausalLMCollator(tokenizer.pad_token_id, pad_to_multiple_of=multiple)
        metrics_fn = None  # loss only: logits of a whole split over a 49k vocabulary are GBs
    else:
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)
        metrics_fn = compute_metrics
    trainer = WorkbenchTrainer(
        model=model,
        args=args or training_arguments(cfg, output_dir, hardware),
        train_dataset=tokenized["train"].select_columns(model_columns(tokenized["train"])),
        eval_dataset=tokenized["validation"].select_columns(
            model_columns(tokenized["validation"])),
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=metrics_fn,
        callbacks=callbacks,
        run_config=cfg,
    )
    trainer.remove_callback(PrinterCallback)  # the live callback prints concise lines instead
    return trainer


def model_columns(ds: datasets.Dataset) -> list[str]:
    """The columns the model reads: the rest (counts, lengths) stays out of the batches."""
    wanted = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "label", "labels")
    return [c for c in wanted if c in ds.column_names]


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


def archive_previous_run(output_dir: str | Path, log_fn=print) -> Path | None:
    """A fresh (not resumed) run in a folder that already holds training outputs moves
    them to previous-<time>/ and says so: nothing is overwritten silently."""
    from datetime import datetime

    output_dir = Path(output_dir)
    existing = [output_dir / name for name in ("checkpoints", "metrics.jsonl", "model")
                if (output_dir / name).exists()]
    if not existing:
        return None
    archive = output_dir / f"previous-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    archive.mkdir(parents=True)
    for path in existing:
        path.rename(archive / path.name)
    log_fn(f"[train] {output_dir} held an earlier run; moved "
           f"{', '.join(p.name for p in existing)} to {archive}")
    return archive


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
    """Model + tokenizer + RunConfig in one folder that `from_pretrained` loads.

    LoRA runs are saved merged (adapters folded into the weights: a plain model that needs
    no peft to load), with the adapters alone in `adapter/` beside it."""
    folder = Path(folder)
    if getattr(trainer.model, "peft_config", None):
        if trainer.args.should_save:
            trainer.model.save_pretrained(folder / "adapter")
            merged = copy.deepcopy(trainer.model).merge_and_unload()
            _save_plain_lm(merged, trainer.processing_class, folder)
    elif cfg.task == "instruction":
        if trainer.args.should_save:
            _save_plain_lm(trainer.model, trainer.processing_class, folder)
    else:
        trainer.save_model(str(folder))
    if trainer.args.should_save:
        cfg.save(folder / CONFIG_FILENAME)
    return folder


def _save_plain_lm(model, tokenizer, folder: Path) -> None:
    """A causal LM saved for inference: the KV cache (off while training) back on."""
    model.config.use_cache = True
    try:
        model.save_pretrained(folder)
    finally:
        model.config.use_cache = False
    tokenizer.save_pretrained(folder)


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

    Unless `resume`, earlier training outputs in `output_dir` are archived first.
    """
    from sftlib import data, tokens
    from sftlib.live import LivePlotCallback

    output_dir = Path(output_dir)
    if not resume and _is_main_process():
        archive_previous_run(output_dir, log_fn)
    hardware = detect_hardware(cfg.precision)
    log_fn(f"[train] {hardware.describe()}")
    dataset = data.load_from_config(cfg)
    tokenizer = tokens.load_tokenizer(cfg.model)
    if cfg.task == "instruction":
        max_length, tokenized = prepare_instruction_data(cfg, dataset, tokenizer, log_fn)
        model = build_causal_lm(cfg, hardware)
        share = trainable_share(model)
        log_fn(f"[train] {'LoRA' if cfg.lora else 'full fine-tuning'}: {share['trainable']:,} "
               f"of {share['total']:,} parameters train ({share['share']:.2%})")
        metric = "perplexity"
    else:
        max_length = tokens.resolve_max_length(cfg.max_length, tokenizer, dataset)
        tokenized = tokens.tokenize_splits(dataset, tokenizer, max_length)
        model = build_model(cfg, data.label_names(dataset), hardware)
        metric = cfg.metric_for_best if cfg.metric_for_best != "loss" else "accuracy"
    live = LivePlotCallback(output_dir / "metrics.jsonl", output_dir / "figures" / "training.png",
                            interval_s=cfg.plot_interval_s, metric=metric, notebook=notebook,
                            print_fn=log_fn, max_share=cfg.plot_max_share)
    trainer = build_trainer(cfg, model, tokenizer, tokenized, output_dir / "checkpoints",
                            hardware, callbacks=[live])
    return TrainingRun(cfg, hardware, dataset, tokenizer, tokenized, max_length, trainer, live)


def prepare_instruction_data(cfg: RunConfig, dataset: datasets.DatasetDict,
                             tokenizer: PreTrainedTokenizerBase, log_fn=print,
                             ) -> tuple[int, datasets.DatasetDict]:
    """Chats -> response-only labels at max_length; examples without any response token
    left are dropped or rejected (cfg.truncated_responses); train packed when cfg.packing."""
    from sftlib import instruct

    template = instruct.prepare_tokenizer(tokenizer, cfg.chat_template)
    max_length = cfg.max_length
    if max_length == "auto":
        from sftlib import tokens

        rendered = instruct.render_text(datasets.DatasetDict({"train": dataset["train"]}),
                                        tokenizer)
        max_length = tokens.resolve_max_length("auto", tokenizer, rendered)
    encoded = instruct.encode_splits(dataset, tokenizer, max_length)
    encoded, _ = instruct.apply_truncation_policy(encoded, cfg.truncated_responses, max_length,
                                                  log=log_fn)
    log_fn(f"[train] chat template: {template}; max_length {max_length}")
    if cfg.packing:
        packed = instruct.pack_dataset(encoded["train"], max_length)
        summary = instruct.packing_summary(encoded["train"], packed, max_length)
        log_fn(f"[train] packing: {summary['examples']} examples in {summary['rows']} rows "
               f"({summary['examples_per_row']} per row, {summary['fill']:.1%} of positions "
               "real tokens)")
        encoded["train"] = packed
    return int(max_length), encoded


def lm_loss(trainer: Trainer, ds: datasets.Dataset) -> dict[str, float]:
    """Exact mean cross-entropy per trained (response) token over `ds`, and perplexity:
    token losses and counts summed over every batch and process, then divided once (under
    torchrun, accelerate may repeat a few examples to even out the last batch)."""
    model = trainer.model
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=trainer.args.device)
    count = torch.zeros((), dtype=torch.int64, device=trainer.args.device)
    with torch.inference_mode(), trainer.autocast_smart_context_manager():
        for batch in trainer.get_eval_dataloader(ds.select_columns(model_columns(ds))):
            batch = trainer._prepare_inputs(batch)
            labels = batch.pop("labels")[:, 1:]
            logits = model(**batch, use_cache=False).logits[:, :-1].float()
            total += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
            count += (labels != -100).sum()
    model.train(was_training)
    total = trainer.accelerator.gather(total[None]).sum().item()
    count = int(trainer.accelerator.gather(count[None]).sum().item())
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}


def evaluate_splits(run: TrainingRun, splits: tuple[str, ...] = ("validation", "test"),
                    ) -> dict[str, dict[str, float]]:
    """Loss, accuracy and macro-F1 of the (best) model on each split; for the instruction
    task, loss per response token, perplexity and the number of response tokens."""
    if run.cfg.task == "instruction":
        return {split: lm_loss(run.trainer, run.tokenized[split]) for split in splits}
    results = {}
    columns = run.trainer.train_dataset.column_names
    for split in splits:
        scores = run.trainer.evaluate(run.tokenized[split].select_columns(columns),
                                      metric_key_prefix=split)
        results[split] = {key.removeprefix(f"{split}_"): value for key, value in scores.items()
                          if key.removeprefix(f"{split}_") in ("loss", "accuracy", "f1")}
    return results


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
