"""Reading dataset sources into per-split pandas frames: what every task's data shares.

A dataset spec is, tried in this order:
- a local file (`.csv`, `.tsv`, `.jsonl`, `.json`, `.parquet`, optionally `.gz` / `.bz2`):
  one pool of rows, split by us;
- a local folder holding `train.*`, `validation.*` (or `valid.*` / `dev.*` / `val.*`) and
  `test.*` files: loaded as those splits; a missing split is carved out of train;
- a named offline asset (`sftlib.assets`) that the task knows how to read;
- a hub dataset id: `OWNER/NAME`, `NAME:CONFIG`, `OWNER/NAME:CONFIG`, or a bare `NAME`
  (`imdb`) that is not a near miss of an asset name. Anything else, a path-like spec or a
  near miss (`rotten-tomatos`), is a `DataError` ("no such file or folder ...; did you mean
  ...?"), never a hub request: a typo of a path or an asset name stays local.

`load_splits` walks that order with the task's own row reader (`RowReader`: a raw frame ->
the task's columns, or a `DataError`), so both tasks' loaders are one function with two
readers, not two copies; it also says which file each split came from (`Splits.origins`), so
later checks can name it. `load_evaluation_splits` is the same for scoring a model: a file is
one split, whole; a folder gives the splits it holds; nothing is carved or deduplicated.

Splits we make are deterministic: duplicates (after normalizing case, whitespace and
punctuation) are removed first so no text sits in two splits; then, within each label (when
the frame has a `label` column), rows are ranked by the sha256 of their normalized split key
and cut 80/10/10. Hashes, not RNG order, so the split is the same on every machine and every
library version. Data too small for every split to get a row is a `DataError` that says how
many rows each class needs (`min_rows_per_group`, computed from `SPLIT_SHARES`).

Reading (`read_table`) is strict: every problem is one `DataError` line naming the file (and
the line where the parser knows it): an unreadable path (permissions, a symlink loop), an
empty file, bytes that are not UTF-8 text, a CSV header naming a column twice, a JSON key given
twice in one object, JSON Lines in a `.json` file or one JSON array in a `.jsonl` file, a file
with a header but no rows, and whatever else the CSV / JSON / Parquet parsers reject. Rows are
counted from 0 in messages, as pandas counts them (row 0 is the first line after a CSV header).

Not supported here: streaming datasets, remote files by URL, more than one file per split,
encodings other than UTF-8 (a BOM is fine).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import json
import math
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pandas as pd

SPLITS = ("train", "validation", "test")
SPLIT_SHARES = (0.8, 0.1, 0.1)
COMPRESSIONS: dict[str, Callable[[bytes], bytes]] = {".bz2": bz2.decompress,
                                                     ".gz": gzip.decompress}
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation",
                 "dev": "validation", "val": "validation", "test": "test"}

# A task's reader of raw rows: (frame as read, where it came from) -> the task's columns.
RowReader = Callable[[pd.DataFrame, str], pd.DataFrame]


class DataError(ValueError):
    """The data cannot be loaded as asked; the message says what was found instead."""


@dataclass
class Splits:
    """Frames per split, and where each split's rows came from (a file, `asset 'NAME'`,
    `NAME[split]` of the hub; `... (carved out of train)` for splits we made from train)."""

    frames: dict[str, pd.DataFrame]
    origins: dict[str, str]


def first_line(error: BaseException) -> str:
    """A library's error message as one line (CLI errors are one line)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
    answers never sits in two splits. A split no group reaches is an empty frame."""
    frame = frame.assign(_hash=frame[key].map(text_hash))
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in names}
    for _, group in _label_groups(frame):
        group = group.sort_values("_hash", kind="stable")
        bounds = _cut_points(len(group), shares)
        for name, start, stop in zip(names, bounds[:-1], bounds[1:]):
            parts[name].append(group.iloc[start:stop])
    return {name: pd.concat(chunks or [frame.iloc[0:0]]).sort_values("_hash")
            .drop(columns="_hash").reset_index(drop=True) for name, chunks in parts.items()}


def _cut_points(n: int, shares: tuple[float, ...]) -> list[int]:
    total = sum(shares)
    cumulative, points = 0.0, [0]
    for share in shares[:-1]:
        cumulative += share
        points.append(round(n * cumulative / total))
    return points + [n]


def min_rows_per_group(shares: tuple[float, ...] = SPLIT_SHARES) -> int:
    """The fewest rows a group (a class; all rows of unlabelled data) needs so that a hash
    split by `shares` gives every split at least one of them, at that count and every larger
    one (80/10/10: 8). Computed from `_cut_points`, which rounds half to even."""
    def every_split_gets_one(n: int) -> bool:
        points = _cut_points(n, shares)
        return all(stop > start for start, stop in zip(points[:-1], points[1:]))

    # from `limit` rows on every share spans >= 2 rows, which rounding cannot empty
    limit = 2 * math.ceil(sum(shares) / min(shares))
    failing = [n for n in range(1, limit + 1) if not every_split_gets_one(n)]
    return failing[-1] + 1 if failing else 1


def _shares_text(shares: tuple[float, ...]) -> str:
    return "/".join(f"{100 * share / sum(shares):.0f}" for share in shares)


def require_every_split(parts: dict[str, pd.DataFrame], frame: pd.DataFrame,
                        shares: tuple[float, ...], origin: str, removed: int = 0) -> None:
    """A `DataError` when a hash split of `frame` by `shares` left a split empty: it names
    the split, the rows each class needs and the rows each has."""
    empty = [name for name, part in parts.items() if part.empty]
    if not empty:
        return
    need = min_rows_per_group(shares)
    if "label" in frame:
        sizes = ", ".join(f"{label!r} {len(group)}" for label, group in _label_groups(frame))
        have = f"{need} rows per class; the classes have {sizes}"
    else:
        have = f"{need} rows; there are {len(frame)}"
    after = f" after removing {removed} duplicate(s)" if removed else ""
    raise DataError(f"{origin}: split {empty[0]} is empty: splitting {_shares_text(shares)} by "
                    f"hash needs at least {have}{after}. Add rows, or give train / validation "
                    "/ test files in a folder")


def split_pool(pool: pd.DataFrame, origin: str, key: str = "text") -> dict[str, pd.DataFrame]:
    """A single pool -> train / validation / test: deduplicated, hash split, none empty."""
    unique = dedupe(pool)
    parts = hash_split(unique, key=key)
    require_every_split(parts, unique, SPLIT_SHARES, origin, len(pool) - len(unique))
    return parts


def _quotas(sizes: list[int], n: int) -> list[int]:
    """Rows to take per group: proportional, at least one each, summing to n at most (the
    largest groups give up rows first when rounding overshoots)."""
    total = sum(sizes)
    quotas = [min(size, max(1, round(size * n / total))) for size in sizes]
    while sum(quotas) > n and max(quotas) > 1:
        quotas[quotas.index(max(quotas))] -= 1
    return quotas


def stratified_take(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """Deterministic stratified subset of `n` rows (by hash rank within each label); every
    label keeps a row while `n` is at least the number of labels."""
    if n >= len(frame):
        return frame
    frame = frame.assign(_hash=frame["text"].map(text_hash))
    groups = [group.sort_values("_hash") for _, group in _label_groups(frame)]
    picked = [group.iloc[:quota]
              for group, quota in zip(groups, _quotas([len(g) for g in groups], n))]
    return pd.concat(picked).sort_values("_hash").drop(columns="_hash").head(n) \
        .reset_index(drop=True)


def take_subsets(frames: dict[str, pd.DataFrame], train_subset: int | None,
                 eval_subset: int | None) -> dict[str, pd.DataFrame]:
    """`train_subset` rows of train and `eval_subset` of validation and test (quick runs);
    splits that are absent stay absent."""
    frames = dict(frames)
    wanted = {"train": train_subset, "validation": eval_subset, "test": eval_subset}
    for split, n in wanted.items():
        if n and split in frames:
            frames[split] = stratified_take(frames[split], n)
    return frames


def complete_splits(given: Splits, where: str, key: str = "text") -> Splits:
    """Carve whatever of validation/test is missing out of train, without overlap; `where`
    (the folder, the hub id) names the source in errors."""
    missing = [s for s in SPLITS if s not in given.frames]
    if not missing:
        return given
    if "train" not in given.frames:
        found = ", ".join(given.frames) or "none"
        raise DataError(f"{where}: no train split found (found: {found}); training needs one. "
                        "To score a model on the splits there are: sftlib analyze --dataset "
                        f"{where} --split SPLIT")
    present = {s: given.frames[s] for s in SPLITS if s in given.frames and s != "train"}
    taken = {normalize_text(t) for f in present.values() for t in f["text"]}
    train = dedupe(given.frames["train"])
    train = train[~train["text"].map(normalize_text).isin(taken)]
    shares = {"validation": 0.1, "test": 0.1}
    split_shares = (1.0 - sum(shares[m] for m in missing), *[shares[m] for m in missing])
    carved = hash_split(train, split_shares, ("train", *missing), key=key)
    origin = given.origins["train"]
    require_every_split(carved, train, split_shares, f"{origin} (carving {', '.join(missing)} "
                        "out of train)", len(given.frames["train"]) - len(train))
    carved_from = f"{origin} (carved out of train)"
    return Splits({**present, **carved},
                  {**given.origins, **{split: carved_from for split in missing}})


# files ---------------------------------------------------------------------------------

def _text_of(raw: bytes, path: Path) -> str:
    """UTF-8 text (a BOM dropped), or a DataError naming the line of the first bad byte."""
    if b"\x00" in raw:
        raise DataError(f"{path}: not a text file (it holds NUL bytes: binary data, or UTF-16 "
                        "text); save it as UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataError(f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} on line {line}); "
                        "save it as UTF-8") from None


class _RepeatedKeys(ValueError):
    """A JSON object names a key twice (json keeps the last one silently)."""


def _object_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise _RepeatedKeys(repeated)
    return dict(pairs)


def _json_value(text: str, path: Path, where: str) -> Any:
    """One JSON document; `where` ("line 3 " or "") says where it stands in the file."""
    try:
        return json.loads(text, object_pairs_hook=_object_once)
    except _RepeatedKeys as error:
        raise DataError(f"{path}: {where}a JSON object gives key(s) {error.args[0]} more than "
                        "once; keep one of each") from None


def _read_json(text: str, path: Path) -> pd.DataFrame:
    """A JSON file: an array of row objects, or an object of columns."""
    try:
        document = _json_value(text, path, "")
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and _is_json_lines(text):
            raise DataError(f"{path}: looks like JSON Lines (one JSON object per line), not one "
                            "JSON document; rename it to .jsonl") from None
        raise DataError(f"{path}: not valid JSON: {error.msg} (line {error.lineno}, column "
                        f"{error.colno})") from None
    if isinstance(document, list):
        kinds = [i for i, row in enumerate(document) if not isinstance(row, dict)]
        if kinds:
            raise DataError(f"{path}: item {kinds[0]} of the JSON array is a "
                            f"{type(document[kinds[0]]).__name__}, not an object; a JSON "
                            "dataset is an array of objects, one per row")
        return pd.DataFrame(document)
    if isinstance(document, dict) and document and all(
            isinstance(column, list | dict) for column in document.values()):
        return pd.DataFrame(document)
    one_row = " (one row of JSON Lines? then rename it to .jsonl)" \
        if isinstance(document, dict) else ""
    raise DataError(f"{path}: a JSON dataset is an array of objects (one per row) or an object "
                    f"of columns; this file holds a {type(document).__name__}{one_row}")


def _is_json_lines(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        return len(lines) > 1 and all(isinstance(json.loads(line), dict) for line in lines[:2])
    except json.JSONDecodeError:
        return False


def _read_json_lines(text: str, path: Path) -> pd.DataFrame:
    """JSON Lines: one object per line (blank lines skipped)."""
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = _json_value(line, path, f"line {number}: ")
        except json.JSONDecodeError as error:
            if _is_json_array(text):
                raise DataError(f"{path}: holds one JSON array, not JSON Lines (one object per "
                                "line); rename it to .json") from None
            raise DataError(f"{path}: line {number} is not valid JSON ({error.msg}, column "
                            f"{error.colno}); JSON Lines needs one object per line") from None
        if isinstance(row, list) and not rows and _is_json_array(text):
            raise DataError(f"{path}: holds one JSON array, not JSON Lines (one object per "
                            "line); rename it to .json")
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(row).__name__}, not an "
                            "object; JSON Lines needs one object per line")
        rows.append(row)
    return pd.DataFrame(rows)


def _is_json_array(text: str) -> bool:
    try:
        return isinstance(json.loads(text), list)
    except json.JSONDecodeError:
        return False


def _read_delimited(text: str, path: Path, sep: str) -> pd.DataFrame:
    """CSV / TSV with a header row; a header naming a column twice is an error (pandas
    would rename the second `a.1` and the first would be used silently)."""
    header = next(csv.reader(io.StringIO(text), delimiter=sep), [])
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: the header names column(s) {repeated} more than once; give "
                        "every column its own name")
    return pd.read_csv(io.StringIO(text), sep=sep)


FILE_READERS: dict[str, Callable[[bytes, Path], pd.DataFrame]] = {
    ".csv": lambda raw, path: _read_delimited(_text_of(raw, path), path, ","),
    ".tsv": lambda raw, path: _read_delimited(_text_of(raw, path), path, "\t"),
    ".jsonl": lambda raw, path: _read_json_lines(_text_of(raw, path), path),
    ".json": lambda raw, path: _read_json(_text_of(raw, path), path),
    ".parquet": lambda raw, path: pd.read_parquet(io.BytesIO(raw)),
}
FORMAT_NAMES = {".csv": "CSV", ".tsv": "TSV", ".jsonl": "JSON Lines", ".json": "JSON",
                ".parquet": "Parquet"}


def file_format(path: Path) -> tuple[str | None, str | None]:
    """(format suffix, compression suffix) of a data file name; format None if unsupported."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSIONS else None
    fmt = suffixes[-1] if suffixes and suffixes[-1] in FILE_READERS else None
    return fmt, compression


