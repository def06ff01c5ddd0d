"""Serve a fine-tuned classifier: export a self-describing folder, load it, predict.

An exported folder holds the model weights and config (with `id2label`), the tokenizer,
`labels.json`, the RunConfig it was trained with (`run_config.json`) and, when the run folder
has metrics, a model card (`README.md`, the Hugging Face convention: YAML metadata, then
Markdown; `model_card`). It loads with `transformers.pipeline("text-classification",
model=folder)` as well as with `Predictor`. A mean-pooled classifier (`pooling="mean"`) also
holds `pooling_model.py`, its code: plain transformers loads it with `trust_remote_code=True`;
importing this module registers the classes, so `Predictor` and every sftlib command load it
without (`sftlib.pooling_model`). `Predictor` batches texts (sorted by length, so
each batch pads little) and returns labels with probabilities in the caller's order.

Backends (`Predictor(..., backend=...)`, `sftlib predict --backend`): "torch" runs the
safetensors weights with PyTorch (CPU or GPU); "onnx" runs `model.onnx` with ONNX Runtime on
the CPU. `export_onnx` writes `model.onnx` and `model.int8.onnx` into an export folder
(`sftlib.onnx_export`: which exporter and why) and checks the fp32 graph's logits against
PyTorch's on real texts before keeping it.

Dynamic int8 quantization (`quantize=True`, `--int8`): weights stored as int8 with one scale per
output channel (one scale per matrix cost markedly more accuracy: reports/benchmarks/notes.md),
activations quantized on the fly per batch, so matrix products run on the CPU's int8 kernels.
With PyTorch it is `torch.ao.quantization.quantize_dynamic` on every `nn.Linear`
(`quantize_int8`), which torch marks deprecated since 2.10 in favour of the separate `torchao`
package, but which is present and works in torch 2.13 (its warnings are silenced here).
`torchao` (0.18, `Int8DynamicActivationInt8WeightConfig`) runs on this CPU too, but in eager
mode it was slower than fp32 (its int8 kernels come with `torch.compile`; notes.md), so it is
not a dependency. With ONNX Runtime it is the saved `model.int8.onnx`. `quantization_table`
puts size, latency, throughput and accuracy of the four side by side
(`benchmarks/bench_quantize.py` on any saved folder).

Saving a PyTorch-quantized model is not supported: the safetensors weights stay fp32 (they load
anywhere, with `transformers.pipeline` too) and PyTorch int8 is applied when loading, which
takes well under a second and gives the same weights every time. `save_pretrained` cannot
write quantized Linear layers, and a `torch.save`d quantized state dict loads only into a model
quantized the same way by the same torch build. ONNX int8 has no such limit: it is a file.

Instruction task: `export_chat_model` copies a fine-tuned causal LM (LoRA already merged)
as a plain folder that `transformers.pipeline("text-generation")` and
`sftlib.generation.ChatGenerator` load.

Not supported: sentence pairs, multi-label heads, ONNX for the instruction task, int8 or ONNX
on GPU (the dynamic-quantization kernels and the ONNX backend here are CPU only), static
(calibrated) quantization.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from scipy.stats import binomtest
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from sftlib import assets, onnx_export, pooling_model
from sftlib.filemodes import match_umask
from sftlib.report import resolve_path

# every loader of a saved classifier goes through this module: mean-pooled folders load with
# sftlib's own classes, without trust_remote_code
pooling_model.register()

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
    """Copy a trained model folder to `dest`, adding labels.json, and the model card
    (README.md) when the run folder above `model_dir` holds metrics.json; file modes follow the
    umask.

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
    if (source.parent / "metrics.json").is_file():
        (dest / "README.md").write_text(model_card(source.parent))
    return match_umask(dest)  # copytree copies the 0600 of weights saved by older runs


ONNX_TOLERANCE = 1e-4  # max |logit difference| fp32 ONNX Runtime vs PyTorch that is accepted
ONNX_REPORT_FILE = "onnx_export.json"


