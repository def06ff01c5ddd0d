"""Compare runs: which config is best, by how much, and whether the difference is real.

`sftlib compare RUN_OR_SWEEP...` and the task's comparison notebook read run
folders (a sweep folder stands for the runs its sweep.json lists; any other folder for the
run folders in it; only runs whose manifest says "ok" count, one per config and seed, the
newest) and build:

- `config_table`: one row per config, only the RunConfig keys that differ between configs
  (runs that differ only in seed are one config), with the seeds it ran;
- `metrics_table`: per config, mean ± std over seeds of the validation and test accuracy,
  macro-F1 and loss, training time and samples/s (from each run's metrics.json);
- `curves_figure`: training loss, validation metric and learning rate of every run, one
  colour per config, each seed a thin line and the seeds' mean a thick one;
- `significance_table`: the best config (highest mean validation `metric`, or lowest loss)
  against each other one on the same rows, on per-example correctness (accuracy, whatever
  ranks), per seed pair and pooled (`sftlib.significance`: McNemar's exact test and a paired
  bootstrap; the verdict in words), on validation (where the best was chosen) and on test
  (the confirmation that the choice did not make);
- the ranking, all of it in `comparison.json` + CSV files (`write_outputs`).

The paired tests need per-example predictions (`predictions/<split>.csv`, written by
notebook 03 and `sftlib train`) on the same rows: runs evaluated on other rows (another
dataset or eval_subset) are compared in the tables but not tested, and say why.

The task's `comparison_notebook` is what runs (classification: 06_comparing_runs); a task
without one is refused (instruction: no per-example correctness; its curves overlay with
`sftlib.live.plot_metrics`). Not supported: runs of different tasks together, train rows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd

from sftlib import significance
from sftlib.config import inert_options, with_defaults
from sftlib.report import resolve_path, write_json_atomic
from sftlib.sweep import NOT_THE_RECIPE, config_id

SPLITS = ("validation", "test")
METRIC_COLUMNS = (("validation", "accuracy"), ("validation", "f1"), ("validation", "loss"),
                  ("test", "accuracy"), ("test", "f1"), ("test", "loss"),
                  ("training", "runtime_s"), ("training", "samples_per_s"))


class CompareError(ValueError):
    """Nothing to compare, or runs that cannot be compared; one line saying which and why."""


@dataclasses.dataclass
class CompareConfig:
    """The comparison's knobs (notebook 06's parameters, `sftlib compare`'s flags)."""

    runs: list[str] = dataclasses.field(default_factory=lambda: ["latest"])
    output_dir: str = "reports/comparison"
    metric: str = "accuracy"  # accuracy | f1 | loss: what ranks the configs (validation)
    alpha: float = significance.ALPHA
    bootstrap_resamples: int = significance.BOOTSTRAP_RESAMPLES

    def __post_init__(self) -> None:
        if isinstance(self.runs, str):
            self.runs = [self.runs]
        if not self.runs or not all(isinstance(r, str) and r for r in self.runs):
            raise CompareError("runs: a list of run or sweep folders (or 'latest')")
        if self.metric not in ("accuracy", "f1", "loss"):
            raise CompareError(f"metric: one of accuracy, f1, loss; got {self.metric!r}")
        if not 0 < self.alpha < 1:
            raise CompareError(f"alpha: a level in (0, 1), got {self.alpha}")
        if not 100 <= self.bootstrap_resamples <= 1_000_000:
            raise CompareError("bootstrap_resamples: between 100 and 1000000, got "
                               f"{self.bootstrap_resamples}")

    @classmethod
    def for_notebook(cls, namespace: dict[str, Any]) -> CompareConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: namespace[k] for k in names if k in namespace})


@dataclasses.dataclass
class RunRecord:
    """One finished run: its folder, config and metrics."""

    run_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    started: str = ""  # the manifest's started_utc: the newer of two same-seed runs wins

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    def predictions(self, split: str) -> pd.DataFrame | None:
        path = self.run_dir / "predictions" / f"{split}.csv"
        return pd.read_csv(path, dtype={"id": str}) if path.is_file() else None

    def records(self) -> pd.DataFrame:
        from sftlib.metrics_log import read_metrics

        path = self.run_dir / "metrics.jsonl"
        return read_metrics(path) if path.is_file() else pd.DataFrame()


# finding the runs ------------------------------------------------------------------------

