"""A finished sweep's comparison, committed: copies what `sftlib compare` wrote (HTML,
comparison.json, CSV tables, the curves figure) and writes a README.md whose every number is
read from the sweep's own files (run manifests for times, comparison.json for the ranking and
the verdicts).

    sftlib sweep --grid lr=3e-5,1e-4,3e-4 --seeds 3 --set train_subset=1200 \\
        --notebooks 03 --sweep-dir reports/sweep-lr
    python -m benchmarks.sweep_report reports/sweep-lr --output reports/benchmarks/sweep_lr \\
        --command "sftlib sweep ..."

Not the runs themselves (models and checkpoints are hundreds of MB): the sweep folder keeps
them on the machine that ran it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from benchmarks.bench_quantize import cpu_description


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def run_folder(sweep_dirs: list[Path], run: str) -> Path:
    """The folder of run id `run` in whichever of the sweeps holds it."""
    for sweep_dir in sweep_dirs:
        if (sweep_dir / run).is_dir():
            return sweep_dir / run
    raise FileNotFoundError(f"run {run} is in none of {', '.join(map(str, sweep_dirs))}")


def sweep_times(sweep_dirs: list[Path], runs: list[str]) -> dict[str, float]:
    """Wall time from the first run's start to the last one's end, and per run."""
    manifests = [json.loads((run_folder(sweep_dirs, run) / "manifest.json").read_text())
                 for run in runs]
    starts = [_utc(m["started_utc"]) for m in manifests]
    ends = [_utc(m["finished_utc"]) for m in manifests]
    per_run = [(e - s).total_seconds() for s, e in zip(starts, ends)]
    return {"wall_s": (max(ends) - min(starts)).total_seconds(), "run_total_s": sum(per_run),
            "run_mean_s": sum(per_run) / len(per_run), "runs": len(runs)}


def run_rows(sweep_dirs: list[Path], comparison: dict) -> list[dict]:
    """One row per run: its config label, seed, validation / test accuracy and times (from the
    run's metrics.json and manifest.json), so a single run (a distillation teacher) can be
    cited by its id."""
    rows = []
    for label, config in comparison["configs"].items():
        for run in config["runs"]:
            folder = run_folder(sweep_dirs, run)
            metrics = json.loads((folder / "metrics.json").read_text())
            manifest = json.loads((folder / "manifest.json").read_text())
            rows.append({
                "run": run, "config": label, "seed": manifest.get("seed"),
                "validation_accuracy": metrics.get("validation", {}).get("accuracy"),
                "test_accuracy": metrics.get("test", {}).get("accuracy"),
                "training_runtime_s": metrics.get("training", {}).get("runtime_s"),
                "run_s": (_utc(manifest["finished_utc"])
                          - _utc(manifest["started_utc"])).total_seconds(),
            })
    return rows


SHOWN_KEYS = ("model", "dataset", "train_subset", "epochs", "batch_size", "schedule",
              "precision", "max_length")


def _shown_base(sweep: dict) -> dict:
    return {k: v for k, v in sweep["spec"]["base"].items() if k in SHOWN_KEYS}


TITLE = "A learning-rate sweep on the default data, compared"


TEXT_SUFFIXES = (".json", ".csv", ".ipynb", ".md")
ROOT = Path(__file__).resolve().parents[1]  # the project's


def relative_paths(text: str, root: Path = ROOT) -> str:
    """`text` with every path under `root` made relative to it (`root` itself: "."); only
    whole paths: `<root>-old/...` or `/srv<root>/...` stay as they are."""
    pattern = re.compile(rf"(?<![\w.\-/]){re.escape(str(root))}(/|(?![\w.\-/]))")
    return pattern.sub(lambda match: "" if match.group(1) == "/" else ".", text)


def copy_relative(source: Path, target: Path, root: Path = ROOT) -> None:
    """Copy a file; in a text file (JSON, CSV, a notebook, Markdown) paths under `root`
    become relative to it (`relative_paths`), so a committed study does not carry the
    machine's folder layout; line endings are kept. Other files are copied as they are."""
    if source.suffix not in TEXT_SUFFIXES:
        shutil.copy2(source, target)
        return
    with open(source, encoding="utf-8", newline="") as handle:
        text = handle.read()
    with open(target, "w", encoding="utf-8", newline="") as handle:
        handle.write(relative_paths(text, root))


def _mean_minutes(times: dict, runs: list[dict]) -> str:
    """Minutes a run on average: per config where the runs have more than one (a 1-epoch
    config and a 4-epoch one average to neither)."""
    by_config: dict[str, list[float]] = {}
    for row in runs:
        by_config.setdefault(row["config"], []).append(row["run_s"])
    if len(by_config) < 2:
        return f"{times['run_mean_s'] / 60:.1f} minutes a run on average"
    return "minutes a run on average: " + "; ".join(
        f"{label}: {sum(seconds) / len(seconds) / 60:.1f}" for label, seconds in by_config.items())


def readme(comparison: dict, times: dict, cpu: dict, commands: list[str], sweep: dict,
           note: str = "", title: str = TITLE, sweeps: int = 1,
           runs: list[dict] | None = None) -> str:
    metric = comparison["metric"]
    lines = [
        f"# {title}",
        "",
        "Written by `python -m benchmarks.sweep_report` from the sweep's own files; "
        "`06_comparing_runs.ipynb` is the executed comparison notebook (outputs included; "
        "its offline HTML, 2.7 MB with MathJax inlined, is not committed: `sftlib compare` "
        "on the sweep folder writes it).",
        "",
        "```bash",
        *commands,
        "```",
        "",
        f"- Machine: {cpu['model']}, {os.cpu_count()} CPU threads; flags "
        f"{', '.join(cpu['flags']) or 'none of the listed'} "
        f"({'with' if 'avx512_bf16' in cpu['flags'] or 'amx_bf16' in cpu['flags'] else 'without'}"
        " bf16 units).",
        f"- {times['runs']} runs, " + (
            f"{times['wall_s'] / 60:.1f} minutes from the first run's start to the last one's "
            "end" if sweeps == 1 else  # several sweeps: other runs ran between them
            f"{times['run_total_s'] / 60:.1f} minutes of runs in all") +
        f" ({_mean_minutes(times, runs or [])}"
        f"{'; ' + note if note else ''}).",
        f"- Base config (the rest: RunConfig defaults): {json.dumps(_shown_base(sweep))}",
        "",
        f"| config | seeds | validation {metric} | test {metric} | validation macro-F1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label in comparison["ranking"]:
        row = comparison["summary"][label]

        def cell(key: str, row=row) -> str:
            mean, std = row[f"{key}/mean"], row[f"{key}/std"]
            return "" if mean is None else f"{mean:.4f}" + (
                f" ± {std:.4f}" if std is not None else "")

        lines.append(f"| {label} | {len(comparison['configs'][label]['seeds'])} | "
                     f"{cell('validation/' + metric)} | {cell('test/' + metric)} | "
                     f"{cell('validation/f1')} |")
    lines += ["", "Mean ± sample standard deviation over seeds; ranked on validation only.",
              "", "## Verdicts", "",
              "The best config against each other one on the same rows, pooled over the seed "
              "pairs (p-value and interval from a bootstrap over rows and seed pairs); the "
              "per-seed rows, each with McNemar's exact test, are in "
              "`tables/significance_<split>.csv`.", ""]
    lines += [f"- {line}" for line in comparison["verdicts"]] or [
        "One config: nothing to compare it with here."]
    if runs:
        lines += ["", "## Runs", "", "| run | config | seed | validation accuracy | "
                  "test accuracy | training s | run s |", "| --- " * 7 + "|"]
        lines += [f"| {r['run']} | {r['config']} | {r['seed']} | {r['validation_accuracy']:.4f} | "
                  f"{r['test_accuracy']:.4f} | {r['training_runtime_s']:.0f} | {r['run_s']:.0f} |"
                  for r in runs]
    index = ("`sweep.json` (the index: every point, its run id and status)"
             if sweeps == 1 else
             "`<sweep folder>.json` (each sweep's index: every point, its run id and status)")
    lines += ["", f"Files: `comparison.json`, `tables/`, `figures/comparison_curves.png`, "
              f"`runs.csv` (each run's scores and seconds), {index}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dirs", type=Path, nargs="+",
                        help="one sweep folder, or several compared together")
    parser.add_argument("--output", type=Path, default=Path("reports/benchmarks/sweep_lr"))
    parser.add_argument("--comparison", type=Path,
                        help="default: <sweep>/comparison (required with several sweeps: "
                             "`sftlib compare SWEEP... --output DIR`)")
    parser.add_argument("--command", required=True, action="append",
                        help="the sweep command, for the README (repeat: one per sweep)")
    parser.add_argument("--note", default="", help="what else the machine did meanwhile")
    parser.add_argument("--title", default=TITLE, help="the README's heading")
    args = parser.parse_args(argv)
    if len(args.sweep_dirs) > 1 and args.comparison is None:
        parser.error("several sweeps: pass --comparison, the folder `sftlib compare` wrote")
    comparison_dir = args.comparison or args.sweep_dirs[0] / "comparison"
    comparison = json.loads((comparison_dir / "comparison.json").read_text())
    sweep = json.loads((args.sweep_dirs[0] / "sweep.json").read_text())
    runs = [r for c in comparison["configs"].values() for r in c["runs"]]
    args.output.mkdir(parents=True, exist_ok=True)
    for name in ("comparison.json", "tables", "figures"):
        source, target = comparison_dir / name, args.output / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True,
                            copy_function=lambda a, b: copy_relative(Path(a), Path(b)))
        else:
            copy_relative(source, target)
    for notebook in (comparison_dir / "notebooks").glob("*.ipynb"):
        copy_relative(notebook, args.output / notebook.name)
    for sweep_dir in args.sweep_dirs:
        name = "sweep.json" if len(args.sweep_dirs) == 1 else f"{sweep_dir.name}.json"
        copy_relative(sweep_dir / "sweep.json", args.output / name)
    rows = [{**row, "config": relative_paths(row["config"])}  # a teacher's path, say
            for row in run_rows(args.sweep_dirs, comparison)]
    text = relative_paths(readme(comparison, sweep_times(args.sweep_dirs, runs),
                                 cpu_description(), args.command, sweep, args.note, args.title,
                                 len(args.sweep_dirs), rows))
    with open(args.output / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.output / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