def _file_bytes(path: Path, compression: str | None) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read it ({error.strerror or first_line(error)})") \
            from None
    if compression is None:
        return raw
    try:
        return COMPRESSIONS[compression](raw)
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise DataError(f"{path}: not a valid {compression} file ({first_line(error)})") \
            from None


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV / TSV / JSON(L) / Parquet file (optionally .gz or .bz2 compressed) that
    holds rows; any problem is one `DataError` naming the file (see the module docstring)."""
    path = Path(path)
    fmt, compression = file_format(path)
    if fmt is None:
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(FILE_READERS)} "
                        f"(optionally {' or '.join(COMPRESSIONS)})")
    raw = _file_bytes(path, compression)
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        frame = FILE_READERS[fmt](raw, path)
    except (DataError, MemoryError):
        raise
    except Exception as error:  # the parsers raise many types; all mean "not readable"
        raise DataError(f"{path}: cannot be read as {FORMAT_NAMES[fmt]}: {first_line(error)}") \
            from error
    repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if repeated:
        raise DataError(f"{path}: column(s) {repeated} appear more than once; give every column "
                        "its own name")
    if len(frame) == 0 or len(frame.columns) == 0:
        raise DataError(f"{path}: no data ({len(frame)} rows, {len(frame.columns)} columns)")
    return frame


def split_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(split, file) for every `train.*` / `validation.*` / ... data file in `folder`."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise DataError(f"{folder}: cannot list the folder ({error.strerror or error})") \
            from None
    for file in entries:
        split = SPLIT_ALIASES.get(file.name.split(".")[0].lower())
        if split and file_format(file)[0]:
            yield split, file


def read_split_files(folder: Path, read_rows: RowReader) -> Splits:
    """The splits a folder's files hold, as they are (nothing carved, nothing removed)."""
    frames: dict[str, pd.DataFrame] = {}
    origins: dict[str, str] = {}
    for split, file in split_files(folder):
        if split in frames:
            raise DataError(f"{folder}: more than one file for split {split!r} "
                            f"({Path(origins[split]).name}, {file.name}); keep one")
        frames[split] = read_rows(read_table(file), str(file))
        origins[split] = str(file)
    if not frames:
        raise DataError(f"{folder}: no train / validation / test files found (expected names "
                        "like train.csv, validation.jsonl, test.parquet)")
    return Splits(frames, origins)


