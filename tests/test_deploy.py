"""Deployment: the exported folder round-trips through Predictor, the CLI and pipeline()."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
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
    with pytest.raises(FileNotFoundError, match="no trained model here yet. Run notebook 03"):
        deploy.Predictor(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="is a run folder, not a model; use .*export"):
        deploy.Predictor(tiny_run)


def test_cli_predict_texts_and_file(tiny_run, tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_text("loved it\n\nhated it\n")
    result = subprocess.run([sys.executable, "-m", "sftlib", "predict", "--model",
                             str(tiny_run / "export"), "--file", str(lines), "what a film"],
                            capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["what a film", "loved it", "hated it"]
    assert all(r["label"] in ("rotten", "fresh") and 0.5 <= r["score"] <= 1 for r in rows)


def test_four_ways_to_run_the_export_on_the_validation_split(tiny_run):
    """Notebook 05 wrote the ONNX graphs; on 400 validation rows, ONNX fp32 computes PyTorch's
    logits and both int8 models agree with fp32 on at least 95% of the rows, within 1 point."""
    from sftlib import data

    # 400 validation rows (in hash order: no choice of which): 1 point = 4 rows
    validation = data.load_data("rotten-tomatoes")["validation"].select(range(400))
    texts, labels = list(validation["text"]), np.asarray(validation["label"])
    logits = {name: predictor.logits(texts) for name, predictor in
              deploy.comparison_predictors(tiny_run / "export").items()}
    fp32 = logits["PyTorch fp32"]
    assert np.abs(logits["ONNX Runtime fp32"] - fp32).max() <= deploy.ONNX_TOLERANCE
    for name in ("PyTorch int8 (torch.ao dynamic)", "ONNX Runtime int8 (dynamic)"):
        predicted = logits[name].argmax(axis=1)
        assert (predicted == fp32.argmax(axis=1)).mean() >= 0.95, name
        # The acceptance bound. After 8 steps the model leans to one label almost everywhere,
        # so here it holds easily; a trained model's figures come from
        # benchmarks/bench_quantize.py (reports/benchmarks/bench_quantize.md).
        assert abs((predicted == labels).mean() - (fp32.argmax(axis=1) == labels).mean()) <= 0.01


def test_notebook_table_compares_four_rows(tiny_run):
    table = pd.read_csv(tiny_run / "tables" / "quantization.csv", index_col=0)
    assert table.index.tolist() == ["PyTorch fp32", "PyTorch int8 (torch.ao dynamic)",
                                    "ONNX Runtime fp32", "ONNX Runtime int8 (dynamic)"]
    size = table["size_mb"]
    # Linear weights shrink 4x; MiniLM's fp32 embedding table (half the parameters) does not in
    # PyTorch, and does in ONNX Runtime
    assert 0.5 < size.iloc[1] / size.iloc[0] < 0.7 and size.iloc[3] / size.iloc[2] < 0.3
    timings = ["latency_ms_batch_1_p50", "latency_ms_batch_1_p95", "examples_per_s_batch_32"]
    assert (table[timings] > 0).all().all()
    assert (table["latency_ms_batch_1_p95"] >= table["latency_ms_batch_1_p50"]).all()


def test_int8_logits_follow_fp32(tiny_run):
    """What fails if quantization goes wrong, even for a barely trained model: int8 logit
    margins must track fp32's across examples (measured: r = 0.92 for the tiny run's model,
    0.98 for the trained default model)."""
    from sftlib import data

    texts = list(data.load_data("rotten-tomatoes")["validation"]["text"][:256])
    fp32, *int8 = [np.diff(predictor.logits(texts), axis=1).ravel() for predictor in (
        deploy.Predictor(tiny_run / "export", device="cpu"),
        deploy.Predictor(tiny_run / "export", quantize=True),
        deploy.Predictor(tiny_run / "export", backend="onnx", quantize=True))]
    for margins in int8:
        assert np.corrcoef(fp32, margins)[0, 1] > 0.8


def test_int8_predictor_quantizes_every_linear_and_stays_on_cpu(tiny_run):
    export = tiny_run / "export"
    quantized = deploy.Predictor(export, quantize=True)
    kinds = {m._get_name() for m in quantized.model.modules()}  # quantized: "Linear" too
    assert "DynamicQuantizedLinear" in kinds and "Linear" not in kinds
    texts = ["loved it", "a tedious, overlong mess"]
    fp32 = deploy.Predictor(export, device="cpu").predict_proba(texts)
    np.testing.assert_allclose(quantized.predict_proba(texts), fp32, atol=0.1)
    np.testing.assert_array_equal(quantized.predict_proba(texts),
                                  deploy.Predictor(export, quantize=True).predict_proba(texts))
    with pytest.raises(ValueError, match="CPU only"):
        deploy.Predictor(export, device="cuda", quantize=True)
    result = subprocess.run([sys.executable, "-m", "sftlib", "predict", "--int8", "--model",
                             str(export), *texts], capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == texts
    for row, probs in zip(rows, quantized.predict_proba(texts)):
        assert row["probabilities"]["fresh"] == pytest.approx(float(probs[1]), abs=1e-6)
