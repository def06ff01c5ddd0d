"""The model-quality studies side by side, against the targets of the issue that asked for them:
one Markdown page whose every number is read from the committed studies
(`reports/benchmarks/sweep_*/comparison.json`, and `runs.csv` for a teacher's own scores).

    python -m benchmarks.quality_summary                # writes reports/benchmarks/model_quality.md

Each study compares recipe options with the default recipe on the same seeds (`sftlib sweep`,
`sftlib compare`, committed by `benchmarks.sweep_report`). A study's default runs are the config
whose differing keys all hold RunConfig's defaults. What it does not do: rerun anything, or
choose on the test split (ranking and targets use validation; test is reported beside it).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path, PurePath
from typing import Any

from sftlib.compare import shown_value
from sftlib.config import RunConfig

BENCHMARKS = Path("reports/benchmarks")
METRIC = "accuracy"


@dataclasses.dataclass(frozen=True)
class Study:
    folder: str  # under reports/benchmarks/
    what: str  # the option, in words


STUDIES = (
    Study("sweep_pooling", "mean pooling of the tokens instead of [CLS] + pooler"),
    Study("sweep_llrd", "layer-wise learning-rate decay 0.8"),
    Study("sweep_ema", "an exponential moving average of the weights (0.999)"),
    Study("sweep_distill", "distillation from a fine-tuned mpnet-base (w 0.5, T 2)"),
    Study("sweep_mean_distill", "mean pooling and distillation (w 0.8, T 2) together"),
    Study("sweep_mean_3ep", "mean pooling, trained 3 epochs instead of 2"),
    Study("sweep_mean_distill_aug", "mean pooling and distillation (w 0.8, T 2) with a transfer "
          "set: 2 perturbed copies of each text, taught by the teacher alone"),
    Study("sweep_mean_distill_aug_4ep", "that transfer-set recipe trained 4 epochs instead of 2"),
    Study("sweep_mean_distill_aug_t4", "that transfer-set recipe at temperature 4 instead of 2"),
    Study("sweep_transfer_k8", "a transfer set of 8 copies a text, trained 1 epoch, the teacher "
          "(trained again, the same scores) labelling in bf16"),
)
# options against each other rather than against the default: the best config's pooled
# verdict over the other, as the study's README gives it
HEAD_TO_HEAD = (
    Study("sweep_augment", "the transfer set (2 perturbed copies of each text) against none, "
          "both with mean pooling and distillation (w 0.8, T 2) from the same teacher"),
    Study("sweep_augment_steps", "the transfer set (2 copies, 2 epochs) against as many "
          "optimizer steps without it (6 epochs), the same recipe otherwise"),
    Study("sweep_augment_variants", "the transfer-set recipe (2 copies, T 2, 2 epochs) against "
          "it trained 4 epochs and against it at temperature 4"),
    Study("sweep_transfer_size", "8 copies a text (1 epoch) against 2 (2 epochs), both with "
          "the same teacher's bf16 labels"),
    Study("sweep_relation", "the relation term (the student's pairwise cosine similarities "
          "pulled to the teacher's) at weight 0.1 and 1 against none, on the 2-copy "
          "transfer-set recipe with the same teacher's bf16 labels"),
    Study("sweep_mean_lr", "mean pooling at peak learning rates 2e-4 and 3e-4 against the "
          "default ([CLS] at 1e-4), without a teacher"),
    Study("sweep_transfer_lr", "the 2-copy transfer-set recipe at peak learning rate 2e-4 "
          "against 1e-4, the same teacher's bf16 labels"),
)
TEACHER_STUDY = "sweep_mpnet"  # the teacher recipe: mpnet-base fine-tuned, 3 seeds
# the targets (validation accuracy, mean of 3 seeds)
TARGET_DEFAULT = 0.86
TARGET_TEACHER = 0.88


def load(folder: Path) -> dict[str, Any] | None:
    path = folder / "comparison.json"
    return json.loads(path.read_text()) if path.is_file() else None


def default_label(comparison: dict[str, Any]) -> str | None:
    """The config whose differing keys all hold RunConfig's defaults (the study's baseline)."""
    defaults = dataclasses.asdict(RunConfig())
    for label, config in comparison["configs"].items():
        if all(defaults.get(key) == value for key, value in config["config"].items()):
            return label
    return None


def mean_std(comparison: dict[str, Any], label: str, split: str) -> tuple[float, float | None]:
    row = comparison["summary"][label]
    return row[f"{split}/{METRIC}/mean"], row[f"{split}/{METRIC}/std"]


def pooled_test(comparison: dict[str, Any], label: str, split: str) -> dict[str, Any] | None:
    """The seed-pooled paired test between the study's best config and `label`."""
    for record in comparison["significance"].get(split, []):
        if record["config"] == label and record["scope"].startswith("pooled"):
            return record
    return None


