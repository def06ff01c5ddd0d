"""ONNX export and ONNX Runtime, the model card and the HTTP server, on a tiny random BERT
(2 layers, hidden 32) with MiniLM's tokenizer: the mechanics in seconds. What needs a trained
model (int8 agreement) is in test_deploy.py, on the shared tiny run. Tests that run a model are
in the full tier (`slow`); the card, the batcher and the limits are not."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import yaml

from sftlib import deploy, onnx_export, serve
from sftlib.__main__ import build_parser, main

LABELS = ["rotten", "fresh"]
TOLERANCE = deploy.ONNX_TOLERANCE  # max |logit difference| ONNX Runtime fp32 vs PyTorch


def _write_tiny_model(folder) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from sftlib.assets import resolve_model
    from sftlib.config import RunConfig

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6", log=lambda _m: None))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        num_labels=2, id2label=dict(enumerate(LABELS)),
                        label2id={name: i for i, name in enumerate(LABELS)})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cfg = RunConfig(eval_subset=64, max_length=64)
    (folder / "run_config.json").write_text(json.dumps(cfg.to_dict()))


def _write_run_records(run) -> None:
    """What notebooks 01-04 record, with made-up figures: the card must carry them over."""
    metrics = {"data": {"rows": {"train": 800, "validation": 200, "test": 100},
                        "labels": LABELS},
               "training": {"steps": 50, "epochs": 2.0, "runtime_s": 12.5, "hardware": "cpu"},
               "validation": {"accuracy": 0.83, "f1": 0.82, "loss": 0.41},
               "test": {"accuracy": 0.8, "f1": 0.79, "loss": 0.45},
               "calibration": {"temperature": 1.5, "fitted_on": "validation",
                               "test_nll_before": 0.45, "test_nll_after": 0.40,
                               "test_ece_before": 0.07, "test_ece_after": 0.03}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "tables").mkdir()
    pd.DataFrame([
        {"slice": "all", "value": "all", "examples": 200, "accuracy": 0.83, "ci_low": 0.77,
         "ci_high": 0.88},
        {"slice": "contrast (but, though, however)", "value": "yes", "examples": 40,
         "accuracy": 0.6, "ci_low": 0.45, "ci_high": 0.74},
        {"slice": "negation (not, n't, no, never)", "value": "yes", "examples": 30,
         "accuracy": 0.8, "ci_low": 0.63, "ci_high": 0.9},
    ]).to_csv(run / "tables" / "slices_validation.csv", index=False)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as notebooks 01-04 leave it: model/ (tiny model) and their records."""
    run = tmp_path_factory.mktemp("tiny-run")
    (run / "model").mkdir()
    _write_tiny_model(run / "model")
    _write_run_records(run)
    return run


@pytest.fixture(scope="module")
def tiny_export(run_folder):
    """The run exported with `sftlib export --onnx`: the CLI, the model card at export and the
    checked ONNX graphs, in one export."""
    code = main(["export", "--model", str(run_folder / "model"), "--output",
                 str(run_folder / "export"), "--onnx", "--check-rows", "64"])
    assert code == 0
    return run_folder / "export"


@pytest.fixture(scope="module")
def validation_texts():
    from sftlib import data

    return list(data.load_data("rotten-tomatoes")["validation"]["text"][:96])


# ONNX ---------------------------------------------------------------------------------------

