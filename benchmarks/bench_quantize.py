"""PyTorch fp32 / int8 and ONNX Runtime fp32 / int8 on the CPU for an export folder: size,
latency at batch 1 (p50 / p95), throughput at batch 32, accuracy, agreement with fp32.

    sftlib export --model reports/<run-id>/model --output reports/<run-id>/export --onnx
    python -m benchmarks.bench_quantize --model reports/<run-id>/export [--threads 2]

All four rows are measured in one run on the same texts with the same thread count, taking
turns (`sftlib.deploy.quantization_table`); compare the ratios, not the absolute times, across
machines. The dataset and its subset options come from the folder's run_config.json unless
--dataset is given. Writes bench_quantize.md and bench_quantize.json to --output-dir
(reports/benchmarks): the table, the CPU (model name, int8 / bf16 / AMX flags), the load
average before and after (a busy machine's latencies say little), and the model it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from sftlib import data, deploy

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_description(cpuinfo_path: str = "/proc/cpuinfo") -> dict[str, object]:
    """Model name (with its family and model numbers where /proc/cpuinfo has them), logical
    CPUs and which int8 / bf16 / AMX instruction sets the CPU has (Linux: /proc/cpuinfo;
    elsewhere the platform's processor string only)."""
    try:
        lines = Path(cpuinfo_path).read_text().splitlines()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                "flags": "unknown"}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    model = fields.get("model name", platform.machine())
    if "cpu family" in fields:  # a virtual machine's bare "AMD EPYC" names no generation
        model += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return {"model": model, "cpus": os.cpu_count(),
            "flags": [flag for flag in CPU_FLAGS if flag in flags]}


# decimals per column in the Markdown tables (the JSON keeps every digit)
DIGITS = {"size_mb": 1, "latency_ms_batch_1_p50": 2, "latency_ms_batch_1_p95": 2,
          "examples_per_s_batch_32": 0, "accuracy": 4, "agreement_with_fp32": 4,
          "size_ratio": 2, "speedup_batch_1_p50": 2, "speedup_batch_32": 2,
          "accuracy_change_points": 2}


def markdown_table(frame) -> str:
    """A pipe table of a DataFrame, its index as the first column (pandas' to_markdown needs
    the optional `tabulate`)."""
    lines = [f"| {frame.index.name or ''} | " + " | ".join(frame.columns) + " |",
             "| --- |" + " ---: |" * len(frame.columns)]
    for name, row in frame.iterrows():
        cells = [f"{value:.{DIGITS.get(column, 3)}f}" for column, value in row.items()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(table, ratios, meta: dict) -> str:
    cpu = meta["cpu"]
    lines = [
        "# PyTorch and ONNX Runtime, fp32 and int8, on the CPU",
        "",
        f"Written by `python -m benchmarks.bench_quantize` on {meta['date']}. CPU: "
        f"{cpu['model']}, {cpu['cpus']} logical CPUs, flags {', '.join(cpu['flags'])}; "
        f"threads for every row: {meta['threads']}; load average {meta['load_before']} before, "
        f"{meta['load_after']} after. torch {meta['torch']}, onnxruntime {meta['onnxruntime']}.",
        "",
        f"Model: {meta['model']} ({meta['model_note']}). Texts: the {meta['rows']} rows of "
        f"{meta['dataset']} {meta['split']}; latency over the first {meta['batch_1_examples']} "
        f"sent one at a time (tokenizing included), throughput over the first "
        f"{meta['timing_examples']} in batches of 32, best of 3 passes.",
        "",
        "Rows: the four ways to run the model; size is the file each loads (for PyTorch, the "
        "state dict written with torch.save).",
        "",
        markdown_table(table),
        "",
        "Against PyTorch fp32 (speed-ups above 1 are faster; accuracy change in points):",
        "",
        markdown_table(ratios),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="an export folder with its ONNX graphs")
    parser.add_argument("--dataset", help="dataset spec (default: the model's run_config)")
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads for every row (PyTorch and ONNX Runtime)")
    parser.add_argument("--timing-examples", type=int, default=256)
    parser.add_argument("--batch-1-examples", type=int, default=200)
    parser.add_argument("--output-dir", default="reports/benchmarks")
    args = parser.parse_args(argv)

    folder = deploy.check_model_dir(args.model)
    if not (folder / "model.onnx").is_file():
        parser.error(f"{folder} has no model.onnx: run `sftlib export --model {folder} --onnx`")
    torch.set_num_threads(args.threads)  # ONNX Runtime sessions take torch's thread count
    cfg = deploy.trained_config(folder, {"dataset": args.dataset} if args.dataset else {})
    split = data.load_from_config(cfg)[args.split]
    load_before = os.getloadavg()
    table = deploy.quantization_table(folder, split["text"], split["label"],
                                      timing_examples=args.timing_examples,
                                      batch_1_examples=args.batch_1_examples)
    ratios = deploy.compare_to_fp32(table)
    meta = _meta(args, folder, cfg, len(split), load_before)
    text = markdown(table, ratios, meta)
    print(text)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_quantize.md").write_text(text)
    (out / "bench_quantize.json").write_text(json.dumps(
        {"meta": meta, "table": table.to_dict(orient="index"),
         "against_pytorch_fp32": ratios.to_dict(orient="index")}, indent=2) + "\n")


def _meta(args, folder: Path, cfg, rows: int, load_before) -> dict[str, object]:
    import onnxruntime

    metrics_path = folder.parent / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    trained = (f"{cfg.model} fine-tuned on {cfg.dataset}, train_subset {cfg.train_subset}, "
               f"{cfg.epochs} epochs, max_length {cfg.max_length}")
    if "validation" in metrics:
        trained += f"; its run's validation accuracy {metrics['validation']['accuracy']:.4f}"
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_description(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "model": str(folder), "model_note": trained,
            "dataset": cfg.dataset, "split": args.split, "rows": rows,
            "batch_1_examples": min(args.batch_1_examples, rows),
            "timing_examples": min(args.timing_examples, rows),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


if __name__ == "__main__":
    main()
