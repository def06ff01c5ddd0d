"""Training speed, memory and accuracy: the tutorial's recipe vs a plain Trainer vs sftlib.

    python -m benchmarks.bench_train [--reps 3] [--ablations] [--quick]

Recipes, all on MiniLM-L6 and the same rotten-tomatoes subset, on this machine:
  (a) tutorial   the seed tutorial verbatim: every example padded to 512 tokens, Trainer
                 defaults, batch 16, lr 2e-5, weight decay 0.01
  (b) plain      the same Trainer and hyperparameters with dynamic padding
                 (DataCollatorWithPadding): what a careful user writes
  (c) sftlib     `sftlib.train.prepare_training` with the RunConfig defaults

Each measurement runs in its own worker process (so peak memory is per recipe), and the
repetitions are interleaved (a, b, c, a, b, c, ...) so that drift on a shared machine hits all
recipes alike. Throughput excludes the first steps (allocation, warm-up) and counts real,
non-pad tokens. Achieved training FLOP/s (6 x parameters x real tokens/s; attention, under
1% more at these lengths, is left out) is compared with the matmul peaks measured in the same
worker. Accuracy: each recipe trains the same number of epochs (default 2, sftlib's) on the
same training rows (default all 10,200) and is evaluated on the full validation split. The
tutorial recipe is too slow for that on a CPU (about 1 sample/s), so its accuracy is measured
only with --tutorial-accuracy; padding is masked out of attention, so (a) computes what (b)
computes: the script checks this directly by comparing logits of one batch padded both ways.

Ablations (--ablations) toggle one sftlib setting at a time against (c): length grouping,
the precision (flip_precision: fp32 where sftlib autocasts to bf16, bf16 where it picks fp32;
the committed run, made when fp32 was the CPU default, named it bf16_autocast),
torch.compile, eager attention, one thread, dataloader workers; and the evaluation batch size
for evaluation throughput.

Output: reports/benchmarks/bench_train.{json,md} (bench_train_ablations.* with --ablations):
medians and ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "benchmarks"
RECIPES = ("tutorial", "plain", "sftlib")
ABLATIONS = ("no_length_grouping", "flip_precision", "torch_compile", "eager_attention",
             "one_thread", "dataloader_workers_2")
EVAL_BATCH_SIZES = (16, 32, 128, 256)
TUTORIAL = {"batch_size": 16, "lr": 2e-5, "weight_decay": 0.01, "max_length": 512}


# worker side -----------------------------------------------------------------------------

def _tokenized(dataset, tokenizer, pad_to_max: bool, max_length: int):
    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length,
                         padding="max_length" if pad_to_max else False)

    return dataset.map(encode, batched=True, remove_columns=["text"])


def _plain_trainer(recipe: str, dataset, tokenizer, model, out: Path, steps: int | None,
                   epochs: float):
    """Recipes (a) and (b): Trainer defaults, as the tutorial writes them."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    pad_to_max = recipe == "tutorial"
    train_set = _tokenized(dataset["train"], tokenizer, pad_to_max, TUTORIAL["max_length"])
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=TUTORIAL["batch_size"],
        per_device_eval_batch_size=TUTORIAL["batch_size"], learning_rate=TUTORIAL["lr"],
        weight_decay=TUTORIAL["weight_decay"], num_train_epochs=epochs,
        max_steps=steps or -1, save_strategy="no", report_to="none", disable_tqdm=True,
        include_num_input_tokens_seen="non_padding", use_cpu=not _cuda(), seed=42,
        average_tokens_across_devices=False)
    collator = None if pad_to_max else DataCollatorWithPadding(tokenizer)
    return Trainer(model=model, args=args, train_dataset=train_set, processing_class=tokenizer,
                   data_collator=collator)