@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_onnx_graph_has_dynamic_axes_and_matches_pytorch_on_validation_rows(
        tiny_export, validation_texts):
    assert (tiny_export / "README.md").read_text() == deploy.model_card(tiny_export.parent)
    check = json.loads((tiny_export / deploy.ONNX_REPORT_FILE).read_text())
    assert check["rows_compared"] == 64 and check["exporter"].endswith("(dynamo=True)")
    assert check["max_abs_logit_difference_fp32"] <= TOLERANCE
    session = onnx_export.OnnxClassifier(tiny_export / "model.onnx").session
    assert all(i.shape == ["batch", "sequence"] for i in session.get_inputs())
    assert session.get_outputs()[0].shape == ["batch", 2]
    # other rows, other batch sizes and lengths (one text alone; a text cut at max_length)
    texts = validation_texts[64:] + [" ".join(validation_texts)]
    torch_run = deploy.Predictor(tiny_export, device="cpu", batch_size=7)
    onnx_run = deploy.Predictor(tiny_export, backend="onnx", batch_size=7)
    np.testing.assert_allclose(onnx_run.logits(texts), torch_run.logits(texts), atol=TOLERANCE)
    np.testing.assert_allclose(onnx_run.logits(texts[:1]), torch_run.logits(texts[:1]),
                               atol=TOLERANCE)


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_int8_graph_is_smaller_and_predicts(tiny_export, validation_texts):
    files = {p.name: p.stat().st_size for p in tiny_export.glob("*.onnx")}
    assert files["model.int8.onnx"] < 0.5 * files["model.onnx"]  # embeddings in int8 too
    probs = deploy.Predictor(tiny_export, backend="onnx", quantize=True).predict_proba(
        validation_texts[:8])
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_export_keeps_no_graph_that_differs_from_pytorch(tiny_export, tmp_path, monkeypatch):
    """A graph of other weights (here: the tiny export's, beside a changed head) is refused,
    and the earlier export's graphs copied along are gone too."""
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = deploy.export(tiny_export, tmp_path / "copy")  # copies model.*onnx as well
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.bias += 1.0
    model.save_pretrained(folder)

    def stale_graph(_model, _tokenizer, path):
        shutil.copy(tiny_export / "model.onnx", path)
        return {}

    monkeypatch.setattr(onnx_export, "export_graph", stale_graph)
    with pytest.raises(ValueError, match="differ from PyTorch's by 1 .* not kept"):
        deploy.export_onnx(folder, ["a fine film", "dull"])
    assert not list(folder.glob("*.onnx")) and not (folder / deploy.ONNX_REPORT_FILE).exists()


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_backend_choices_are_checked_before_loading(tiny_export, tmp_path):
    with pytest.raises(ValueError, match="choose one of torch, onnx"):
        deploy.Predictor(tiny_export, backend="tensorrt")
    with pytest.raises(ValueError, match="ONNX backend runs on the CPU only"):
        deploy.Predictor(tiny_export, backend="onnx", device="cuda")
    plain = deploy.export(tiny_export, tmp_path / "plain")
    for name in ("model.onnx", "model.int8.onnx"):
        (plain / name).unlink()
    with pytest.raises(FileNotFoundError, match="sftlib export --model .* --onnx"):
        deploy.Predictor(plain, backend="onnx")


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_cli_predict_with_the_onnx_backend(tiny_export, capsys):
    texts = ["loved it", "a tedious, overlong mess"]
    assert main(["predict", "--model", str(tiny_export), "--backend", "onnx", *texts]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = deploy.Predictor(tiny_export, device="cpu").predict(texts)
    assert [r["text"] for r in rows] == texts
    for row, reference in zip(rows, expected):
        assert row["label"] == reference["label"]
        assert row["score"] == pytest.approx(reference["score"], abs=1e-5)


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_cli_export_needs_a_destination(tiny_export, capsys):
    assert main(["export", "--model", str(tiny_export.parent / "model")]) == 2
    assert "give --output DEST" in capsys.readouterr().err


# model card ---------------------------------------------------------------------------------

def test_model_card_carries_the_runs_figures(run_folder):
    from sftlib.analysis import wilson_interval

    _, front, body = deploy.model_card(run_folder).split("---\n", 2)
    metadata = yaml.safe_load(front)
    assert metadata["license"] == "apache-2.0" and metadata["pipeline_tag"] == \
        "text-classification"
    assert metadata["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    results = metadata["model-index"][0]["results"]
    assert [(r["dataset"]["split"], r["metrics"][0]["value"]) for r in results] == [
        ("validation", 0.83), ("test", 0.8)]
    low, high = wilson_interval(166, 200)  # 0.83 of the 200 validation rows
    assert f"| validation | 200 | 0.8300 | [{low:.4f}, {high:.4f}] |" in body
    assert "| train | 800 |" in body and "T = 1.500" in body and "overconfident" in body
    assert "| contrast (but, though, however) | yes | 40 | 0.6000 |" in body
    assert "negation" not in body  # its interval reaches the overall accuracy: not weak
    assert "Texts are cut at 64 tokens" in body


def test_model_card_says_what_a_run_did_not_record(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "run_config.json").write_text(json.dumps({"model": "org/encoder",
                                                                    "dataset": "x.csv"}))
    (tmp_path / "metrics.json").write_text(json.dumps({"validation": {"accuracy": 0.9}}))
    card = deploy.model_card(tmp_path)
    assert yaml.safe_load(card.split("---\n")[1])["base_model"] == "org/encoder"
    assert "not recorded (split size unknown)" in card
    assert "Not measured in this run (notebook 04 fits" in card
    assert "Not measured in this run (notebook 04 measures" in card


# server -------------------------------------------------------------------------------------

LIMITS = serve.ServeLimits(max_body_bytes=4_000, max_texts=8, max_text_chars=1000)


@pytest.fixture(scope="module")
def server(run_folder):
    """(base URL, the Predictor it serves), on a free port of 127.0.0.1."""
    predictor = deploy.Predictor(run_folder / "model", device="cpu")
    with serve.running_server(serve.create_app(predictor, LIMITS)) as url:
        yield url, predictor


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_server_answers_and_reports_health(server):
    url, predictor = server
    status, health = serve.request_json(f"{url}/health")
    assert status == 200 and health["status"] == "ok" and health["labels"] == LABELS
    assert health["limits"]["max_texts"] == 8 and health["backend"] == "PyTorch fp32"
    status, answer = serve.request_json(f"{url}/predict", {"texts": ["a fine film", "dull"]})
    assert status == 200
    _assert_same_rows(answer["predictions"], predictor.predict(["a fine film", "dull"]))


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 422, "body: not valid JSON"),
    ([1, 2], 422, "body: Input should be a valid dictionary"),
    ({"text": ["a"]}, 422, "texts: Field required"),
    ({"texts": "one string"}, 422, "texts: Input should be a valid list"),
    ({"texts": [1]}, 422, "texts.0: Input should be a valid string"),
    ({"texts": ["a"], "limit": 3}, 422, "limit: Extra inputs are not permitted"),
    ({"texts": []}, 422, "texts: give at least one text"),
    ({"texts": ["a"] * 9}, 422, "texts: 9 texts, at most 8 per request"),
    ({"texts": ["fine", " \n"]}, 422, r"texts\[1\]: empty or whitespace only"),
    ({"texts": ["x" * 1001]}, 422, r"texts\[0\]: 1001 characters, at most 1000"),
    ({"texts": ["x" * 150] * 30}, 413, "request body over 4,000 bytes"),
])
def test_server_refuses_bad_requests_with_a_message(server, body, status, message):
    url, _ = server
    got, answer = serve.request_json(f"{url}/predict", body)
    assert got == status and set(answer) == {"error"}
    assert re.match(message, answer["error"]), answer
    assert len(answer["error"]) < 200  # one line, never the request echoed back


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_server_refuses_an_oversized_chunked_body_and_wrong_routes(server):
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    chunks = (b'{"texts": ["' + b"x" * 1000 for _ in range(6))  # no Content-Length
    connection.request("POST", "/predict", body=chunks, encode_chunked=True,
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 413 and "over 4,000 bytes" in json.loads(response.read())["error"]
    connection.close()
    assert serve.request_json(f"{url}/nowhere") == (404, {"error": "Not Found"})
    assert serve.request_json(f"{url}/predict", method="GET") == (
        405, {"error": "Method Not Allowed"})
    assert serve.request_json(f"{url}/health")[0] == 200  # still serving


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_server_holds_50_concurrent_clients(server, validation_texts):
    url, predictor = server
    requests = [validation_texts[i:i + 1 + i % 3] for i in range(50)]
    before = serve.request_json(f"{url}/health")[1]["served"]
    start = threading.Barrier(50)

    def client(texts):
        start.wait(timeout=60)  # all at once
        return serve.request_json(f"{url}/predict", {"texts": texts})

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(client, requests))
    assert [status for status, _ in answers] == [200] * 50
    for texts, (_, answer) in zip(requests, answers):
        _assert_same_rows(answer["predictions"], predictor.predict(texts))
    served = serve.request_json(f"{url}/health")[1]["served"]
    assert served["requests"] - before["requests"] == 50
    assert served["model_calls"] - before["model_calls"] < 50  # requests shared batches