# specs: file, folder, asset or hub -----------------------------------------------------

def source_kind(spec: str, named: dict[str, Callable[[], pd.DataFrame]],
                dataset_config: str | None = None) -> str:
    """"file", "folder", "asset" or "hub", in the module docstring's order; a `DataError`
    for anything else (with "did you mean ...?" for a near miss)."""
    from sftlib import assets

    path = Path(spec).expanduser()
    if path.is_file():
        return "file"
    if path.is_dir():
        return "folder"
    if spec in named:
        return "asset"
    if path.is_symlink():
        raise DataError(f"{path}: a symbolic link that leads nowhere (a loop, or a missing "
                        "target)")
    if spec in assets.ASSETS:
        raise DataError(f"asset {spec!r} is not a dataset of this task; use one of "
                        f"{', '.join(named)}, a file, a folder or a hub dataset")
    suffixes = tuple(FILE_READERS) + tuple(COMPRESSIONS)
    bare_name = re.fullmatch(r"[A-Za-z0-9][\w.-]*", spec) and Path(spec).suffix not in suffixes
    if assets.looks_like_hub_id(spec, allow_config=True, file_suffixes=suffixes) or (
            bare_name and (dataset_config or not assets.did_you_mean(spec, named))):
        return "hub"  # a bare NAME (imdb) too, unless it is a near miss of an asset name
    raise DataError(f"no such file or folder {spec!r}, and no dataset asset of that name"
                    f"{assets.did_you_mean(spec, named)} (assets of this task: "
                    f"{', '.join(named)}; a hub dataset is OWNER/NAME or NAME:CONFIG)")


