"""GPU training throughput and its share of the bf16 matmul peak (prepared for one H200).

    python benchmarks/bench_gpu.py [--budget-s 420] [--smoke]

Needs only torch and transformers (the GPU image has both; no datasets, no sftlib cache):
models are built from configs with random weights, which is fine for speed. For each of
MiniLM-L6 (6 x 384) and a BERT-base-sized encoder (12 x 768), sequence length 64 and 128,
several batch sizes, it trains a sequence classifier with bf16 autocast and fused AdamW on
random token ids (full-length sequences: no padding), and prints samples/s and achieved FLOP/s
as a share of the bf16 matmul peak measured in the same run (an 8192 x 8192 bf16 matmul).
One change at a time against that ("eager"): torch.compile, eager attention instead of SDPA,
foreach instead of fused AdamW. Rows run in priority order (GRID) until the budget is spent.

FLOPs per trained token: 6 x parameters (forward + backward of every weight, the embedding
table excluded since a lookup is not a matmul) + 12 x layers x hidden x sequence length
(attention scores and weighted values, forward + backward).

`--smoke` runs a tiny configuration on the CPU in seconds (what the test suite checks).
Results: printed, and written to benchmarks_gpu.json and bench_gpu.md in $OUT (or
reports/benchmarks/gpu/); `--table A.json B.json` prints one table of several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

MODELS = {
    "minilm-l6": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                  "intermediate_size": 1536},
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                  "intermediate_size": 3072},
}
SMOKE_MODEL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "intermediate_size": 128}


def matmul_peak(device: str, dtype: torch.dtype, size: int, repeats: int = 20) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - began)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def flops_per_token(model: torch.nn.Module, config: BertConfig, seq_len: int) -> float:
    dense = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    return 6 * dense + 12 * config.num_hidden_layers * config.hidden_size * seq_len


# (model, seq_len, batch, variant) in priority order: the BERT-base length-128 target first,
# so that a budget cut drops the least important rows; variants are one change at a time
GRID = (
    [("bert-base", 128, b, "eager") for b in (64, 128, 256, 512)]
    + [("bert-base", 128, 256, "compile"), ("bert-base", 128, 512, "compile"),
       ("bert-base", 128, 256, "attn-eager"), ("bert-base", 128, 256, "foreach-adamw")]
    + [("minilm-l6", 128, b, "eager") for b in (128, 256, 512)]
    + [("minilm-l6", 128, 512, "compile")]
    + [("bert-base", 64, b, "eager") for b in (256, 512)] + [("bert-base", 64, 512, "compile")]
    + [("minilm-l6", 64, b, "eager") for b in (256, 512)] + [("minilm-l6", 64, 512, "compile")]
)
VARIANTS = {  # variant -> (torch.compile, attention implementation, fused AdamW)
    "eager": (False, "sdpa", True), "compile": (True, "sdpa", True),
    "attn-eager": (False, "eager", True), "foreach-adamw": (False, "sdpa", False),
}


def measure(model_name: str, shape: dict, seq_len: int, batch: int, variant: str,
            device: str, steps: int, warmup: int) -> dict:
    compile_model, attention, fused = VARIANTS[variant]
    config = BertConfig(vocab_size=30522, num_labels=2, attn_implementation=attention, **shape)
    model = BertForSequenceClassification(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused and device == "cuda")
    step_fn = torch.compile(model) if compile_model else model
    ids = torch.randint(1000, 30000, (batch, seq_len), device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def one_step():
        with autocast:
            loss = step_fn(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    began = time.perf_counter()
    for _ in range(warmup):
        one_step()
    _sync(device)
    warmup_s = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(steps):
        one_step()
    _sync(device)
    seconds = time.perf_counter() - began
    tokens_per_s = steps * batch * seq_len / seconds
    return {"model": model_name, "seq_len": seq_len, "batch": batch, "variant": variant,
            "samples_per_s": steps * batch / seconds, "tokens_per_s": tokens_per_s,
            "step_ms": 1000 * seconds / steps, "warmup_s": warmup_s,
            "achieved_flops": tokens_per_s * flops_per_token(model, config, seq_len),
            "peak_mem_gb": (torch.cuda.max_memory_allocated() / 2**30 if device == "cuda"
                            else None)}


def markdown(runs: list[dict]) -> str:
    """A table of one or more runs' rows (JSON written by main), each row with its run's peak."""
    lines = ["| model | seq | batch | variant | samples/s | TFLOP/s | share of bf16 peak | "
             "peak memory (GB) | warm-up (s) |", "| --- | ---: | ---: | --- | ---: | ---: | ---: "
             "| ---: | ---: |"]
    for run in runs:
        for row in run["results"]:
            memory = f"{row['peak_mem_gb']:.1f}" if row.get("peak_mem_gb") is not None else ""
            lines.append(f"| {row['model']} | {row['seq_len']} | {row['batch']} | "
                         f"{row['variant']} | {row['samples_per_s']:.0f} | "
                         f"{row['achieved_flops'] / 1e12:.1f} | {row['share_of_peak']:.1%} | "
                         f"{memory} | {row['warmup_s']:.0f} |")
    peaks = ", ".join(f"{run['matmul_peak_flops'] / 1e12:.1f}" for run in runs)
    return "\n".join(lines) + f"\n\nMeasured bf16 matmul peak (TFLOP/s, per run): {peaks}.\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=420, help="stop starting new runs")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (seconds)")
    parser.add_argument("--seq-len", type=int, help="only the rows of this sequence length")
    parser.add_argument("--table", nargs="+", type=Path, metavar="JSON",
                        help="print one markdown table of earlier runs' JSON and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown([json.loads(path.read_text()) for path in args.table]), end="")
        return 0
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.smoke:
        models, grid = {"smoke": SMOKE_MODEL}, [("smoke", 16, 4, v) for v in VARIANTS
                                                 if v != "compile"]
        peak = matmul_peak(device, torch.float32, 256, repeats=3)
        steps, warmup = 3, 1
    else:
        models, grid = MODELS, [row for row in GRID if args.seq_len in (None, row[1])]
        peak = matmul_peak(device, torch.bfloat16, 8192)
        steps, warmup = 50, 5
    print(f"device {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}; "
          f"torch {torch.__version__}; matmul peak {peak / 1e12:.1f} TFLOP/s "
          f"({'bf16' if device == 'cuda' else 'fp32'})", flush=True)
    started, results = time.perf_counter(), []
    for name, seq, batch, variant in grid:
        if time.perf_counter() - started > args.budget_s:
            print(f"budget reached; skipped {name} seq {seq} batch {batch} {variant}")
            continue
        row = measure(name, models[name], seq, batch, variant, device, steps,
                      warmup + (3 if VARIANTS[variant][0] else 0))
        row["share_of_peak"] = row["achieved_flops"] / peak
        results.append(row)
        print(f"{name:<10} seq {seq:>3} batch {batch:>3} {variant:<13} "
              f"{row['samples_per_s']:>9.0f} samples/s {row['achieved_flops'] / 1e12:7.1f} "
              f"TFLOP/s {row['share_of_peak']:6.1%} of peak  (warm-up {row['warmup_s']:.0f} s)",
              flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    out = Path(os.environ.get("OUT", Path(__file__).resolve().parents[1] / "reports" /
                              "benchmarks" / "gpu"))
    out.mkdir(parents=True, exist_ok=True)
    run = {"device": device, "torch": torch.__version__, "matmul_peak_flops": peak,
           "results": results}
    (out / "benchmarks_gpu.json").write_text(json.dumps(run, indent=2) + "\n")
    (out / "bench_gpu.md").write_text(markdown([run]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
