"""Packing vs padding for instruction SFT: real tokens trained per second, in one run.

    python -m benchmarks.bench_packing [--reps 2] [--steps 6] [--train-rows 256]
                                       [--max-length 256] [--batch-size 8]

Both recipes train SmolLM2-135M-Instruct on the same alpaca-demo examples through
`sftlib.train.prepare_training` (same Trainer, model, optimizer and schedule), differing
only in `packing`:
  padding   each batch holds `batch_size` examples padded to the longest one (the plain
            recipe: dynamic padding, random order);
  packing   each batch holds `batch_size` rows of several whole examples each, up to
            max_length, attention kept within each example (sftlib.instruct).

Throughput counts real (non-pad) tokens over the timed optimizer steps (the first step of
each run is warm-up and not timed). Repetitions are interleaved (padding, packing, padding,
...) so drift on a shared machine hits both alike. The result is the median of the paired
ratios (packing / padding within each repetition); the ratio of medians is reported too.
A correctness check comes first: the summed loss of the same examples, padded and packed,
must agree (attention isolation), else the speed would be bought with wrong gradients.

Output: reports/benchmarks/bench_packing.json and bench_packing.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "reports" / "benchmarks"
RECIPES = ("padding", "packing")


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (forward, backward, optimizer) after the first."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._began = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._began)


class CountingCollator:
    """Wraps a collator and counts the real tokens of every batch it makes."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.tokens: list[int] = []

    def __call__(self, features):
        self.tokens.append(sum(len(f["input_ids"]) for f in features))
        return self.inner(features)


def config(args, packing: bool):
    from sftlib.config import RunConfig

    return RunConfig(task="instruction", model="smollm2-135m-instruct", dataset="alpaca-demo",
                     metric_for_best="loss", max_length=args.max_length,
                     batch_size=args.batch_size, eval_batch_size=args.batch_size,
                     max_steps=args.steps + 1, logging_steps=1, eval_strategy="no",
                     train_subset=args.train_rows, eval_subset=16, packing=packing,
                     group_by_length=False, plot_interval_s=0.0)


def measure(args, recipe: str, folder: Path) -> dict[str, float]:
    from sftlib import train

    run = train.prepare_training(config(args, recipe == "packing"), folder / recipe,
                                 notebook=False, log_fn=lambda _m: None)
    timer, counter = StepTimer(), CountingCollator(run.trainer.data_collator)
    run.trainer.data_collator = counter
    run.trainer.add_callback(timer)
    run.trainer.train()
    # the dataloader may prefetch one batch beyond the last step; steps pair with batches
    steps, tokens = timer.times[1:], counter.tokens[1:len(timer.times)]
    return {"tokens_per_s": sum(tokens) / sum(steps), "seconds_per_step": statistics.median(steps),
            "real_tokens_per_step": statistics.mean(tokens),
            "rows": len(run.tokenized["train"])}


def check_isolation(args) -> dict[str, float]:
    """Summed response-token loss of the same examples padded and packed (should agree)."""
    from sftlib import instruct, instruction_data, tokens
    from sftlib.tasks.instruction import build_causal_lm, encode_for_training

    cfg = config(args, packing=True)
    tokenizer = tokens.load_tokenizer(cfg.model)
    _, encoded = encode_for_training(
        cfg.replace(packing=False), instruction_data.load_from_config(
            cfg.replace(train_subset=24)), tokenizer, log=lambda _m: None)
    examples = encoded["train"].select_columns(["input_ids", "labels"])
    packed = instruct.pack_dataset(examples, cfg.max_length)
    model = build_causal_lm(cfg).eval()
    collate = instruct.CausalLMCollator(tokenizer.pad_token_id)

    def summed(rows):
        batch = collate([dict(r) for r in rows])
        labels = batch.pop("labels")[:, 1:]
        with torch.inference_mode():
            logits = model(**batch).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                                 reduction="sum").item()

    # packing sets each example's first label to -100; do the same for the padded copy
    first_masked = examples.map(lambda r: {"labels": [-100] + r["labels"][1:]})
    padded = sum(summed([r]) for r in first_masked)
    packed_loss = sum(summed([r]) for r in packed)
    return {"padded_sum": padded, "packed_sum": packed_loss,
            "relative_difference": abs(padded - packed_loss) / padded}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--train-rows", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    import tempfile

    OUT.mkdir(parents=True, exist_ok=True)
    isolation = check_isolation(args)
    print(f"isolation check: padded {isolation['padded_sum']:.3f} vs packed "
          f"{isolation['packed_sum']:.3f} (relative difference "
          f"{isolation['relative_difference']:.2e})", flush=True)
    results: dict[str, list[dict[str, float]]] = {r: [] for r in RECIPES}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for recipe in RECIPES:
                result = measure(args, recipe, Path(tmp) / str(rep))
                results[recipe].append(result)
                print(f"rep {rep} {recipe}: {result['tokens_per_s']:.0f} real tokens/s, "
                      f"{result['seconds_per_step']:.1f} s/step, "
                      f"{result['real_tokens_per_step']:.0f} real tokens/step", flush=True)
    medians = {r: statistics.median(x["tokens_per_s"] for x in results[r]) for r in RECIPES}
    paired = [pk["tokens_per_s"] / pd["tokens_per_s"]
              for pd, pk in zip(results["padding"], results["packing"])]
    ratio = statistics.median(paired)
    summary = {"settings": vars(args), "isolation": isolation, "runs": results,
               "median_tokens_per_s": medians, "paired_ratios": paired,
               "packing_over_padding": ratio,
               "ratio_of_medians": medians["packing"] / medians["padding"],
               "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
               "torch": torch.__version__}
    (OUT / "bench_packing.json").write_text(json.dumps(summary, indent=2) + "\n")
    (OUT / "bench_packing.md").write_text(
        "| recipe | real tokens/s (median) | s/step | real tokens/step |\n|---|---|---|---|\n"
        + "".join(f"| {r} | {medians[r]:.0f} | "
                  f"{statistics.median(x['seconds_per_step'] for x in results[r]):.1f} | "
                  f"{statistics.median(x['real_tokens_per_step'] for x in results[r]):.0f} |\n"
                  for r in RECIPES)
        + f"\npacking / padding: {ratio:.2f}x real tokens/s (median of the paired ratios "
          f"{', '.join(f'{r:.2f}' for r in paired)}; max_length {args.max_length}, batch "
          f"{args.batch_size})\n")
    print(f"packing / padding: {ratio:.2f}x real tokens per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
