"""`sftlib data inspect` / `sftlib tokens inspect`, and strict_data stopping a run early."""

import json

import pytest
from conftest import write_csv

from sftlib import data_report
from sftlib.__main__ import main
from sftlib.config import ConfigError, RunConfig
from sftlib.pipeline import preflight, run_pipeline


def _leaky_folder(tmp_path):
    """Given splits: validation repeats 2 train texts (1 exactly, 1 after normalization),
    one of them under the other label; test repeats nothing."""
    folder = tmp_path / "leaky"
    folder.mkdir()
    write_csv(folder / "train.csv", [(f"Train sentence {i}.", i % 2) for i in range(40)])
    write_csv(folder / "validation.csv", [("Train sentence 3.", 1), ("train SENTENCE 4", 1),
                                          ("a new one", 0), ("another new one", 1)])
    write_csv(folder / "test.csv", [("held out", 0), ("also held out", 1)])
    return folder


def test_data_inspect_prints_one_json_object(tmp_path, capsys):
    folder = _leaky_folder(tmp_path)
    assert main(["data", "inspect", "--dataset", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    pairs = {(p["from"], p["to"]): (p["exact_rows"], p["normalized_rows"])
             for p in report["leakage"]["pairs"]}
    assert pairs == {("train", "validation"): (1, 2), ("train", "test"): (0, 0),
                     ("validation", "test"): (0, 0)}
    assert report["conflicting_labels"]["texts"] == 1  # "train sentence 4": 0 vs 1
    assert report["splits"]["validation"]["rows"] == 4 and report["before_split"] is None
    assert len(report["findings"]) == 2


def test_data_inspect_strict_exits_1_and_text_mode_names_findings(tmp_path, capsys):
    folder = _leaky_folder(tmp_path)
    assert main(["data", "inspect", "--dataset", str(folder), "--strict"]) == 1
    captured = capsys.readouterr()
    assert "FINDING: leakage: 2 of 4 validation rows" in captured.out
    assert "strict_data" in captured.err


def test_tokens_inspect_prints_one_json_object(tmp_path, capsys):
    folder = _leaky_folder(tmp_path)
    assert main(["tokens", "inspect", "--dataset", str(folder), "--model", "minilm-l6",
                 "--max-length", "auto", "--batch-size", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # "Train sentence 12." -> [CLS] train sentence 12 . [SEP]: 6 tokens at most -> 8
    assert report["suggested_max_length"] == 8 == report["max_length"]
    assert report["max_length_setting"] == "auto"
    assert report["padding_waste"]["batch_size"] == 4
    assert report["truncation"]["train"]["truncated_examples"] == 0


def test_inspect_commands_validate_through_runconfig(capsys):
    assert main(["tokens", "inspect", "--max-length", "7"]) == 2
    assert "max_length: must be between 8 and 8192" in capsys.readouterr().err
    assert main(["data", "inspect", "--label-column", "stars"]) == 2  # the asset's fixed schema


def test_strict_data_is_a_validated_bool():
    assert RunConfig().strict_data is False
    with pytest.raises(ConfigError, match="strict_data: expected bool"):
        RunConfig.from_dict({"strict_data": "yes"})


def test_strict_data_stops_the_run_before_any_notebook(tmp_path):
    folder = _leaky_folder(tmp_path)
    reports = tmp_path / "reports"
    with pytest.raises(data_report.DataQualityError, match="leakage: 2 of 4 validation rows"):
        run_pipeline(RunConfig(dataset=str(folder), strict_data=True), reports_root=reports)
    assert not reports.exists() or not any(reports.iterdir())
    logged = []
    checked = preflight(RunConfig(dataset=str(folder)), log=logged.append)
    assert len(checked["data_findings"]) == 2
    assert any(line.startswith("[run] WARNING data: leakage") for line in logged)
