"""The notebooks: one sequence per task, committed clean, thin, parameterized, linted; and run
end to end by papermill."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from notebook_checks import (
    check_source,
    committed_text,
    noise_in,
    notebook_names,
    notebook_paths,
    stripped_text,
)

from sftlib.config import RunConfig
from sftlib.pipeline import notebook_dir, run_pipeline
from sftlib.tasks import TASK_MODULES, get_task

ROOT = Path(__file__).resolve().parents[1]
CLASSIFICATION = get_task("classification").notebooks
PATHS = notebook_paths()


@pytest.mark.parametrize("task, path", PATHS, ids=[f"{t}/{p.stem}" for t, p in PATHS])
def test_notebook_source_is_clean_thin_and_parameterized(task, path):
    check_source(nbformat.reads(stripped_text(path), as_version=4), task)


@pytest.mark.parametrize("task, path", PATHS, ids=[f"{t}/{p.stem}" for t, p in PATHS])
def test_notebooks_are_committed_without_outputs(task, path):
    committed = committed_text(path)
    if committed is None:
        pytest.skip("not a git checkout")
    nb = nbformat.reads(committed, as_version=4)
    assert not [c for c in nb.cells if c.cell_type == "code" and c.outputs], \
        f"{path.name}: run `make strip` or `make git-filters` before committing"
    assert "language_info" not in nb.metadata


def test_every_task_has_exactly_its_notebooks():
    for task in TASK_MODULES:
        on_disk = sorted(p.stem for p in notebook_dir(task).glob("*.ipynb"))
        assert on_disk == sorted(notebook_names(task)), task
    assert not list((ROOT / "notebooks").glob("*.ipynb")), "notebooks live in notebooks/<task>/"


def test_instruction_notebook_parameters_agree_with_the_shipped_config():
    import ast

    import yaml

    shipped = yaml.safe_load((ROOT / "configs" / "instruction.yaml").read_text())
    for task, path in PATHS:
        if task != "instruction":
            continue
        source = nbformat.read(path, as_version=4).cells[1].source
        values = {t.id: ast.literal_eval(node.value) for node in ast.parse(source).body
                  for t in node.targets}
        differing = {k: (v, shipped[k]) for k, v in values.items()
                     if k in shipped and v != shipped[k]}  # 1 == 1.0: numbers compare as numbers
        assert not differing, f"{path.name}: {differing}"


def test_a_notebook_refuses_a_config_of_the_other_task():
    from sftlib.config import ConfigError

    with pytest.raises(ConfigError, match="open notebooks/instruction/"):
        RunConfig.for_notebook({"task": "instruction"}, task="classification")
    assert RunConfig.for_notebook({"lr": 3e-5}, task="classification").lr == 3e-5


def test_ruff_lints_the_notebooks():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "notebooks"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    listed = subprocess.run([sys.executable, "-m", "ruff", "check", "--show-files", "notebooks"],
                            cwd=ROOT, capture_output=True, text=True).stdout
    assert listed.count(".ipynb") == len(PATHS), listed


@pytest.mark.slow
def test_pipeline_writes_a_complete_report(tiny_run, tiny_config):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert 0.0 <= metrics[split]["accuracy"] <= 1.0 and 0.0 <= metrics[split]["f1"] <= 1.0
    assert metrics["training"]["steps"] == 8
    assert metrics["tokens"]["max_length"] == 64
    for figure in ("label_balance", "length_histogram", "token_length_cdf", "lr_schedules",
                   "training", "confusion_matrix"):
        path = tiny_run / "figures" / f"{figure}.png"
        assert path.is_file() and path.stat().st_size > 5000, figure
    import pandas as pd

    for split in ("validation", "test"):  # one row per example, as `sftlib compare` pairs them
        predictions = pd.read_csv(tiny_run / "predictions" / f"{split}.csv")
        assert list(predictions.columns) == ["row", "id", "label", "prediction", "correct",
                                             "loss", "confidence"]
        assert len(predictions) == 64 and predictions["id"].is_unique
        assert predictions["correct"].mean() == pytest.approx(metrics[split]["accuracy"])
    # in split order (evaluation ran in length order): each row is its text's own prediction
    from sftlib import data, deploy

    validation = data.load_from_config(tiny_config)["validation"]
    predictions = pd.read_csv(tiny_run / "predictions" / "validation.csv")
    logits = deploy.Predictor(tiny_run / "model").logits(list(validation["text"]))
    assert predictions["label"].tolist() == validation["label"]
    assert predictions["prediction"].tolist() == logits.argmax(axis=1).tolist()
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["config"]["max_steps"] == 8
    assert manifest["inputs"]["model"]["model.safetensors"].startswith("53aa5117")
    assert "torch" in manifest["packages"] and "commit" in manifest["git"]
    assert "model.safetensors" in manifest["outputs"]["model"]
    for name in CLASSIFICATION:
        executed = nbformat.read(tiny_run / "notebooks" / f"{name}.ipynb", as_version=4)
        outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        assert (tiny_run / "html" / f"{name}.html").stat().st_size > 10000


def _images(cell) -> list:
    return [o for o in cell.outputs if "image/png" in o.get("data", {})]


@pytest.mark.slow
def test_training_plot_is_kept_in_the_training_cell(tiny_run):
    executed = nbformat.read(tiny_run / "notebooks" / "03_fine_tuning.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    training = next(c for c in code if "run.trainer.train()" in c.source)
    before = next(c for c in code if 'evaluate_splits(run, ("validation",))' in c.source)
    schedule = next(c for c in code if "schedule_figure" in c.source)
    pooling = next(c for c in code if "pooling_figure(" in c.source)
    assert len(_images(training)) == 1, "the live figure belongs to the cell that trains"
    assert not _images(before) and len(_images(schedule)) == 1 and len(_images(pooling)) == 1
    assert all(not _images(c) for c in code if c not in (training, schedule, pooling))
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert any("eval_accuracy" in r for r in records)
    assert any(r.get("samples_per_s") for r in records)


@pytest.mark.slow
def test_executed_notebooks_show_no_noise(tiny_run):
    for name in CLASSIFICATION:
        executed = nbformat.read(tiny_run / "notebooks" / f"{name}.ipynb", as_version=4)
        assert not noise_in(executed), (name, noise_in(executed))
        injected = next(c for c in executed.cells if "injected-parameters" in
                        c.metadata.get("tags", []))
        assert len(injected.source.splitlines()) <= 16, injected.source  # what the run changed


@pytest.mark.slow
def test_runs_never_overwrite_each_other(tiny_config, tmp_path):
    first = run_pipeline(tiny_config, notebooks=["01"], reports_root=tmp_path, log=lambda _m: None)
    second = run_pipeline(tiny_config, notebooks=["01"], reports_root=tmp_path, log=lambda _m: None)
    assert first != second and first.is_dir() and second.is_dir()


@pytest.mark.slow
def test_failing_notebook_names_notebook_and_cell_and_keeps_report(tmp_path):
    """A model folder that passes the checks before the run (config, vocabulary, a weights
    file) but whose weights are damaged: notebook 02 runs, 03 fails loading it."""
    from sftlib import assets

    damaged = tmp_path / "damaged-model"
    shutil.copytree(assets.resolve_model("minilm-l6"), damaged)
    (damaged / "model.safetensors").write_bytes(b"not safetensors")
    reports = tmp_path / "reports"
    result = subprocess.run(
        [sys.executable, "-m", "sftlib", "run", "--notebooks", "02", "03",
         "--reports-dir", str(reports), "--set", f"model={damaged}",
         "--set", "train_subset=50", "--set", "eval_subset=20"],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1, result.stderr
    assert "notebook 03_fine_tuning failed in code cell" in result.stderr
    terminal = result.stdout + result.stderr  # what the user needs, not the kernels' logs
    assert "Kernel is running over TCP" not in terminal and "Alternative text" not in terminal
    run_dir = next(reports.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["notebooks"]["02_tokenization"]["status"] == "ok"
    assert manifest["notebooks"]["03_fine_tuning"]["status"] == "failed"
    assert (run_dir / "notebooks" / "03_fine_tuning.ipynb").is_file()
    assert (run_dir / "html" / "03_fine_tuning.html").is_file()
    assert (run_dir / "index.html").is_file()


def test_bad_input_fails_before_any_notebook(tmp_path):
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\ngood,1\nbad,0\n")
    reports = tmp_path / "reports"
    with pytest.raises(Exception, match="no column 'stars'"):
        run_pipeline(RunConfig(dataset=str(csv), label_column="stars"), reports_root=reports)
    with pytest.raises(Exception, match="fixed schema"):
        run_pipeline(RunConfig(label_column="stars"), reports_root=reports)
    assert not reports.exists() or not any(reports.iterdir())


def test_unknown_notebook_name():
    with pytest.raises(ValueError, match="unknown notebook"):
        run_pipeline(RunConfig(), notebooks=["07"])
