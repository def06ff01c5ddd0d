"""Data inspection statistics on small hand-made datasets with answers counted by hand."""

import json

import pandas as pd
import pytest

from sftlib import data, data_report

# train: "Great film!" twice (1 exact duplicate row); with "great film" three rows that
# normalize alike (2 normalized duplicate rows); "Awful plot." / "awful plot" under two labels;
# "" and "   " both normalize to "" (1 more normalized duplicate row); damaged characters.
TRAIN = [("Great film!", "pos"), ("great film", "pos"), ("Great film!", "pos"),
         ("Awful plot.", "neg"), ("awful plot", "pos"), ("A fine cast", "pos"),
         ("", "neg"), ("   ", "neg"), ("bad\x85 movie", "neg"),
         ("zero\u200bwidth here", "neg"), ("caf\ufffd au lait", "neg"),
         ("caf\u00c3\u00a9 noir", "neg")]
# validation: "great film" is in train exactly, "A FINE CAST!" only after normalization.
VALIDATION = [("great film", "pos"), ("A FINE CAST!", "pos"), ("new text here", "neg")]
# test: "new text here" is in validation exactly; "GREAT FILM" is in train and validation
# after normalization, and carries the other label.
TEST = [("new text here", "neg"), ("GREAT FILM", "neg"), ("brand new words", "pos")]


def _rows():
    frames = {name: pd.DataFrame(rows, columns=["text", "label"])
              for name, rows in (("train", TRAIN), ("validation", VALIDATION), ("test", TEST))}
    return data.rows_frame(data.to_dataset_dict(frames))


def test_rows_frame_keeps_label_names_and_accepts_unlabelled_text():
    rows = _rows()
    assert list(rows["label"].cat.categories) == ["neg", "pos"]
    assert rows.groupby("split", sort=False).size().to_dict() == \
        {"train": 12, "validation": 3, "test": 3}
    unlabelled = data.rows_frame(pd.DataFrame({"text": ["### prompt\nhi\n### response\nhello"]}))
    assert list(unlabelled.columns) == ["split", "text"] and unlabelled["split"][0] == "all"


def test_duplicates_within_each_split_exact_and_normalized():
    counts = data_report.duplicate_counts(_rows())
    assert counts.loc["train"].to_dict() == {
        "rows": 12, "exact_duplicate_rows": 1, "exact_duplicate_groups": 1,
        "normalized_duplicate_rows": 4, "normalized_duplicate_groups": 3}
    assert counts.loc["validation", "normalized_duplicate_rows"] == 0
    groups = data_report.duplicate_groups(_rows())
    assert groups.iloc[0][["split", "copies"]].tolist() == ["train", 3]


def test_leakage_counts_per_split_pair():
    leakage = data_report.leakage_counts(_rows()).set_index(["from", "to"])
    assert leakage.loc[("train", "validation"), ["exact_rows", "normalized_rows"]].tolist() \
        == [1, 2]
    assert leakage.loc[("train", "test"), ["exact_rows", "normalized_rows"]].tolist() == [0, 1]
    assert leakage.loc[("validation", "test"), ["exact_rows", "normalized_rows"]].tolist() \
        == [1, 2]
    assert leakage.loc[("train", "validation"), "normalized_share"] == round(2 / 3, 4)
    examples = data_report.leakage_examples(_rows())
    assert len(examples) == 5
    hit = examples[examples["text"] == "GREAT FILM"].iloc[0]
    assert (hit["from"], hit["label"], hit["matched_label"], hit["exact"]) == \
        ("train", "neg", "pos", False)


def test_conflicting_labels_over_all_splits():
    conflicts = data_report.conflicting_labels(_rows())
    assert len(conflicts) == 2
    great = conflicts.iloc[0]  # most rows first: 4 x pos, 1 x neg
    assert great["rows"] == 5 and great["labels"] == {"pos": 4, "neg": 1}
    assert great["splits"] == ["test", "train", "validation"]
    assert conflicts.iloc[1]["labels"] == {"neg": 1, "pos": 1}
    assert len(data_report.conflicting_labels(_rows(), normalized=False)) == 0


def test_row_issues_flag_empty_whitespace_and_damaged_characters():
    issues = data_report.row_issues(_rows())
    found = {(row.split, row.row, row.issue) for row in issues.itertuples()}
    assert found == {("train", 6, "empty"), ("train", 7, "whitespace_only"),
                     ("train", 8, "control_chars"), ("train", 9, "invisible_chars"),
                     ("train", 10, "undecodable"), ("train", 11, "mojibake")}
    counts = data_report.issue_counts(issues, _rows())
    assert counts.loc["empty"].tolist() == [1, 0, 0]


def test_one_word_and_very_long_use_the_far_out_fence():
    # characters: q1 = 10, q3 = 20 (numpy's linear percentiles), fence = 20 + 3 * 10 = 50
    texts = ["a" * 9 + ".", "b" * 10, "c c c c c.", "d d d d d d d d d d.", "e" * 20,
             "f f f f f f f f f f.", "g " * 500]
    rows = data.rows_frame(pd.DataFrame({"text": texts}))
    assert data_report.long_text_fence(rows) == 50.0
    issues = data_report.row_issues(rows)
    assert sorted(zip(issues["row"], issues["issue"])) == \
        [(0, "one_word"), (1, "one_word"), (4, "one_word"), (6, "very_long")]
    same = data.rows_frame(pd.DataFrame({"text": ["two words"] * 4 + ["x " * 100]}))
    assert data_report.long_text_fence(same) is None  # no spread: nothing is "extreme"