def option_row(comparison: dict[str, Any], option: str, baseline: str) -> dict[str, Any]:
    """The option against the default: means, spread and the pooled validation verdict, signed
    as option minus default whichever of the two ranked first."""
    row = {"option": option, "seeds": len(comparison["configs"][option]["seeds"])}
    for split in ("validation", "test"):
        row[split] = mean_std(comparison, option, split)
        row[f"{split}_default"] = mean_std(comparison, baseline, split)
        best_is_option = comparison["best"] == option
        record = pooled_test(comparison, baseline if best_is_option else option, split)
        if record is not None:
            row[f"{split}_test"] = signed_test(record, 1 if best_is_option else -1)
    return row


def signed_test(record: dict[str, Any], sign: int = 1) -> dict[str, Any]:
    """A pooled test record as shown: the difference, its interval and verdict seen from the
    other side when `sign` is -1 (the best config's "better than" is the other's "worse than")."""
    # + 0.0: a flipped zero prints as +0.00, not -0.00
    low, high = sorted((sign * record["low"] + 0.0, sign * record["high"] + 0.0))
    verdict = record["verdict"]
    if sign < 0 and verdict == "better than":
        verdict = "worse than"
    return {"difference": sign * record["difference"], "low": low, "high": high,
            "p": record["p_value"], "verdict": verdict}


def teacher_scores(teacher_path: str, teacher_study: Path) -> tuple[float, str] | None:
    """The teacher's own validation accuracy: its row in the runs.csv of the teacher study, or
    of another committed study (a teacher trained again), when it is one of those runs; else
    the teacher study's mean over seeds (said so); None without the study."""
    run_id = PurePath(teacher_path.rstrip("/")).name
    for runs_csv in dict.fromkeys((teacher_study / "runs.csv",  # first, and once
                                   *sorted(teacher_study.parent.glob("sweep_*/runs.csv")))):
        if not runs_csv.is_file():
            continue
        with open(runs_csv, newline="") as handle:
            for row in csv.DictReader(handle):
                if row["run"] == run_id:
                    return float(row["validation_accuracy"]), f"teacher run {run_id}"
    comparison = load(teacher_study)
    if comparison is None:
        return None
    label = comparison["ranking"][0]
    return mean_std(comparison, label, "validation")[0], "the teacher recipe's mean over seeds"


def _cell(value: tuple[float, float | None]) -> str:
    mean, std = value
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def _verdict(test: dict[str, Any] | None) -> str:
    if test is None:
        return ""
    return (f"{test['verdict']} ({test['difference'] * 100:+.2f} points, "
            f"{test['low'] * 100:+.2f} to {test['high'] * 100:+.2f}, p = {_p_value(test['p'])})")


def _p_value(p: float) -> str:
    return f"{p:.2f}" if p >= 0.01 else f"{p:.3f}"  # 0.002, not 0.00


def head_to_head_lines(benchmarks: Path, studies: tuple[Study, ...]) -> list[str]:
    """One line per committed head-to-head study: the config ranked first on validation
    against each other one, means and the pooled verdict."""
    lines = []
    for study in studies:
        comparison = load(benchmarks / study.folder)
        if comparison is None:
            continue
        best = comparison["best"]
        for other in comparison["ranking"][1:]:
            record = pooled_test(comparison, other, "validation")
            test = None if record is None else signed_test(record)
            lines.append(
                f"- [{study.folder}]({study.folder}/README.md), {study.what}: `{best}` "
                f"({_cell(mean_std(comparison, best, 'validation'))}) ranked first on "
                f"validation, against `{other}` "
                f"({_cell(mean_std(comparison, other, 'validation'))}): "
                f"{_verdict(test) or 'no paired test'}; test "
                f"{_cell(mean_std(comparison, best, 'test'))} against "
                f"{_cell(mean_std(comparison, other, 'test'))}.")
    return lines


