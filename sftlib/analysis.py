"""Where the fine-tuned classifier fails, and whether its confidence can be trusted.

`prediction_frame` runs a model over a split and returns one row per example: `text`,
`gold`, `pred`, one `p_<label>` column per label, `confidence` (the top probability),
`loss` (per-example cross-entropy) and `correct`. Every other function here is a pure
function of such a frame, so each is tested on hand-made frames and re-run without a model:

- scores: `summary_metrics`, `per_class_report`, `confusion`, `most_confused` (scikit-learn);
- ranking: `ranking_table`, `ranking_figure`: ROC-AUC and PR-AUC (average precision) for
  the positive class (the second label) with two labels, one-vs-rest with more;
- calibration: `reliability_table`, `expected_calibration_error`, `reliability_figure`,
  `fit_temperature` / `apply_temperature` / `temperature_effect` (Guo et al. 2017);
- errors: `top_losses`, `suspected_label_errors` (confident learning's per-class thresholds);
- slices: `slice_columns`, `slice_table` (Wilson intervals), `slice_figure`;
- baselines: `majority_frame`, `pretrained_predictor` (the base model with the fresh head
  fine-tuning started from), `compare_models`;
- exploring: `filter_predictions` and `explorer` (ipywidgets in JupyterLab; a static table
  where `SFTLIB_HEADLESS=1`, which the papermill pipeline sets for its kernels);
- `analysis_summary`: all of it as one JSON-ready dict (`sftlib analyze --json`).

Not supported: multi-label or token-level tasks; classwise calibration (ECE here is the
top-label ECE); slices other than the built-in text features (add a column and pass it to
`filter_predictions`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import datasets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import binomtest
from sklearn.dummy import DummyClassifier
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from sftlib import metrics_log
from sftlib.deploy import Predictor

ECE_BINS = 15  # Guo et al. (2017)'s choice; fewer bins hide miscalibration, more are noisy
NEGATION = re.compile(r"\b(?:not|no|never)\b|n['’]t\b", re.IGNORECASE)  # n't: "don't", "do n't"
CONTRAST = re.compile(r"\b(?:but|though|however)\b", re.IGNORECASE)
FLAG_SLICES = {  # column of `slice_columns` -> what the slice table calls it
    "negation": "negation (not, n't, no, never)",
    "contrast": "contrast (but, though, however)",
    "exclamation": "exclamation mark (!)",
    "question": "question mark (?)",
}


# the frame ------------------------------------------------------------------------------

def frame_from_probabilities(texts: Sequence[str], gold: Sequence[int], probs: np.ndarray,
                             names: Sequence[str]) -> pd.DataFrame:
    """The prediction frame for given probabilities (rows: examples, in input order)."""
    probs = np.asarray(probs, dtype=np.float64)
    gold = np.asarray(gold, dtype=int)
    pred = probs.argmax(axis=1)
    frame = pd.DataFrame({"text": list(texts), "gold": [names[i] for i in gold],
                          "pred": [names[i] for i in pred]})
    for i, name in enumerate(names):
        frame[f"p_{name}"] = probs[:, i]
    frame["confidence"] = probs.max(axis=1)
    # clipped: a probability that underflowed to 0 would make one example's loss infinite
    frame["loss"] = -np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None))
    frame["correct"] = frame["gold"] == frame["pred"]
    return frame


def prediction_frame(predictor: Predictor, split: datasets.Dataset) -> pd.DataFrame:
    """Run `predictor` over a split with a ClassLabel `label`: one row per example."""
    names = split.features["label"].names
    if list(predictor.labels) != list(names):
        raise ValueError(f"the model's labels {predictor.labels} are not the dataset's {names} "
                         "(in this order): analyze a model on the data it was trained for")
    return frame_from_probabilities(split["text"], split["label"],
                                    predictor.predict_proba(split["text"]), names)


def label_names(frame: pd.DataFrame) -> list[str]:
    """The labels, in model order, from the frame's `p_<label>` columns."""
    return [column[2:] for column in frame.columns if column.startswith("p_")]


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame[[f"p_{name}" for name in label_names(frame)]].to_numpy(dtype=np.float64)


def gold_indices(frame: pd.DataFrame) -> np.ndarray:
    return pd.Categorical(frame["gold"], categories=label_names(frame)).codes.astype(int)


# scores -----------------------------------------------------------------------------------

