"""Reading dataset sources into per-split pandas frames: what every task's data shares.

A dataset spec is, tried in this order:
- a local file (`.csv`, `.tsv`, `.jsonl`, `.json`, `.parquet`, optionally `.gz` / `.bz2`):
  one pool of rows, split by us;
- a local folder holding `train.*`, `validation.*` (or `valid.*` / `dev.*` / `val.*`) and
  `test.*` files: loaded as those splits; a missing split is carved out of train;
- a named offline asset (`sftlib.assets`) that the task knows how to read;
- anything else that does not look like a path: a hub dataset id, `NAME` or `NAME:CONFIG`.

`load_split_frames` walks that order with the task's own row reader (`RowReader`: a raw
frame -> the task's columns, or a `DataError`), so both tasks' loaders are one function with
two readers, not two copies. Splits we make are deterministic: duplicates (after normalizing
case, whitespace and punctuation) are removed first so no text sits in two splits; then,
within each label (when the frame has a `label` column), rows are ranked by the sha256 of
their normalized split key and cut 80/10/10. Hashes, not RNG order, so the split is the same
on every machine and every library version.

Not supported here: streaming datasets, remote files by URL, more than one file per split.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import datasets
import pandas as pd

SPLITS = ("train", "validation", "test")
SPLIT_SHARES = (0.8, 0.1, 0.1)
FILE_READERS: dict[str, Callable[..., pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".tsv": lambda p: pd.read_csv(p, sep="\t"),
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".json": pd.read_json,
    ".parquet": pd.read_parquet,
}
COMPRESSIONS = (".bz2", ".gz")
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation",
                 "dev": "validation", "val": "validation", "test": "test"}

# A task's reader of raw rows: (frame as read, where it came from) -> the task's columns.
RowReader = Callable[[pd.DataFrame, str], pd.DataFrame]


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
    """Drop rows whose normalized `text` was seen before (first occurrence kept)."""
    keys = frame["text"].map(normalize_text)
    return frame.loc[~keys.duplicated()].reset_index(drop=True)


def _label_groups(frame: pd.DataFrame):
    """(label, rows) per label; one group of all rows for data without labels."""
    return frame.groupby("label", sort=True, observed=True) if "label" in frame \
        else [(None, frame)]


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


def take_subsets(frames: dict[str, pd.DataFrame], train_subset: int | None,
                 eval_subset: int | None) -> dict[str, pd.DataFrame]:
    """`train_subset` rows of train and `eval_subset` of validation and test (quick runs)."""
    frames = dict(frames)
    if train_subset:
        frames["train"] = stratified_take(frames["train"], train_subset)
    if eval_subset:
        for split in ("validation", "test"):
            frames[split] = stratified_take(frames[split], eval_subset)
    return frames


def complete_splits(frames: dict[str, pd.DataFrame], key: str = "text",
                    ) -> dict[str, pd.DataFrame]:
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
                                *[shares[m] for m in missing]), names, key=key)
    return {**present, **carved}


# files, folders, hub -------------------------------------------------------------------

def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV / TSV / JSON(L) / Parquet file (optionally .gz or .bz2 compressed)."""
    path = Path(path)
    suffixes = path.suffixes
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]  # pandas decompresses by extension itself
    reader = FILE_READERS.get(suffixes[-1] if suffixes else "")
    if reader is None:
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(FILE_READERS)}")
    return reader(path)


def split_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(split, file) for every `train.*` / `validation.*` / ... data file in `folder`."""
    for file in sorted(folder.iterdir()):
        split = SPLIT_ALIASES.get(file.name.split(".")[0].lower())
        if split and file.suffix in (*FILE_READERS, *COMPRESSIONS):
            yield split, file


def looks_like_path(spec: str) -> bool:
    """A spec meant as a local path (so a typo is reported as such, not sent to the hub)."""
    suffixes = Path(spec).suffixes
    return spec.startswith((".", "/", "~")) or bool(
        suffixes and suffixes[-1] in (*FILE_READERS, *COMPRESSIONS))


def load_hub(spec: str, dataset_config: str | None) -> dict[str, datasets.Dataset]:
    """A hub dataset `NAME` or `NAME:CONFIG`, its splits renamed to ours (others dropped)."""
    name, _, config = spec.partition(":")
    try:
        loaded = datasets.load_dataset(name, config or dataset_config)
    except Exception as error:  # the hub raises many types; all mean "not loadable"
        raise DataError(f"could not load {spec!r} as a local file, folder, asset or hub dataset "
                        f"({type(error).__name__}: {error})") from error
    return {SPLIT_ALIASES[split]: ds for split, ds in loaded.items() if split in SPLIT_ALIASES}


def hub_frame(ds: datasets.Dataset) -> pd.DataFrame:
    """A hub split as pandas, ClassLabel columns as Categoricals of their names (so the
    names travel through splitting); rows whose ClassLabel is -1 (hidden labels, as in
    GLUE's test splits) are left out."""
    frame = ds.to_pandas()
    for column, feature in ds.features.items():
        if isinstance(feature, datasets.ClassLabel):
            frame = frame[frame[column] != -1]
            frame[column] = pd.Categorical.from_codes(frame[column], feature.names)
    return frame.reset_index(drop=True)


def load_pool(spec: str, read_rows: RowReader,
              named: dict[str, Callable[[], pd.DataFrame]]) -> pd.DataFrame | None:
    """The rows of a single-pool source (a file, or an asset in `named`) before dedupe and
    splitting; None for sources that come with splits (folders, hub)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return read_rows(read_table(path), str(path))
    if spec in named and not path.is_dir():
        return named[spec]()
    return None


def load_split_frames(spec: str, read_rows: RowReader,
                      named: dict[str, Callable[[], pd.DataFrame]],
                      dataset_config: str | None = None, split_key: str = "text",
                      ) -> dict[str, pd.DataFrame]:
    """Any dataset spec -> the task's frames per split (module docstring for the order)."""
    from sftlib import assets

    pool = load_pool(spec, read_rows, named)
    if pool is not None:
        return hash_split(dedupe(pool), key=split_key)
    path = Path(spec).expanduser()
    if path.is_dir():
        frames: dict[str, pd.DataFrame] = {}
        for split, file in split_files(path):
            if split in frames:
                raise DataError(f"{path}: more than one file for split {split!r}")
            frames[split] = read_rows(read_table(file), str(file))
        if not frames:
            raise DataError(f"{path}: no train / validation / test files found (expected names "
                            "like train.csv, validation.jsonl, test.parquet)")
        return complete_splits(frames, split_key)
    if spec in assets.ASSETS:
        raise DataError(f"asset {spec!r} is not a dataset of this task; use one of "
                        f"{', '.join(named)}, a file, a folder or a hub dataset")
    if looks_like_path(spec):
        raise DataError(f"{spec}: no such file or folder (and not a dataset asset of this "
                        f"task: {', '.join(named)})")
    frames = {split: read_rows(hub_frame(ds), f"{spec}[{split}]")
              for split, ds in load_hub(spec, dataset_config).items()}
    return complete_splits({s: f for s, f in frames.items() if len(f)}, split_key)


def require_rows(dd: datasets.DatasetDict, spec: str) -> dict[str, int]:
    """Rows per split; an empty split is an error before any training."""
    sizes = {split: len(ds) for split, ds in dd.items()}
    for split, size in sizes.items():
        if size == 0:
            raise DataError(f"dataset {spec!r}: split {split} is empty")
    return sizes
