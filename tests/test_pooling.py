"""pooling=mean: the head reads the masked mean of the token states (sftlib.pooling_model).

Known answers on tiny random encoders (BERT and MPNet, 2 layers, hidden 32) in milliseconds;
then, in the full tier, one tiny `sftlib train` run with pooling=mean whose saved folder must
load everywhere a classifier loads: Predictor (fp32 and int8), ONNX, plain transformers with
trust_remote_code, and never as a [CLS] model without it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY
from transformers import BertConfig, MPNetConfig

from sftlib import deploy, pooling_model
from sftlib.config import RunConfig

LABELS = ["rotten", "fresh"]
PAD = 0  # BERT's and this vocabulary's pad id


def tiny_classifier(encoder_config) -> pooling_model.MeanPoolingForSequenceClassification:
    config = pooling_model.MeanPoolingConfig.from_encoder(
        encoder_config, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)})
    torch.manual_seed(0)
    return pooling_model.MeanPoolingForSequenceClassification(config).eval()


def tiny_bert():
    return tiny_classifier(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64,
                                      max_position_embeddings=64))


def test_masked_mean_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]],
                           [[5.0, 6.0], [-7.0, 8.0], [9.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    expected = torch.tensor([[(1 + 3) / 2, (2 + 4) / 2], [(5 - 7 + 9) / 3, (6 + 8 + 1) / 3]])
    torch.testing.assert_close(pooling_model.masked_mean(hidden, mask), expected)
    assert pooling_model.masked_mean(hidden, torch.zeros(2, 3)).abs().sum() == 0  # no NaN


def test_figure_weights_are_the_models_and_pads_get_none(tiny_model_folder):
    from transformers import AutoTokenizer

    from sftlib.tasks.classification import pooling_figure, pooling_weights

    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_allclose(pooling_weights(mask, "mean"),
                               [[0.25] * 4 + [0], [0.2] * 5])
    np.testing.assert_allclose(pooling_weights(mask, "cls"), [[1, 0, 0, 0, 0]] * 2)
    hidden = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(  # the figure draws what the model computes
        torch.einsum("bs,bsh->bh", torch.from_numpy(pooling_weights(mask, "mean")), hidden),
        pooling_model.masked_mean(hidden, torch.from_numpy(mask)))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_folder)
    fig = pooling_figure(tokenizer, ["word " * 40, "a fine film"], "mean", pads=3)
    for ax, expected in zip(fig.axes, ([1] + [0] * 7, [0.2] * 5 + [0] * 3)):
        heights = [bar.get_height() for bar in ax.patches if bar.get_width() < 1]
        np.testing.assert_allclose(heights, expected)  # [CLS] a fine film [SEP] + 3 pads
    assert fig.axes[1].get_title() == "pooling=mean (this run)"


def test_logits_are_the_head_on_the_mean_of_the_non_pad_token_states():
    model = tiny_bert()
    ids = torch.tensor([[2, 17, 33, 45, 3, PAD, PAD]])
    mask = (ids != PAD).long()
    with torch.no_grad():
        states = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state[0]
        by_hand = states[:5].sum(0) / 5  # the five real tokens, pad positions left out
        expected = by_hand @ model.classifier.weight.T + model.classifier.bias
        logits = model(input_ids=ids, attention_mask=mask).logits[0]
    torch.testing.assert_close(logits, expected)
    assert not torch.allclose(states.mean(0), by_hand)  # a plain mean would differ


def test_pad_tokens_change_nothing():
    model = tiny_bert()
    alone = torch.tensor([[2, 17, 33, 3]])
    padded = torch.tensor([[2, 17, 33, 3, PAD, PAD], [2, 40, 41, 42, 43, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    other_pads = padded.clone()
    other_pads[0, 4:] = torch.tensor([77, 91])  # what sits under mask 0 is never read
    with torch.no_grad():
        batch = model(input_ids=padded, attention_mask=mask).logits
        first = model(input_ids=alone).logits[0]
        second = model(input_ids=padded[1:]).logits[0]
        swapped = model(input_ids=other_pads, attention_mask=mask).logits
    torch.testing.assert_close(batch[0], first, atol=1e-6, rtol=0)
    torch.testing.assert_close(batch[1], second, atol=1e-6, rtol=0)
    torch.testing.assert_close(swapped, batch, atol=1e-6, rtol=0)


def test_encoders_keep_their_prefix_and_lose_their_pooler():
    """bert.encoder.layer.<i>. / mpnet.encoder.layer.<i>.: names the layer-wise LR helper reads;
    MPNet runs without token_type_ids and without SDPA (it has none: its own attention)."""
    mpnet = tiny_classifier(MPNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64,
                                        max_position_embeddings=64))
    for model, prefix in ((tiny_bert(), "bert"), (mpnet, "mpnet")):
        names = [name for name, _ in model.named_parameters()]
        assert f"{prefix}.encoder.layer.1.output.dense.weight" in names
        assert f"{prefix}.embeddings.word_embeddings.weight" in names
        assert not [name for name in names if "pooler" in name]
        assert names[-2:] == ["classifier.weight", "classifier.bias"]
    ids = torch.tensor([[0, 17, 33, 2, 1]])
    with torch.no_grad():
        logits = mpnet(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1, 1, 0]])).logits
        alone = mpnet(input_ids=ids[:, :4]).logits
    torch.testing.assert_close(logits, alone, atol=1e-6, rtol=0)


def test_distilbert_is_mean_pooled_with_its_own_names():
    """DistilBERT calls its width `dim` and its head's dropout `seq_classif_dropout`."""
    from transformers import DistilBertConfig

    model = tiny_classifier(DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2,
                                             hidden_dim=64, max_position_embeddings=64,
                                             seq_classif_dropout=0.3))
    assert model.base_model_prefix == "distilbert"
    assert model.classifier.in_features == 32 and model.dropout.p == 0.3
    ids = torch.tensor([[0, 17, 33, 2, 1]])
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1, 1, 0]]),
                       output_sentence_vectors=True)
        states = model.encoder(input_ids=ids[:, :4]).last_hidden_state
    torch.testing.assert_close(output.sentence_vectors, states.mean(dim=1), atol=1e-6, rtol=0)
    assert tiny_bert().dropout.p == 0.1  # BERT's hidden_dropout_prob


