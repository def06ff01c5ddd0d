"""Notebook 04 and `sftlib analyze` on real tiny runs: binary (the shared tiny run) and
multi-class (TREC-6, six labels, trained by notebook 03 in its own run)."""

import json
import subprocess
import sys

import nbformat
import numpy as np
import pandas as pd
import pytest

from sftlib.pipeline import run_pipeline

pytestmark = pytest.mark.slow
TREC = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]


@pytest.fixture(scope="session")  # one build per worker (tests/conftest.py)
def trec_run(tmp_path_factory, tiny_config, tiny_model_folder):
    # the tiny random BERT: six labels through notebooks 03 and 04, whatever the model
    cfg = tiny_config.replace(dataset="trec-6", train_subset=240, eval_subset=120,
                              model=str(tiny_model_folder))
    return run_pipeline(cfg, notebooks=["03", "04"],
                        reports_root=tmp_path_factory.mktemp("trec-reports"),
                        log=lambda _msg: None)


def _analyze(*args):
    return subprocess.run([sys.executable, "-m", "sftlib", "analyze", *args],
                          capture_output=True, text=True)


def _outputs(run_dir, name):
    executed = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
    return [(cell.source, output) for cell in executed.cells if cell.cell_type == "code"
            for output in cell.outputs]


def test_report_holds_every_analysis_view(tiny_run):
    predictions = pd.read_csv(tiny_run / "tables" / "predictions_validation.csv")
    assert len(predictions) == 64  # every validation example of the tiny config
    p_gold = np.where(predictions["gold"] == "fresh", predictions["p_fresh"],
                      predictions["p_rotten"])
    np.testing.assert_allclose(predictions["loss"], -np.log(p_gold), rtol=1e-6)
    assert {"negation", "contrast", "length", "words"} <= set(predictions.columns)
    for table in ("per_class_validation", "ranking_validation", "reliability_validation",
                  "temperature_scaling_test", "top_losses_validation", "slices_validation",
                  "suspected_label_errors_validation", "baselines_validation", "quantization"):
        assert (tiny_run / "tables" / f"{table}.csv").is_file(), table
    for figure in ("ranking_curves", "reliability_diagram", "slices"):
        assert (tiny_run / "figures" / f"{figure}.png").stat().st_size > 5000, figure
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] > 0
    assert metrics["deployment"]["int8_size_mb"] < metrics["deployment"]["fp32_size_mb"]
    summary = json.loads((tiny_run / "analysis_validation.json").read_text())
    assert [row["model"] for row in summary["comparison"]] == [
        "fine-tuned", "before fine-tuning", "majority class"]


def test_explorer_is_a_static_table_under_papermill(tiny_run):
    outputs = [o for source, o in _outputs(tiny_run, "04_error_analysis")
               if "analysis.explorer(" in source]
    assert outputs and all("application/vnd.jupyter.widget-view+json" not in o.get("data", {})
                           for o in outputs)
    assert "<table" in outputs[0]["data"]["text/html"]


def test_multiclass_notebook_reports_six_labels(trec_run):
    per_class = pd.read_csv(trec_run / "tables" / "per_class_validation.csv", index_col=0)
    assert per_class.index.tolist() == [*TREC, "macro avg", "weighted avg"]
    ranking = pd.read_csv(trec_run / "tables" / "ranking_validation.csv", index_col=0)
    assert ranking.index.tolist() == [*TREC, "macro average"]
    confusion = pd.read_csv(trec_run / "tables" / "confusion_validation.csv", index_col=0)
    assert confusion.shape == (6, 6) and confusion.values.sum() == 120
    confused = pd.read_csv(trec_run / "tables" / "most_confused_validation.csv")
    assert (confused["gold"] != confused["predicted"]).all()
    assert confused["examples"].is_monotonic_decreasing


def test_cli_analyze_multiclass_json(trec_run):
    result = _analyze("--model", str(trec_run / "model"), "--dataset", "trec-6",
                      "--split", "validation", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # nothing but JSON on stdout
    assert summary["labels"] == TREC and summary["split"] == "validation"
    assert np.array(summary["confusion"]["counts"]).shape == (6, 6)
    assert len(summary["per_class"]) == 8 and len(summary["ranking"]) == 7
    metrics = summary["metrics"]
    assert metrics["examples"] == 120 and 0 <= metrics["accuracy"] <= 1
    assert 0 <= metrics["ece"] <= 1 and metrics["roc_auc"] is not None
    assert summary["temperature_scaling"]["temperature"] > 0
    majority = summary["comparison"][2]
    assert majority["model"] == "majority class" and majority["roc_auc"] == 0.5


def test_cli_analyze_writes_files_and_refuses_foreign_labels(trec_run, tmp_path):
    result = _analyze("--model", str(trec_run / "model"), "--split", "test", "--no-baselines",
                      "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "temperature" in result.stdout
    assert len(pd.read_csv(tmp_path / "predictions_test.csv")) == 120
    assert json.loads((tmp_path / "analysis_test.json").read_text())["split"] == "test"
    wrong = _analyze("--model", str(trec_run / "model"), "--dataset", "rotten-tomatoes")
    assert wrong.returncode == 2 and "that the model's labels do not include" in wrong.stderr
