"""The teacher's labelling pass in fp32 and under bf16 autocast (`teacher_precision`), on the
same texts in one process, taking turns: texts per second and their ratio, and how far the
bf16 logits are from the fp32 ones (argmax agreement, largest logit difference, mean KL of
the temperature-softened distributions, which is what the distillation loss reads), and the
teacher's validation accuracy both ways.

    python -m benchmarks.bench_teacher_labels --teacher reports/<run-id> [--texts 2048]

The texts: the first --texts / 2 train texts of the teacher's own run config's dataset, and
one perturbed copy of each (`sftlib.distill.augment_texts`, seed 42): what a transfer set asks
the teacher to label. Each precision labels them --rounds times after a warm-up, taking turns;
the best pass counts (`sftlib.deploy.examples_per_second`). Compare the ratio, not the
absolute rates, across machines: bf16 is fast only where the CPU has bf16 units (AMX or
AVX512-BF16) or on a GPU. Writes bench_teacher_labels.md
and .json to --output-dir (reports/benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import log_softmax

from benchmarks.bench_quantize import cpu_description
from sftlib import data, deploy, distill
from sftlib.config import RunConfig


def closeness(reference: np.ndarray, other: np.ndarray, temperature: float) -> dict[str, float]:
    """How far `other` logits are from `reference` ones, row by row."""
    p_log = log_softmax(reference.astype(np.float64) / temperature, axis=1)
    q_log = log_softmax(other.astype(np.float64) / temperature, axis=1)
    kl = (np.exp(p_log) * (p_log - q_log)).sum(axis=1)
    return {"argmax_agreement": float((reference.argmax(1) == other.argmax(1)).mean()),
            "max_abs_logit_difference": float(np.abs(reference - other).max()),
            "mean_kl_at_temperature": float(kl.mean()), "temperature": temperature}


def shown_path(folder: Path) -> str:
    """`folder` relative to the working directory when it is below it (the committed page
    names no machine's home), else as it is."""
    relative = os.path.relpath(folder)
    return str(folder) if relative.startswith("..") else relative


def markdown(result: dict) -> str:
    meta, rates = result["meta"], result["texts_per_s"]
    cpu = meta["cpu"]
    close, val = result["bf16_against_fp32"], result["validation_accuracy"]
    return "\n".join([
        "# The teacher's labelling pass: fp32 and bf16 autocast",
        "",
        f"Written by `python -m benchmarks.bench_teacher_labels` on {meta['date']}. Device: "
        f"{meta['device']}; CPU: {cpu['model']}, {cpu['cpus']} logical CPUs, flags "
        f"{', '.join(cpu['flags'])}; {meta['threads']} torch threads; load average "
        f"{meta['load_before']} before, {meta['load_after']} after. torch {meta['torch']}.",
        "",
        f"Teacher: {meta['teacher']} ({meta['teacher_note']}). Texts: {meta['texts']} "
        f"({meta['texts'] // 2} train texts and a perturbed copy of each), batch size "
        f"{meta['batch_size']}, max_length {meta['max_length']}; best of {meta['rounds']} "
        "passes each, taking turns.",
        "",
        "| precision | texts / s |",
        "| --- | ---: |",
        *(f"| {name} | {rate:.1f} |" for name, rate in rates.items()),
        "",
        f"bf16 labels **{result['bf16_speedup']:.2f}x** as many texts a second as fp32.",
        "",
        f"bf16 against fp32 on those texts: argmax agreement {close['argmax_agreement']:.4f}, "
        f"largest logit difference {close['max_abs_logit_difference']:.3f}, mean "
        f"KL(fp32 || bf16) of the distributions at temperature {close['temperature']:g}: "
        f"{close['mean_kl_at_temperature']:.2e}. Validation accuracy "
        f"({val['rows']} rows): fp32 {val['fp32']:.4f}, bf16 {val['bf16']:.4f}.",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="a run folder or a saved classifier")
    parser.add_argument("--texts", type=int, default=2048, help="texts labelled per pass "
                        "(half train texts, half their copies)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=RunConfig().eval_batch_size)
    parser.add_argument("--temperature", type=float, default=RunConfig().distill_temperature)
    parser.add_argument("--output-dir", default="reports/benchmarks")
    args = parser.parse_args(argv)
    if args.texts < 2 or args.rounds < 1:
        parser.error("--texts must be at least 2 and --rounds at least 1")

    folder = distill.resolve_teacher(args.teacher)
    cfg = deploy.trained_config(folder, {})
    dataset = data.load_from_config(cfg)
    originals = list(dataset["train"]["text"][: args.texts // 2])
    texts = originals + distill.augment_texts(originals, 1, seed=42)
    load_before = os.getloadavg()
    fp32 = deploy.Predictor(folder, batch_size=args.batch_size)
    predictors = {"fp32": fp32, "bf16": deploy.Predictor(folder, batch_size=args.batch_size,
                                                         model=fp32.model, bf16=True)}
    rates = deploy.examples_per_second(predictors, texts, args.batch_size, args.rounds)
    logits = {name: predictor.logits(texts) for name, predictor in predictors.items()}
    validation = dataset["validation"]
    labels = np.asarray(validation["label"])
    accuracy = {name: float((predictor.logits(list(validation["text"])).argmax(1)
                             == labels).mean()) for name, predictor in predictors.items()}
    result = {
        "meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "device": fp32.device,
                 "cpu": cpu_description(), "threads": torch.get_num_threads(),
                 "torch": torch.__version__, "teacher": shown_path(folder),
                 "teacher_note": f"{cfg.model}, trained on {cfg.dataset}",
                 "texts": len(texts), "batch_size": args.batch_size,
                 "max_length": fp32.max_length, "rounds": args.rounds,
                 "load_before": [round(x, 2) for x in load_before],
                 "load_after": [round(x, 2) for x in os.getloadavg()]},
        "texts_per_s": rates, "bf16_speedup": rates["bf16"] / rates["fp32"],
        "bf16_against_fp32": closeness(logits["fp32"], logits["bf16"], args.temperature),
        "validation_accuracy": {**accuracy, "rows": len(labels)},
    }
    text = markdown(result)
    print(text)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_teacher_labels.md").write_text(text)
    (out / "bench_teacher_labels.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