def test_build_classifier_keeps_the_pretrained_encoder(tiny_model_folder):
    from transformers import AutoModel, BertForSequenceClassification

    from sftlib.tasks.classification import build_classifier

    cfg = RunConfig(model=str(tiny_model_folder), pooling="mean")
    model = build_classifier(cfg, LABELS)
    pretrained = AutoModel.from_pretrained(tiny_model_folder).state_dict()
    weights = model.state_dict()
    assert {f"bert.{k}" for k in pretrained if not k.startswith("pooler.")} | \
        {"classifier.weight", "classifier.bias"} == set(weights)
    for name, tensor in pretrained.items():
        if not name.startswith("pooler."):
            assert torch.equal(weights[f"bert.{name}"], tensor), name
    assert model.config.id2label == dict(enumerate(LABELS))
    assert isinstance(build_classifier(cfg.replace(pooling="cls"), LABELS),
                      BertForSequenceClassification)


# --- the full tier: a tiny training run and every loader --------------------------------------

TEXTS = ["loved it", "a tedious, overlong mess of a film that never ends", "ok",
         "the cast is fine but the script is not"]


@pytest.fixture(scope="session")  # one build per worker (tests/conftest.py)
def mean_export(tmp_path_factory, tiny_model_folder):
    """`sftlib train` with pooling=mean (a few steps of the tiny BERT), then `deploy.export`."""
    from sftlib.__main__ import main

    run = tmp_path_factory.mktemp("mean-run")
    settings = {**TINY, "max_steps": 4, "eval_steps": 2, "model": str(tiny_model_folder),
                "pooling": "mean"}
    assert main(["train", *[arg for key, value in settings.items()
                            for arg in ("--set", f"{key}={value}")],
                 "--output-dir", str(run)]) == 0
    return deploy.export(run / "model", run / "export")


