"""Task "instruction": supervised fine-tuning of a causal LM on chats, loss on the response.

Data: conversations (`sftlib.instruction_data`); encoding: the chat template with
response-only labels, examples without a response token left dropped or refused
(`truncated_responses`), train packed when `packing` (`sftlib.instruct`); model:
`AutoModelForCausalLM` with the KV cache off while training (transformers 5 skips the
packed-sequence mask whenever a cache exists), optionally wrapped in LoRA adapters (peft);
metrics: the exact mean cross-entropy per response token and its exponential, the
perplexity (`lm_loss`; Trainer's own eval_loss, plotted live, is a mean of batch means);
saved as a plain causal LM (LoRA adapters merged, the adapters alone in `adapter/`).
Notebooks: `notebooks/instruction/`. Trainer plus `sftlib.instruct.CausalLMCollator`, not
TRL's SFTTrainer: see `sftlib.instruct`.

Not supported: reward / preference training, QLoRA (4-bit bases), tool calls.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import AutoConfig, AutoModelForCausalLM, set_seed

from sftlib import assets, instruct, instruction_data, sources, tokens
from sftlib.tasks import Log

MAX_LOG_LOSS = 50.0  # exp() of a larger loss overflows the perplexity to inf
# peft calls a transformers method that transformers 5 renamed; the warning is for peft's
# authors, and it lands in the notebook's output where a reader can do nothing about it
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                        category=FutureWarning)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, MAX_LOG_LOSS))


def build_causal_lm(cfg: Any, attn_implementation: str = "sdpa"):
    """The pretrained causal LM (fp32 weights; autocast decides the compute precision),
    with the KV cache off for training: with a cache, transformers 5 ignores the example
    boundaries that packed position_ids mark. Wrapped in LoRA adapters when cfg.lora."""
    set_seed(cfg.seed)  # LoRA's adapter initialization depends on it
    model = AutoModelForCausalLM.from_pretrained(
        assets.resolve_model(cfg.model), attn_implementation=attn_implementation,
        dtype=torch.float32)
    model.config.use_cache = False
    return apply_lora(model, cfg) if cfg.lora else model


def apply_lora(model, cfg: Any):
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


def encode_for_training(cfg: Any, dataset: datasets.DatasetDict, tokenizer: Any,
                        log: Log = print) -> tuple[int, datasets.DatasetDict]:
    """Chats -> response-only labels at max_length; examples without any response token
    left are dropped or rejected (cfg.truncated_responses); train packed when cfg.packing."""
    template = instruct.prepare_tokenizer(tokenizer, cfg.chat_template)
    max_length = cfg.max_length
    if max_length == "auto":
        rendered = instruct.render_text(datasets.DatasetDict({"train": dataset["train"]}),
                                        tokenizer)
        max_length = tokens.resolve_max_length("auto", tokenizer, rendered)
    encoded = instruct.encode_splits(dataset, tokenizer, max_length)
    encoded, _ = instruct.apply_truncation_policy(encoded, cfg.truncated_responses, max_length,
                                                  log=log)
    log(f"[train] chat template: {template}; max_length {max_length}")
    if cfg.packing:
        packed = instruct.pack_dataset(encoded["train"], max_length)
        summary = instruct.packing_summary(encoded["train"], packed, max_length)
        log(f"[train] packing: {summary['examples']} examples in {summary['rows']} rows "
            f"({summary['examples_per_row']} per row, {summary['fill']:.1%} of positions "
            "real tokens)")
        encoded["train"] = packed
    return int(max_length), encoded


def lm_loss(trainer: Any, ds: datasets.Dataset) -> dict[str, float]:
    """Exact mean cross-entropy per trained (response) token over `ds`, and perplexity:
    token losses and counts summed over every batch and process, then divided once (under
    torchrun, accelerate may repeat a few examples to even out the last batch)."""
    model = trainer.model
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=trainer.args.device)
    count = torch.zeros((), dtype=torch.int64, device=trainer.args.device)
    with torch.inference_mode(), trainer.autocast_smart_context_manager():
        for batch in trainer.get_eval_dataloader(tokens.eval_rows(ds)):
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
    return {"loss": loss, "perplexity": perplexity(loss), "tokens": count}


def save_plain_lm(model, tokenizer, folder: Path) -> None:
    """A causal LM saved for inference: the KV cache (off while training) back on."""
    model.config.use_cache = True
    try:
        model.save_pretrained(folder)
    finally:
        model.config.use_cache = False
    tokenizer.save_pretrained(folder)


class InstructionTask:
    name = "instruction"
    notebooks = ("01_data_inspection", "02_tokenization", "03_fine_tuning",
                 "04_error_analysis", "05_deployment")
    comparison_notebook = None  # no per-example correctness to pair runs on
    # a mean over response tokens: averaged over all processes' tokens
    token_averaged_loss = True
    compute_metrics = None  # loss only: logits of a whole split over a 49k vocabulary are GBs

    load_data = staticmethod(instruction_data.load_from_config)
    load_pool = staticmethod(instruction_data.load_pool_from_config)

    def preflight(self, cfg: Any, log: Log,
                  dataset: datasets.DatasetDict | None = None) -> dict[str, Any]:
        """A model folder with config and tokenizer (`assets.resolve_model`), a causal LM, a
        usable chat template, data that loads (`instruction_data`: each refusal is one
        error) into non-empty splits, and the examples whose response max_length cuts off
        entirely (counted; with truncated_responses="error", a TruncationError before any
        notebook runs)."""
        model_path = assets.resolve_model(cfg.model, log=log)
        architectures = AutoConfig.from_pretrained(model_path).architectures or []
        if not any(a.endswith("ForCausalLM") for a in architectures):
            raise ValueError(f"model {cfg.model!r} is not a causal language model "
                             f"({architectures}); task 'instruction' needs one, e.g. "
                             "model=smollm2-135m-instruct")
        dataset = self.load_data(cfg) if dataset is None else dataset
        sizes = sources.require_rows(dataset, cfg.dataset)
        tokenizer = tokens.load_tokenizer(cfg.model)
        template = instruct.prepare_tokenizer(tokenizer, cfg.chat_template)
        lost = None
        if cfg.max_length != "auto":
            encoded = instruct.encode_splits(dataset, tokenizer, int(cfg.max_length))
            _, lost = instruct.apply_truncation_policy(encoded, cfg.truncated_responses,
                                                       int(cfg.max_length), log=log)
        return {"model_path": model_path, "split_sizes": sizes, "chat_template": template,
                "responses_lost_to_truncation": lost}

    def inspection_texts(self, cfg: Any, dataset: datasets.DatasetDict,
                         tokenizer: Any) -> datasets.DatasetDict:
        """The rendered conversations: what the model reads, markup included."""
        instruct.prepare_tokenizer(tokenizer, cfg.chat_template)
        return instruct.render_text(dataset, tokenizer)

    def encode(self, cfg: Any, dataset: datasets.DatasetDict, tokenizer: Any,
               log: Log) -> tuple[int, datasets.DatasetDict]:
        return encode_for_training(cfg, dataset, tokenizer, log)

    def build_model(self, cfg: Any, dataset: datasets.DatasetDict, hardware: Any, log: Log):
        model = build_causal_lm(cfg, hardware.attn_implementation)
        share = trainable_share(model)
        log(f"[train] {'LoRA' if cfg.lora else 'full fine-tuning'}: {share['trainable']:,} "
            f"of {share['total']:,} parameters train ({share['share']:.2%})")
        return model

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None):
        return instruct.CausalLMCollator(tokenizer.pad_token_id,
                                         pad_to_multiple_of=pad_to_multiple_of)

    def live_metric(self, cfg: Any) -> str:
        return "perplexity"

    def add_log_metrics(self, logs: dict[str, float]) -> None:
        """The perplexity next to every evaluation loss."""
        for key in [k for k in logs if k.endswith("_loss") and k != "train_loss"]:
            logs[key.removesuffix("loss") + "perplexity"] = perplexity(logs[key])

    def evaluate(self, trainer: Any, tokenized: datasets.DatasetDict,
                 splits: tuple[str, ...]) -> dict[str, dict[str, float]]:
        return {split: lm_loss(trainer, tokenized[split]) for split in splits}

    def evaluate_with_predictions(self, trainer: Any, tokenized: datasets.DatasetDict,
                                  splits: tuple[str, ...]) -> tuple[dict, dict]:
        # generations have no right / wrong per example: nothing to pair runs on
        return self.evaluate(trainer, tokenized, splits), {}

    def save_model(self, trainer: Any, folder: Path) -> None:
        """A plain causal LM: LoRA adapters merged into the weights (a model that needs no
        peft to load), with the adapters alone in `adapter/` beside it."""
        if not trainer.args.should_save:  # rank 0 only
            return
        model = trainer.model
        if getattr(model, "peft_config", None):
            model.save_pretrained(folder / "adapter")
            model = copy.deepcopy(model).merge_and_unload()
        save_plain_lm(model, trainer.processing_class, folder)

    def headline(self, split: str, scores: dict[str, float]) -> str:
        return (f"{split}: loss {scores['loss']:.4f} per response token, "
                f"perplexity {scores['perplexity']:.3f}")


TASK = InstructionTask()