def _assert_same_rows(rows: list[dict], expected: list[dict]) -> None:
    """Equal to Predictor.predict: same texts and labels, probabilities up to float rounding
    (a text may be padded with other neighbours in a shared batch)."""
    assert [(r["text"], r["label"]) for r in rows] == [(e["text"], e["label"]) for e in expected]
    for row, reference in zip(rows, expected):
        for label, p in reference["probabilities"].items():
            assert row["probabilities"][label] == pytest.approx(p, abs=1e-5)


def test_micro_batcher_runs_waiting_requests_together_and_in_order():
    calls = []

    def predict(texts):
        calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("model failed")
        return [text.upper() for text in texts]

    async def scenario():
        batcher = serve.MicroBatcher(predict, max_batch_texts=64, max_wait_s=0.01)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.submit([f"t{i}", f"u{i}"]) for i in range(5)))
        with pytest.raises(RuntimeError, match="model failed"):
            await batcher.submit(["boom"])
        after_error = await batcher.submit(["still serving"])
        await batcher.stop()
        return answers, after_error, batcher.counts

    answers, after_error, counts = asyncio.run(scenario())
    assert answers == [[f"T{i}", f"U{i}"] for i in range(5)]
    assert calls[0] == [t for i in range(5) for t in (f"t{i}", f"u{i}")]  # one model call
    assert after_error == ["STILL SERVING"]
    assert counts == {"requests": 7, "texts": 12, "model_calls": 3}


def test_serve_limits_defaults_are_the_ones_the_cli_states():
    defaults = serve.ServeLimits()
    serve_parser = build_parser()._subparsers._group_actions[0].choices["serve"]
    helps = {a.dest: a.help for a in serve_parser._actions}
    for key in ("max_texts", "max_text_chars", "max_body_bytes"):
        assert f"(default {getattr(defaults, key)})" in helps[key], key
    assert serve_parser.get_default("host") == "127.0.0.1"
    with pytest.raises(ValueError, match="must be positive: max_texts 0"):
        serve.ServeLimits(max_texts=0)