@pytest.mark.slow
def test_trained_folder_is_mean_pooled_and_says_how_to_load_it(mean_export):
    config = json.loads((mean_export / "config.json").read_text())
    assert config["model_type"] == pooling_model.MODEL_TYPE
    assert config["auto_map"]["AutoModelForSequenceClassification"] == \
        "pooling_model.MeanPoolingForSequenceClassification"
    assert (mean_export / "pooling_model.py").read_text() == \
        open(pooling_model.__file__).read()
    card = (mean_export / "README.md").read_text()
    assert "trust_remote_code=True" in card and "mean of all non-pad token states" in card
    predictor = deploy.Predictor(mean_export, device="cpu", batch_size=3)
    assert isinstance(predictor.model, pooling_model.MeanPoolingForSequenceClassification)
    one_by_one = np.vstack([predictor.logits([text]) for text in TEXTS])
    np.testing.assert_allclose(predictor.logits(TEXTS), one_by_one, atol=1e-5)


PLAIN_TRANSFORMERS = """
import json, sys
from transformers import AutoModelForSequenceClassification, pipeline
folder, texts = sys.argv[1], json.loads(sys.argv[2])
try:
    AutoModelForSequenceClassification.from_pretrained(folder)
    refused = None
except ValueError as error:
    refused = str(error)
classifier = pipeline("text-classification", model=folder, trust_remote_code=True, top_k=None)
print("ANSWER", json.dumps({"refused": refused, "module": type(classifier.model).__module__,
                  "scores": [{r["label"]: r["score"] for r in row} for row in classifier(texts)]}))
"""


@pytest.mark.slow
def test_plain_transformers_needs_the_folders_code_and_then_agrees(mean_export):
    """A process without sftlib: no silent [CLS] model without trust_remote_code; with it, the
    folder's own pooling_model.py gives Predictor's probabilities."""
    result = subprocess.run([sys.executable, "-c", PLAIN_TRANSFORMERS, str(mean_export),
                             json.dumps(TEXTS)], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, check=True, cwd=mean_export)
    # after transformers' "run the custom code? [y/N]" prompt, which stdin=DEVNULL refuses
    answer = json.loads(result.stdout.split("ANSWER", 1)[1])
    assert "trust_remote_code=True" in answer["refused"]
    assert answer["module"].startswith("transformers_modules.")  # the folder's copy ran
    for row, reference in zip(answer["scores"], deploy.Predictor(mean_export).predict(TEXTS)):
        for label, score in row.items():
            assert score == pytest.approx(reference["probabilities"][label], abs=1e-5)


@pytest.mark.slow
def test_int8_and_onnx_agree_with_torch(mean_export):
    texts = TEXTS * 3
    check = deploy.export_onnx(mean_export, texts)  # refuses a graph over the tolerance
    assert check["max_abs_logit_difference_fp32"] <= deploy.ONNX_TOLERANCE
    torch_fp32 = deploy.Predictor(mean_export, device="cpu", batch_size=5).logits(texts)
    onnx_fp32 = deploy.Predictor(mean_export, backend="onnx", batch_size=5).logits(texts)
    np.testing.assert_allclose(onnx_fp32, torch_fp32, atol=deploy.ONNX_TOLERANCE)
    for backend in ("torch", "onnx"):
        int8 = deploy.Predictor(mean_export, backend=backend, quantize=True).logits(texts)
        # int8 rounding measured far below this on such a run (the logits themselves are small)
        np.testing.assert_allclose(int8, torch_fp32, atol=0.02)