def export_onnx(export_dir: str | Path, texts: Sequence[str],
                tolerance: float = ONNX_TOLERANCE) -> dict[str, Any]:
    """Add `model.onnx` (fp32) and `model.int8.onnx` (ONNX Runtime dynamic int8) to an export
    folder, after checking the fp32 graph against PyTorch on `texts` (real rows: validation).

    Returns (and writes to onnx_export.json) what was exported, the largest absolute logit
    difference fp32 ONNX vs PyTorch over `texts`, and the share of `texts` on which the int8
    graph predicts the fp32 label. A difference over `tolerance` is an error and no graph is
    kept: a wrong model is worse than none.
    """
    folder = check_model_dir(export_dir)
    texts = list(texts)
    if not texts:
        raise ValueError("export_onnx: give texts to check the graph on (validation rows)")
    reference = Predictor(folder, device="cpu")
    fp32_path, int8_path = onnx_export.onnx_path(folder), onnx_export.onnx_path(folder, True)
    for stale in (fp32_path, int8_path, folder / ONNX_REPORT_FILE):  # from an earlier export:
        stale.unlink(missing_ok=True)  # never left beside weights they were not checked on
    graph = onnx_export.export_graph(reference.model, reference.tokenizer, fp32_path)
    expected = reference.logits(texts)
    difference = float(np.abs(Predictor(folder, backend="onnx").logits(texts) - expected).max())
    if not difference <= tolerance:  # also refuses NaN
        fp32_path.unlink()
        raise ValueError(f"{folder}: the ONNX graph's logits differ from PyTorch's by "
                         f"{difference:.3g} (over the tolerance {tolerance:g}); not kept")
    quantizer = onnx_export.quantize_graph_int8(fp32_path, int8_path)
    int8 = Predictor(folder, backend="onnx", quantize=True).logits(texts)
    result = {**graph, **quantizer, "rows_compared": len(texts), "tolerance": tolerance,
              "max_abs_logit_difference_fp32": difference,
              "int8_agreement_with_fp32": float((int8.argmax(1) == expected.argmax(1)).mean()),
              "files_mb": {p.name: p.stat().st_size / 1e6 for p in (fp32_path, int8_path)}}
    (folder / ONNX_REPORT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    match_umask(folder)
    return result


BACKENDS = ("torch", "onnx")
OUTPUTS = ("logits", "vectors")  # what `Predictor.outputs` gives


def check_outputs(which: Sequence[str]) -> None:
    """A ValueError unless `which` names some of OUTPUTS and nothing else."""
    unknown = [name for name in which if name not in OUTPUTS]
    if unknown or not which:
        raise ValueError(f"outputs {list(which)}: unknown or none; choose from "
                         f"{', '.join(OUTPUTS)}")


class Predictor:
    """Batched text classification from a saved folder: labels with probabilities.

    backend "torch": the safetensors weights with PyTorch, on `device` (default: CUDA when
    present, else the CPU); `quantize` applies PyTorch dynamic int8 (CPU). backend "onnx":
    `model.onnx` (`model.int8.onnx` with `quantize`) with ONNX Runtime on the CPU, with as many
    threads as torch uses. Both tokenize the same way, with the same max_length.
    `bf16` (torch backend, not with `quantize`): the forward pass under bf16 autocast, fast
    where the GPU or CPU has bf16 units; logits come back as fp32 numbers either way.
    `outputs` gives the logits and, for a mean-pooled model, the sentence vectors its head
    reads, from one pass (distillation's teacher labels with it).
    """

    def __init__(self, model_dir: str | Path, batch_size: int = 32, device: str | None = None,
                 max_length: int | None = None, model=None, quantize: bool = False,
                 backend: str = "torch", bf16: bool = False) -> None:
        self.folder = check_model_dir(model_dir)
        _check_backend(backend, device, quantize, model, bf16)
        self.backend, self.quantized, self.bf16 = backend, quantize, bf16
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model, self.session = None, None
        if backend == "onnx":
            self.device = "cpu"
            self.session = onnx_export.OnnxClassifier(onnx_export.onnx_path(self.folder, quantize))
            config = AutoConfig.from_pretrained(self.folder)
        else:
            self.device = device or ("cuda" if torch.cuda.is_available() and not quantize
                                     else "cpu")
            self.model = model if model is not None else \
                AutoModelForSequenceClassification.from_pretrained(self.folder)
            if quantize:
                self.model = quantize_int8(self.model)
            self.model.to(self.device).eval()
            config = self.model.config
        self.batch_size = batch_size
        self.max_length = max_length or trained_max_length(self.folder)
        self.labels = [config.id2label[i] for i in range(config.num_labels)]

    def logits(self, texts: list[str]) -> np.ndarray:
        """Raw logits, one row per text, in input order."""
        return self.outputs(texts, ("logits",))["logits"]

    def sentence_vectors(self, texts: list[str]) -> np.ndarray:
        """The vector the head reads, one row per text, in input order: the masked mean of
        the token states (mean-pooled models, torch backend; see `outputs`)."""
        return self.outputs(texts, ("vectors",))["vectors"]

    def outputs(self, texts: list[str], which: Sequence[str]) -> dict[str, np.ndarray]:
        """`which` of "logits" and "vectors" (`sentence_vectors`), one row per text in input
        order, from one forward pass per batch. Vectors come from a mean-pooled model on the
        torch backend (a TypeError else, saying why)."""
        check_outputs(which)
        widths = {"logits": len(self.labels)}
        if "vectors" in which:
            if self.session is not None:
                raise TypeError("backend 'onnx' gives logits only; sentence vectors need "
                                "backend='torch'")
            if not isinstance(self.model, pooling_model.MeanPoolingForSequenceClassification):
                raise TypeError(f"{self.folder} is not a mean-pooled classifier (a [CLS] head "
                                "reads a vector of its architecture's own): no sentence vectors")
            widths["vectors"] = self.model.classifier.in_features  # what the head reads
        return self._in_input_order(texts, lambda batch: self._batch_outputs(batch, which),
                                    {name: widths[name] for name in which})

    def _in_input_order(self, texts: list[str],
                        batch_rows: Callable[[list[str]], dict[str, np.ndarray]],
                        widths: dict[str, int]) -> dict[str, np.ndarray]:
        """`batch_rows` (batch texts -> {name: rows}) over batches of similar lengths (little
        padding), each name's rows (`widths[name]` wide) put back in the order of `texts`."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = {name: np.zeros((len(texts), width), dtype=np.float32)
               for name, width in widths.items()}
        for start in range(0, len(texts), self.batch_size):
            index = order[start:start + self.batch_size]
            rows = batch_rows([texts[i] for i in index])
            for name in out:
                out[name][index] = rows[name]
        return out

    @torch.inference_mode()
    def _batch_outputs(self, texts: list[str], which: Sequence[str]) -> dict[str, np.ndarray]:
        if self.session is not None:  # ONNX: logits only (`outputs` refuses vectors)
            return {"logits": self.session.run(self._tokenized(texts, "np"))}
        extra = {"output_sentence_vectors": True} if "vectors" in which else {}
        with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16,
                            enabled=self.bf16):
            output = self.model(**self._tokenized(texts, "pt"), **extra)
        rows = {"logits": output.logits} if "logits" in which else {}
        if extra:
            rows["vectors"] = output.sentence_vectors
        return {name: value.float().cpu().numpy() for name, value in rows.items()}

    def _tokenized(self, texts: list[str], tensors: str) -> dict[str, Any]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors=tensors)
        return batch if tensors == "np" else {k: v.to(self.device) for k, v in batch.items()}

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return softmax(self.logits(texts))

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """[{"text", "label", "score", "probabilities": {label: p}}] in input order."""
        probs = self.predict_proba(texts)
        return [{"text": text, "label": self.labels[int(row.argmax())],
                 "score": float(row.max()),
                 "probabilities": {name: float(p) for name, p in zip(self.labels, row)}}
                for text, row in zip(texts, probs)]

    def describe(self) -> str:
        """"PyTorch fp32", "ONNX Runtime int8" ...: what runs the model."""
        runtime = "ONNX Runtime" if self.backend == "onnx" else "PyTorch"
        return f"{runtime} {'int8' if self.quantized else 'bf16' if self.bf16 else 'fp32'}"


def _check_backend(backend: str, device: str | None, quantize: bool, model,
                   bf16: bool = False) -> None:
    """Refuse combinations that cannot run, before anything loads."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if bf16 and (quantize or backend == "onnx"):
        raise ValueError("bf16 autocast is for the torch backend without int8 quantization")
    if (quantize or backend == "onnx") and device not in (None, "cpu"):
        what = "the ONNX backend" if backend == "onnx" else "int8 dynamic quantization"
        raise ValueError(f"{what} runs on the CPU only, not on {device!r}")
    if backend == "onnx" and model is not None:
        raise ValueError("backend 'onnx' runs the folder's model.onnx; model= is for torch")


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


def model_size_mb(predictor: Predictor) -> float:
    """What the predictor's model takes on disk (MB = 10^6 bytes): the ONNX file it runs, or
    for PyTorch its state dict written with `torch.save`, the one measure that holds for fp32
    and int8 alike (safetensors cannot hold quantized Linear layers)."""
    if predictor.session is not None:
        return predictor.session.path.stat().st_size / 1e6
    return serialized_size_mb(predictor.model)


def batch_1_latencies_ms(predictors: dict[str, Predictor], texts: Sequence[str],
                         warmup: int = 3) -> dict[str, np.ndarray]:
    """Milliseconds per call of `predict_proba([text])` (tokenizing included, as a request
    would), for each text and predictor. The predictors take turns text by text, so a slow
    spell of a shared machine hits every one of them, not the one measured at that moment."""
    for predictor in predictors.values():
        for text in texts[:warmup]:  # first calls allocate and pick kernels
            predictor.predict_proba([text])
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for text in texts:
        for name, predictor in predictors.items():
            began = time.perf_counter()
            predictor.predict_proba([text])
            times[name].append(1000 * (time.perf_counter() - began))
    return {name: np.asarray(values) for name, values in times.items()}


def examples_per_second(predictors: dict[str, Predictor], texts: Sequence[str],
                        batch_size: int = 32, repeats: int = 3) -> dict[str, float]:
    """Throughput predicting `texts` in batches of `batch_size`: the best of `repeats` passes
    per predictor (the least disturbed one), passes taking turns across predictors."""
    texts, best = list(texts), dict.fromkeys(predictors, float("inf"))
    previous = {name: p.batch_size for name, p in predictors.items()}
    try:
        for predictor in predictors.values():
            predictor.batch_size = batch_size
            predictor.logits(texts[:batch_size])  # warm-up
        for _ in range(repeats):
            for name, predictor in predictors.items():
                began = time.perf_counter()
                predictor.logits(texts)
                best[name] = min(best[name], time.perf_counter() - began)
    finally:
        for name, predictor in predictors.items():
            predictor.batch_size = previous[name]
    return {name: len(texts) / seconds for name, seconds in best.items()}


def comparison_predictors(model_dir: str | Path) -> dict[str, Predictor]:
    """The four ways to run an export folder on the CPU, fp32 PyTorch first (the reference);
    the ONNX rows need `export_onnx` first."""
    return {"PyTorch fp32": Predictor(model_dir, device="cpu"),
            "PyTorch int8 (torch.ao dynamic)": Predictor(model_dir, quantize=True),
            "ONNX Runtime fp32": Predictor(model_dir, backend="onnx"),
            "ONNX Runtime int8 (dynamic)": Predictor(model_dir, backend="onnx", quantize=True)}


def quantization_table(model_dir: str | Path, texts: Sequence[str], labels: Sequence[int],
                       timing_examples: int = 256, batch_1_examples: int = 64) -> pd.DataFrame:
    """Rows: PyTorch fp32 and int8, ONNX Runtime fp32 and int8, all on the CPU with torch's
    thread count; size on disk, latency at batch 1 (p50 / p95 ms), throughput at batch 32,
    accuracy on `texts` / `labels` and agreement with PyTorch fp32.

    Timing uses the first `timing_examples` texts (`batch_1_examples` of them at batch 1).
    Latencies are only comparable within one table: the rows are measured in one run, taking
    turns. The folder needs its ONNX files (`export_onnx`).
    """
    texts, labels = list(texts), np.asarray(labels)
    predictors = comparison_predictors(model_dir)
    predicted = {name: p.logits(texts).argmax(axis=1) for name, p in predictors.items()}
    reference = predicted["PyTorch fp32"]
    latencies = batch_1_latencies_ms(predictors, texts[:batch_1_examples])
    throughput = examples_per_second(predictors, texts[:timing_examples])
    table = pd.DataFrame({name: {
        "size_mb": model_size_mb(predictor),
        "latency_ms_batch_1_p50": float(np.percentile(latencies[name], 50)),
        "latency_ms_batch_1_p95": float(np.percentile(latencies[name], 95)),
        "examples_per_s_batch_32": throughput[name],
        "accuracy": float((predicted[name] == labels).mean()),
        "agreement_with_fp32": float((predicted[name] == reference).mean()),
    } for name, predictor in predictors.items()}).T
    threads = torch.get_num_threads()
    table.index.name = f"model (CPU, {threads} thread{'s' if threads > 1 else ''})"
    return table


def compare_to_fp32(table: pd.DataFrame) -> pd.DataFrame:
    """Each row of a `quantization_table` against its first row (PyTorch fp32): size ratio,
    speed-up at batch 1 (p50 latency) and at batch 32 (throughput), accuracy change in points."""
    fp32 = table.iloc[0]
    return pd.DataFrame({
        "size_ratio": table["size_mb"] / fp32["size_mb"],
        "speedup_batch_1_p50": fp32["latency_ms_batch_1_p50"] / table["latency_ms_batch_1_p50"],
        "speedup_batch_32": table["examples_per_s_batch_32"] / fp32["examples_per_s_batch_32"],
        "accuracy_change_points": 100 * (table["accuracy"] - fp32["accuracy"]),
    })


def deployment_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The figures of a `quantization_table` a run keeps in metrics.json ("deployment"):
    keys `<row>_<figure>` with rows pytorch_fp32, pytorch_int8, onnx_fp32, onnx_int8."""
    keys = ("pytorch_fp32", "pytorch_int8", "onnx_fp32", "onnx_int8")
    ratios = compare_to_fp32(table)
    values: dict[str, float] = {}
    for key, (_name, row), (_, ratio) in zip(keys, table.iterrows(), ratios.iterrows()):
        values.update({f"{key}_{column}": float(value) for column, value in
                       [*row.items(), *ratio.items()]})
    # the names earlier runs used, for readers of older reports
    values.update(fp32_size_mb=values["pytorch_fp32_size_mb"],
                  int8_size_mb=values["pytorch_int8_size_mb"])
    return values


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# model card ------------------------------------------------------------------------------

CARD_SPLITS = ("validation", "test")
# training keys the card lists, in this order (every key: run_config.json beside it)
CARD_TRAINING_KEYS = ("epochs", "max_steps", "batch_size", "grad_accum_steps", "lr", "schedule",
                      "warmup_ratio", "weight_decay", "max_length", "precision", "seed")


def model_card(run_dir: str | Path) -> str:
    """The export's README.md, a Hugging Face model card (YAML metadata, then Markdown), from
    the run folder's own files: run_config.json (the run's, or its model/'s), metrics.json and,
    when notebook 04 wrote it, tables/slices_validation.csv. Nothing in it is typed by hand:
    a figure the run did not record is said to be missing, never filled in.

    Supported: classification runs (`sftlib run`, notebooks 01-05, or `sftlib train`, which
    records fewer sections). Not supported: instruction runs (their export has no card).
    """
    run_dir = resolve_path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = _run_config_values(run_dir)
    slices_path = run_dir / "tables" / "slices_validation.csv"
    slices = pd.read_csv(slices_path) if slices_path.is_file() else None
    labels = _model_labels(run_dir / "model") or metrics.get("data", {}).get("labels") or []
    sections = [_card_model(config, labels), _card_data(config, metrics),
                _card_training(config, metrics), _card_scores(metrics),
                _card_calibration(metrics), _card_slices(slices), _card_use(config, labels)]
    title = f"# {config.get('model')} fine-tuned on {config.get('dataset')} ({run_dir.name})"
    note = ("Generated by `sftlib.deploy.model_card` from this run's `metrics.json` and "
            "`run_config.json`; regenerate it rather than edit it.")
    return "\n\n".join(["---\n" + yaml.safe_dump(_card_metadata(config, metrics, run_dir.name),
                                                  sort_keys=False) + "---",
                         title, note, *sections]) + "\n"


def _model_labels(model_dir: Path) -> list[str] | None:
    path = model_dir / "config.json"
    if not path.is_file():
        return None
    id2label = json.loads(path.read_text()).get("id2label", {})
    return [id2label[str(i)] for i in range(len(id2label))]


def _run_config_values(run_dir: Path) -> dict[str, Any]:
    for path in (run_dir / "run_config.json", run_dir / "model" / "run_config.json"):
        if path.is_file():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"{run_dir}: no run_config.json (nor model/run_config.json)")


def _base_model(spec: str) -> dict[str, str | None]:
    """The base model of a RunConfig `model`: its hub id (or None), its license line, and that
    license as a Hugging Face license id ("other" when not known). An asset's license line
    names the upstream model and its license: "Apache-2.0 (model: OWNER/NAME); ..."."""
    if spec in assets.ASSETS:
        line = assets.ASSETS[spec].license
        upstream = re.match(r"([\w.-]+) \(model: ([\w.-]+/[\w.-]+)\)", line)
        return {"hub_id": upstream.group(2) if upstream else None, "license_line": line,
                "license": upstream.group(1).lower() if upstream else "other"}
    if assets.looks_like_hub_id(spec):
        return {"hub_id": spec, "license_line": "see the base model's own card",
                "license": "other"}
    return {"hub_id": None, "license_line": "not recorded (a local folder)", "license": "other"}


def _card_metadata(config: dict, metrics: dict, name: str) -> dict[str, Any]:
    base = _base_model(str(config.get("model")))
    metadata: dict[str, Any] = {
        "license": base["license"], "library_name": "transformers",
        "pipeline_tag": "text-classification", "tags": ["sftlib", "text-classification"]}
    if base["hub_id"]:
        metadata["base_model"] = base["hub_id"]
    results = [{"task": {"type": "text-classification"},
                "dataset": {"name": str(config.get("dataset")), "type": str(config.get("dataset")),
                            "split": split},
                "metrics": [{"type": "accuracy", "value": round(metrics[split]["accuracy"], 4)},
                            {"type": "f1", "name": "macro-F1",
                             "value": round(metrics[split].get("f1", float("nan")), 4)}]}
               for split in CARD_SPLITS if "accuracy" in metrics.get(split, {})]
    if results:
        metadata["model-index"] = [{"name": name, "results": results}]
    return metadata


def _card_model(config: dict, labels: list[str]) -> str:
    base = _base_model(str(config.get("model")))
    return "\n".join([
        "## Model", "",
        f"- base model: `{config.get('model')}`" + (f" (`{base['hub_id']}`)"
                                                   if base["hub_id"] else ""),
        f"- base model license: {base['license_line']}; the fine-tuned weights inherit it",
        f"- architecture: the base encoder with a sequence-classification head reading "
        f"{_POOLING_WORDS[config.get('pooling', 'cls')]} "
        f"({len(labels)} labels: {', '.join(map(str, labels))})"])


# what the head reads, per RunConfig.pooling (run configs older than the key are "cls")
_POOLING_WORDS = {"cls": "the [CLS] token through the encoder's pooler (pooling cls)",
                  "mean": "the mean of all non-pad token states (pooling mean; custom code "
                          "in pooling_model.py)"}


def _split_sizes(metrics: dict) -> dict[str, int]:
    """Rows per split as the run recorded them: notebook 01's data section, else the example
    counts of notebook 04's analysis."""
    sizes = dict(metrics.get("data", {}).get("rows", {}))
    for split in CARD_SPLITS:
        examples = metrics.get(f"analysis_{split}", {}).get("examples")
        if split not in sizes and examples:
            sizes[split] = examples
    return sizes


def _card_data(config: dict, metrics: dict) -> str:
    spec = str(config.get("dataset"))
    asset = assets.ASSETS.get(spec)
    source = f"{asset.description}; license {asset.license}" if asset else "see its source"
    sizes = _split_sizes(metrics)
    rows = [f"| {split} | {sizes[split]:,} |" for split in ("train", *CARD_SPLITS)
            if split in sizes]
    subsets = {key: config.get(key) for key in ("train_subset", "eval_subset")}
    return "\n".join([
        "## Data", "", f"- dataset: `{spec}` ({source})",
        f"- text column `{config.get('text_column')}`, label column "
        f"`{config.get('label_column')}`; subsets {subsets} (None: the whole split), seed "
        f"{config.get('seed')}", "",
        *(["| split | rows |", "| --- | --- |", *rows] if rows else
          ["Split sizes: not recorded in this run's metrics.json (notebook 01 records them)."])])


def _card_training(config: dict, metrics: dict) -> str:
    training = metrics.get("training", {})
    settings = ", ".join(f"{key} {config.get(key)}" for key in CARD_TRAINING_KEYS)
    done = (f"- {training['steps']} steps ({training['epochs']} epochs) in "
            f"{training['runtime_s']} s on {training.get('hardware', 'unrecorded hardware')}"
            if "steps" in training else "- training summary: not recorded")
    return "\n".join(["## Training", "", f"- settings: {settings}", done,
                      "- every setting: `run_config.json` in this folder"])


def _card_scores(metrics: dict) -> str:
    """Accuracy with its 95% Wilson interval, macro-F1 and loss per split."""
    sizes = _split_sizes(metrics)
    rows = []
    for split in CARD_SPLITS:
        scores = metrics.get(split, {})
        if "accuracy" not in scores:
            continue
        total = sizes.get(split)
        interval = "not recorded (split size unknown)"
        if total:
            low, high = _wilson(round(scores["accuracy"] * total), total)
            interval = f"[{low:.4f}, {high:.4f}]"
        f1, loss = scores.get("f1", float("nan")), scores.get("loss", float("nan"))
        rows.append(f"| {split} | {total or '?'} | {scores['accuracy']:.4f} | {interval} | "
                    f"{f1:.4f} | {loss:.4f} |")
    if not rows:
        return "## Evaluation\n\nNo validation or test scores in this run's metrics.json."
    return "\n".join(["## Evaluation", "",
                      "Rows: held-out splits, scored once after training.",
                      "", "| split | examples | accuracy | 95% interval (Wilson) | macro-F1 | "
                      "loss |", "| --- | --- | --- | --- | --- | --- |", *rows])


def _wilson(correct: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval (scipy), the interval notebook 04's slices use
    (`sftlib.analysis.wilson_interval`, which imports this module, so it is not imported)."""
    interval = binomtest(correct, total).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high)


def _card_calibration(metrics: dict) -> str:
    calibration = metrics.get("calibration")
    if not calibration:
        return "## Calibration\n\nNot measured in this run (notebook 04 fits a temperature)."
    temperature = calibration["temperature"]
    lean = "overconfident" if temperature > 1 else "underconfident"
    return "\n".join([
        "## Calibration", "",
        f"Temperature T = {temperature:.3f}, fitted on {calibration.get('fitted_on')} "
        f"(the model is {lean} as trained): divide the logits by T before the softmax for "
        "probabilities that match observed accuracy. On test, NLL "
        f"{calibration['test_nll_before']:.4f} -> {calibration['test_nll_after']:.4f} and ECE "
        f"{calibration['test_ece_before']:.4f} -> {calibration['test_ece_after']:.4f}; the "
        "probabilities this folder returns are the uncalibrated ones (T = 1)."])


def _card_slices(slices: pd.DataFrame | None) -> str:
    """Slices whose 95% interval lies entirely below the overall accuracy (notebook 04's test
    of a real weakness); failing that, the three lowest, marked as within noise."""
    if slices is None:
        return "## Known weak slices\n\nNot measured in this run (notebook 04 measures them)."
    overall = float(slices.loc[slices["slice"] == "all", "accuracy"].iloc[0])
    parts = slices[slices["slice"] != "all"]
    weak = parts[parts["ci_high"] < overall]
    intro = (f"Validation slices whose 95% Wilson interval lies entirely below the overall "
             f"accuracy ({overall:.4f}):")
    if weak.empty:
        weak = parts.nsmallest(3, "accuracy")
        intro = (f"No validation slice's 95% interval lies entirely below the overall accuracy "
                 f"({overall:.4f}); the three lowest, within noise:")
    rows = [f"| {r.slice} | {r.value} | {r.examples} | {r.accuracy:.4f} | "
            f"[{r.ci_low:.4f}, {r.ci_high:.4f}] |" for r in weak.itertuples()]
    return "\n".join(["## Known weak slices", "", intro, "",
                      "| slice | value | examples | accuracy | 95% interval |",
                      "| --- | --- | --- | --- | --- |", *rows])


# the mean-pooling head's code is pooling_model.py in the folder: transformers runs it only
# when asked to
_REMOTE_CODE = {"cls": "", "mean": ",\n                      trust_remote_code=True"}


def _card_use(config: dict, labels: list[str]) -> str:
    return "\n".join([
        "## Intended use and limitations", "",
        f"- Intended: sorting texts like those of `{config.get('dataset')}` into "
        f"{' / '.join(map(str, labels))}, "
        "in bulk or behind the small server (`sftlib serve`), with a person reviewing what "
        "matters.",
        f"- Texts are cut at {config.get('max_length')} tokens: the model never reads the rest.",
        "- The scores above hold for data like the validation and test splits (same source, "
        "same period). Other domains and languages were not measured: expect lower scores "
        "there. Known weak slices: where it already fails on its own data.",
        "- Not for decisions about people; the probabilities are uncalibrated (see "
        "Calibration).", "",
        "## How to use", "",
        "```python\nfrom transformers import pipeline\n\nclassifier = pipeline("
        '"text-classification", model="PATH/TO/THIS/FOLDER", top_k=None'
        f'{_REMOTE_CODE[config.get("pooling", "cls")]})\n```', "",
        "`sftlib predict --model THIS_FOLDER [--backend onnx] [--int8] TEXT...`, or "
        "`sftlib serve --model THIS_FOLDER` (sftlib's docs/analysis_and_deployment.md). "
        "`model.onnx` / `model.int8.onnx`, when present, are the ONNX graphs "
        "(`sftlib export --onnx`), with their check against PyTorch in `onnx_export.json`."])


def trained_config(model_dir: str | Path, changes: dict[str, Any] | None = None):
    """The RunConfig a saved folder was trained with (its run_config.json; defaults when it
    has none), with `changes` applied: what to analyze or benchmark it on."""
    from sftlib.config import RunConfig

    saved = check_model_dir(model_dir) / "run_config.json"
    values = json.loads(saved.read_text()) if saved.is_file() else {}
    return RunConfig.from_dict({**values, **(changes or {})})


def trained_max_length(folder: Path) -> int:
    """The max_length a saved folder was trained with (its run_config.json), else 512 (a
    run with max_length "auto" records the number in metrics.json, not here)."""
    config_path = folder / "run_config.json"
    value = json.loads(config_path.read_text()).get("max_length") \
        if config_path.is_file() else None
    return value if isinstance(value, int) else 512


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
