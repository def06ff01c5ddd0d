"""Serve a fine-tuned classifier: export a self-describing folder, load it, predict.

An exported folder holds the model weights and config (with `id2label`), the tokenizer,
`labels.json` and the RunConfig it was trained with (`run_config.json`), so it loads
with `transformers.pipeline("text-classification", model=folder)` as well as with
`Predictor`. `Predictor` batches texts (sorted by length, so each batch pads little)
and returns labels with probabilities in the caller's order.

Dynamic int8 quantization (`quantize_int8`, `Predictor(..., quantize=True)`): the weights
of every `nn.Linear` are stored as int8 (one scale per output channel: one scale per
matrix cost markedly more accuracy: reports/benchmarks/notes.md) and activations are
quantized on the fly per batch, so matrix products run on the CPU's int8 kernels. It uses
`torch.ao.quantization.quantize_dynamic`, which torch marks deprecated since 2.10 in favour
of the separate `torchao` package, but which is present and works in torch 2.13 (its warnings
are silenced here); `torchao` is not a dependency. Embeddings and LayerNorm stay fp32.
`quantization_table` puts size, latency, throughput and accuracy of fp32 and int8 side by
side (`benchmarks/bench_quantize.py` on any saved folder).

Saving a quantized model is not supported: the exported folder stays fp32 (it loads
anywhere, with `transformers.pipeline` too) and int8 is applied when loading, which takes
well under a second and gives the same weights every time. `save_pretrained` cannot write
quantized Linear layers, and a `torch.save`d quantized state dict loads only into a model
quantized the same way by the same torch build.

Instruction task: `export_chat_model` copies a fine-tuned causal LM (LoRA already merged)
as a plain folder that `transformers.pipeline("text-generation")` and
`sftlib.generation.ChatGenerator` load.

Not supported: sentence pairs, multi-label heads, ONNX export, int8 on GPU (dynamic
quantization has CPU kernels only), static (calibrated) quantization.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sftlib.filemodes import match_umask
from sftlib.report import resolve_path

REQUIRED_FILES = ("config.json",)


def check_model_dir(path: str | Path) -> Path:
    """A folder a model can be loaded from, or one line saying what is missing and where a
    model is: a run folder's `export/` or `model/`, written by notebooks 03 and 05."""
    folder = resolve_path(path)
    inside = [f"{folder / sub}" for sub in ("export", "model") if (folder / sub / "config.json")
              .is_file()]
    if inside and not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is a run folder, not a model; use {inside[0]}")
    if not folder.is_dir():
        run = folder.parent if folder.name in ("model", "export") else folder
        raise FileNotFoundError(
            f"{folder}: no trained model here yet. Run notebook 03 (fine-tuning) with the same "
            f"output_dir first, or point output_dir at a finished run's folder "
            f"(reports/<run-id>; this one is {run})")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing or not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise FileNotFoundError(f"{folder}: not a saved model (missing {missing or 'weights'})")
    return folder


def export(model_dir: str | Path, dest: str | Path, replace: bool = False) -> Path:
    """Copy a trained model folder to `dest`, adding labels.json; file modes follow the umask.

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
    return match_umask(dest)  # copytree copies the 0600 of weights saved by older runs


class Predictor:
    """Batched text classification from a saved folder: labels with probabilities."""

    def __init__(self, model_dir: str | Path, batch_size: int = 32, device: str | None = None,
                 max_length: int | None = None, model=None, quantize: bool = False) -> None:
        self.folder = check_model_dir(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        if quantize and device not in (None, "cpu"):
            raise ValueError(f"quantize: int8 dynamic quantization runs on the CPU only, "
                             f"not on {device!r}")
        self.device = device or ("cuda" if torch.cuda.is_available() and not quantize
                                 else "cpu")
        self.model = model if model is not None else \
            AutoModelForSequenceClassification.from_pretrained(self.folder)
        if quantize:
            self.model = quantize_int8(self.model)
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


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU copy of `model` whose Linear layers run in int8 (dynamic quantization)."""
    model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():  # torch.ao's deprecation notices; see the module docstring
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8)


def serialized_size_mb(model: torch.nn.Module) -> float:
    """Size of the model's state dict written with `torch.save` (MB = 10^6 bytes): the same
    measure for fp32 and int8 (safetensors cannot hold quantized Linear layers)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state_dict.pt"
        torch.save(model.state_dict(), path)
        return path.stat().st_size / 1e6


def seconds_per_example(predictor: Predictor, texts: list[str], batch_size: int,
                        repeats: int = 3) -> float:
    """Wall time per example predicting `texts` in batches of `batch_size`: the best of
    `repeats` runs after one warm-up batch (shared machines are noisy; the minimum is the
    least disturbed run)."""
    previous, predictor.batch_size = predictor.batch_size, batch_size
    try:
        predictor.logits(texts[:batch_size])  # warm-up: first calls allocate and pick kernels
        best = float("inf")
        for _ in range(repeats):
            began = time.perf_counter()
            predictor.logits(texts)
            best = min(best, time.perf_counter() - began)
    finally:
        predictor.batch_size = previous
    return best / len(texts)


def quantization_table(model_dir: str | Path, texts: Sequence[str], labels: Sequence[int],
                       timing_examples: int = 256, batch_1_examples: int = 64) -> pd.DataFrame:
    """Rows: fp32 and int8 on the CPU; size, latency per example at batch 1 and 32,
    throughput at batch 32, accuracy on `texts` / `labels` and agreement with fp32.

    Timing uses the first `timing_examples` texts (`batch_1_examples` of them at batch 1).
    Latencies are only comparable within one table: both rows are measured in one run.
    """
    texts, labels = list(texts), np.asarray(labels)
    fp32 = Predictor(model_dir, device="cpu")
    int8 = Predictor(model_dir, quantize=True)
    reference = fp32.predict_proba(texts).argmax(axis=1)
    timing = texts[:timing_examples]
    rows = {}
    for name, predictor in (("fp32", fp32), ("int8 (dynamic)", int8)):
        predicted = reference if predictor is fp32 else predictor.predict_proba(texts).argmax(1)
        batch_32 = seconds_per_example(predictor, timing, 32)
        rows[name] = {
            "size_mb": serialized_size_mb(predictor.model),
            "ms_per_example_batch_1": 1000 * seconds_per_example(
                predictor, timing[:batch_1_examples], 1),
            "ms_per_example_batch_32": 1000 * batch_32,
            "examples_per_s_batch_32": 1 / batch_32,
            "accuracy": float((predicted == labels).mean()),
            "agreement_with_fp32": float((predicted == reference).mean()),
        }
    table = pd.DataFrame(rows).T
    table.index.name = f"model (CPU, {torch.get_num_threads()} threads)"
    return table


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def trained_config(model_dir: str | Path, changes: dict[str, Any] | None = None):
    """The RunConfig a saved folder was trained with (its run_config.json; defaults when it
    has none), with `changes` applied: what to analyze or benchmark it on."""
    from sftlib.config import RunConfig

    saved = check_model_dir(model_dir) / "run_config.json"
    values = json.loads(saved.read_text()) if saved.is_file() else {}
    return RunConfig.from_dict({**values, **(changes or {})})


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
    File modes follow the umask.

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
    return match_umask(dest)
