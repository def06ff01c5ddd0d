"""The notebooks: committed clean, thin, parameterized; and run end to end by papermill."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from sftlib.config import RunConfig
from sftlib.pipeline import NOTEBOOKS, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
MAX_CELL_LINES = 16


def _load(name):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_clean_thin_and_parameterized(name):
    nb = _load(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs"
    assert "parameters" in code[0].metadata.get("tags", [])
    assigned = {t.id for node in ast.parse(code[0].source).body for t in node.targets}
    assert assigned <= set(RunConfig.field_names()), assigned - set(RunConfig.field_names())
    assert nb.cells[0].cell_type == "markdown" and len(nb.cells[0].source) > 300
    for cell in code:
        assert len(cell.source.splitlines()) <= MAX_CELL_LINES, cell.source


def test_notebooks_match_their_generator():
    sys.path.insert(0, str(ROOT / "tools"))
    import make_notebooks

    for name, generated in make_notebooks.NOTEBOOKS.items():
        committed = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
        assert json.loads(nbformat.writes(generated)) == committed, \
            f"{name}: run python tools/make_notebooks.py"


@pytest.mark.slow
def test_pipeline_writes_a_complete_report(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert 0.0 <= metrics[split]["accuracy"] <= 1.0 and 0.0 <= metrics[split]["f1"] <= 1.0
    assert metrics["training"]["steps"] == 8
    assert metrics["tokens"]["max_length"] == 64
    for figure in ("label_balance", "length_histogram", "token_length_cdf", "lr_schedules",
                   "training", "confusion_matrix"):
        path = tiny_run / "figures" / f"{figure}.png"
        assert path.is_file() and path.stat().st_size > 5000, figure
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["config"]["max_steps"] == 8
    assert manifest["inputs"]["model"]["model.safetensors"].startswith("53aa5117")
    assert "torch" in manifest["packages"] and "commit" in manifest["git"]
    assert "model.safetensors" in manifest["outputs"]["model"]
    for name in NOTEBOOKS:
        executed = nbformat.read(tiny_run / "notebooks" / f"{name}.ipynb", as_version=4)
        outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        assert (tiny_run / "html" / f"{name}.html").stat().st_size > 10000


@pytest.mark.slow
def test_training_plot_is_kept_in_the_executed_notebook(tiny_run):
    executed = nbformat.read(tiny_run / "notebooks" / "03_fine_tuning.ipynb", as_version=4)
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the schedule figure and the live training figure
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert any("eval_accuracy" in r for r in records)
    assert any(r.get("samples_per_s") for r in records)


@pytest.mark.slow
def test_runs_never_overwrite_each_other(tiny_config, tmp_path):
    first = run_pipeline(tiny_config, notebooks=["01"], reports_root=tmp_path, log=lambda _m: None)
    second = run_pipeline(tiny_config, notebooks=["01"], reports_root=tmp_path, log=lambda _m: None)
    assert first != second and first.is_dir() and second.is_dir()


@pytest.mark.slow
def test_failing_notebook_names_notebook_and_cell_and_keeps_report(tmp_path):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "README.txt").write_text("no weights here")
    reports = tmp_path / "reports"
    result = subprocess.run(
        [sys.executable, "-m", "sftlib", "run", "--notebooks", "01", "02",
         "--reports-dir", str(reports), "--set", f"model={not_a_model}",
         "--set", "train_subset=50", "--set", "eval_subset=20"],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert "notebook 02_tokenization failed in code cell" in result.stderr
    run_dir = next(reports.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["notebooks"]["01_data_inspection"]["status"] == "ok"
    assert (run_dir / "notebooks" / "02_tokenization.ipynb").is_file()
    assert (run_dir / "html" / "02_tokenization.html").is_file()


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
