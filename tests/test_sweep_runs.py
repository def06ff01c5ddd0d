"""Real sweeps on tiny settings: two learning rates x 2 seeds killed with SIGKILL mid-way and
resumed ends with 4 complete runs and no duplicate; its comparison (notebook 06) agrees with
statsmodels and numpy; TensorBoard gets the same curve as metrics.jsonl; two Optuna workers
share one SQLite study."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import TINY
from notebook_checks import noise_in
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from sftlib.live import read_records

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# the shared tiny settings, two optimizer steps and one evaluation, on the tiny random BERT
SWEEP_SETTINGS = {**TINY, "max_steps": 2, "eval_steps": 2, "logging_steps": 1,
                  "report_to": "tensorboard"}
# two configs x two seeds: the fewest that a paired comparison over seeds needs (grids of
# several keys are planned and checked in test_sweep_plan.py without training)
GRID = ["--grid", "lr=1e-4,3e-4", "--seeds", "2"]
POINTS = 4


def settings(model: Path, **changes) -> list[str]:
    values = {**SWEEP_SETTINGS, "model": str(model), **changes}
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def sweep_command(model: Path, folder: Path, *extra: str) -> list[str]:
    # two runs at a time: tiny runs wait on imports more than on the two cores
    return [sys.executable, "-m", "sftlib", "sweep", *GRID, *settings(model), "--notebooks",
            "03", "--jobs", "2", "--sweep-dir", str(folder), *extra]


def _index(folder: Path) -> dict:
    try:
        return json.loads((folder / "sweep.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _manifests(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/manifest.json"))]


@pytest.fixture(scope="session")  # one build per worker (tests/conftest.py)
def resumed_sweep(tmp_path_factory, tiny_model_folder):
    """The sweep killed (SIGKILL to its process group: sweep, run and kernel) while its second
    run trains, then the same command again. Returns (folder, what the kill left)."""
    folder = tmp_path_factory.mktemp("sweep") / "lr-schedule"
    with open(folder.parent / "first.log", "wb") as log:
        first = subprocess.Popen(sweep_command(tiny_model_folder, folder, "--no-compare"),
                                 cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:
        points = _index(folder).get("points", [])
        ok = [p for p in points if p["status"] == "ok"]
        training = [m for m in _manifests(folder) if m["status"] == "running"]
        if ok and training and (folder / training[0]["run_id"] / "metrics.jsonl").exists():
            break
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    left = {"index": _index(folder), "manifests": _manifests(folder)}
    resumed = subprocess.run(sweep_command(tiny_model_folder, folder, "--no-compare"), cwd=ROOT,
                             capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return folder, left, resumed.stdout, tiny_model_folder


def test_killed_sweep_resumes_to_every_run_without_duplicates(resumed_sweep):
    from sftlib.pipeline import run_status

    folder, left, output, _ = resumed_sweep
    killed = [m for m in left["manifests"] if m["status"] == "running"]
    assert 1 <= len(killed) <= 2  # the runs in flight (two slots)
    assert all(run_status(m) == "died" for m in killed)  # their processes are gone
    done_before = sum(p["status"] == "ok" for p in left["index"]["points"])
    assert 1 <= done_before < POINTS
    assert f"{POINTS} runs, {done_before} done, {POINTS - done_before} to run" in output

    index = _index(folder)
    assert index["status"] == "ok" and len(index["points"]) == POINTS
    assert all(p["status"] == "ok" for p in index["points"])
    runs = [p["run"] for p in index["points"]]
    assert len(set(runs)) == POINTS
    manifests = {m["run_id"]: m for m in _manifests(folder)}
    assert all(manifests[r]["status"] == "ok" for r in runs)
    # exactly one complete run per point; the killed attempt kept on disk and listed
    from sftlib.sweep import manifest_point_id

    ok_points = [manifest_point_id(m) for m in manifests.values() if m["status"] == "ok"]
    assert sorted(ok_points) == sorted(p["point"] for p in index["points"])
    for run in killed:  # kept on disk, listed as its point's earlier attempt
        assert run["run_id"] in manifests
        point = next(p for p in index["points"] if (run["run_id"], "died") in
                     [(a["run"], a["status"]) for a in p["attempts"]])
        assert point["run"] != run["run_id"]
    # each point ran its own values
    for point in index["points"]:
        config = manifests[point["run"]]["config"]
        assert {k: config[k] for k in point["overrides"]} == point["overrides"]


def test_the_same_command_again_runs_nothing(resumed_sweep):
    folder, _, _, model = resumed_sweep
    before = sorted(p.name for p in folder.iterdir())
    again = subprocess.run(sweep_command(model, folder, "--no-compare"), cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{POINTS} runs, {POINTS} done, 0 to run" in again.stdout
    assert sorted(p.name for p in folder.iterdir()) == before


def test_every_run_logs_the_same_loss_to_tensorboard(resumed_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, _, _, _ = resumed_sweep
    run = folder / _index(folder)["points"][0]["run"]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    jsonl = {r["step"]: r["loss"] for r in read_records(run / "metrics.jsonl") if "loss" in r}
    assert logged.keys() == jsonl.keys() and len(logged) >= 2
    assert all(logged[s] == pytest.approx(jsonl[s], rel=1e-6) for s in logged)


@pytest.fixture(scope="session")  # one build per worker (tests/conftest.py)
def sweep_comparison(resumed_sweep):
    folder, _, _, _ = resumed_sweep
    result = subprocess.run([sys.executable, "-m", "sftlib", "compare", str(folder),
                             "--bootstrap-resamples", "500"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder, folder / "comparison", result.stdout


def test_comparison_table_is_mean_and_std_over_seeds(sweep_comparison):
    folder, output, stdout = sweep_comparison
    comparison = json.loads((output / "comparison.json").read_text())
    index = _index(folder)
    assert len(comparison["configs"]) == 2
    for label, config in comparison["configs"].items():
        assert len(config["seeds"]) == 2 and set(config["config"]) == {"lr"}
        accuracies = [json.loads((folder / run / "metrics.json").read_text())
                      ["validation"]["accuracy"] for run in config["runs"]]
        summary = comparison["summary"][label]
        assert summary["validation/accuracy/mean"] == pytest.approx(np.mean(accuracies))
        assert summary["validation/accuracy/std"] == pytest.approx(np.std(accuracies, ddof=1))
        for run in config["runs"]:  # metrics.json and the per-example file agree
            predictions = pd.read_csv(folder / run / "predictions" / "validation.csv")
            metrics = json.loads((folder / run / "metrics.json").read_text())
            assert predictions["correct"].mean() == pytest.approx(
                metrics["validation"]["accuracy"])
    assert sorted(r for c in comparison["configs"].values() for r in c["runs"]) == \
        sorted(p["run"] for p in index["points"])
    assert comparison["ranking"][0] == comparison["best"]
    assert "[compare] ranking by validation accuracy:" in stdout


def test_comparison_p_values_match_statsmodels_on_the_runs_predictions(sweep_comparison):
    folder, output, _ = sweep_comparison
    comparison = json.loads((output / "comparison.json").read_text())
    best = comparison["configs"][comparison["best"]]["runs"]
    rows = [r for r in comparison["significance"]["validation"] if r["scope"] != "not tested"]
    assert len(rows) == 3  # the other config: 2 seed pairs + pooled
    for row in (r for r in rows if r["scope"].startswith("seed ")):
        seed = int(row["scope"].split()[1])
        other = comparison["configs"][row["config"]]
        mine = next(r for r, s in zip(best, comparison["configs"][comparison["best"]]["seeds"])
                    if s == seed)
        theirs = next(r for r, s in zip(other["runs"], other["seeds"]) if s == seed)
        a = pd.read_csv(folder / mine / "predictions" / "validation.csv")["correct"]
        b = pd.read_csv(folder / theirs / "predictions" / "validation.csv")["correct"]
        counts = int((a & ~b).sum()), int((~a & b).sum())
        assert (row["only_a_right"], row["only_b_right"]) == counts
        expected = statsmodels_mcnemar([[0, counts[0]], [counts[1], 0]], exact=True).pvalue \
            if sum(counts) else 1.0
        assert row["p_value"] == pytest.approx(expected, rel=1e-9)


def test_comparison_notebook_shows_its_figure_in_its_cell_and_no_noise(sweep_comparison):
    _, output, _ = sweep_comparison
    nb = nbformat.read(output / "notebooks" / "06_comparing_runs.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    with_figure = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert [c.source for c in with_figure] == [
        'report.figure(compare.curves_figure(comparison.groups, cfg.metric), '
        '"comparison_curves")']
    assert noise_in(nb) == []
    assert (output / "figures" / "comparison_curves.png").is_file()
    html = (output / "html" / "06_comparing_runs.html").read_text()
    assert "cdnjs" not in html and 'src="http' not in html  # offline: MathJax inlined
    assert "not distinguishable from" in html or "better than" in html


def test_two_optuna_workers_share_one_sqlite_study(tmp_path, tiny_model_folder):
    import optuna

    folder = tmp_path / "search"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    command = [sys.executable, "-m", "sftlib", "sweep", "--search", "optuna", "--trials", "2",
               "--range", "lr=1e-5:1e-3:log", *settings(tiny_model_folder, report_to="none"),
               "--notebooks", "03", "--sweep-dir", str(folder), "--storage", storage,
               "--study", "shared", "--no-compare"]
    workers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    study = optuna.load_study(study_name="shared", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2 and len(study.trials) == 2  # trials in flight count
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both pulled one
    assert len({t.params["lr"] for t in complete}) == 2  # and not the same start-up draw
    runs = [r for t in complete for r in t.user_attrs["runs"]]
    assert len(set(runs)) == len(runs)
    for trial in complete:
        (run,) = trial.user_attrs["runs"]
        manifest = json.loads((folder / run / "manifest.json").read_text())
        metrics = json.loads((folder / run / "metrics.json").read_text())
        assert manifest["status"] == "ok"
        assert manifest["config"]["lr"] == pytest.approx(trial.params["lr"])
        assert trial.value == pytest.approx(metrics["validation"]["accuracy"])
