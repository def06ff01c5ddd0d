"""Deployment: the exported folder round-trips through Predictor, the CLI and pipeline()."""

import json
import subprocess
import sys

import numpy as np
import pytest
from transformers import pipeline

from sftlib import deploy

pytestmark = pytest.mark.slow


def test_export_is_self_describing_and_loads_with_transformers(tiny_run):
    export = tiny_run / "export"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "labels.json",
                 "run_config.json"):
        assert (export / name).is_file(), name
    assert json.loads((export / "labels.json").read_text()) == ["rotten", "fresh"]
    classifier = pipeline("text-classification", model=str(export), top_k=None)
    scores = classifier(["A fine film."])[0]
    assert {s["label"] for s in scores} == {"rotten", "fresh"}
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-5)


def test_predictor_matches_pipeline_and_keeps_order(tiny_run):
    export = tiny_run / "export"
    texts = ["short", "a much longer sentence about a film that was rather dull", "ok"]
    predictor = deploy.Predictor(export, batch_size=2)
    probs = predictor.predict_proba(texts)
    one_by_one = np.vstack([predictor.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(probs, one_by_one, atol=1e-5)  # batching/sorting changes nothing
    reference = pipeline("text-classification", model=str(export), top_k=None)(texts)
    for row, ref in zip(predictor.predict(texts), reference):
        for item in ref:
            assert row["probabilities"][item["label"]] == pytest.approx(item["score"], abs=1e-5)


def test_export_never_overwrites_other_folders(tiny_run, tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an earlier export"):
        deploy.export(tiny_run / "model", target, replace=True)
    assert (target / "notes.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        deploy.Predictor(tmp_path / "missing")


def test_cli_predict_texts_and_file(tiny_run, tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_text("loved it\n\nhated it\n")
    result = subprocess.run([sys.executable, "-m", "sftlib", "predict", "--model",
                             str(tiny_run / "export"), "--file", str(lines), "what a film"],
                            capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["what a film", "loved it", "hated it"]
    assert all(r["label"] in ("rotten", "fresh") and 0.5 <= r["score"] <= 1 for r in rows)
