"""Where the fine-tuned classifier fails: predictions, confusion, the worst mistakes.

`prediction_frame` runs a saved model over a split and returns one row per example
(text, gold, prediction, probability of each label, per-example cross-entropy loss);
every other function here is a pure function of that frame, so it can be tested on
hand-made frames and re-run without the model.

Not supported: multi-label tasks, token-level tasks.
"""

from __future__ import annotations

import datasets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from sftlib.deploy import Predictor


def prediction_frame(predictor: Predictor, split: datasets.Dataset) -> pd.DataFrame:
    """One row per example: text, gold, pred, p_<label> columns, confidence, loss."""
    names = split.features["label"].names
    probs = predictor.predict_proba(split["text"])
    gold = np.asarray(split["label"])
    pred = probs.argmax(axis=1)
    frame = pd.DataFrame({"text": split["text"], "gold": [names[i] for i in gold],
                          "pred": [names[i] for i in pred]})
    for i, name in enumerate(names):
        frame[f"p_{name}"] = probs[:, i]
    frame["confidence"] = probs.max(axis=1)
    frame["loss"] = -np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None))
    frame["correct"] = frame["gold"] == frame["pred"]
    return frame


def summary_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """Accuracy, macro-F1 and mean loss of a prediction frame."""
    return {"accuracy": float(accuracy_score(frame["gold"], frame["pred"])),
            "f1": float(f1_score(frame["gold"], frame["pred"], average="macro")),
            "loss": float(frame["loss"].mean()), "examples": int(len(frame))}


def confusion(frame: pd.DataFrame, labels: list[str], normalize: bool = False) -> pd.DataFrame:
    """Rows: gold label; columns: predicted label; counts or row shares."""
    matrix = confusion_matrix(frame["gold"], frame["pred"], labels=labels,
                              normalize="true" if normalize else None)
    return pd.DataFrame(matrix, index=pd.Index(labels, name="gold"),
                        columns=pd.Index(labels, name="predicted"))


def confusion_figure(frame: pd.DataFrame, labels: list[str]) -> plt.Figure:
    """Counts and row-normalized confusion matrices side by side."""
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


def misclassified(frame: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The `n` wrong predictions with the highest loss (most confidently wrong first)."""
    wrong = frame[~frame["correct"]].sort_values("loss", ascending=False)
    return wrong[["text", "gold", "pred", "confidence", "loss"]].head(n)
