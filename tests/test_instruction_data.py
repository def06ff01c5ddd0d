"""Instruction data: the three row shapes, splits by prompt, the asset, bad rows, overlap."""

import json
import re

import pandas as pd
import pytest

from sftlib import data, instruction_data, sources
from sftlib.config import RunConfig
from sftlib.generation import lcs_length, rouge_l, token_f1
from sftlib.sources import DataError


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _alpaca_rows(n):
    return [{"instruction": f"Name the number {i}.", "input": "in words" if i % 2 else "",
             "output": f"The number is {i}."} for i in range(n)]


def test_alpaca_jsonl_becomes_chats_split_80_10_10(tmp_path):
    path = _write_jsonl(tmp_path / "alpaca.jsonl", _alpaca_rows(50))
    dd = instruction_data.load_instruction_data(str(path))
    assert [len(dd[s]) for s in sources.SPLITS] == [40, 5, 5]
    row = next(r for r in dd["train"] if r["prompt"].endswith("in words"))
    assert row["messages"][0]["role"] == "user" and "\n\nin words" in row["messages"][0]["content"]
    assert row["messages"][-1] == {"role": "assistant", "content": row["response"]}
    assert row["text"] == row["prompt"] + "\n\n" + row["response"]
    again = instruction_data.load_instruction_data(str(path))
    assert again["test"]["prompt"] == dd["test"]["prompt"]  # hash splits: deterministic


def test_messages_with_text_parts_and_prompt_completion_shapes(tmp_path):
    parts = [{"messages": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": [{"type": "text", "value": "hi"}]},
                           {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
                           {"role": "user", "content": f"question {i}"},
                           {"role": "assistant", "content": f"answer {i}"}]} for i in range(20)]
    frames = instruction_data.load_instruction_frames(
        str(_write_jsonl(tmp_path / "chat.jsonl", parts)))
    row = frames["train"].iloc[0]
    assert row["messages"][1]["content"] == "hi" and row["messages"][2]["content"] == "hello"
    assert row["prompt"].startswith("Be brief.\n\nhi\n\nhello\n\nquestion")
    assert row["response"].startswith("answer")
    csv = tmp_path / "pc.csv"
    pd.DataFrame({"prompt": [f"p{i}" for i in range(20)],
                  "completion": [f"c{i}" for i in range(20)]}).to_csv(csv, index=False)
    pooled = instruction_data.load_instruction_pool(str(csv))
    assert pooled["messages"][3] == [{"role": "user", "content": "p3"},
                                     {"role": "assistant", "content": "c3"}]


def test_one_prompt_never_sits_in_two_splits(tmp_path):
    rows = [{"instruction": f"Task {i % 25}", "output": f"Answer {i}"} for i in range(100)]
    dd = instruction_data.load_instruction_data(str(_write_jsonl(tmp_path / "a.jsonl", rows)))
    prompts = {s: set(dd[s]["prompt"]) for s in sources.SPLITS}
    assert not prompts["train"] & prompts["validation"] and not prompts["train"] & prompts["test"]
    assert sum(len(dd[s]) for s in sources.SPLITS) == 100


def test_folder_of_splits_carves_test_out_of_train(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", _alpaca_rows(40))
    _write_jsonl(tmp_path / "validation.jsonl",
                 [{"instruction": "Other", "output": "x"}] * 3)
    dd = instruction_data.load_instruction_data(str(tmp_path))
    assert len(dd["validation"]) == 3 and len(dd["test"]) == 4 and len(dd["train"]) == 36


@pytest.mark.parametrize("row, problem", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},
     "an empty assistant turn"),
    ({"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]},
     "unknown role"),
])
def test_rows_that_cannot_be_trained_on_are_an_error(tmp_path, row, problem):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = _write_jsonl(tmp_path / "bad.jsonl", [good, good, row])
    with pytest.raises(DataError, match=rf"1 of 3 rows .*row 2: {problem}"):
        instruction_data.load_instruction_pool(str(path))


@pytest.mark.parametrize("rows, message", [
    ([{"instruction": {"text": "nested"}, "output": "b"}],
     "column 'instruction', row 0: holds a dict, not text"),
    ([{"instruction": ["a", "b"], "output": "b"}],
     "column 'instruction', row 0: holds a list of non-parts, not text"),
    ([{"messages": "hello"}], "column 'messages', row 0: holds a str, not a list of messages"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
      {"prompt": "p", "completion": "c"}],
     "column 'messages', row 1: has no messages (do the rows mix shapes?)"),
])
def test_values_that_are_no_text_name_file_column_and_row(tmp_path, rows, message):
    path = _write_jsonl(tmp_path / "chats.jsonl", rows)
    with pytest.raises(DataError, match=f"^{path}: {re.escape(message)}"):
        instruction_data.load_instruction_pool(str(path))


def test_instruction_data_too_small_to_split_says_so(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", _alpaca_rows(7))
    with pytest.raises(DataError, match="split validation is empty: splitting 80/10/10 by hash "
                                        "needs at least 8 rows; there are 7"):
        instruction_data.load_instruction_data(str(path))
    assert len(instruction_data.load_instruction_data(
        str(_write_jsonl(path, _alpaca_rows(8))))["validation"]) == 1


def test_a_json_array_in_a_jsonl_file_is_named(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(_alpaca_rows(20)))
    with pytest.raises(DataError, match="holds one JSON array, not JSON Lines"):
        instruction_data.load_instruction_data(str(path))


def test_unrecognized_columns_name_the_accepted_shapes(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("text,label\ngood,1\n")
    with pytest.raises(DataError, match="instruction / input / output, prompt / completion"):
        instruction_data.load_instruction_pool(str(path))


def test_alpaca_demo_asset_through_the_config():
    cfg = RunConfig(task="instruction", model="smollm2-135m-instruct", dataset="alpaca-demo",
                    metric_for_best="loss")
    assert len(instruction_data.load_pool_from_config(cfg)) == 999
    dd = instruction_data.load_from_config(cfg)
    assert sum(len(dd[s]) for s in sources.SPLITS) == 985  # 14 exact duplicates removed
    assert data.label_names(dd) == [] and set(dd["train"].column_names) == {
        "messages", "prompt", "response", "text"}


def test_overlap_scores_by_hand():
    assert token_f1("the cat sat", "the cat sat") == 1.0
    assert token_f1("a b", "c d") == 0.0 and token_f1("", "a") == 0.0
    # 2 common of 3 predicted and 4 reference words: P 2/3, R 1/2, F1 4/7
    assert token_f1("The cat, sat!", "a cat sat down") == pytest.approx(4 / 7)
    assert lcs_length("a b c d".split(), "a c b d".split()) == 3
    # LCS "cat on mat" = 3 of 4 predicted, 3 of 6 reference words: F = 2PR/(P+R) = 0.6
    assert rouge_l("cat on the mat", "the cat sat on a mat") == pytest.approx(0.6)
    assert rouge_l("mat the", "the mat") == pytest.approx(0.5)  # order counts
    assert token_f1("mat the", "the mat") == 1.0  # not for the bag of words
