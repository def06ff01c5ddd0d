"""Instruction SFT: response-only masks, truncation accounting, packing boundaries, LoRA.

All on the real SmolLM2-135M-Instruct tokenizer and model (the offline asset; fetched and
converted once into the cache on first use), no mocks.
"""

import copy

import datasets
import pytest
import torch

from sftlib import instruct, train
from sftlib.config import RunConfig
from sftlib.instruct import IGNORE_INDEX
from sftlib.tasks.instruction import build_causal_lm, trainable_share

MODEL = "smollm2-135m-instruct"
HI = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]


@pytest.fixture(scope="module")
def tokenizer():
    from sftlib import tokens

    tok = tokens.load_tokenizer(MODEL)
    assert instruct.prepare_tokenizer(tok) == "tokenizer"
    return tok


@pytest.fixture(scope="module")
def model():
    cfg = RunConfig(task="instruction", model=MODEL, dataset="alpaca-demo",
                    metric_for_best="loss")
    return build_causal_lm(cfg).eval()


def trained(example, tokenizer):
    return [(i, tokenizer.decode([t])) for i, (t, label)
            in enumerate(zip(example["input_ids"], example["labels"])) if label != IGNORE_INDEX]


# masks ---------------------------------------------------------------------------------------

def test_only_the_response_and_its_end_of_turn_token_are_trained(tokenizer):
    example = instruct.encode_chat(HI, tokenizer, max_length=64)
    # <|im_start|>system ... <|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n
    # <|im_start|>assistant\n Hello ! <|im_end|> \n: positions 32, 33, 34 of 36
    assert trained(example, tokenizer) == [(32, "Hello"), (33, "!"), (34, "<|im_end|>")]
    assert len(example["input_ids"]) == 36 and example["labels"][35] == IGNORE_INDEX
    assert example["labels"][32:35] == example["input_ids"][32:35]  # targets are the tokens
    # prompt: the 32 tokens before the response; the closing newline belongs to neither
    assert (example["prompt_tokens"], example["response_tokens"], example["length"]) == \
        (32, 3, 36)


def test_every_assistant_turn_of_a_conversation_is_trained(tokenizer):
    chat = [{"role": "system", "content": "Be brief."}, *HI,
            {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]
    pieces = [piece for _, piece in trained(instruct.encode_chat(chat, tokenizer, 128),
                                            tokenizer)]
    assert pieces == ["Hello", "!", "<|im_end|>", "Good", "bye", ".", "<|im_end|>"]


def test_fallback_template_for_a_tokenizer_without_one(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    assert instruct.prepare_tokenizer(bare) == "fallback"
    text, spans = instruct.render_chat(HI, bare)
    assert text == ("<|im_start|>user\nHi there<|im_end|>\n"
                    "<|im_start|>assistant\nHello!<|im_end|>\n")
    assert [text[a:b] for a, b in spans] == ["Hello!<|im_end|>"]
    example = instruct.encode_chat(HI, bare, 64)
    assert trained(example, bare) == [(11, "Hello"), (12, "!"), (13, "<|im_end|>")]


def test_mask_view_highlights_exactly_the_trained_tokens(tokenizer):
    example = instruct.encode_chat(HI, tokenizer, 64)
    page = instruct.mask_html(example, tokenizer)
    assert page.count("background:#b7efb2;color:#000") == 3  # the three trained tokens
    assert "36 tokens, 3 trained" in page and "&lt;|im_end|&gt;" in page


# truncation ----------------------------------------------------------------------------------

def _chats():
    long_answer = "one two three four five six seven eight nine ten " * 4
    long_question = "Please read this carefully. " * 12
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"messages": [
        HI,  # 36 tokens: fits
        [{"role": "user", "content": "Count."}, {"role": "assistant", "content": long_answer}],
        [{"role": "user", "content": long_question}, {"role": "assistant", "content": "OK."}],
    ]})})


def test_truncation_is_counted_for_prompt_and_response_separately(tokenizer):
    encoded = instruct.encode_splits(_chats(), tokenizer, max_length=48)
    counts = encoded["train"].select_columns(list(instruct.COUNT_COLUMNS)).to_pandas()
    assert counts["response_tokens_kept"].tolist()[0] == 3
    assert 0 < counts["response_tokens_kept"][1] < counts["response_tokens"][1]
    assert counts["response_tokens_kept"][2] == 0 and counts["prompt_tokens_kept"][2] == 48
    table = instruct.truncation_table(encoded).loc["train"]
    assert table["response_lost_entirely"] == 1
    assert table["prompt_truncated_share"] == pytest.approx(1 / 3)
    assert table["response_truncated_share"] == pytest.approx(2 / 3)
    lost = counts["response_tokens"].sum() - counts["response_tokens_kept"].sum()
    assert table["response_tokens_lost_share"] == pytest.approx(
        lost / counts["response_tokens"].sum())


def test_a_response_lost_entirely_is_dropped_or_rejected_never_kept(tokenizer):
    encoded = instruct.encode_splits(_chats(), tokenizer, max_length=48)
    messages = []
    kept, lost = instruct.apply_truncation_policy(encoded, "drop", 48, log=messages.append)
    assert lost == {"train": 1} and len(kept["train"]) == 2
    assert all(any(label != IGNORE_INDEX for label in row) for row in kept["train"]["labels"])
    assert "1 train example(s)" in messages[0] and "dropped" in messages[0]
    with pytest.raises(instruct.TruncationError, match=r"1 train example\(s\).*needs \d+"):
        instruct.apply_truncation_policy(encoded, "error", 48)


# packing -------------------------------------------------------------------------------------