def load_hub(spec: str, dataset_config: str | None) -> dict[str, datasets.Dataset]:
    """A hub dataset `NAME` or `NAME:CONFIG`, its splits renamed to ours (others dropped)."""
    name, _, config = spec.partition(":")
    try:
        loaded = datasets.load_dataset(name, config or dataset_config)
    except Exception as error:  # the hub raises many types; all mean "not loadable"
        raise DataError(f"could not load {spec!r} as a local file, folder, asset or hub dataset "
                        f"({type(error).__name__}: {first_line(error)})") from error
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


def _hub_splits(spec: str, read_rows: RowReader, dataset_config: str | None) -> Splits:
    origins = {split: f"{spec}[{split}]" for split in SPLITS}
    frames = {split: read_rows(hub_frame(ds), origins[split])
              for split, ds in load_hub(spec, dataset_config).items()}
    frames = {split: frame for split, frame in frames.items() if len(frame)}
    return Splits(frames, {split: origins[split] for split in frames})


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


def load_splits(spec: str, read_rows: RowReader, named: dict[str, Callable[[], pd.DataFrame]],
                dataset_config: str | None = None, split_key: str = "text") -> Splits:
    """Any dataset spec -> the task's frames per split and their origins (module docstring)."""
    kind = source_kind(spec, named, dataset_config)
    path = Path(spec).expanduser()
    if kind in ("file", "asset"):
        origin = str(path) if kind == "file" else f"asset {spec!r}"
        pool = load_pool(spec, read_rows, named)
        return Splits(split_pool(pool, origin, split_key), dict.fromkeys(SPLITS, origin))
    if kind == "folder":
        return complete_splits(read_split_files(path, read_rows), str(path), split_key)
    return complete_splits(_hub_splits(spec, read_rows, dataset_config), spec, split_key)


