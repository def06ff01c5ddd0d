"""ONNX export of a classifier folder, ONNX Runtime int8, and an ONNX Runtime runner.

`export_graph` writes `model.onnx` next to the PyTorch weights of an export folder: the
tokenizer's inputs (`input_ids`, `token_type_ids`, `attention_mask` for BERT-family models;
int64) with a dynamic `batch` and `sequence` axis each, and one output, `logits`
[batch, num_labels]. It uses `torch.onnx.export(..., dynamo=True)` (torch.export, then
onnxscript's translation and optimizer), torch's default exporter since 2.9. Why not the
TorchScript exporter (`dynamo=False`): tracing turns Python decisions in transformers 5's mask
and attention code (masking_utils, sdpa_attention) into constants of the traced example (it
warns with TracerWarnings), and its graph's logits were off PyTorch's by far more than rounding,
even on the example it was traced with, while the dynamo graph matched to rounding
(reports/benchmarks/notes.md); torch.export captures that code symbolically.

`quantize_graph_int8` writes `model.int8.onnx` with ONNX Runtime's own tool,
`onnxruntime.quantization.quantize_dynamic`, after its recommended pre-processing
(`quant_pre_process`, here without its symbolic shape inference, which does not complete on the
dynamo graph; ONNX's own shape inference still runs): int8 weights with one scale per output
channel (per tensor cost agreement with fp32, as it did for PyTorch: notes.md), uint8
activations quantized per batch at run time, the embedding tables stored as int8 too. No
calibration data is needed.

`OnnxClassifier` runs either file on the CPU with ONNX Runtime. What `sftlib.deploy` builds on
these (verification against PyTorch, the Predictor backend, the comparison table) lives there.

Not supported: GPU execution providers, static (calibrated) quantization, graph fusions of
`onnxruntime.transformers.optimizer` (it finds no attention pattern in the dynamo graph), models
whose forward needs inputs other than the tokenizer's, sentence pairs.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
BATCH_AXIS, SEQUENCE_AXIS = "batch", "sequence"


def onnx_path(folder: str | Path, quantized: bool = False) -> Path:
    """Where an export folder keeps its fp32 or int8 ONNX graph."""
    return Path(folder) / (ONNX_INT8_FILE if quantized else ONNX_FILE)


class _LogitsOnly(torch.nn.Module):
    """The classifier with positional tensor inputs in the tokenizer's order and the logits as
    its only output: the ONNX graph's signature is then exactly what a tokenizer returns."""

    def __init__(self, model: torch.nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model, self.input_names = model, input_names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, tensors))).logits


@contextlib.contextmanager
def _quiet_exporters():
    """Silence the exporters' notes for developers (torchvision not installed, deprecations,
    axis renames, "consider pre-processing"): they would land on stderr of every notebook run.
    Errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def export_graph(model: torch.nn.Module, tokenizer, path: str | Path) -> dict[str, object]:
    """Write `model` (a sequence classifier, moved to the CPU in fp32) as an ONNX graph at `path`
    with dynamic batch and sequence axes; returns what was exported (exporter, opset, inputs)."""
    model = model.float().cpu().eval()
    input_names = list(tokenizer.model_input_names)
    # two texts of different lengths: neither axis is traced at size 1, which torch.export
    # would treat as a constant
    sample = tokenizer(["a short text", "a somewhat longer text, to pad the other one"],
                       padding=True, return_tensors="pt")
    batch = torch.export.Dim(BATCH_AXIS)
    sequence = torch.export.Dim(SEQUENCE_AXIS, max=model.config.max_position_embeddings)
    with _quiet_exporters():
        program = torch.onnx.export(
            _LogitsOnly(model, input_names), tuple(sample[name] for name in input_names),
            input_names=input_names, output_names=["logits"],
            # one entry for forward's *tensors, which holds one entry per input
            dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in input_names),),
            dynamo=True, optimize=True, verbose=False, external_data=False)
        program.save(str(path))
    opset = next(o.version for o in program.model_proto.opset_import if o.domain == "")
    return {"exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__,
            "opset": opset, "inputs": input_names, "outputs": ["logits"],
            "dynamic_axes": [BATCH_AXIS, SEQUENCE_AXIS]}


def quantize_graph_int8(source: str | Path, dest: str | Path) -> dict[str, object]:
    """ONNX Runtime dynamic int8 quantization of the graph at `source`, written to `dest`."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, _quiet_exporters():
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(prepared, dest, weight_type=QuantType.QInt8, per_channel=True)
    return {"quantizer": "onnxruntime.quantization.quantize_dynamic", "weights": "int8",
            "per_channel": True, "activations": "uint8, per batch at run time",
            "onnxruntime": onnxruntime.__version__}


class OnnxClassifier:
    """Logits from an ONNX classifier graph with ONNX Runtime on the CPU.

    `threads` sets ONNX Runtime's intra-op thread pool; the default is torch's thread count, so
    a comparison with PyTorch runs both on the same number of cores. `run` is safe to call from
    several threads (ONNX Runtime sessions are).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no ONNX graph here; `sftlib export --model "
                                    f"{self.path.parent} --onnx` adds it to an export folder "
                                    "(from a run's model/ folder: add --output DEST)")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1  # one graph at a time: the intra-op pool does the work
        # idle pool threads sleep instead of spinning: spinning keeps the cores busy between
        # calls, taking them from the tokenizer, the server's event loop and whatever else
        # shares the CPU (a PyTorch model timed in turn with it ran several times slower)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings are notes for developers
        self.session = onnxruntime.InferenceSession(str(self.path), options,
                                                    providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Logits [batch, num_labels] for a tokenizer's numpy output (extra keys ignored)."""
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.input_names}
        return self.session.run(["logits"], feed)[0]