def test_best_fit_decreasing_bins():
    lengths = [5, 3, 8, 2, 7, 1]
    bins = instruct.pack_bins(lengths, max_length=10)
    assert sorted(i for b in bins for i in b) == list(range(6))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 3  # 26 tokens need at least 3 rows of 10
    with pytest.raises(ValueError, match="more than max_length"):
        instruct.pack_bins([11], max_length=10)


@pytest.fixture(scope="module")
def encoded_train(tokenizer):
    from sftlib.instruction_data import load_instruction_data

    dd = load_instruction_data("alpaca-demo", train_subset=40, eval_subset=8)
    return instruct.encode_splits(dd, tokenizer, max_length=128)["train"]


def test_packed_rows_restart_positions_and_mask_each_examples_first_label(encoded_train):
    packed = instruct.pack_dataset(encoded_train, max_length=128)
    sources = {tuple(ids): labels for ids, labels in
               zip(encoded_train["input_ids"], encoded_train["labels"])}
    seen = 0
    for row in packed:
        assert len(row["input_ids"]) <= 128 and sum(row["example_lengths"]) == len(row["input_ids"])
        start = 0
        for n in row["example_lengths"]:
            ids = tuple(row["input_ids"][start:start + n])
            assert row["position_ids"][start:start + n] == list(range(n))
            labels = row["labels"][start:start + n]
            assert labels[0] == IGNORE_INDEX  # nothing predicts across a boundary
            assert labels[1:] == sources[ids][1:]  # each example whole, labels unchanged
            start, seen = start + n, seen + 1
    assert seen == len(encoded_train)
    assert any(len(row["example_lengths"]) > 1 for row in packed)


def test_collator_pads_both_layouts(encoded_train, tokenizer):
    collate = instruct.CausalLMCollator(tokenizer.pad_token_id)
    plain = collate([encoded_train[0], encoded_train[1]])
    n0 = len(encoded_train[0]["input_ids"])
    assert set(plain) == {"input_ids", "labels", "attention_mask"}
    assert plain["attention_mask"][0].sum() == n0
    assert (plain["labels"][0, n0:] == IGNORE_INDEX).all()
    packed = instruct.pack_dataset(encoded_train, 128)
    short = min(range(len(packed)), key=lambda i: len(packed[i]["input_ids"]))
    batch = collate([packed[0], packed[short]])
    n = len(packed[short]["input_ids"])
    assert "attention_mask" not in batch  # masks come from the position ids
    assert batch["position_ids"][1, n:].tolist() == list(range(batch["input_ids"].shape[1] - n))
    assert (batch["labels"][1, n:] == IGNORE_INDEX).all()


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_attention_stays_within_each_packed_example(encoded_train, tokenizer, model):
    packed = instruct.pack_dataset(encoded_train, 128)
    row = max(packed, key=lambda r: len(r["example_lengths"]))
    assert len(row["example_lengths"]) >= 2
    batch = instruct.CausalLMCollator(tokenizer.pad_token_id)([row])
    assert model.config.use_cache is False  # with a KV cache transformers ignores the restarts
    with torch.inference_mode():
        together = model(input_ids=batch["input_ids"],
                         position_ids=batch["position_ids"]).logits[0]
        cached = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       use_cache=True).logits[0]
        start = 0
        for n in row["example_lengths"]:
            alone = model(input_ids=batch["input_ids"][:, start:start + n]).logits[0]
            assert torch.allclose(together[start:start + n], alone, atol=1e-3)
            start += n
    later = slice(row["example_lengths"][0], start)
    assert not torch.allclose(cached[later], together[later], atol=1e-1), \
        "with the cache on, later examples would see earlier ones"


# LoRA ----------------------------------------------------------------------------------------

def _lora_config(**changes):
    return RunConfig(task="instruction", model=MODEL, dataset="alpaca-demo",
                     metric_for_best="loss", lora=True, **changes)


def test_lora_trains_only_the_adapters_and_reports_their_share():
    model = build_causal_lm(_lora_config(lora_r=16))
    base = model.get_base_model()
    linear = [m for name, m in base.named_modules() if isinstance(m, torch.nn.Linear)
              and name.split(".")[-1] != "lm_head" and "lora_" not in name]
    expected = sum(16 * (m.in_features + m.out_features) for m in linear)
    share = trainable_share(model)
    assert share["trainable"] == expected == 4_884_480  # 30 layers x 7 projections
    assert share["total"] == 134_515_008 + expected
    assert share["share"] == pytest.approx(0.03504, abs=1e-5)
    few = trainable_share(build_causal_lm(
        _lora_config(lora_r=8, lora_target_modules="q_proj,v_proj")))
    assert few["trainable"] == 30 * 8 * ((576 + 576) + (576 + 192))


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_save_final_merges_lora_into_a_plain_model(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    cfg = _lora_config(lora_r=4, lora_target_modules="q_proj,v_proj")
    model = build_causal_lm(cfg)
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero (a no-op adapter): give it weight
            param.data.normal_(0, 0.02)
    trainer = Trainer(model=model, processing_class=tokenizer,
                      args=TrainingArguments(tmp_path / "t", use_cpu=True, report_to="none"))
    folder = train.save_final(trainer, cfg, tmp_path / "model")
    assert (folder / "adapter" / "adapter_config.json").is_file()
    assert not (folder / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert plain.config.use_cache is True  # inference gets its KV cache back
    ids = torch.tensor([instruct.encode_chat(HI, tokenizer, 64)["input_ids"]])
    with torch.inference_mode():
        expected = model.eval()(input_ids=ids).logits
        merged = plain(input_ids=ids).logits
    assert torch.allclose(merged, expected, atol=1e-3)
