"""Error analysis on hand-made prediction frames, with answers known in advance."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from sftlib import analysis

NAMES3 = ["ant", "bee", "cat"]


def _frame(probs, gold, names, texts=None):
    texts = texts or [f"example {i}" for i in range(len(gold))]
    return analysis.frame_from_probabilities(texts, gold, np.asarray(probs), names)


def _random_case(n=300, k=3, seed=0):
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(size=(n, k)) * 2, axis=1)
    gold = rng.integers(0, k, size=n)
    return probs, gold


def _confidence_frame(confidences, correct):
    """Two-label frame whose top-label confidences and correctness are as given."""
    probs = np.array([[c, 1 - c] for c in confidences])  # the prediction is always label 0
    gold = [0 if ok else 1 for ok in correct]
    return _frame(probs, gold, ["a", "b"])


def _wilson(k, n, z=1.959963984540054):
    """The textbook Wilson score interval, written out independently of scipy."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


# scores -----------------------------------------------------------------------------------

def test_metrics_match_scikit_learn_multiclass():
    probs, gold = _random_case()
    frame = _frame(probs, gold, NAMES3)
    metrics = analysis.summary_metrics(frame)
    pred = probs.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(gold, pred, average="macro")
    assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert (metrics["macro_precision"], metrics["macro_recall"], metrics["macro_f1"]) == \
        pytest.approx((precision, recall, f1))
    assert metrics["nll"] == pytest.approx(log_loss(gold, probs))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(gold, probs, multi_class="ovr"))
    assert metrics["pr_auc"] == pytest.approx(
        average_precision_score(label_binarize(gold, classes=[0, 1, 2]), probs))
    per_class = analysis.per_class_report(frame)
    by_class = precision_recall_fscore_support(gold, pred, average=None)
    assert per_class.index.tolist() == [*NAMES3, "macro avg", "weighted avg"]
    np.testing.assert_allclose(per_class.loc[NAMES3, "f1"], by_class[2])
    assert per_class.loc[NAMES3, "support"].tolist() == by_class[3].tolist()


def test_metrics_match_scikit_learn_binary():
    probs, gold = _random_case(k=2, seed=1)
    metrics = analysis.summary_metrics(_frame(probs, gold, ["neg", "pos"]))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(gold, probs[:, 1]))
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(gold, probs[:, 1]))


def test_confusion_and_most_confused_on_known_counts():
    # gold -> pred: ant->ant x2, ant->bee x1, bee->cat x3, cat->cat x1, cat->ant x1
    gold = [0, 0, 0, 1, 1, 1, 2, 2]
    pred = [0, 0, 1, 2, 2, 2, 2, 0]
    frame = _frame(np.eye(3)[pred] * 0.8 + 0.2 / 3, gold, NAMES3)
    counts = analysis.confusion(frame)
    assert counts.values.tolist() == [[2, 1, 0], [0, 0, 3], [1, 0, 1]]
    np.testing.assert_allclose(analysis.confusion(frame, normalize=True).sum(axis=1), 1.0)
    confused = analysis.most_confused(frame)
    assert confused[["gold", "predicted", "examples"]].values.tolist() == [
        ["bee", "cat", 3], ["ant", "bee", 1], ["cat", "ant", 1]]
    assert confused["share_of_gold"].tolist() == pytest.approx([1.0, 1 / 3, 0.5])


def test_ranking_table_leaves_out_a_label_absent_from_the_split():
    probs, gold = _random_case(n=60)
    gold = np.where(gold == 2, 0, gold)  # no "cat" in this split
    table = analysis.ranking_table(_frame(probs, gold, NAMES3))
    assert math.isnan(table.loc["cat", "roc_auc"])
    assert table.loc["macro average", "roc_auc"] == pytest.approx(
        table.loc[["ant", "bee"], "roc_auc"].mean())


# calibration ------------------------------------------------------------------------------

def test_ece_on_constructed_cases():
    # one bin, confidence 0.9, 6 of 10 right: ECE = |0.6 - 0.9|
    frame = _confidence_frame([0.9] * 10, [True] * 6 + [False] * 4)
    assert analysis.expected_calibration_error(frame) == pytest.approx(0.3)
    # two bins: 0.55 with 2 of 4 right (gap 0.05), 0.95 with 6 of 6 right (gap 0.05)
    frame = _confidence_frame([0.55] * 4 + [0.95] * 6, [True, True, False, False] + [True] * 6)
    assert analysis.expected_calibration_error(frame) == pytest.approx(0.05)
    table = analysis.reliability_table(frame, bins=10)
    assert table["examples"].tolist() == [0] * 5 + [4, 0, 0, 0, 6]
    assert table.loc[5, "accuracy"] == 0.5 and table.loc[9, "gap"] == pytest.approx(0.05)
    # calibrated: 80% confidence, 80% right
    frame = _confidence_frame([0.8] * 10, [True] * 8 + [False] * 2)
    assert analysis.expected_calibration_error(frame) == pytest.approx(0.0, abs=1e-12)