def summary_metrics(frame: pd.DataFrame, bins: int = ECE_BINS) -> dict[str, float]:
    """Headline numbers: accuracy, macro P/R/F1, NLL, ECE, ROC-AUC and PR-AUC."""
    names = label_names(frame)
    precision, recall, f1, _ = precision_recall_fscore_support(
        frame["gold"], frame["pred"], labels=names, average="macro", zero_division=0)
    ranking = ranking_table(frame)
    headline = ranking.loc[names[1]] if len(names) == 2 else ranking.loc["macro average"]
    return {"accuracy": float(accuracy_score(frame["gold"], frame["pred"])),
            "macro_precision": float(precision), "macro_recall": float(recall),
            "macro_f1": float(f1), "nll": float(frame["loss"].mean()),
            "ece": expected_calibration_error(frame, bins),
            "roc_auc": float(headline["roc_auc"]), "pr_auc": float(headline["pr_auc"]),
            "examples": int(len(frame))}


def per_class_report(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: each gold label, then macro and weighted averages; precision, recall, F1, support."""
    names = label_names(frame)
    report = classification_report(frame["gold"], frame["pred"], labels=names,
                                   output_dict=True, zero_division=0)
    report.pop("accuracy", None)  # a scalar, not a row; summary_metrics has it
    table = pd.DataFrame(report).T.rename(columns={"f1-score": "f1"})
    table["support"] = table["support"].astype(int)
    table.index.name = "label"
    return table


def confusion(frame: pd.DataFrame, labels: list[str] | None = None,
              normalize: bool = False) -> pd.DataFrame:
    """Rows: gold label; columns: predicted label; counts or shares of each gold row."""
    labels = labels or label_names(frame)
    matrix = confusion_matrix(frame["gold"], frame["pred"], labels=labels,
                              normalize="true" if normalize else None)
    return pd.DataFrame(np.nan_to_num(matrix), index=pd.Index(labels, name="gold"),
                        columns=pd.Index(labels, name="predicted"))


def confusion_figure(frame: pd.DataFrame, labels: list[str] | None = None) -> plt.Figure:
    """Counts and row-normalized confusion matrices side by side."""
    labels = labels or label_names(frame)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, normalize in zip(axes, (False, True)):
        table = confusion(frame, labels, normalize)
        image = ax.imshow(table.values, cmap="Blues", vmin=0)
        for (i, j), value in np.ndenumerate(table.values):
            ax.text(j, i, f"{value:.2f}" if normalize else f"{int(value)}", ha="center",
                    va="center", color="white" if value > table.values.max() / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted label")
        ax.set_ylabel("gold label")
        ax.set_title("Confusion matrix (" + ("share of gold row" if normalize else "examples")
                     + ")")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def most_confused(frame: pd.DataFrame, min_count: int = 1) -> pd.DataFrame:
    """Rows: (gold, predicted) pairs off the diagonal, most frequent first."""
    counts = confusion(frame)
    shares = confusion(frame, normalize=True)
    pairs = [{"gold": g, "predicted": p, "examples": int(counts.loc[g, p]),
              "share_of_gold": float(shares.loc[g, p])}
             for g in counts.index for p in counts.columns
             if g != p and counts.loc[g, p] >= min_count]
    table = pd.DataFrame(pairs, columns=["gold", "predicted", "examples", "share_of_gold"])
    return table.sort_values("examples", ascending=False, kind="stable").reset_index(drop=True)


# ranking ----------------------------------------------------------------------------------

def _one_vs_rest(frame: pd.DataFrame) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, is-this-label, its probability) per label; only the positive one for two."""
    names, probs, gold = label_names(frame), probabilities(frame), gold_indices(frame)
    classes = [1] if len(names) == 2 else range(len(names))
    return [(names[k], gold == k, probs[:, k]) for k in classes]


def ranking_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: each label one-vs-rest (only the positive label with two), then the macro average.

    ROC-AUC: the chance a random example of the label is scored above a random other one
    (0.5 = chance). PR-AUC: average precision (scikit-learn's step-wise sum, which unlike
    the trapezoid rule does not over-reward interpolation); chance equals the prevalence.
    A label absent from the split (or the only one present) has no curve: NaN, left out
    of the macro average.
    """
    rows = {}
    for name, positive, score in _one_vs_rest(frame):
        defined = 0 < positive.sum() < len(positive)
        rows[name] = {
            "roc_auc": roc_auc_score(positive, score) if defined else np.nan,
            "pr_auc": average_precision_score(positive, score) if defined else np.nan,
            "prevalence": float(positive.mean()) if len(positive) else np.nan,
            "positives": int(positive.sum())}
    table = pd.DataFrame(rows).T
    table.loc["macro average"] = table[["roc_auc", "pr_auc", "prevalence"]].mean()  # skips NaN
    table.loc["macro average", "positives"] = table["positives"].iloc[:-1].sum()
    table["positives"] = table["positives"].astype(int)
    table.index.name = "label (one-vs-rest)"
    return table


def ranking_figure(frame: pd.DataFrame) -> plt.Figure:
    """ROC and precision-recall curves, one per label (one-vs-rest), with chance lines."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, positive, score in _one_vs_rest(frame):
        if not 0 < positive.sum() < len(positive):
            continue
        fpr, tpr, _ = roc_curve(positive, score)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(positive, score):.3f})")
        precision, recall, _ = precision_recall_curve(positive, score)
        line, = pr_ax.plot(recall, precision, drawstyle="steps-post",
                           label=f"{name} (AP {average_precision_score(positive, score):.3f})")
        pr_ax.axhline(positive.mean(), color=line.get_color(), ls=":", lw=1)
    roc_ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance")
    roc_ax.set(title="ROC curve (one-vs-rest)", xlabel="false positive rate (share of negatives)",
               ylabel="true positive rate (share of positives)")
    pr_ax.set(title="Precision-recall curve (dotted: chance = prevalence)",
              xlabel="recall (share of positives found)",
              ylabel="precision (share of flagged that are positive)", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is roc_ax else "lower left")
    fig.tight_layout()
    return fig