def test_distinctive_words_log_odds_with_informative_prior():
    rows = data.rows_frame(pd.DataFrame({
        "text": ["good good fun", "good plot", "bad plot", "bad bad fun"],
        "label": ["pos", "pos", "neg", "neg"], "split": "train"}))
    words = data_report.distinctive_words(rows, min_count=1)
    top = words[words["rank"] == 1].set_index("label")["word"].to_dict()
    assert top == {"pos": "good", "neg": "bad"}
    # "good" in pos: y_i = 3, y_j = 0, alpha = 3, n_i = n_j = 5, alpha0 = 10:
    # delta = log(6/9) - log(3/12) = log(8/3); var = 1/6 + 1/3; z = log(8/3) / sqrt(1/2)
    good = words[(words["label"] == "pos") & (words["word"] == "good")].iloc[0]
    assert good["z"] == 1.39 and good["count_in_label"] == 3 and good["count_elsewhere"] == 0
    plot = words[(words["label"] == "pos") & (words["word"] == "plot")].iloc[0]
    assert plot["z"] == 0.0  # as frequent in both labels


def test_smallest_label_and_warning_with_three_labels():
    rows = data.rows_frame(pd.DataFrame({"text": [f"text {i}" for i in range(20)],
                                         "label": ["a"] * 12 + ["b"] * 7 + ["c"],
                                         "split": "train"}))
    assert data_report.smallest_label(rows) == {"split": "train", "label": "c", "count": 1,
                                                "share": 0.05}
    warnings = data_report.data_warnings(rows, data_report.row_issues(rows))
    assert any("'c' is 5.0% of train" in w for w in warnings)
    assert not data_report.data_warnings(rows, data_report.row_issues(rows), 0.05)


def test_label_sample_pages_are_disjoint_and_order_independent():
    rows = data.rows_frame(pd.DataFrame({"text": [f"review {i}" for i in range(30)],
                                         "label": ["pos", "neg"] * 15, "split": "train"}))
    first, second = (data_report.label_sample(rows, "pos", n=5, page=p) for p in (0, 1))
    assert set(first["label"]) == {"pos"} and len(first) == 5
    assert not set(first["text"]) & set(second["text"])
    shuffled = data.rows_frame(rows.sample(frac=1.0, random_state=3))
    assert data_report.label_sample(shuffled, "pos", n=5)["text"].tolist() == \
        first["text"].tolist()
    static = data_report.show_sample(rows, n=2).data  # outside a notebook: the static table
    assert static["label"].tolist() == ["neg", "neg", "pos", "pos"]


def test_findings_warn_or_stop_with_strict():
    rows = _rows()
    findings = data_report.data_findings(data_report.leakage_counts(rows),
                                         data_report.conflicting_labels(rows))
    assert len(findings) == 4  # three leaking pairs and the conflicting labels
    assert findings[0].startswith("leakage: 2 of 3 validation rows (66.7%) repeat a train")
    data_report.check_findings(findings, strict=False)
    with pytest.raises(data_report.DataQualityError, match="strict_data"):
        data_report.check_findings(findings, strict=True)
    data_report.check_findings([], strict=True)


def test_inspect_data_is_json_and_counts_what_the_functions_count():
    report = data_report.inspect_data(_rows())
    text = json.dumps(report)  # plain JSON: no numpy scalars, no NaN
    assert "NaN" not in text
    assert report["splits"]["train"]["rows"] == 12
    assert report["labels"]["counts"]["test"] == {"neg": 2, "pos": 1}
    assert report["duplicates"]["counts"]["train"]["normalized_duplicate_rows"] == 4
    assert [p["normalized_rows"] for p in report["leakage"]["pairs"]] == [2, 1, 2]
    assert report["conflicting_labels"]["texts"] == 2 and report["before_split"] is None
    assert len(report["findings"]) == 4


def test_inspect_data_without_labels():
    texts = ["<|user|> hi <|assistant|> hello", "<|user|> hi <|assistant|> hello", "x y"]
    report = data_report.inspect_data(pd.DataFrame({"text": texts}))
    json.dumps(report)
    assert report["labels"]["names"] == [] and report["distinctive_words"] == {}
    assert report["duplicates"]["counts"]["all"]["exact_duplicate_rows"] == 1
    assert report["leakage"]["pairs"] == [] and report["sample"]["(all)"]


def test_conflicts_before_the_split_are_reported(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = [("Great film", "pos"), ("great film!", "neg")]
    rows += [(f"filler sentence {i}", "pos" if i % 2 else "neg") for i in range(40)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    dd = data.load_data(str(path))
    pool = data.load_pool(str(path))
    report = data_report.inspect_data(dd, pool)
    assert report["conflicting_labels"]["texts"] == 0  # dedupe kept one copy...
    assert report["before_split"]["conflicting_label_texts"] == 1  # ...of a conflict
    assert report["before_split"]["normalized_duplicate_rows"] == 1
    assert any("before splitting" in f for f in report["findings"])
    assert data_report.quick_findings(dd, pool) == report["findings"]
    assert data.load_pool(str(tmp_path)) is None  # a folder: splits are given