def _miscalibrated(scale, n=4000, seed=3):
    """Labels drawn from softmax(z); the model reports softmax(scale * z)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 1.5
    gold = np.array([rng.choice(3, p=p) for p in softmax(logits, axis=1)])
    return _frame(softmax(scale * logits, axis=1), gold, NAMES3)


@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_temperature_scaling_recovers_the_distortion_and_lowers_nll(scale):
    frame = _miscalibrated(scale)
    temperature = analysis.fit_temperature(frame)
    assert temperature == pytest.approx(scale, rel=0.1)  # undoes the scaling of the logits
    scaled = analysis.apply_temperature(frame, temperature)
    assert scaled["loss"].mean() < frame["loss"].mean() - 0.01
    assert analysis.expected_calibration_error(scaled) < analysis.expected_calibration_error(
        frame)
    assert scaled["pred"].tolist() == frame["pred"].tolist()  # accuracy never changes


def test_temperature_fitted_on_validation_helps_on_test():
    frame = _miscalibrated(2.5)
    validation, test = frame.iloc[:2000], frame.iloc[2000:].reset_index(drop=True)
    temperature, effect = analysis.temperature_effect(validation, test)
    before, after = effect.iloc[0], effect.iloc[1]
    assert temperature > 2 and after["nll"] < before["nll"] and after["ece"] < before["ece"]
    assert after["accuracy"] == before["accuracy"]


def test_temperature_agrees_with_scikit_learn():
    calibration = pytest.importorskip("sklearn.calibration")
    if not hasattr(calibration, "_TemperatureScaling"):
        pytest.skip("scikit-learn < 1.8 has no temperature scaling")
    frame = _miscalibrated(2.0, n=1000)
    reference = calibration._TemperatureScaling().fit(
        np.log(analysis.probabilities(frame)), analysis.gold_indices(frame))
    assert analysis.fit_temperature(frame) == pytest.approx(1 / reference.beta_, rel=1e-3)


# errors -----------------------------------------------------------------------------------

def test_top_losses_are_the_most_confidently_wrong():
    probs = [[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.05, 0.05, 0.9], [0.4, 0.35, 0.25]]
    frame = _frame(probs, [0, 0, 0, 1], NAMES3)  # rows 1, 2 and 3 are wrong
    worst = analysis.top_losses(frame, n=2)
    assert worst.index.tolist() == [2, 1]
    assert worst["p_gold"].tolist() == pytest.approx([0.05, 0.2])
    assert worst["probability"].tolist() == pytest.approx([0.9, 0.7])
    assert worst["loss"].tolist() == pytest.approx([-math.log(0.05), -math.log(0.2)])


def test_suspected_label_errors_use_per_label_thresholds():
    probs = [[0.9, 0.1, 0.0],  # ant, fine
             [0.8, 0.2, 0.0],  # ant, fine
             [0.1, 0.9, 0.0],  # labelled ant, model sure of bee: suspect
             [0.3, 0.6, 0.1],  # labelled ant, bee below its threshold: only a mistake
             [0.05, 0.95, 0.0],  # bee
             [0.25, 0.75, 0.0],  # bee
             [0.0, 0.2, 0.8]]  # cat
    frame = _frame(probs, [0, 0, 0, 0, 1, 1, 2], NAMES3)
    # thresholds: ant (0.9+0.8+0.1+0.3)/4 = 0.525, bee (0.95+0.75)/2 = 0.85, cat 0.8
    suspects = analysis.suspected_label_errors(frame)
    assert suspects.index.tolist() == [2]
    assert suspects.iloc[0][["gold", "suggested"]].tolist() == ["ant", "bee"]
    assert suspects.iloc[0]["threshold"] == pytest.approx(0.85)
    assert (~frame["correct"]).sum() == 2


# slices -----------------------------------------------------------------------------------

SLICE_TEXTS = ["I do not like it", "I don't care at all", "do n't go", "great, but too long",
               "Wow!", "Why?", "nothing special here really", "although it is fine", "no",
               "however you see it!"]


def test_slice_columns_find_the_words():
    columns = analysis.slice_columns(pd.DataFrame({"text": SLICE_TEXTS}))
    assert columns["negation"].tolist() == [True, True, True, False, False, False, False,
                                            False, True, False]
    assert columns["contrast"].tolist() == [False] * 3 + [True] + [False] * 5 + [True]
    assert columns["exclamation"].tolist() == [False] * 4 + [True] + [False] * 4 + [True]
    assert columns["question"].tolist() == [False] * 5 + [True] + [False] * 4
    assert columns["words"].tolist() == [5, 5, 3, 4, 1, 1, 4, 4, 1, 4]


def test_slice_table_counts_accuracy_and_wilson_interval():
    correct = [True, True, False, True, True, False, True, True, True, False]
    frame = _frame([[0.9, 0.1]] * 10, [0 if ok else 1 for ok in correct], ["a", "b"],
                   texts=SLICE_TEXTS)
    table = analysis.slice_table(frame, length_edges=[0, 3, math.inf])
    negation = table.loc[("negation (not, n't, no, never)", "yes")]
    assert (negation["examples"], negation["correct"]) == (4, 3)  # rows 0, 1, 2, 8
    assert (negation["ci_low"], negation["ci_high"]) == pytest.approx(_wilson(3, 4))
    assert table.loc[("all", "all"), "accuracy"] == 0.7
    short = table.loc[("length (words)", "0-3 words")]
    assert (short["examples"], short["correct"]) == (4, 2)  # rows 2, 4, 5, 8
    assert table.loc[("length (words)", "4+ words"), "examples"] == 6
    assert negation["vs_overall"] == pytest.approx(0.75 - 0.7)
    assert ("question mark (?)", "yes") in table.index


def test_length_buckets_default_to_quartiles():
    buckets = analysis.length_buckets(pd.Series(range(1, 101)))
    assert list(buckets.cat.categories) == ["1-26 words", "27-50 words", "51-75 words",
                                            "76-100 words"]
    assert buckets.value_counts().sort_index().tolist() == [26, 24, 25, 25]


# baselines, explorer, summary ---------------------------------------------------------------

def test_majority_baseline_scores_the_majority_share():
    frame = _frame([[0.2, 0.8]] * 4, [0, 0, 0, 1], ["a", "b"])
    majority = analysis.majority_frame(frame, train_labels=[1, 1, 1, 0])
    assert majority["pred"].tolist() == ["b"] * 4
    assert majority["p_b"].tolist() == pytest.approx([0.75] * 4)
    table = analysis.compare_models({"model": frame, "majority": majority})
    assert table.loc["majority", "accuracy"] == 0.25
    assert table.loc["majority", "roc_auc"] == 0.5  # constant scores rank nothing


def test_filter_predictions_and_headless_explorer(monkeypatch):
    probs, gold = _random_case(n=50)
    frame = analysis.with_slices(_frame(probs, gold, NAMES3,
                                        texts=[SLICE_TEXTS[i % 10] for i in range(50)]))
    rows = analysis.filter_predictions(frame, gold="ant", where={"negation": True}, n=None)
    expected = frame[(frame["gold"] == "ant") & frame["negation"]]
    assert sorted(rows.index) == sorted(expected.index)
    assert rows["loss"].is_monotonic_decreasing
    wrong = analysis.filter_predictions(frame, pred="bee", wrong_only=True, n=3,
                                        sort="loss, lowest first")
    assert len(wrong) <= 3 and (wrong["pred"] == "bee").all() and not wrong["correct"].any()
    assert wrong["loss"].is_monotonic_increasing
    monkeypatch.setenv("SFTLIB_HEADLESS", "1")
    static = analysis.explorer(frame, n=5).data  # a readable Styler of mistakes_by_slice
    assert static.index[0] == "all examples" and static.loc["all examples", "examples"] == 50
    assert static.loc["all examples", "mistakes"] == int((~frame["correct"]).sum())
    worst = analysis.filter_predictions(frame, n=1).iloc[0]
    assert static.loc["all examples", "worst_text"] == worst["text"]
    negation = frame[frame["negation"]]
    assert static.loc[f"with {analysis.FLAG_SLICES['negation']}", "examples"] == len(negation)
    monkeypatch.delenv("SFTLIB_HEADLESS")
    import ipywidgets

    assert isinstance(analysis.explorer(frame), ipywidgets.VBox)


def test_analysis_summary_is_strict_json():
    probs, gold = _random_case(n=80)
    gold[gold == 2] = 0  # an absent label gives NaN ranking rows: they must become null
    frame = _frame(probs, gold, NAMES3)
    summary = analysis.analysis_summary(frame, (frame, frame), {"model": frame})
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["ranking"][2]["roc_auc"] is None
    assert summary["temperature_scaling"]["effect"][0]["probabilities"] == "as trained (T = 1)"
    assert "accuracy" in analysis.summary_text(summary)


def test_kernels_are_told_they_run_headless(tmp_path):
    from sftlib.pipeline import _kernel_env

    assert _kernel_env(tmp_path)["SFTLIB_HEADLESS"] == "1"