def _sftlib_trainer(variant: str, dataset_cfg: dict, out: Path, steps: int | None,
                    epochs: float):
    """Recipe (c), optionally with one setting toggled (an ablation)."""
    import torch

    from sftlib import data, tokens, train
    from sftlib.config import RunConfig
    from sftlib.tasks.classification import build_classifier

    cfg = RunConfig(**dataset_cfg, epochs=epochs, max_steps=steps or -1, eval_strategy="no",
                    group_by_length=variant != "no_length_grouping",
                    output_dir=str(out))
    hardware = train.detect_hardware(cfg.precision)
    if variant == "eager_attention":
        hardware = dataclasses.replace(hardware, attn_implementation="eager")
    if variant == "flip_precision":  # bf16 autocast where sftlib picks fp32, and vice versa
        hardware = dataclasses.replace(hardware, bf16=not hardware.bf16, fp16=False)
    if variant == "one_thread":
        torch.set_num_threads(1)
    dataset = data.load_from_config(cfg)
    tokenizer = tokens.load_tokenizer(cfg.model)
    tokenized = tokens.tokenize_splits(dataset, tokenizer, int(cfg.max_length))
    model = build_classifier(cfg, data.label_names(dataset), hardware.attn_implementation)
    args = train.training_arguments(cfg, out, hardware)
    args.save_strategy = "no"
    if variant == "torch_compile":
        args.torch_compile = True
    if variant == "dataloader_workers_2":
        args.dataloader_num_workers = 2
    return train.build_trainer(cfg, model, tokenizer, tokenized, out, hardware, args=args)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of a square matmul in `dtype` on the training device."""
    import torch

    device = "cuda" if _cuda() else "cpu"
    size = 8192 if device == "cuda" else size  # a GPU needs a large product to reach peak
    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best


class _StepClock:
    """A TrainerCallback measuring steps after a warm-up: time, samples, real tokens."""

    def __init__(self, warmup_steps: int):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == warmup_steps:
                    clock.start = time.perf_counter()
                    clock.tokens0 = state.num_input_tokens_seen or 0

            def on_step_end(self, args, state, control, **kwargs):
                clock.end = time.perf_counter()
                clock.steps = state.global_step - warmup_steps
                clock.tokens = (state.num_input_tokens_seen or 0) - clock.tokens0

        self.callback = Callback()
        self.start = self.end = 0.0
        self.steps = self.tokens = self.tokens0 = 0


def worker(recipe: str, mode: str, steps: int, train_rows: int, epochs: float,
           model_name: str = "minilm-l6") -> dict:
    """One measurement in this process; prints one JSON line."""
    import torch

    from sftlib import data, tokens

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(os.environ.get("BENCH_TMP", "/tmp")) / f"bench-{recipe}-{os.getpid()}"
    train_rows = train_rows or None  # 0: every training row
    dataset_cfg = {"train_subset": train_rows, "seed": 42, "model": model_name}
    warmup = 2 if mode == "speed" else 0
    if recipe in ("tutorial", "plain"):
        from transformers import AutoModelForSequenceClassification, set_seed

        from sftlib import assets

        dataset = data.load_data("rotten-tomatoes", train_subset=train_rows)
        tokenizer = tokens.load_tokenizer(model_name)
        names = data.label_names(dataset)
        set_seed(42)
        model = AutoModelForSequenceClassification.from_pretrained(
            assets.resolve_model(model_name), num_labels=len(names), dtype=torch.float32,
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
        trainer = _plain_trainer(recipe, dataset, tokenizer, model, out,
                                 steps + warmup if mode == "speed" else None, epochs)
        batch = TUTORIAL["batch_size"]
    else:
        variant = recipe.removeprefix("sftlib:") if recipe.startswith("sftlib:") else ""
        trainer = _sftlib_trainer(variant, dataset_cfg, out,
                                  steps + warmup if mode == "speed" else None, epochs)
        dataset = data.load_data("rotten-tomatoes", train_subset=train_rows)
        batch = trainer.args.per_device_train_batch_size
    if mode == "eval":
        result = {"recipe": recipe, "mode": mode, **eval_throughput(trainer)}
        print("BENCH " + json.dumps(result), flush=True)
        return result
    clock = _StepClock(warmup)
    trainer.add_callback(clock.callback)
    if _cuda():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    result = {"recipe": recipe, "mode": mode}
    if mode == "speed":
        seconds = clock.end - clock.start
        params = sum(p.numel() for p in trainer.model.parameters())
        result.update({
            "samples_per_s": clock.steps * batch / seconds,
            "tokens_per_s": clock.tokens / seconds,
            "steps": clock.steps, "seconds": seconds, "params": params,
            "peak_mem_mb": (torch.cuda.max_memory_allocated() / 2**20 if _cuda() else
                            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "matmul_fp32_flops": matmul_peak("float32"),
            "matmul_bf16_flops": matmul_peak("bfloat16"),
        })
        # 6 N per token (forward + backward) on real tokens; attention scores and values
        # cost 12 x layers x hidden x padded length per token, on the padded tokens too
        config = trainer.model.config
        per_token = 6 * params
        result["achieved_flops"] = clock.tokens / seconds * per_token
        result["attention_flops_note"] = (f"{config.num_hidden_layers} layers, hidden "
                                          f"{config.hidden_size}: attention adds "
                                          f"12*L*H*len per token, not counted")
    else:
        from sftlib.analysis import prediction_frame, summary_metrics
        from sftlib.deploy import Predictor

        trainer.save_model(str(out / "model"))
        predictor = Predictor(out / "model", batch_size=128, max_length=128)
        frame = prediction_frame(predictor, dataset["validation"])
        result.update(summary_metrics(frame))
    print("BENCH " + json.dumps(result), flush=True)
    return result


def eval_throughput(trainer, rows: int = 512, sizes=EVAL_BATCH_SIZES) -> dict:
    """Validation examples/s of `trainer.evaluate` at each evaluation batch size (best of 2)."""
    from sftlib import tokens

    # a random sample of the validation rows (sftlib's eval set is in length order), in
    # length order as sftlib evaluates it
    sample = trainer.eval_dataset.shuffle(seed=0).select(range(min(rows,
                                                                   len(trainer.eval_dataset))))
    subset = tokens.eval_rows(sample)
    trainer.evaluate(eval_dataset=subset.select(range(32)))  # warm-up
    speeds = {}
    for size in sizes:
        trainer.args.per_device_eval_batch_size = size
        best = float("inf")
        for _ in range(2):
            began = time.perf_counter()
            trainer.evaluate(eval_dataset=subset)
            best = min(best, time.perf_counter() - began)
        speeds[f"eval_batch_{size}"] = len(subset) / best
    return speeds


def padding_equivalence(model_name: str = "minilm-l6") -> float:
    """Max |logit difference| between one batch padded to 512 and padded dynamically."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from sftlib import assets, data, tokens

    tokenizer = tokens.load_tokenizer(model_name)
    model = AutoModelForSequenceClassification.from_pretrained(
        assets.resolve_model(model_name), num_labels=2, dtype=torch.float32).eval()
    texts = list(data.load_data("rotten-tomatoes", eval_subset=16)["validation"]["text"])
    with torch.inference_mode():
        padded = model(**tokenizer(texts, padding="max_length", max_length=512,
                                   truncation=True, return_tensors="pt")).logits
        dynamic = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    return float((padded - dynamic).abs().max())