def latest_sweep(reports_root: str | Path = "reports") -> Path:
    """The newest sweep folder (by its sweep.json) under `reports_root`."""
    sweeps = sorted(resolve_path(reports_root).glob("*/sweep.json"),
                    key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise CompareError(f"no sweep folder in {resolve_path(reports_root)}: run `sftlib "
                           "sweep ...` first, or name run folders to compare")
    return sweeps[-1].parent


def _run_folders(path: Path) -> list[Path]:
    if (path / "manifest.json").is_file():
        return [path]
    if (path / "sweep.json").is_file():
        index = json.loads((path / "sweep.json").read_text())
        return [path / p["run"] for p in index.get("points", []) if p.get("run")]
    return sorted(p.parent for p in path.glob("*/manifest.json"))


def collect_runs(paths: Iterable[str | Path]) -> tuple[list[RunRecord], list[dict[str, str]]]:
    """The finished ("ok") runs under `paths`, and every other run found with the reason it
    is left out."""
    from sftlib.pipeline import run_status

    runs, skipped, seen = [], [], set()
    for given in paths:
        path = latest_sweep() if str(given) == "latest" else resolve_path(given)
        if not path.is_dir():
            raise CompareError(f"{given}: no such folder (give run or sweep folders)")
        for folder in _run_folders(path):
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            try:
                manifest = json.loads((folder / "manifest.json").read_text())
            except (OSError, json.JSONDecodeError):
                skipped.append({"run": folder.name, "reason": "no readable manifest.json"})
                continue
            status = run_status(manifest)
            if status != "ok":
                skipped.append({"run": folder.name, "reason": f"status {status}"})
                continue
            metrics_path = folder / "metrics.json"
            metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
            runs.append(RunRecord(folder, with_defaults(manifest.get("config", {})), metrics,
                                  str(manifest.get("started_utc", ""))))
    runs, duplicates = newest_per_seed(runs)
    skipped += duplicates
    if not runs:
        raise CompareError(f"no finished run in {', '.join(map(str, paths))}"
                           + (f" ({len(skipped)} left out: not ok)" if skipped else ""))
    comparison_task(runs)
    return runs, skipped


def newest_per_seed(runs: Sequence[RunRecord]) -> tuple[list[RunRecord], list[dict[str, str]]]:
    """One run per (config, seed): the newest; the others are left out, saying which run
    replaced them (a re-run must not count as another seed)."""
    kept: dict[tuple[str, int], RunRecord] = {}
    for run in sorted(runs, key=lambda r: (r.started, r.name)):
        key = (config_id(run.config, ignore=("seed",)), run.seed)
        kept[key] = run
    chosen = {id(r) for r in kept.values()}
    dropped = [{"run": r.name, "reason": "same config and seed as the newer run "
                f"{kept[(config_id(r.config, ignore=('seed',)), r.seed)].name}"}
               for r in runs if id(r) not in chosen]
    return [r for r in runs if id(r) in chosen], dropped


def comparison_task(runs: Sequence[RunRecord]) -> str:
    """The runs' one task, which must have a comparison notebook."""
    from sftlib.tasks import get_task

    tasks = sorted({str(r.config.get("task")) for r in runs})
    if len(tasks) > 1:
        raise CompareError(f"runs of several tasks ({', '.join(tasks)}): compare one task's "
                           "runs at a time")
    if get_task(tasks[0]).comparison_notebook is None:
        raise CompareError(f"{tasks[0]} runs have no per-example correctness to compare "
                           "(their curves overlay with sftlib.live.plot_metrics)")
    return tasks[0]


# configs -------------------------------------------------------------------------------------

def differing_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """The recipe keys whose values differ between configs (seed and bookkeeping left out)."""
    keys = sorted({k for c in configs for k in c} - set(NOT_THE_RECIPE) - {"seed"})
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


# the RunConfig keys that may hold a path (a local model, a data file, a teacher run folder)
PATH_KEYS = ("model", "dataset", "teacher")


def shown_value(key: str, value: Any, short: bool) -> Any:
    """A path setting as its last part (a run id, a file name) when short; others as they are."""
    if short and key in PATH_KEYS and isinstance(value, str) and "/" in value.rstrip("/"):
        return PurePath(value.rstrip("/")).name
    return value


def config_labels(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Config id -> label from the keys that differ ("lr=0.0001, schedule=cosine").

    Keys that change nothing in a config (`config.inert_options`: a distillation weight
    without a teacher) are left out of its label, and paths are shown by their last part (a
    teacher's run id, a file name), each only while the labels still tell every config apart;
    otherwise in full."""
    keys = differing_keys(list(configs.values()))
    for drop_inert, short in ((True, True), (True, False), (False, True), (False, False)):
        labels = {gid: ", ".join(f"{k}={shown_value(k, c.get(k), short)}" for k in keys
                                 if not (drop_inert and k in inert_options(c)))
                  or "the one config" for gid, c in configs.items()}
        if len(set(labels.values())) == len(labels):
            break
    return labels


def group_runs(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """Config label ("lr=0.0001, schedule=cosine") -> its runs, sorted by seed."""
    ids = [config_id(run.config, ignore=("seed",)) for run in runs]
    labels = config_labels({gid: run.config for gid, run in zip(ids, runs)})
    groups: dict[str, list[RunRecord]] = {}
    for gid, run in zip(ids, runs):
        groups.setdefault(labels[gid], []).append(run)
    return {label: sorted(group, key=lambda r: r.seed) for label, group in groups.items()}


def config_table(groups: dict[str, list[RunRecord]]) -> pd.DataFrame:
    """Rows: configs; columns: the keys that differ, the seeds, the run folders."""
    keys = differing_keys([g[0].config for g in groups.values()])
    rows = []
    for group in groups.values():
        rows.append({**{k: group[0].config.get(k) for k in keys},
                     "seeds": ", ".join(str(r.seed) for r in group),
                     "runs": ", ".join(r.name for r in group)})
    return pd.DataFrame(rows, index=pd.Index(list(groups), name="config"))


# metrics -------------------------------------------------------------------------------------

def metrics_summary(groups: dict[str, list[RunRecord]]) -> pd.DataFrame:
    """Rows: configs; columns: (split, metric, mean / std / n), numbers."""
    rows = {}
    for label, group in groups.items():
        row = {}
        for section, metric in METRIC_COLUMNS:
            values = [r.metrics.get(section, {}).get(metric) for r in group]
            # a diverged run's NaN is left out of its config's mean (and of n) rather than
            # turning the whole config blank
            values = np.array([v for v in values if v is not None], dtype=float)
            values = values[np.isfinite(values)]
            row[(section, metric, "mean")] = values.mean() if len(values) else np.nan
            # sample std (ddof=1): the spread a new seed would show; one seed has none
            row[(section, metric, "std")] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[(section, metric, "n")] = len(values)
        rows[label] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["split", "metric", "stat"])
    frame.index.name = "config"
    return frame


def mean_std_text(mean: float, std: float, digits: int = 4) -> str:
    if np.isnan(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")


def metrics_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as a reader's table: "mean ± std" per split and metric, seeds counted."""
    table = pd.DataFrame(index=summary.index)
    for section, metric in METRIC_COLUMNS:
        if (section, metric, "mean") not in summary:
            continue
        digits = 1 if section == "training" else 4
        table[f"{section} {metric}"] = [
            mean_std_text(m, s, digits) for m, s in zip(summary[(section, metric, "mean")],
                                                        summary[(section, metric, "std")])]
    table.insert(0, "seeds", summary[("validation", "accuracy", "n")].astype(int))
    return table


def ranking(summary: pd.DataFrame, metric: str) -> list[str]:
    """Configs best first by mean validation `metric` (lowest first for loss)."""
    values = summary[("validation", metric, "mean")]
    return list(values.sort_values(ascending=metric == "loss", kind="stable").index)


# paired significance ---------------------------------------------------------------------

def paired_correctness(a: Sequence[RunRecord], b: Sequence[RunRecord], split: str,
                       ) -> tuple[np.ndarray, np.ndarray, list[str]] | str:
    """(A's correct, B's correct, scopes) as (seed pairs, rows) arrays, or the reason the
    two configs cannot be paired. Seeds pair by value (42 with 42); configs whose seeds
    differ pair in seed order."""
    shared = sorted({r.seed for r in a} & {r.seed for r in b})
    if shared:
        pairs = [(next(r for r in a if r.seed == s), next(r for r in b if r.seed == s))
                 for s in shared]
        scopes = [f"seed {s}" for s in shared]
    else:
        pairs = list(zip(a, b))
        scopes = [f"seeds {x.seed} / {y.seed}" for x, y in pairs]
    correct_a, correct_b = [], []
    for x, y in pairs:
        px, py = x.predictions(split), y.predictions(split)
        if px is None or py is None:
            missing = x if px is None else y
            return f"{missing.name} has no predictions/{split}.csv"
        if len(px) != len(py) or not (px["id"].to_numpy() == py["id"].to_numpy()).all():
            return (f"{x.name} and {y.name} were scored on different {split} rows (another "
                    "dataset, split or eval_subset): not paired")
        correct_a.append(px["correct"].astype(bool).to_numpy())
        correct_b.append(py["correct"].astype(bool).to_numpy())
    return np.array(correct_a), np.array(correct_b), scopes


def significance_table(groups: dict[str, list[RunRecord]], best: str, split: str,
                       alpha: float = significance.ALPHA,
                       resamples: int = significance.BOOTSTRAP_RESAMPLES) -> pd.DataFrame:
    """The best config against every other on `split`: a row per seed pair and a pooled
    row per config, each with McNemar's p, the bootstrap interval and the verdict."""
    rows = []
    for other, runs in groups.items():
        if other == best:
            continue
        paired = paired_correctness(groups[best], runs, split)
        if isinstance(paired, str):
            rows.append({"config": other, "scope": "not tested", "verdict": paired})
            continue
        correct_best, correct_other, scopes = paired
        results = [significance.compare_correctness(correct_best[i], correct_other[i], scope,
                                                    alpha, resamples, seed=i)
                   for i, scope in enumerate(scopes)]
        if len(scopes) > 1:
            results.append(significance.compare_correctness(
                correct_best, correct_other, f"pooled ({len(scopes)} seed pairs)", alpha,
                resamples, seed=len(scopes)))
        rows += [{"config": other, **r.to_dict()} for r in results]
    return pd.DataFrame(rows)


PHRASES = {"better": "better than", "worse": "worse than",
           "not distinguishable from": "not distinguishable from"}


def verdict_lines(table: pd.DataFrame, best: str, split: str) -> list[str]:
    """One sentence per other config, from its pooled (or only) row."""
    lines: list[str] = []
    if table.empty or "config" not in table:
        return lines
    for other, rows in table.groupby("config", sort=False):
        row = rows.iloc[-1]
        if row["scope"] == "not tested":
            lines.append(f"{best} vs {other} on {split}: not tested ({row['verdict']})")
            continue
        lines.append(
            f"{split}: {best} is {PHRASES[row['verdict']]} {other}: accuracy difference "
            f"{row['difference'] * 100:+.2f} points (95% interval {row['low'] * 100:+.2f} to "
            f"{row['high'] * 100:+.2f}), {row['test']} p = {row['p_value']:.3g} "
            f"({row['scope']}; {int(row['only_a_right'])} vs {int(row['only_b_right'])} "
            f"{'rows' if row['scope'].startswith('seed') else 'row x seed-pair cases'} only "
            "one got right)")
    return lines


# curves --------------------------------------------------------------------------------------

def curves_figure(groups: dict[str, list[RunRecord]], metric: str = "accuracy"):
    """Training loss, validation `metric` and learning rate against the step: one colour per
    config, a thin line per seed, a thick line for the seeds' mean."""
    import matplotlib.pyplot as plt

    from sftlib.metrics_log import ema
    from sftlib.plots import finish_axes

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (("loss", "Training loss (smoothed)", "cross-entropy (nats / example)"),
              (f"eval_{metric}", f"Validation {metric}", metric),
              ("learning_rate", "Learning rate", "learning rate"))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for number, (label, runs) in enumerate(groups.items()):
        colour = colours[number % len(colours)]
        for ax, (column, _, _) in zip(axes, panels):
            curves = []
            for run in runs:
                records = run.records()
                if column not in records:
                    continue
                rows = records[records[column].notna()]
                values = ema(rows[column]) if column == "loss" else rows[column]
                curve = pd.Series(values.to_numpy(), index=rows["step"].to_numpy())
                curve = curve[~curve.index.duplicated(keep="last")]
                curves.append(curve)
                ax.plot(curve.index, curve.to_numpy(), color=colour, lw=0.7, alpha=0.45)
            if curves:
                mean = pd.concat(curves, axis=1).mean(axis=1)
                ax.plot(mean.index, mean.to_numpy(), color=colour, lw=2.2,
                        label=f"{label} (mean of {len(curves)})")
    for ax, (_, title, ylabel) in zip(axes, panels):
        if not ax.lines:  # e.g. eval_strategy "no": say so rather than show empty axes
            ax.text(0.5, 0.5, "not logged by these runs", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
        finish_axes(ax, title, "optimizer step", ylabel, legend=False)
    axes[0].legend(fontsize=8)
    fig.suptitle("Runs by config: thin lines are seeds, thick lines their mean")
    fig.tight_layout()
    return fig


# all of it -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Comparison:
    groups: dict[str, list[RunRecord]]
    skipped: list[dict[str, str]]
    summary: pd.DataFrame
    ranking: list[str]
    significance: dict[str, pd.DataFrame]  # split -> significance_table
    cfg: CompareConfig

    @property
    def best(self) -> str:
        return self.ranking[0]

    def verdicts(self) -> list[str]:
        return [line for split, table in self.significance.items() if len(table)
                for line in verdict_lines(table, self.best, split)]

    def to_json(self) -> dict[str, Any]:
        summary = {label: {f"{s}/{m}/{stat}": (None if pd.isna(v) else float(v))
                           for (s, m, stat), v in row.items()}
                   for label, row in self.summary.iterrows()}
        return {
            "metric": self.cfg.metric, "alpha": self.cfg.alpha,
            "bootstrap_resamples": self.cfg.bootstrap_resamples,
            "ranking": self.ranking, "best": self.best,
            "configs": {label: {"runs": [r.name for r in runs],
                                "seeds": [r.seed for r in runs],
                                "config": {k: runs[0].config.get(k) for k in
                                           differing_keys([g[0].config
                                                           for g in self.groups.values()])}}
                        for label, runs in self.groups.items()},
            "summary": summary, "skipped": self.skipped,
            "significance": {split: json.loads(table.to_json(orient="records"))
                             for split, table in self.significance.items()},
            "verdicts": self.verdicts(),
        }


def compare(cfg: CompareConfig) -> Comparison:
    runs, skipped = collect_runs(cfg.runs)
    groups = group_runs(runs)
    summary = metrics_summary(groups)
    order = ranking(summary, cfg.metric)
    tests = {split: significance_table(groups, order[0], split, cfg.alpha,
                                       cfg.bootstrap_resamples)
             for split in SPLITS} if len(groups) > 1 else {}
    return Comparison(groups, skipped, summary, order, tests, cfg)


def write_outputs(comparison: Comparison, output_dir: str | Path) -> Path:
    """comparison.json and tables/{configs,metrics,significance_<split>}.csv."""
    folder = resolve_path(output_dir)
    (folder / "tables").mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "comparison.json", comparison.to_json())
    config_table(comparison.groups).to_csv(folder / "tables" / "configs.csv")
    flat = comparison.summary.copy()
    flat.columns = ["/".join(c) for c in flat.columns]
    flat.loc[comparison.ranking].to_csv(folder / "tables" / "metrics.csv")
    for split, table in comparison.significance.items():
        table.to_csv(folder / "tables" / f"significance_{split}.csv", index=False)
    return folder / "comparison.json"


# the notebook, run headlessly --------------------------------------------------------------



def default_output_dir(paths: Sequence[str]) -> Path:
    """`<sweep>/comparison` for one sweep folder, else `reports/comparison`; a folder that
    exists already gets the next free `-2`, `-3`, ... (an earlier comparison is kept)."""
    first = latest_sweep() if list(paths) == ["latest"] else resolve_path(paths[0])
    base = first / "comparison" if len(paths) == 1 and (first / "sweep.json").is_file() \
        else resolve_path("reports") / "comparison"
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def run_comparison(cfg: CompareConfig, kernel_name: str = "python3",
                   log=print) -> Path:
    """Notebook 06 on `cfg.runs` with papermill into `cfg.output_dir` (a new folder): the
    executed notebook, its HTML, figures, comparison.json and the CSV tables. The runs are
    read and checked first, so nothing to compare fails before a kernel starts."""
    import papermill as pm

    from sftlib import html_report
    from sftlib.pipeline import (
        PipelineError,
        execute_notebook,
        failing_cell,
        kernel_environment,
        notebook_dir,
    )
    from sftlib.report import project_root
    from sftlib.tasks import get_task

    comparison = compare(cfg)  # raises CompareError on bad input, in seconds
    task = comparison_task([r for group in comparison.groups.values() for r in group])
    output = resolve_path(cfg.output_dir)
    if output.exists() and any(output.iterdir()):
        raise CompareError(f"{output} exists and is not empty; choose another --output "
                           "(nothing is overwritten)")
    root = project_root(Path(__file__).parent)
    source = notebook_dir(task, root) / f"{get_task(task).comparison_notebook}.ipynb"
    parameters = {**dataclasses.asdict(cfg), "output_dir": str(output),
                  "runs": [str(latest_sweep()) if r == "latest" else str(resolve_path(r))
                           for r in cfg.runs]}
    log(f"[compare] {source.stem} -> {output}")
    try:
        with kernel_environment(root):
            execute_notebook(source, output, parameters, root, kernel_name, log)
    except pm.PapermillExecutionError as error:
        executed = output / "notebooks" / source.name
        cell, first_line = failing_cell(executed)
        html_report.export_html(executed, output / "html" / f"{source.stem}.html")
        raise PipelineError(f"notebook {source.stem} failed in code cell {cell} "
                            f"({first_line!r}): {error.ename}: {error.evalue}; the partial "
                            f"report is kept in {output}") from None
    return output