def summary(benchmarks: Path = BENCHMARKS, studies: tuple[Study, ...] = STUDIES,
            teacher_study: str = TEACHER_STUDY,
            head_to_head: tuple[Study, ...] = HEAD_TO_HEAD) -> str:
    lines = ["# Model quality: the recipe options against the default, and the targets", "",
             "Written by `python -m benchmarks.quality_summary` from the committed studies "
             "(each link: its commands, machine, per-seed tables and the comparison notebook). "
             "Validation accuracy, mean ± sample std over the seeds; the verdict is the paired "
             "test pooled over seed pairs (difference option − default, its 95% interval, "
             "bootstrap p). Chosen on validation only; test is reported beside it.", "",
             "| study | option | seeds | validation | default's validation | verdict "
             "(validation) | test | default's test |", "| --- " * 8 + "|"]
    defaults, options, distilled = [], [], []
    for study in studies:
        comparison = load(benchmarks / study.folder)
        if comparison is None:
            continue
        baseline = default_label(comparison)
        if baseline is None:
            raise ValueError(f"{study.folder}: no config with RunConfig's defaults to compare with")
        defaults.append(mean_std(comparison, baseline, "validation")[0])
        for option in comparison["ranking"]:
            if option == baseline:
                continue
            row = option_row(comparison, option, baseline)
            config = comparison["configs"][option]["config"]
            shown = ", ".join(f"{key}={shown_value(key, value, short=True)}"
                              for key, value in config.items())
            options.append((study, shown, row["validation"][0], config))
            lines.append(
                f"| [{study.folder}]({study.folder}/README.md) | {study.what} (`{shown}`) | "
                f"{row['seeds']} | {_cell(row['validation'])} | "
                f"{_cell(row['validation_default'])} | {_verdict(row.get('validation_test'))} | "
                f"{_cell(row['test'])} | {_cell(row['test_default'])} |")
            teacher = config.get("teacher")
            if teacher:
                distilled.append((study, row, teacher))
    versus = head_to_head_lines(benchmarks, head_to_head)
    if versus:
        lines += ["", "## Options against each other", "", *versus]
    lines += ["", "## The targets", ""]
    if defaults:
        seen = sorted({round(value, 4) for value in defaults})
        reached = "reached" if max(defaults) >= TARGET_DEFAULT else "not reached"
        lines.append(f"- Default recipe (MiniLM-L6), validation accuracy "
                     f"{' / '.join(f'{value:.4f}' for value in seen)} (the default runs the "
                     f"{len(defaults)} studies compared with: the same recipe and seeds); "
                     f"target {TARGET_DEFAULT:.2f}: {reached}.")
    if options:
        study, option, accuracy, config = max(options, key=lambda item: item[2])
        if accuracy < TARGET_DEFAULT:
            reached = "not reached by any option"
        elif config.get("teacher"):  # a fresh clone's main job has no teacher to learn from
            reached = ("reached by this option, which needs a fine-tuned teacher run first: "
                       "not something the default main job can have")
        else:
            reached = "reached by this option"
        lines.append(f"- The best option on validation: `{option}` ({study.folder}), "
                     f"{accuracy:.4f} (the highest mean; the verdicts above say which "
                     f"differences the seeds can tell); target {TARGET_DEFAULT:.2f}: "
                     f"{reached}.")
    teacher_comparison = load(benchmarks / teacher_study)
    if teacher_comparison is not None:
        ranked = teacher_comparison["ranking"][0]
        validation = mean_std(teacher_comparison, ranked, "validation")
        test = mean_std(teacher_comparison, ranked, "test")
        row = teacher_comparison["summary"][ranked]
        seeds = len(teacher_comparison["configs"][ranked]["seeds"])
        label = ranked
        sweep_file = benchmarks / teacher_study / "sweep.json"
        if sweep_file.is_file():  # the recipe: the sweep's base config, as --set would say it
            base = json.loads(sweep_file.read_text())["spec"]["base"]
            label = ", ".join(f"{key}={base[key]}" for key in ("model", "pooling", "lr", "epochs")
                              if key in base)
        lines.append(
            f"- mpnet-base fine-tuned ([{teacher_study}]({teacher_study}/README.md), `{label}`): "
            f"validation {_cell(validation)}, test {_cell(test)} over {seeds} seeds, "
            f"{row['training/runtime_s/mean'] / 60:.1f} minutes of training a run on average "
            "on the study's machine (its README names the CPU); "
            f"target {TARGET_TEACHER:.2f}: "
            f"{'reached' if validation[0] >= TARGET_TEACHER else 'not reached'}.")
    for study, row, teacher in distilled:
        scores = teacher_scores(teacher, benchmarks / teacher_study)
        if scores is None:
            lines.append(f"- Distilled MiniLM ({study.folder}): the teacher's scores are not "
                         f"committed ({teacher_study} missing).")
            continue
        teacher_accuracy, source = scores
        student, default = row["validation"][0], row["validation_default"][0]
        closed = (student - default) / (teacher_accuracy - default)
        lines.append(
            f"- Distilled MiniLM ({study.folder}): validation {student:.4f} against the default's "
            f"{default:.4f} and the teacher's {teacher_accuracy:.4f} ({source}): "
            f"{closed:.0%} of the gap closed; closer to the teacher than to the default: "
            f"{'yes' if closed > 0.5 else 'no'}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmarks", type=Path, default=BENCHMARKS)
    parser.add_argument("--output", type=Path, default=BENCHMARKS / "model_quality.md")
    args = parser.parse_args(argv)
    text = summary(args.benchmarks)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