def load_split_frames(spec: str, read_rows: RowReader,
                      named: dict[str, Callable[[], pd.DataFrame]],
                      dataset_config: str | None = None, split_key: str = "text",
                      ) -> dict[str, pd.DataFrame]:
    """`load_splits` without the origins: the task's frames per split."""
    return load_splits(spec, read_rows, named, dataset_config, split_key).frames


def load_evaluation_splits(spec: str, read_rows: RowReader,
                           named: dict[str, Callable[[], pd.DataFrame]], split: str,
                           dataset_config: str | None = None, split_key: str = "text",
                           ) -> Splits:
    """The splits to score a model on: a file is split `split`, whole (not deduplicated,
    not re-split); a folder gives the split files it holds, none carved; an asset or a hub
    dataset is split as for training. A missing `split` is a `DataError`."""
    kind = source_kind(spec, named, dataset_config)
    path = Path(spec).expanduser()
    if kind == "file":
        found = Splits({split: read_rows(read_table(path), str(path))}, {split: str(path)})
    elif kind == "folder":
        found = read_split_files(path, read_rows)
    else:
        found = load_splits(spec, read_rows, named, dataset_config, split_key)
    if split not in found.frames:
        raise DataError(f"{spec}: no {split} split (found: {', '.join(found.frames)}); pass "
                        f"--split with one of them, or add a {split}.* file")
    return found


def require_rows(dd: datasets.DatasetDict, spec: str) -> dict[str, int]:
    """Rows per split; an empty split is an error before any training."""
    sizes = {split: len(ds) for split, ds in dd.items()}
    for split, size in sizes.items():
        if size == 0:
            raise DataError(f"dataset {spec!r}: split {split} is empty")
    return sizes
