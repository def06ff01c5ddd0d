"""What sftlib refuses (issue 16): damaged datasets end in one error naming the file, never in
another exception or a silently wrong model; models are scored on files without a train split.

Property tests (Hypothesis) write small CSV / TSV / JSONL / JSON / Parquet files and folders
with random damage and check that every case either loads into a dataset that passes the
checks or stops with one `DataError` line naming the file. Plain tests pin each example of the
issue and its message; CLI tests check the exit code and the one-line stderr.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import pandas as pd
import pytest
from conftest import ROOT, write_csv
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sftlib import assets, data, data_report, instruction_data, sources, train
from sftlib.__main__ import main
from sftlib.assets import ModelSpecError
from sftlib.config import RunConfig
from sftlib.sources import DataError

PROPERTY = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
MINILM = assets.cache_dir() / "minilm-l6"


def _rows(per_class: int, labels: list) -> list[tuple[str, object]]:
    """`per_class` distinct texts for each label."""
    return [(f"review {i} of {label} with words {i * 7}", label)
            for label in labels for i in range(per_class)]


def _message(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


# A: the label set is what train holds ---------------------------------------------------------

@pytest.mark.parametrize("labels, names", [([0, 1000], ["0", "1000"]),
                                           ([1, 2, 4, 5], ["1", "2", "4", "5"]),
                                           ([10, 2, 1], ["1", "2", "10"]),
                                           (["b", 3, "a"], ["3", "a", "b"])])
def test_label_names_are_train_values_never_invented(tmp_path, labels, names):
    dd = data.load_data(str(write_csv(tmp_path / "d.csv", _rows(12, labels))))
    assert dd["train"].features["label"].names == names
    counts = pd.Series(dd["train"]["label"]).value_counts()
    assert sorted(counts.index) == list(range(len(names)))  # no class without train rows


def test_integer_valued_floats_are_integer_labels(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": float(label)}) + "\n"
                            for t, label in _rows(12, [0, 1])))
    assert data.load_data(str(path))["train"].features["label"].names == ["0", "1"]


@pytest.mark.parametrize("labels, spellings", [([" pos", "pos", "neg"], "' pos' and 'pos'"),
                                               (["Pos", "pos", "neg"], "'Pos' and 'pos'")])
def test_labels_differing_in_whitespace_or_case_are_an_error(tmp_path, labels, spellings):
    path = write_csv(tmp_path / "d.csv", _rows(12, labels))
    with pytest.raises(DataError) as error:
        data.load_data(str(path))
    assert _message(error).startswith(f"{path}: labels {spellings} (both in {path})")
    assert "differ only in case or surrounding whitespace" in str(error.value)


def test_spelling_variants_across_split_files_name_both_files(tmp_path):
    write_csv(tmp_path / "train.csv", _rows(12, ["pos", "neg"]))
    write_csv(tmp_path / "test.csv", [("held out", "pos "), ("another", "neg")])
    with pytest.raises(DataError) as error:
        data.load_data(str(tmp_path))
    assert f"split train of {tmp_path / 'train.csv'}" in _message(error)
    assert f"split test of {tmp_path / 'test.csv'}" in str(error.value)


def test_a_test_label_absent_from_train_names_split_label_and_file(tmp_path):
    write_csv(tmp_path / "train.csv", _rows(12, ["a", "b"]))
    write_csv(tmp_path / "test.csv", [("x y", "c"), ("z w", "a")])
    with pytest.raises(DataError) as error:
        data.load_data(str(tmp_path))
    assert _message(error).startswith(
        f"{tmp_path / 'test.csv'}: split test has label 'c' in column 'label' (1 row(s), "
        "the first row 0) that train's labels do not include")


def test_one_class_in_train_is_an_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", _rows(20, ["pos"]))
    with pytest.raises(DataError, match=r"split train has 1 class\(es\) \['pos'\] in column "
                                        "'label'; classification needs at least two"):
        data.load_data(str(path))


def test_declared_classes_keep_their_order_and_unused_ones_are_left_out():
    categories = ["z", "y", "unused", "x"]
    frames = {split: pd.DataFrame({"text": [f"{split} {i}" for i in range(6)],
                                   "label": pd.Categorical(["x", "y", "z"] * 2, categories)})
              for split in sources.SPLITS}
    splits = sources.Splits(frames, dict.fromkeys(sources.SPLITS, "asset 'demo'"))
    assert data.checked_label_names(splits) == ["z", "y", "x"]
    frames["test"] = pd.DataFrame({"text": ["t"], "label": pd.Categorical(["unused"],
                                                                          categories)})
    with pytest.raises(DataError, match="asset 'demo': split test has label 'unused'"):
        data.checked_label_names(splits)


@pytest.mark.parametrize("column, kind", [([7, 8] * 15, "a number"),
                                          ([["a", "b"], ["c"]] * 15, "a list"),
                                          ([{"a": 1}, {"b": 2}] * 15, "an object")])
def test_text_column_must_hold_strings(tmp_path, column, kind):
    path = tmp_path / "d.parquet"
    if kind == "an object":
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n"
                                for i, t in enumerate(column)))
    else:
        pd.DataFrame({"text": column, "label": [0, 1] * 15}).to_parquet(path)
    with pytest.raises(DataError) as error:
        data.load_data(str(path))
    assert _message(error).startswith(f"{path}: column 'text' (text_column) holds {kind} at row 0")
    assert "set text_column to the column with the texts" in str(error.value)


@pytest.mark.parametrize("labels, what", [([0.5, 1.5] * 15, "non-integer numbers"),
                                          ([[0, 1], [1]] * 15, "lists")])
def test_regression_and_multilabel_targets_are_refused(tmp_path, labels, what):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": [f"t {i}" for i in range(30)], "label": labels}).to_parquet(path)
    with pytest.raises(DataError, match=f"{path}: column 'label' \\(label_column\\) holds {what}"):
        data.load_data(str(path))


def test_train_subset_smaller_than_the_classes_is_an_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", _rows(12, ["a", "b", "c"]))
    with pytest.raises(DataError, match=r"train_subset=2 leaves class\(es\) \['.'\] without a "
                                        "train row; use train_subset >= 3"):
        data.load_data(str(path), train_subset=2)
    assert len(data.load_data(str(path), train_subset=3)["train"]) == 3


def test_stratified_subset_keeps_every_class_when_it_can():
    pool = pd.DataFrame({"text": [f"text {i}" for i in range(200)],
                         "label": ["big"] * 195 + ["small"] * 5})
    for n in range(2, 40):
        taken = sources.stratified_take(pool, n)
        assert len(taken) == n and set(taken["label"]) == {"big", "small"}


@pytest.mark.parametrize("files, missing", [
    ((), "config.json and weights"),
    (("config.json", "model.safetensors", "tokenizer_config.json", "special_tokens_map.json"),
     "which tokenizer_config.json alone is not"),
    (("config.json", "model.safetensors"), "lacks a tokenizer vocabulary"),
])
def test_a_model_folder_needs_config_weights_and_a_vocabulary(tmp_path, files, missing):
    for name in files:
        (tmp_path / name).symlink_to(MINILM / name)
    with pytest.raises(ModelSpecError) as error:
        assets.resolve_model(str(tmp_path))
    assert _message(error).startswith(f"model: {tmp_path} is not a model folder: it lacks")
    assert missing in str(error.value)
    for name in ("tokenizer.json", "vocab.txt"):
        (tmp_path / name).unlink(missing_ok=True)
        (tmp_path / name).symlink_to(MINILM / name)
    for name in ("config.json", "model.safetensors"):
        if not (tmp_path / name).exists():
            (tmp_path / name).symlink_to(MINILM / name)
    assert assets.resolve_model(str(tmp_path)) == str(tmp_path)


def test_preflight_refuses_a_model_folder_before_loading_data(tmp_path):
    with pytest.raises(ModelSpecError, match="is not a model folder"):
        train.get_task("classification").preflight(
            RunConfig(model=str(tmp_path), dataset="./no/such.csv"), log=lambda _m: None)


def test_prepare_training_runs_the_preflight_checks(tmp_path):
    folder = tmp_path / "leaky"
    folder.mkdir()
    write_csv(folder / "train.csv", _rows(12, [0, 1]))
    write_csv(folder / "validation.csv", _rows(2, [0, 1]))  # every row repeats a train row
    write_csv(folder / "test.csv", [("held out", 0), ("also held out", 1)])
    cfg = RunConfig(dataset=str(folder), strict_data=True, output_dir=str(tmp_path / "run"))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(data_report.DataQualityError, match="leakage"):
        train.prepare_training(cfg, tmp_path / "run", notebook=False, log_fn=lambda _m: None)
    assert (tmp_path / "run" / "checkpoints").is_dir()  # a refused run moves nothing


# B: one line naming the file -------------------------------------------------------------------

def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


JSONL_ROWS = "".join(json.dumps({"text": f"text {i}", "label": i % 2}) + "\n" for i in range(30))


@pytest.mark.parametrize("name, content, message", [
    ("d.json", JSONL_ROWS, "looks like JSON Lines (one JSON object per line), not one JSON "
                           "document; rename it to .jsonl"),
    ("d.jsonl", json.dumps([json.loads(line) for line in JSONL_ROWS.splitlines()]),
     "holds one JSON array, not JSON Lines (one object per line); rename it to .json"),
    ("d.jsonl", JSONL_ROWS + "{oops\n", "line 31 is not valid JSON (Expecting property name "
                                        "enclosed in double quotes, column 2)"),
    ("d.jsonl", '{"text": "a", "label": 1, "label": 2}\n', "line 1: a JSON object gives "
                                                          "key(s) ['label'] more than once"),
    ("d.csv", "text,label,text\na,1,b\n", "the header names column(s) ['text'] more than once"),
    ("d.csv", "text,label\na,1\nb,0,extra\n", "cannot be read as CSV: Error tokenizing data. C "
                                              "error: Expected 2 fields in line 3, saw 3"),
    ("d.csv", b"text,label\ncaf\xe9,1\n", "not UTF-8 text (byte 0xe9 on line 2); save it as "
                                          "UTF-8"),
    ("d.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file (it holds NUL bytes"),
    ("d.csv", "", "the file is empty"),
    ("d.csv", "text,label\n", "no data (0 rows, 2 columns)"),
    ("d.parquet", "text,label\na,1\n", "cannot be read as Parquet:"),
    ("d.csv.gz", "text,label\na,1\n", "not a valid .gz file"),
    ("d.json", '{"text": "a", "label": 1}', "this file holds a dict (one row of JSON Lines? "
                                            "then rename it to .jsonl)"),
])
def test_unreadable_files_are_one_line_naming_the_file(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError) as error:
        sources.read_table(path)
    assert _message(error).startswith(f"{path}: ")
    assert message in str(error.value)


def test_min_rows_per_class_comes_from_the_split_shares():
    need = sources.min_rows_per_group(sources.SPLIT_SHARES)
    assert need == 8  # 80/10/10, rounding half to even: 7 rows leave validation empty
    for n in range(need, 200):
        parts = sources.hash_split(pd.DataFrame({"text": [f"t {i}" for i in range(n)]}))
        assert all(len(part) for part in parts.values()), n
    assert sources.min_rows_per_group((0.5, 0.5)) == 2


def test_data_too_small_to_split_says_how_many_rows_each_class_needs(tmp_path):
    path = write_csv(tmp_path / "d.csv", _rows(5, ["a", "b"]) + [("review 0 of a with words 0",
                                                                   "a")])
    with pytest.raises(DataError) as error:
        data.load_data(str(path))
    assert _message(error) == (
        f"{path}: split validation is empty: splitting 80/10/10 by hash needs at least 8 rows "
        "per class; the classes have 'a' 5, 'b' 5 after removing 1 duplicate(s). Add rows, or "
        "give train / validation / test files in a folder")
    write_csv(tmp_path / "train.csv", _rows(2, ["a", "b"]))
    with pytest.raises(DataError, match=r"train.csv \(carving validation, test out of train\): "
                                        "split validation is empty"):
        data.load_data(str(tmp_path))


def test_typos_never_go_to_the_hub(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: asked.append(a) or {})
    with pytest.raises(DataError) as error:
        data.load_data("rotten-tomatos")
    assert _message(error).startswith("no such file or folder 'rotten-tomatos', and no dataset "
                                      "asset of that name; did you mean rotten-tomatoes?")
    write_csv(tmp_path / "reviews.csv", _rows(12, ["a", "b"]))
    with pytest.raises(DataError, match=f"did you mean {tmp_path}/reviews.csv\\?"):
        data.load_data(str(tmp_path / "reviews.cvs"))
    monkeypatch.chdir(tmp_path)
    for spec in ("rotten_tomatoes", "./reviews", "tmp/x.csv", "reviews.cvs"):
        with pytest.raises(DataError, match="no such file or folder"):
            data.load_data(spec)
    assert asked == []
    for spec in ("stanfordnlp/imdb", "glue:sst2", "imdb"):  # hub ids: asked for
        with pytest.raises(DataError):
            data.load_data(spec)
    assert [a[0] for a in asked] == ["stanfordnlp/imdb", "glue", "imdb"]
    with pytest.raises(ModelSpecError, match="'minilm-l5'; did you mean minilm-l6?"):
        assets.resolve_model("minilm-l5")


def test_symlink_loops_and_unreadable_entries_are_one_line(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_csv(folder / "train.csv", _rows(12, ["a", "b"]))
    (folder / "notes").symlink_to(folder / "notes")  # not a split file: ignored
    assert len(data.load_data(str(folder))["train"]) > 0
    (folder / "test.csv").symlink_to(folder / "test.csv")
    with pytest.raises(DataError) as error:
        data.load_data(str(folder))
    assert _message(error) == f"{folder / 'test.csv'}: cannot read it (Too many levels of " \
                              "symbolic links)"
    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop.csv")
    with pytest.raises(DataError, match="loop.csv: a symbolic link that leads nowhere"):
        data.load_data(str(tmp_path / "loop.csv"))


# C: scoring a labelled file without a train split ----------------------------------------------

def test_evaluation_needs_no_train_split(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_csv(folder / "test.csv", [("a fine film", "pos"), ("dull", "neg"), ("dull", "neg")])
    dd = data.load_for_evaluation(str(folder), "test", ["neg", "pos"])
    assert list(dd) == ["test"] and dd["test"]["label"] == [1, 0, 0]  # whole: duplicates kept
    single = data.load_for_evaluation(str(folder / "test.csv"), "validation", ["neg", "pos"])
    assert list(single) == ["validation"] and len(single["validation"]) == 3
    with pytest.raises(DataError, match="no validation split \\(found: test\\)"):
        data.load_for_evaluation(str(folder), "validation", ["neg", "pos"])
    write_csv(folder / "test.csv", [("a fine film", "Pos"), ("dull", "meh")])
    with pytest.raises(DataError) as error:
        data.load_for_evaluation(str(folder), "test", ["neg", "pos"])
    assert _message(error).startswith(
        f"{folder / 'test.csv'}: split test has label 'Pos' in column 'label' (1 row(s), the "
        "first row 0; 1 more unknown label(s)) that the model's labels do not include (did you "
        "mean 'pos'? labels must match exactly)")


@pytest.fixture(scope="module")
def untrained_classifier(tmp_path_factory):
    """A saved classifier folder (MiniLM with a fresh neg/pos head): nothing is trained."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("model")
    model = AutoModelForSequenceClassification.from_pretrained(
        MINILM, num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(MINILM).save_pretrained(folder)
    return folder


def test_analyze_scores_a_folder_with_only_a_test_file(untrained_classifier, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_csv(folder / "test.csv", [(f"film number {i}", ["neg", "pos"][i % 2])
                                    for i in range(10)])
    assert main(["analyze", "--model", str(untrained_classifier), "--dataset", str(folder),
                 "--split", "test", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["metrics"]["examples"] == 10 and summary["labels"] == ["neg", "pos"]
    assert [row["model"] for row in summary["comparison"]] == ["fine-tuned",
                                                               "before fine-tuning"]
    assert "skipped the majority-class baseline" in captured.err
    assert len(summary["skipped"]) == 2 and "temperature_scaling" not in summary
    write_csv(folder / "test.csv", [("film", "neutral"), ("other film", "pos")])
    assert main(["analyze", "--model", str(untrained_classifier), "--dataset", str(folder),
                 "--split", "test", "--no-baselines"]) == 2
    assert "has label 'neutral'" in capsys.readouterr().err


# D: properties over damaged datasets -------------------------------------------------------------

DAMAGES = ("none", "missing_column", "duplicate_header", "nan_label", "whitespace_label",
           "case_label", "numeric_text", "list_text", "empty_file", "header_only", "tiny",
           "unseen_test_label", "wrong_extension", "binary", "latin1", "truncated",
           "symlink_loop", "one_class")
MUST_REFUSE = {"missing_column", "duplicate_header", "nan_label", "whitespace_label",
               "case_label", "numeric_text", "list_text", "empty_file", "header_only",
               "unseen_test_label", "binary", "latin1", "symlink_loop", "one_class"}
FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".csv.gz", ".jsonl.bz2")
LABELS = st.sampled_from([["pos", "neg"], [0, 1], [0, 1000], [1, 2, 4, 5], ["a", "b", "c"],
                          [True, False]])


def _encode(frame: pd.DataFrame, fmt: str) -> bytes:
    """The frame as the bytes of a file of format `fmt` (compressed when it says so)."""
    base = fmt.split(".")[1]
    if base == "parquet":  # one type per column: mixed ones (3 and "x") written as text
        mixed = [c for c in frame if frame[c].dropna().map(type).nunique() > 1]
        buffer = io.BytesIO()
        frame.astype(dict.fromkeys(mixed, str)).to_parquet(buffer)
        raw = buffer.getvalue()
    elif base in ("csv", "tsv"):
        raw = frame.to_csv(index=False, sep="," if base == "csv" else "\t").encode()
    else:
        records = frame.to_dict(orient="records")
        raw = ("".join(json.dumps(r, default=str) + "\n" for r in records) if base == "jsonl"
               else json.dumps(records, default=str)).encode()
    if fmt.endswith(".gz"):
        return gzip.compress(raw)
    if fmt.endswith(".bz2"):
        return bz2.compress(raw)
    return raw


def _damaged_frame(rows: list[tuple[str, object]], damage: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["text", "label"]).astype(object)
    if damage == "missing_column":
        frame = frame.rename(columns={"label": "stars"})
    elif damage == "nan_label":
        frame.loc[len(frame) // 2, "label"] = None
    elif damage == "whitespace_label":  # (a CSV reads " 1" as the number 1: no variant)
        frame["label"] = [f"{label}x" for label in frame["label"]]
        frame.loc[0, "label"] = f" {frame.loc[0, 'label']}"
    elif damage == "case_label":
        frame["label"] = frame["label"].astype(str)
        frame.loc[0, "label"], frame.loc[1, "label"] = "Other", "other"
    elif damage == "numeric_text":
        frame["text"] = range(len(frame))
    elif damage == "list_text":
        frame["text"] = [[t] for t in frame["text"]]
    elif damage == "one_class":
        frame["label"] = frame["label"].iloc[0]
    elif damage == "header_only":
        frame = frame.iloc[0:0]
    return frame


def _file_bytes(rows, damage: str, fmt: str, data_draw) -> bytes:
    frame = _damaged_frame(rows, damage)
    if damage == "list_text" and fmt.split(".")[1] in ("csv", "tsv"):
        fmt = ".parquet"  # CSV cannot hold a list; the column would be text
    raw = _encode(frame, fmt)
    if damage == "duplicate_header":
        head, _, rest = _encode(frame, ".csv").decode().partition("\n")
        raw = f"{head},text\n".encode() + "".join(
            f"{line},again\n" for line in rest.splitlines()).encode()
    elif damage == "empty_file":
        raw = b""
    elif damage == "binary":
        raw = bytes(data_draw.draw(st.binary(min_size=1, max_size=64))) + b"\x00" + raw
    elif damage == "latin1":
        raw = b"text,label\n" + "caf\xe9 au lait,1\n".encode("latin-1")
    elif damage == "truncated":
        raw = raw[:data_draw.draw(st.integers(0, max(len(raw) - 1, 0)))]
    return raw


def _file_name(stem: str, damage: str, fmt: str) -> str:
    if damage in ("duplicate_header", "latin1"):
        fmt = ".csv"
    if damage == "wrong_extension":
        fmt = {".csv": ".json", ".tsv": ".csv", ".jsonl": ".json", ".json": ".jsonl",
               ".parquet": ".csv"}.get(fmt, ".parquet")
    return stem + fmt


def _assert_valid(dd: datasets.DatasetDict) -> None:
    """A loaded dataset passes the checks: three non-empty splits, at least two classes, each
    with train rows, no two label names that differ only in case or whitespace."""
    assert list(dd) == list(sources.SPLITS) and all(len(dd[s]) for s in dd)
    names = dd["train"].features["label"].names
    assert len(names) >= 2 and set(dd["train"]["label"]) == set(range(len(names)))
    assert len({data.spelling_key(n) for n in names}) == len(names)
    assert all(isinstance(t, str) for s in dd for t in dd[s]["text"])


def _loads_or_names_file(spec: Path, damage: str) -> None:
    try:
        dd = data.load_data(str(spec))
    except DataError as error:
        message = str(error)
        assert "\n" not in message and spec.name in message, message
        event(f"{damage}: refused")
        return
    event(f"{damage}: loaded")
    assert damage not in MUST_REFUSE, f"{damage} was loaded"
    _assert_valid(dd)


@PROPERTY
@given(labels=LABELS, per_class=st.integers(8, 14), damage=st.sampled_from(DAMAGES),
       fmt=st.sampled_from(FORMATS), data_draw=st.data())
def test_damaged_files_load_valid_or_fail_naming_the_file(labels, per_class, damage, fmt,
                                                          data_draw):
    if damage == "tiny":  # otherwise enough rows per class for every split (8)
        per_class = data_draw.draw(st.integers(1, 7))
    rows = _rows(per_class, labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / _file_name("reviews", damage, fmt)
        if damage == "symlink_loop":
            path.symlink_to(path)
        elif damage == "unseen_test_label":
            path = Path(tmp)
            (path / "train.csv").write_bytes(_encode(pd.DataFrame(rows, columns=["text",
                                                                                 "label"]), ".csv"))
            (path / f"test{fmt}").write_bytes(_encode(pd.DataFrame(
                [("unseen text", "never in train")] + rows[:1], columns=["text", "label"]), fmt))
        else:
            path.write_bytes(_file_bytes(rows, damage, fmt, data_draw))
        _loads_or_names_file(path, damage)


@PROPERTY
@given(labels=LABELS, per_class=st.integers(8, 14),
       damages=st.lists(st.sampled_from(DAMAGES), min_size=1, max_size=3),
       fmts=st.lists(st.sampled_from(FORMATS), min_size=3, max_size=3), data_draw=st.data())
def test_damaged_folders_load_valid_or_fail_naming_the_file(labels, per_class, damages, fmts,
                                                            data_draw):
    """A folder of split files, each maybe damaged; extra loops and junk files beside them."""
    rows = _rows(per_class, labels)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mydata"
        folder.mkdir()
        for split, fmt, damage in zip(("train", "validation", "test"), fmts, damages * 3):
            if split != "train" and damage in ("none", "tiny"):
                continue  # leave it out: carved out of train
            if damage == "symlink_loop":
                (folder / f"{split}.csv").symlink_to(folder / f"{split}.csv")
                continue
            if damage == "unseen_test_label":
                damage = "none"
                rows = rows + [("a label train never had", "never in train")] \
                    if split != "train" else rows
            name = _file_name(split, damage, fmt)
            (folder / name).write_bytes(_file_bytes(rows, damage, fmt, data_draw))
        (folder / "README.txt").write_text("not data")
        os.symlink(folder / "loop", folder / "loop")
        try:
            dd = data.load_data(str(folder))
        except DataError as error:
            assert "\n" not in str(error) and "mydata" in str(error), str(error)
            return
        _assert_valid(dd)


INSTRUCTION_DAMAGES = ("none", "dict_content", "string_messages", "array_in_jsonl", "truncated",
                       "no_answer", "tiny", "mixed_shapes")


@PROPERTY
@given(n=st.integers(1, 30), damage=st.sampled_from(INSTRUCTION_DAMAGES),
       fmt=st.sampled_from((".jsonl", ".json", ".csv", ".parquet")), data_draw=st.data())
def test_damaged_instruction_files_load_or_fail_naming_the_file(n, damage, fmt, data_draw):
    rows = [{"instruction": f"Name the number {i}.", "output": f"It is {i}."} for i in range(n)]
    if damage == "dict_content":
        rows[0]["instruction"] = {"text": "nested"}
    elif damage == "string_messages":
        rows = [{"messages": "hello"} for _ in rows]
    elif damage == "no_answer":
        rows[-1]["output"] = " "
    elif damage == "mixed_shapes":
        rows[0] = {"messages": [{"role": "user", "content": "a"},
                                {"role": "assistant", "content": "b"}]}
    if damage in ("dict_content", "string_messages"):
        fmt = ".jsonl"  # CSV would write the dict as text; Parquet cannot mix the types
    raw = _encode(pd.DataFrame(rows), fmt)
    if damage == "array_in_jsonl":
        fmt, raw = ".jsonl", json.dumps(rows).encode()
    elif damage == "truncated":
        raw = raw[:data_draw.draw(st.integers(0, max(len(raw) - 1, 0)))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"chats{fmt}"
        path.write_bytes(raw)
        try:
            dd = instruction_data.load_instruction_data(str(path))
        except DataError as error:
            assert "\n" not in str(error) and path.name in str(error), str(error)
            return
        assert damage in ("none", "truncated", "mixed_shapes", "tiny"), damage
        assert all(len(dd[s]) for s in dd) and all(r for r in dd["train"]["response"])


# CLI: exit 2, one line on stderr, nothing trained ----------------------------------------------

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, not an installed sftlib
    return subprocess.run([sys.executable, "-m", "sftlib", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture
def refused(tmp_path):
    """Datasets that must be refused, by name."""
    write_csv(tmp_path / "spaces.csv", _rows(12, [" pos", "pos", "neg"]))
    _write(tmp_path / "lines.json", JSONL_ROWS)
    (tmp_path / "only_test").mkdir()
    write_csv(tmp_path / "only_test" / "test.csv", _rows(12, ["a", "b"]))
    return tmp_path


def _assert_one_line(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sftlib: "), result.stderr
    assert "Traceback" not in result.stderr and expected in lines[0], lines


@pytest.mark.parametrize("spec, expected", [  # each call ~8 s of imports: a few only
    ("lines.json", "rename it to .jsonl"),
    ("only_test", "no train split found"),
])
def test_cli_data_inspect_refuses_in_one_line(refused, spec, expected):
    _assert_one_line(_cli("data", "inspect", "--dataset", spec, cwd=refused), expected)


@pytest.mark.parametrize("overrides, expected", [
    (["dataset=spaces.csv"], "labels ' pos' and 'pos'"),
    (["model=only_test"], "is not a model folder"),
])
def test_cli_train_refuses_in_one_line_and_trains_nothing(refused, overrides, expected):
    out = refused / "run"
    sets = [arg for o in overrides for arg in ("--set", o)]
    result = _cli("train", *sets, "--set", "max_steps=1", "--output-dir", str(out),
                  cwd=refused)
    _assert_one_line(result, expected)
    assert not any((out / name).exists() for name in ("checkpoints", "model", "metrics.jsonl"))
