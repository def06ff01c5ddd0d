"""Notebooks 01 and 02 save their reports; the sample browser is a widget only interactively."""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"


def _outputs(path):
    executed = nbformat.read(path, as_version=4)
    return [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.slow
def test_data_and_token_reports_are_saved_in_the_run_folder(tiny_run):
    data_json = json.loads((tiny_run / "data_report.json").read_text())
    token_json = json.loads((tiny_run / "token_report.json").read_text())
    assert data_json["splits"]["train"]["rows"] == 160  # TINY train_subset
    assert [p["normalized_rows"] for p in data_json["leakage"]["pairs"]] == [0, 0, 0]
    assert token_json["max_length"] == 64 and token_json["padding_waste"]["batch_size"] == 16
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["data"]["findings"] == [] and metrics["data"]["leaked_rows"] == 0
    assert metrics["tokens"]["unk_rate_train"] == token_json["unk"]["per_split"]["train"][
        "unk_rate"]
    waste = metrics["tokens"]["pad_share"]
    assert waste["length_grouped"] < waste["dynamic_random"] < waste["pad_to_max_length"]
    for figure in ("length_histogram_chars", "distinctive_words", "padding_waste"):
        assert (tiny_run / "figures" / f"{figure}.png").stat().st_size > 5000, figure
    for table in ("leakage", "duplicates", "conflicting_labels", "row_issues", "unk",
                  "padding_waste"):
        assert (tiny_run / "tables" / f"{table}.csv").is_file(), table
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["inputs"]["data_findings"] == []


@pytest.mark.slow
def test_headless_notebook_shows_the_static_sample_not_a_widget(tiny_run):
    outputs = _outputs(tiny_run / "notebooks" / "01_data_inspection.ipynb")
    assert not [o for o in outputs if WIDGET in o.get("data", {})]
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any(">chars</th>" in html for html in tables)  # the static sample table


@pytest.mark.slow
def test_interactive_kernel_gets_the_widget_and_the_static_table(tmp_path):
    cell = new_code_cell(
        "import pandas as pd\nfrom sftlib import data, data_report\n"
        "rows = data.rows_frame(pd.DataFrame({'text': ['a b', 'c d', 'e f'],"
        " 'label': ['x', 'y', 'x']}))\ndata_report.show_sample(rows, n=1)")
    nb = new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    saved = dict(os.environ)
    os.environ.pop("SFTLIB_HEADLESS", None)  # as in JupyterLab
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    outputs = nb.cells[0].outputs
    assert any(WIDGET in o.get("data", {}) for o in outputs), sys.executable
    assert ">chars</th>" in outputs[-1]["data"]["text/html"]
