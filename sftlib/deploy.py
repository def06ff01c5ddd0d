"""Serve a fine-tuned classifier: export a self-describing folder, load it, predict.

An exported folder holds the model weights and config (with `id2label`), the tokenizer,
`labels.json` and the RunConfig it was trained with (`run_config.json`), so it loads
with `transformers.pipeline("text-classification", model=folder)` as well as with
`Predictor`. `Predictor` batches texts (sorted by length, so each batch pads little)
and returns labels with probabilities in the caller's order.

Instruction task: `export_chat_model` copies a fine-tuned causal LM (LoRA already merged)
as a plain folder that `transformers.pipeline("text-generation")` and
`sftlib.generation.ChatGenerator` load.

Not supported: sentence pairs, multi-label heads, ONNX export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sftlib.report import resolve_path

REQUIRED_FILES = ("config.json",)


def check_model_dir(path: str | Path) -> Path:
    """A folder a classifier can be loaded from, or an error saying what is missing."""
    folder = resolve_path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder (run notebook 03 / "
                                f"`sftlib train` first, or pass the folder a run wrote)")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing or not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise FileNotFoundError(f"{folder}: not a saved model (missing {missing or 'weights'})")
    return folder


def export(model_dir: str | Path, dest: str | Path, replace: bool = False) -> Path:
    """Copy a trained model folder to `dest`, adding labels.json.

    An existing `dest` is an error, unless `replace` is set and it is an earlier export
    (it holds labels.json): then it is replaced, and the replacement is announced.
    """
    source = check_model_dir(model_dir)
    dest = resolve_path(dest)
    if dest.exists():
        if not (replace and (dest / "labels.json").is_file()):
            raise FileExistsError(f"{dest} already exists and is not an earlier export; "
                                  "choose a new folder or remove it first")
        print(f"replacing the earlier export in {dest}")
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("checkpoint-*", "*.pt",
                                                                 "training_args.bin"))
    config = json.loads((dest / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    (dest / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
    return dest


class Predictor:
    """Batched text classification from a saved folder: labels with probabilities."""

    def __init__(self, model_dir: str | Path, batch_size: int = 32, device: str | None = None,
                 max_length: int | None = None, model=None) -> None:
        self.folder = check_model_dir(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model if model is not None else \
            AutoModelForSequenceClassification.from_pretrained(self.folder)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length or _trained_max_length(self.folder) or 512
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    @torch.inference_mode()
    def logits(self, texts: list[str]) -> np.ndarray:
        """Raw logits, one row per text, in input order."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            index = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in index], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out[index] = self.model(**batch).logits.float().cpu().numpy()
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return softmax(self.logits(texts))

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """[{"text", "label", "score", "probabilities": {label: p}}] in input order."""
        probs = self.predict_proba(texts)
        return [{"text": text, "label": self.labels[int(row.argmax())],
                 "score": float(row.max()),
                 "probabilities": {name: float(p) for name, p in zip(self.labels, row)}}
                for text, row in zip(texts, probs)]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _trained_max_length(folder: Path) -> int | None:
    config_path = folder / "run_config.json"
    if not config_path.is_file():
        return None
    value = json.loads(config_path.read_text()).get("max_length")
    return value if isinstance(value, int) else None


# instruction task: a causal LM folder that chats -------------------------------------------

CHAT_EXPORT_FILE = "chat_export.json"


def export_chat_model(model_dir: str | Path, dest: str | Path, replace: bool = False) -> Path:
    """Copy a trained causal-LM folder (task "instruction") to `dest` as a plain model:
    weights (LoRA adapters already merged by `train.save_final`; `adapter/` is left out),
    tokenizer with its chat template, run_config.json, and `chat_export.json` describing it.

    An existing `dest` is an error unless `replace` is set and it is an earlier chat export.
    """
    source = check_model_dir(model_dir)
    config = json.loads((source / "config.json").read_text())
    if not any(a.endswith("ForCausalLM") for a in config.get("architectures", [])):
        raise ValueError(f"{source}: not a causal LM ({config.get('architectures')}); "
                         "use export() for classifiers")
    if (source / "adapter_config.json").is_file():
        raise ValueError(f"{source}: holds unmerged LoRA adapters; save it with "
                         "sftlib.train.save_final, which merges them")
    dest = resolve_path(dest)
    if dest.exists():
        if not (replace and (dest / CHAT_EXPORT_FILE).is_file()):
            raise FileExistsError(f"{dest} already exists and is not an earlier chat export; "
                                  "choose a new folder or remove it first")
        print(f"replacing the earlier export in {dest}")
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(
        "adapter", "checkpoint-*", "*.pt", "training_args.bin"))
    run_config = json.loads((dest / "run_config.json").read_text()) \
        if (dest / "run_config.json").is_file() else {}
    (dest / CHAT_EXPORT_FILE).write_text(json.dumps({
        "task": "instruction", "architecture": config["architectures"][0],
        "base_model": run_config.get("model"), "lora_merged": bool(run_config.get("lora")),
        "max_length": run_config.get("max_length")}, indent=2) + "\n")
    return dest