# parent side -------------------------------------------------------------------------------

def run_worker(recipe: str, mode: str, steps: int, train_rows: int, epochs: float,
               model_name: str = "minilm-l6") -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_train", "--worker", recipe,
               "--mode", mode, "--steps", str(steps), "--train-rows", str(train_rows),
               "--epochs", str(epochs), "--model", model_name]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"worker {recipe}/{mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][6:])


def _machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def median_of(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summarize(speed: dict[str, list[dict]], accuracy: dict[str, dict]) -> dict:
    table = {}
    for recipe, rows in speed.items():
        table[recipe] = {key: median_of(rows, key) for key in
                         ("samples_per_s", "tokens_per_s", "peak_mem_mb", "achieved_flops",
                          "matmul_fp32_flops", "matmul_bf16_flops")}
        table[recipe]["reps"] = len(rows)
        for dtype in ("fp32", "bf16"):
            table[recipe][f"mfu_{dtype}"] = (table[recipe]["achieved_flops"] /
                                            table[recipe][f"matmul_{dtype}_flops"])
        if recipe in accuracy:
            table[recipe]["val_accuracy"] = accuracy[recipe]["accuracy"]
            table[recipe]["val_f1"] = accuracy[recipe]["macro_f1"]
    ratios = {}
    if "sftlib" in table:
        for base in ("tutorial", "plain"):
            if base in table:
                ratios[f"sftlib/{base}"] = {
                    "samples_per_s": table["sftlib"]["samples_per_s"] /
                    table[base]["samples_per_s"],
                    "tokens_per_s": table["sftlib"]["tokens_per_s"] /
                    table[base]["tokens_per_s"]}
        for variant in [r for r in table if r.startswith("sftlib:")]:
            ratios[f"{variant}/sftlib"] = {
                "samples_per_s": table[variant]["samples_per_s"] /
                table["sftlib"]["samples_per_s"]}
    return {"recipes": table, "ratios": ratios}


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"Machine: {meta['machine']}; {meta['date']}; reps {meta['reps']} (interleaved, "
             f"medians); speed on {meta['train_rows']} training rows; accuracy after "
             f"{meta.get('accuracy_epochs', meta.get('epochs'))} epochs on "
             f"{meta.get('accuracy_rows', meta['train_rows'])} training rows.", "",
             "| recipe | samples/s | real tokens/s | peak memory (MB) | achieved GFLOP/s | "
             "share of fp32 / bf16 matmul peak | val accuracy | val macro-F1 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for recipe, row in summary["recipes"].items():
        accuracy = f"{row['val_accuracy']:.4f}" if "val_accuracy" in row else "n/a"
        f1 = f"{row['val_f1']:.4f}" if "val_f1" in row else "n/a"
        lines.append(f"| {recipe} | {row['samples_per_s']:.2f} | {row['tokens_per_s']:.0f} | "
                     f"{row['peak_mem_mb']:.0f} | {row['achieved_flops'] / 1e9:.1f} | "
                     f"{row['mfu_fp32']:.1%} / {row['mfu_bf16']:.1%} | {accuracy} | {f1} |")
    lines += ["", "| ratio | samples/s | real tokens/s |", "| --- | ---: | ---: |"]
    for name, ratio in summary["ratios"].items():
        tokens = f"{ratio['tokens_per_s']:.2f}x" if "tokens_per_s" in ratio else ""
        lines.append(f"| {name} | {ratio['samples_per_s']:.2f}x | {tokens} |")
    if "evaluation" in summary:
        lines += ["", "| evaluation batch size | " + " | ".join(
            name.removeprefix("eval_batch_") for name in summary["evaluation"]) + " |",
            "| --- |" + " ---: |" * len(summary["evaluation"]),
            "| validation examples/s | " + " | ".join(
                f"{value:.0f}" for value in summary["evaluation"].values()) + " |"]
    if "padding_max_abs_logit_diff" in meta:
        lines += ["", f"Padding to 512 vs dynamic padding, same batch: max |logit difference| "
                  f"= {meta['padding_max_abs_logit_diff']:.2e} (masked padding changes nothing "
                  "but cost, so the tutorial recipe reaches the plain recipe's accuracy)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per rep, (b), (c)")
    parser.add_argument("--tutorial-steps", type=int, default=4, help="timed steps, (a)")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=1.0, help="speed runs' schedule")
    parser.add_argument("--accuracy-rows", type=int, default=0,
                        help="training rows for the accuracy runs (0: all)")
    parser.add_argument("--accuracy-epochs", type=float, default=2.0,
                        help="epochs of every accuracy run (sftlib's default: 2)")
    parser.add_argument("--model", default="minilm-l6",
                        help="asset name or model folder (a GPU machine without the cache)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the JSON and table")
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--tutorial-accuracy", action="store_true",
                        help="also train (a) for the accuracy run (slow on a CPU)")
    parser.add_argument("--quick", action="store_true", help="1 rep, few steps: a smoke test")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="speed", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.mode, args.steps, args.train_rows, args.epochs, args.model)
        return 0
    if args.quick:
        args.reps, args.steps, args.tutorial_steps, args.train_rows = 1, 6, 2, 200
        args.accuracy_rows, args.accuracy_epochs = 200, 1.0
    recipes = list(RECIPES) + ([f"sftlib:{a}" for a in ABLATIONS] if args.ablations else [])
    speed: dict[str, list[dict]] = {r: [] for r in recipes}
    evaluation: list[dict] = []
    for rep in range(args.reps):
        for recipe in recipes:
            steps = args.tutorial_steps if recipe == "tutorial" else args.steps
            row = run_worker(recipe, "speed", steps, args.train_rows, args.epochs, args.model)
            speed[recipe].append(row)
            print(f"[bench] rep {rep + 1}/{args.reps} {recipe:<32} "
                  f"{row['samples_per_s']:8.2f} samples/s {row['tokens_per_s']:9.0f} tokens/s",
                  flush=True)
        if args.ablations:
            evaluation.append(run_worker("sftlib", "eval", 0, args.train_rows, args.epochs,
                                         args.model))
            print(f"[bench] rep {rep + 1}/{args.reps} evaluation examples/s {evaluation[-1]}",
                  flush=True)
    accuracy = {}
    for recipe in (["tutorial"] if args.tutorial_accuracy else []) + ["plain", "sftlib"]:
        accuracy[recipe] = run_worker(recipe, "accuracy", 0, args.accuracy_rows,
                                      args.accuracy_epochs, args.model)
        print(f"[bench] accuracy {recipe}: {accuracy[recipe]['accuracy']:.4f}", flush=True)
    summary = summarize(speed, accuracy)
    if evaluation:
        summary["evaluation"] = {f"eval_batch_{size}": median_of(evaluation, f"eval_batch_{size}")
                                 for size in EVAL_BATCH_SIZES}
    meta = {"machine": _machine(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "reps": args.reps,
            "train_rows": args.train_rows, "epochs": args.epochs,
            "accuracy_rows": args.accuracy_rows or "all", "accuracy_epochs": args.accuracy_epochs,
            "padding_max_abs_logit_diff": padding_equivalence(args.model)}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_train_ablations" if args.ablations else "bench_train"  # keep both tables
    (args.out / f"{name}.json").write_text(json.dumps(
        {"meta": meta, **summary, "raw": speed, "accuracy": accuracy}, indent=2) + "\n")
    table = markdown(summary, meta)
    (args.out / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
