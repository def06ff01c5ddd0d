"""GPU training throughput and its share of the bf16 matmul peak (prepared for one H200).

    python benchmarks/bench_gpu.py [--budget-s 420] [--smoke]

Needs only torch and transformers (the GPU image has both; no datasets, no sftlib cache):
models are built from configs with random weights, which is fine for speed. For each of
MiniLM-L6 (6 x 384) and a BERT-base-sized encoder (12 x 768), sequence length 64 and 128,
several batch sizes, torch.compile off and on, it trains a sequence classifier with bf16
autocast and fused AdamW on random token ids (full-length sequences: no padding), and prints
samples/s and achieved FLOP/s as a share of the bf16 matmul peak measured in the same run
(an 8192 x 8192 bf16 matmul).

FLOPs per trained token: 6 x parameters (forward + backward of every weight, the embedding
table excluded since a lookup is not a matmul) + 12 x layers x hidden x sequence length
(attention scores and weighted values, forward + backward).

`--smoke` runs a tiny configuration on the CPU in seconds (what the test suite checks).
Results: printed as a table and written to benchmarks_gpu.json in $OUT (or the cwd).
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


def measure(model_name: str, shape: dict, seq_len: int, batch: int, compile_model: bool,
            device: str, steps: int, warmup: int) -> dict:
    config = BertConfig(vocab_size=30522, num_labels=2, attn_implementation="sdpa", **shape)
    model = BertForSequenceClassification(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
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

    for _ in range(warmup):
        one_step()
    _sync(device)
    began = time.perf_counter()
    for _ in range(steps):
        one_step()
    _sync(device)
    seconds = time.perf_counter() - began
    tokens_per_s = steps * batch * seq_len / seconds
    return {"model": model_name, "seq_len": seq_len, "batch": batch, "compile": compile_model,
            "samples_per_s": steps * batch / seconds, "tokens_per_s": tokens_per_s,
            "achieved_flops": tokens_per_s * flops_per_token(model, config, seq_len),
            "peak_mem_gb": (torch.cuda.max_memory_allocated() / 2**30 if device == "cuda"
                            else None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=420, help="stop starting new runs")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (seconds)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.smoke:
        grid = [("smoke", SMOKE_MODEL, 16, 4, False)]
        peak = matmul_peak(device, torch.float32, 256, repeats=3)
        steps, warmup = 3, 1
    else:
        grid = [(name, shape, seq, batch, compiled) for name, shape in MODELS.items()
                for seq in (64, 128) for batch in (32, 128, 256) for compiled in (False, True)]
        peak = matmul_peak(device, torch.bfloat16, 8192)
        steps, warmup = 30, 5
    print(f"device {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}; "
          f"matmul peak {peak / 1e12:.1f} TFLOP/s ({'bf16' if device == 'cuda' else 'fp32'})")
    started, results = time.perf_counter(), []
    for name, shape, seq, batch, compiled in grid:
        if time.perf_counter() - started > args.budget_s:
            print(f"budget reached; skipped {name} seq {seq} batch {batch} compile {compiled}")
            continue
        row = measure(name, shape, seq, batch, compiled, device, steps,
                      warmup + (3 if compiled else 0))
        row["share_of_peak"] = row["achieved_flops"] / peak
        results.append(row)
        print(f"{name:<10} seq {seq:>3} batch {batch:>3} compile {str(compiled):<5} "
              f"{row['samples_per_s']:>9.0f} samples/s {row['achieved_flops'] / 1e12:7.1f} "
              f"TFLOP/s {row['share_of_peak']:6.1%} of peak", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    out = Path(os.environ.get("OUT", ".")) / "benchmarks_gpu.json"
    out.write_text(json.dumps({"device": device, "matmul_peak_flops": peak,
                               "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