# calibration ------------------------------------------------------------------------------

def reliability_table(frame: pd.DataFrame, bins: int = ECE_BINS) -> pd.DataFrame:
    """Rows: equal-width bins of top-label confidence, (low, high]; their accuracy and gap."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    confidence = frame["confidence"].to_numpy(dtype=np.float64)
    which = np.digitize(confidence, edges[1:-1], right=True)  # bin b holds (edge_b, edge_b+1]
    grouped = pd.DataFrame({"bin": which, "confidence": confidence,
                            "correct": frame["correct"].to_numpy(dtype=np.float64)}
                           ).groupby("bin").agg(examples=("correct", "size"),
                                                mean_confidence=("confidence", "mean"),
                                                accuracy=("correct", "mean"))
    table = grouped.reindex(range(bins))
    table["examples"] = table["examples"].fillna(0).astype(int)
    table.insert(0, "low", edges[:-1])
    table.insert(1, "high", edges[1:])
    table["gap"] = table["accuracy"] - table["mean_confidence"]  # < 0: overconfident
    table.index.name = "bin"
    return table


def expected_calibration_error(frame: pd.DataFrame, bins: int = ECE_BINS) -> float:
    """ECE = sum over bins of (share of examples) x |accuracy - mean confidence|."""
    table = reliability_table(frame, bins)
    filled = table[table["examples"] > 0]
    if filled.empty:
        return float("nan")
    return float((filled["examples"] / filled["examples"].sum() * filled["gap"].abs()).sum())


def reliability_figure(frames: dict[str, pd.DataFrame], bins: int = ECE_BINS) -> plt.Figure:
    """Reliability diagram (accuracy vs confidence per bin) and confidence histogram."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1.3]})
    top.plot([0, 1], [0, 1], "k:", lw=1, label="perfectly calibrated")
    for name, frame in frames.items():
        table = reliability_table(frame, bins)
        filled = table[table["examples"] > 0]
        line, = top.plot(filled["mean_confidence"], filled["accuracy"], "o-",
                         label=f"{name} (ECE {expected_calibration_error(frame, bins):.3f})")
        bottom.hist(frame["confidence"], bins=np.linspace(0, 1, bins + 1), histtype="step",
                    lw=1.5, color=line.get_color())
    top.set(title="Reliability diagram (points under the diagonal: overconfident)",
            ylabel="accuracy in bin (share correct)", xlim=(0, 1), ylim=(0, 1.02))
    bottom.set(xlabel="confidence: top-label probability", ylabel="examples")
    top.legend(fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _scaled_log_probs(frame: pd.DataFrame, temperature: float) -> np.ndarray:
    # log p differs from the logits by a per-row constant, which softmax ignores: so
    # softmax(log p / T) == softmax(logits / T), and the frame alone is enough.
    return log_softmax(np.log(np.clip(probabilities(frame), 1e-12, None)) / temperature, axis=1)


def fit_temperature(frame: pd.DataFrame) -> float:
    """The temperature T > 0 minimizing the NLL of softmax(logits / T) on `frame`.

    One scalar, fitted with scipy. scikit-learn >= 1.8 has the same fit inside
    `CalibratedClassifierCV(method="temperature")`, but only around an estimator it calls
    on features, and without exposing T; here we have saved probabilities, not features.
    """
    gold = gold_indices(frame)

    def nll(log_t: float) -> float:
        return float(-_scaled_log_probs(frame, math.exp(log_t))[np.arange(len(gold)), gold].mean())

    best = minimize_scalar(nll, bounds=(math.log(0.01), math.log(100.0)), method="bounded",
                           options={"xatol": 1e-6})
    return float(math.exp(best.x))


def apply_temperature(frame: pd.DataFrame, temperature: float) -> pd.DataFrame:
    """The frame with probabilities softened (T > 1) or sharpened (T < 1); same argmax."""
    probs = softmax(_scaled_log_probs(frame, temperature), axis=1)
    return frame_from_probabilities(frame["text"], gold_indices(frame), probs, label_names(frame))


def temperature_effect(fit_frame: pd.DataFrame, eval_frame: pd.DataFrame,
                       bins: int = ECE_BINS) -> tuple[float, pd.DataFrame]:
    """Fit T on `fit_frame` (validation); rows: `eval_frame` (test) before and after."""
    temperature = fit_temperature(fit_frame)
    rows = {}
    for name, frame in (("as trained (T = 1)", eval_frame),
                        (f"scaled (T = {temperature:.3f})",
                         apply_temperature(eval_frame, temperature))):
        rows[name] = {"nll": float(frame["loss"].mean()),
                      "ece": expected_calibration_error(frame, bins),
                      "accuracy": float(frame["correct"].mean()),
                      "mean_confidence": float(frame["confidence"].mean())}
    table = pd.DataFrame(rows).T
    table.index.name = "probabilities"
    return temperature, table


# errors -----------------------------------------------------------------------------------

def top_losses(frame: pd.DataFrame, n: int = 20, wrong_only: bool = True) -> pd.DataFrame:
    """The `n` examples with the highest loss (most confidently wrong first)."""
    rows = frame[~frame["correct"]] if wrong_only else frame
    rows = rows.sort_values("loss", ascending=False, kind="stable").head(n)
    p_gold = probabilities(rows)[np.arange(len(rows)), gold_indices(rows)]
    return rows.assign(probability=rows["confidence"], p_gold=p_gold)[
        ["text", "gold", "pred", "probability", "p_gold", "loss"]]


def suspected_label_errors(frame: pd.DataFrame, n: int | None = None) -> pd.DataFrame:
    """Examples whose gold label the model contradicts with unusual confidence, ranked.

    Confident learning (Northcutt et al. 2021; cleanlab's `confident_learning` filter, here
    without its pruning): label k's threshold t_k is the mean probability of k over the
    examples labelled k. An example is suspect when the likeliest label whose probability
    reaches its own threshold is not the gold one. Ranked by the probability of the gold
    label (self-confidence), lowest first. Needs predictions on data the model did not
    train on (validation, test). Top losses rank every mistake; this keeps only those where
    the model is as sure of another label as it usually is of that label's own examples.
    """
    names, probs, gold = label_names(frame), probabilities(frame), gold_indices(frame)
    thresholds = np.array([probs[gold == k, k].mean() if (gold == k).any() else np.inf
                           for k in range(len(names))])  # a label never seen is never suggested
    confident = np.where(probs >= thresholds, probs, -1.0)
    suggested = confident.argmax(axis=1)
    suspect = (confident.max(axis=1) >= 0) & (suggested != gold)
    rows = np.flatnonzero(suspect)
    table = pd.DataFrame({
        "text": frame["text"].to_numpy()[rows], "gold": frame["gold"].to_numpy()[rows],
        "suggested": [names[k] for k in suggested[rows]],
        "p_suggested": probs[rows, suggested[rows]], "threshold": thresholds[suggested[rows]],
        "p_gold": probs[rows, gold[rows]]}, index=frame.index[rows])
    table = table.sort_values("p_gold", kind="stable")
    return table if n is None else table.head(n)


# slices -----------------------------------------------------------------------------------

def length_buckets(words: pd.Series, edges: Sequence[float] | None = None) -> pd.Series:
    """Word counts -> labels like "9-14 words"; default edges: the quartiles of `words`."""
    if edges is None:
        edges = np.unique(np.quantile(words, [0, 0.25, 0.5, 0.75, 1.0]).round())
    edges = list(edges)
    if len(edges) < 2:
        edges = [edges[0] - 1, edges[0]]
    labels = []
    for i, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        first = int(low) if i == 0 else int(low) + 1  # the first bucket includes its low edge
        labels.append(f"{first}+ words" if math.isinf(high) else f"{first}-{int(high)} words")
    return pd.cut(words, edges, labels=labels, include_lowest=True)


def slice_columns(frame: pd.DataFrame, length_edges: Sequence[float] | None = None,
                  ) -> pd.DataFrame:
    """Per example: words, length bucket, and flags for negation, contrast, '!' and '?'."""
    text = frame["text"].astype(str)
    words = text.str.split().str.len().fillna(0).astype(int)
    return pd.DataFrame({
        "words": words, "length": length_buckets(words, length_edges),
        "negation": text.str.contains(NEGATION), "contrast": text.str.contains(CONTRAST),
        "exclamation": text.str.contains("!", regex=False),
        "question": text.str.contains("?", regex=False)}, index=frame.index)


def with_slices(frame: pd.DataFrame, length_edges: Sequence[float] | None = None,
                ) -> pd.DataFrame:
    """The frame with its slice columns joined (what the explorer and the CSV export hold)."""
    return frame.join(slice_columns(frame, length_edges))


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a share (scipy): sane at 0, 1 and small counts."""
    interval = binomtest(int(correct), int(total)).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def slice_table(frame: pd.DataFrame, length_edges: Sequence[float] | None = None,
                confidence: float = 0.95) -> pd.DataFrame:
    """Rows: (slice, value), starting with all examples; accuracy with a Wilson interval."""
    slices = slice_columns(frame, length_edges)
    groups: list[tuple[str, str, pd.Series]] = [("all", "all", frame["correct"])]
    for bucket in slices["length"].cat.categories:
        groups.append(("length (words)", bucket, frame["correct"][slices["length"] == bucket]))
    for column, title in FLAG_SLICES.items():
        for value, label in ((True, "yes"), (False, "no")):
            groups.append((title, label, frame["correct"][slices[column] == value]))
    overall = float(frame["correct"].mean())
    rows = []
    for family, value, correct in groups:
        if len(correct) == 0:
            continue
        low, high = wilson_interval(correct.sum(), len(correct), confidence)
        rows.append({"slice": family, "value": value, "examples": len(correct),
                     "correct": int(correct.sum()), "accuracy": float(correct.mean()),
                     "ci_low": low, "ci_high": high,
                     "vs_overall": float(correct.mean()) - overall})
    return pd.DataFrame(rows).set_index(["slice", "value"])


def slice_figure(table: pd.DataFrame) -> plt.Figure:
    """Accuracy per slice with its interval; the dashed line is the overall accuracy."""
    rows = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    y = np.arange(len(rows))
    ax.errorbar(rows["accuracy"], y, xerr=[rows["accuracy"] - rows["ci_low"],
                                           rows["ci_high"] - rows["accuracy"]],
                fmt="o", capsize=3)
    ax.axvline(table["accuracy"].iloc[0], color="grey", ls="--", lw=1, label="all examples")
    ax.set_yticks(y, [f"{s}: {v} (n={n})" for (s, v), n in zip(rows.index, rows["examples"])])
    ax.set(title="Accuracy by slice (bars: 95% Wilson interval)",
           xlabel="accuracy (share correct)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# baselines --------------------------------------------------------------------------------

def majority_frame(frame: pd.DataFrame, train_labels: Sequence[int]) -> pd.DataFrame:
    """What always predicting train's majority label scores, with train's label shares as
    probabilities (scikit-learn's DummyClassifier, strategy "prior"). `train_labels` are
    label indices in model order (a ClassLabel column)."""
    names = label_names(frame)
    codes = np.asarray(train_labels, dtype=int)
    dummy = DummyClassifier(strategy="prior").fit(np.zeros((len(codes), 1)), codes)
    probs = np.zeros((len(frame), len(names)))
    probs[:, dummy.classes_] = dummy.predict_proba(np.zeros((len(frame), 1)))
    return frame_from_probabilities(frame["text"], gold_indices(frame), probs, names)


def pretrained_predictor(cfg: Any, model_dir: str, label_names: list[str],
                         batch_size: int = 128) -> Predictor:
    """The model before fine-tuning: the base encoder with the freshly initialized head that
    `tasks.classification.build_classifier` gives with the run's seed (where training
    started from), using the fine-tuned folder's tokenizer and max length."""
    from sftlib.tasks.classification import build_classifier

    return Predictor(model_dir, batch_size=batch_size, model=build_classifier(cfg, label_names))


def compare_models(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows: models scored on the same split; the headline metrics side by side."""
    table = pd.DataFrame({name: summary_metrics(frame) for name, frame in frames.items()}).T
    table["examples"] = table["examples"].astype(int)
    table.index.name = "model"
    return table


# exploring --------------------------------------------------------------------------------

EXPLORER_COLUMNS = ["text", "gold", "pred", "confidence", "loss"]
SORTS = {"loss, highest first": ("loss", False), "loss, lowest first": ("loss", True),
         "confidence, highest first": ("confidence", False)}


def filter_predictions(frame: pd.DataFrame, gold: str | None = None, pred: str | None = None,
                       where: dict[str, Any] | None = None, wrong_only: bool = False,
                       sort: str = "loss, highest first", n: int | None = 20) -> pd.DataFrame:
    """Rows matching gold / predicted label and `where` (column -> value), sorted."""
    mask = pd.Series(True, index=frame.index)
    if gold is not None:
        mask &= frame["gold"] == gold
    if pred is not None:
        mask &= frame["pred"] == pred
    for column, value in (where or {}).items():
        mask &= frame[column] == value
    if wrong_only:
        mask &= ~frame["correct"]
    column, ascending = SORTS[sort]
    rows = frame[mask].sort_values(column, ascending=ascending, kind="stable")
    return rows if n is None else rows.head(n)


def slice_options(frame: pd.DataFrame) -> dict[str, dict[str, Any] | None]:
    """Dropdown label -> `where` filter, for a frame holding the slice columns."""
    options: dict[str, dict[str, Any] | None] = {"all examples": None}
    for column, title in FLAG_SLICES.items():
        options[f"with {title}"] = {column: True}
    for bucket in frame["length"].cat.categories:
        options[f"length {bucket}"] = {"length": bucket}
    return options


def mistakes_by_slice(frame: pd.DataFrame) -> pd.DataFrame:
    """Per slice (rows): examples, mistakes, their share, and the mistake with the highest
    loss (its text, gold and predicted label): the explorer's views at a glance."""
    if "length" not in frame.columns:
        frame = with_slices(frame)
    rows = []
    for name, where in slice_options(frame).items():
        matching = filter_predictions(frame, where=where, wrong_only=False, n=None)
        wrong = filter_predictions(frame, where=where, n=1)
        worst = wrong.iloc[0] if len(wrong) else None
        rows.append({"slice": name, "examples": len(matching),
                     "mistakes": int((~matching["correct"]).sum()),
                     "error_rate": float((~matching["correct"]).mean()) if len(matching)
                     else float("nan"),
                     "worst_text": worst["text"] if worst is not None else "",
                     "gold": worst["gold"] if worst is not None else "",
                     "pred": worst["pred"] if worst is not None else ""})
    return pd.DataFrame(rows).set_index("slice")


def explorer(frame: pd.DataFrame, n: int = 15):
    """Interactive error explorer in JupyterLab; under papermill (no widget state survives),
    `mistakes_by_slice` as a static table.

    `frame` is a prediction frame; its slice columns are added if missing. Widgets filter
    by gold and predicted label and by slice, sort by loss, and show the full text.
    """
    from sftlib.tables import readable, readable_html

    if "length" not in frame.columns:
        frame = with_slices(frame)
    if metrics_log.headless():
        return readable(mistakes_by_slice(frame))
    import ipywidgets as widgets
    from IPython.display import HTML, display

    labels = [("any", None)] + [(name, name) for name in label_names(frame)]
    controls = {
        "gold": widgets.Dropdown(options=labels, description="gold"),
        "pred": widgets.Dropdown(options=labels, description="predicted"),
        "where": widgets.Dropdown(options=list(slice_options(frame).items()),
                                  description="slice"),
        "sort": widgets.Dropdown(options=list(SORTS), description="sort by"),
        "wrong_only": widgets.Checkbox(value=True, description="mistakes only"),
        "n": widgets.IntSlider(value=n, min=5, max=100, step=5, description="rows"),
    }

    def show(**chosen: Any) -> None:
        rows = filter_predictions(frame, **chosen)
        total = len(filter_predictions(frame, **{**chosen, "n": None}))
        display(HTML(f"<p>{total} of {len(frame)} examples match; the first "
                     f"{len(rows)}:</p>" + readable_html(rows[EXPLORER_COLUMNS])))

    output = widgets.interactive_output(show, controls)
    rows_of_controls = [widgets.HBox(list(controls.values())[:3]),
                        widgets.HBox(list(controls.values())[3:])]
    return widgets.VBox([*rows_of_controls, output])


# everything, for `sftlib analyze --json` ----------------------------------------------------

def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: NaN -> None (JSON has no NaN), numpy scalars -> Python."""
    table = table.reset_index() if table.index.name or table.index.nlevels > 1 else table
    return [{k: (None if isinstance(v, float) and math.isnan(v) else
                 v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in table.astype(object).to_dict("records")]


def analysis_summary(frame: pd.DataFrame, calibration: tuple[pd.DataFrame, pd.DataFrame]
                     | None = None, baselines: dict[str, pd.DataFrame] | None = None,
                     rows: int = 10) -> dict[str, Any]:
    """Every view of `frame` as JSON-ready data.

    `calibration`: (validation frame, test frame) for temperature scaling, fitted on the
    first and reported on the second. `baselines`: more frames on the same split to
    compare with (fine-tuned model first).
    """
    summary: dict[str, Any] = {
        "labels": label_names(frame), "metrics": summary_metrics(frame),
        "per_class": _records(per_class_report(frame)),
        "confusion": {"counts": confusion(frame).astype(int).values.tolist(),
                      "row_normalized": confusion(frame, normalize=True).values.tolist()},
        "ranking": _records(ranking_table(frame)),
        "most_confused": _records(most_confused(frame).head(rows)),
        "slices": _records(slice_table(frame)),
        "top_losses": _records(top_losses(frame, rows)),
        "suspected_label_errors": _records(suspected_label_errors(frame, rows)),
        "reliability": _records(reliability_table(frame)),
    }
    if calibration is not None:
        temperature, effect = temperature_effect(*calibration)
        summary["temperature_scaling"] = {"temperature": temperature, "fitted_on": "validation",
                                          "reported_on": "test", "effect": _records(effect)}
    if baselines:
        summary["comparison"] = _records(compare_models(baselines))
    return summary


def summary_text(summary: dict[str, Any]) -> str:
    """A few readable lines from `analysis_summary` (what `sftlib analyze` prints)."""
    def f(value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"

    m = summary["metrics"]
    lines = [f"{summary.get('split', 'split')}: {m['examples']} examples, "
             f"{len(summary['labels'])} labels",
             f"accuracy {f(m['accuracy'])}  macro-F1 {f(m['macro_f1'])}  "
             f"ROC-AUC {f(m['roc_auc'])}  PR-AUC {f(m['pr_auc'])}",
             f"NLL {f(m['nll'])}  ECE {f(m['ece'])}"]
    if "temperature_scaling" in summary:
        scaling = summary["temperature_scaling"]
        before, after = scaling["effect"]
        lines.append(f"temperature {scaling['temperature']:.3f} (fitted on validation); on test "
                     f"NLL {f(before['nll'])} -> {f(after['nll'])}, "
                     f"ECE {f(before['ece'])} -> {f(after['ece'])}")
    for row in summary.get("comparison", []):
        lines.append(f"{row['model']:<20} accuracy {f(row['accuracy'])}  "
                     f"macro-F1 {f(row['macro_f1'])}  ROC-AUC {f(row['roc_auc'])}  "
                     f"ECE {f(row['ece'])}")
    return "\n".join(lines)
