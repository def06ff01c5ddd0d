"""Token statistics: known answers from hand-made lengths and the real MiniLM tokenizer."""

import json

import datasets
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sftlib import data, tokens


@pytest.fixture(scope="module")
def tokenizer():
    return tokens.load_tokenizer("minilm-l6")  # the offline asset: bert-base-uncased's vocab


def _dd(train, validation=("fine",), test=("fine",)):
    frames = {name: pd.DataFrame({"text": list(texts), "label": [i % 2 for i in range(len(texts))]})
              for name, texts in (("train", train), ("validation", validation), ("test", test))}
    return data.to_dataset_dict(frames)


def test_truncation_rate_counts_examples_and_tokens_lost():
    lengths = pd.DataFrame({"split": "train", "tokens": [10, 20, 30, 40]})
    stats = tokens.truncation_stats(lengths, 25).loc["train"]
    assert stats["truncated_examples"] == 2 and stats["truncated_share"] == 0.5
    assert stats["tokens_lost_share"] == (5 + 15) / 100


def test_suggested_max_length_covers_at_least_995_per_mille():
    assert tokens.suggest_max_length([10] * 995 + [100] * 5) == 16  # 99.5% fit in 10 tokens
    assert tokens.suggest_max_length([10] * 994 + [100] * 6) == 104  # now 100 must fit
    assert tokens.suggest_max_length([3, 5]) == 8  # never below one multiple
    assert tokens.suggest_max_length([700] * 10, model_max=512) == 512


def test_unk_rate_and_unknown_words_with_a_real_tokenizer(tokenizer):
    # WordPiece has no piece for the emoji or the snowman: each becomes one [UNK].
    texts = ["good film", "good \U0001F600 film", "\u2603 \u2603"]
    frame = tokens.token_frame(pd.DataFrame({"text": texts}), tokenizer)
    assert frame["unk"].tolist() == [0, 1, 2]
    assert frame["content_tokens"].tolist() == [2, 3, 2]
    stats = tokens.unk_stats(frame).loc["all"]
    assert stats["unk_rate"] == 3 / 7 and stats["examples_with_unk_share"] == 2 / 3
    words = tokens.unk_words(pd.DataFrame({"text": texts}), tokenizer, frame)
    assert words.values.tolist() == [["\u2603", 2], ["\U0001F600", 1]]


def test_fertility_is_content_tokens_per_word(tokenizer):
    texts = ["good film", "zzzqqq"]  # 2 words -> 2 tokens; 1 word -> z ##zz ##q ##q ##q
    frame = tokens.token_frame(pd.DataFrame({"text": texts}), tokenizer)
    assert frame["tokens"].tolist() == [4, 7]  # [CLS] and [SEP] included
    assert tokens.fertility(frame).loc["all"].tolist() == [3, 7, 7 / 3]


def test_padding_waste_one_batch_and_single_examples():
    lengths = [2, 4, 6, 8, 9]  # real tokens 29
    one_batch = tokens.padding_waste(lengths, max_length=16, batch_size=5)
    assert one_batch.loc["pad_to_max_length", ["computed_tokens", "pad_tokens"]].tolist() \
        == [80, 51]
    for scheme in ("dynamic_random", "length_grouped"):  # one batch padded to its longest: 9
        row = one_batch.loc[scheme]
        assert (row["computed_tokens"], row["pad_tokens"]) == (45, 16)
        assert row["pad_share"] == 16 / 45 and row["compute_ratio"] == 45 / 80
        assert row["attention_ratio"] == (5 * 81) / (5 * 256)
    single = tokens.padding_waste(lengths, max_length=16, batch_size=1)
    assert single.loc["pad_to_max_length", "batches"] == 5
    assert single.loc["dynamic_random", "pad_share"] == 0.0
    assert single.loc["length_grouped", "compute_ratio"] == 29 / 80


def test_padding_waste_truncates_first_and_rounds_to_a_multiple():
    waste = tokens.padding_waste([3, 5, 30], max_length=10, batch_size=3, pad_to_multiple_of=8)
    assert waste["real_tokens"].tolist() == [18, 18, 18]  # 30 is cut to 10
    assert waste.loc["dynamic_random", "computed_tokens"] == 3 * 16  # 10 rounded up to 16


def test_length_grouping_wastes_less_than_random_batches():
    lengths = np.random.default_rng(0).integers(5, 120, size=2000)
    waste = tokens.padding_waste(lengths, max_length=128, batch_size=16, seed=1)
    assert waste["batches"].tolist() == [125, 125, 125]
    shares = waste["pad_share"]
    assert shares["length_grouped"] < shares["dynamic_random"] < shares["pad_to_max_length"]
    assert shares["length_grouped"] < 0.1  # sorted megabatches leave little to pad


def test_auto_max_length_is_the_suggestion_everywhere(tokenizer):
    train = [" ".join(["word"] * n) for n in range(1, 41)]  # 3 to 42 tokens
    dd = _dd(train)
    report = tokens.inspect_tokens(dd, tokenizer, "auto", batch_size=8)
    assert report["suggested_max_length"] == 48  # ceil(0.995 * 40) = 40th shortest: 42
    assert report["max_length"] == 48 == tokens.resolve_max_length("auto", tokenizer, dd)
    assert tokens.inspect_tokens(dd, tokenizer, 16, batch_size=8)["max_length"] == 16


def test_inspect_tokens_is_json_with_every_section(tokenizer):
    dd = _dd(["a good film", "a bad film with a \U0001F600!", "fine"] * 4)
    report = tokens.inspect_tokens(dd, tokenizer, 8, batch_size=4)
    json.dumps(report)
    assert report["tokenizer"]["vocab_size"] == 30522
    assert report["tokenizer"]["special_tokens"]["pad_token"] == {"token": "[PAD]", "id": 0}
    assert report["truncation"]["train"]["truncated_examples"] == 4  # the 9-token text
    assert report["unk"]["per_split"]["train"]["unk_tokens"] == 4
    assert report["unk"]["top_words"] == [{"word": "\U0001F600", "count": 4}]
    assert set(report["padding_waste"]["schemes"]) == set(tokens.PADDING_SCHEMES)
    assert report["examples"][0]["piece"][0] == "[CLS]"
    view = tokens.pieces_view(tokenizer, ["good film", "a bad film"])
    assert view.loc[1, "pieces"] == "[CLS] · a · bad · film · [SEP]"
    assert view.loc[0, "ids"].split()[:4] == ["101", "2204", "2143", "102"]
    assert view["tokens"].tolist() == [4, 5] and view.loc[0, "text"] == "good film"


@given(st.lists(st.integers(min_value=0, max_value=12), max_size=40))
def test_length_order_is_a_stable_sort_by_token_count(counts):
    ds = datasets.Dataset.from_dict({"input_ids": [[7] * n for n in counts]})
    order = tokens.length_order(ds)
    assert sorted(order.tolist()) == list(range(len(counts)))  # a permutation
    assert [counts[i] for i in order] == sorted(counts)
    ties = [(counts[i], i) for i in order]
    assert ties == sorted(ties)  # equal lengths keep the split's order
