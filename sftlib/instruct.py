"""Chat formatting, response-only loss masks, truncation accounting and packing (task
"instruction").

What a training example becomes:
1. `render_chat` renders the `messages` through the tokenizer's chat template (or, for a
   tokenizer without one, `FALLBACK_CHAT_TEMPLATE`: ChatML turns closed by the tokenizer's
   own end-of-sequence token, so no new embeddings are needed) and finds the character span
   of every assistant turn: its content plus the end-of-turn token that closes it (for
   SmolLM2, `<|im_end|>`). The template's separator after that token (ChatML's newline) is
   not part of the span: at inference the model stops at the end-of-turn token.
2. `encode_chat` tokenizes the rendered text once (fast tokenizer offsets) and sets the
   label of every token outside those spans to -100: the loss is the mean cross-entropy
   over the assistant's tokens only, the prompt, system text and template markup are read
   but never trained on. Then it truncates at `max_length` and counts prompt and response
   tokens before and after.
3. `apply_truncation_policy`: an example whose response is cut off entirely would train on
   nothing (all labels -100); such examples are counted per split and dropped (or, with
   `truncated_responses="error"`, rejected with a suggested max_length), never kept silently.
4. Packing (`pack_dataset`): best-fit-decreasing bins of whole examples up to `max_length`
   per row; `position_ids` restart at 0 for every example, and the first label of every
   example is -100, so no token is trained to predict the next example. The collator then
   sends no attention_mask: transformers (5.x, `masking_utils.find_packed_sequence_indices`)
   reads the restarts in position_ids and builds a block-diagonal causal mask for SDPA and
   eager attention, so attention stays within each example on CPU as on GPU
   (`tests/test_instruct.py` checks the logits equal those of each example run alone).
   Flash-attention's varlen path would need the batch flattened to one row; sftlib uses SDPA.

Why not TRL's `SFTTrainer`: TRL 1.16 installs cleanly next to transformers 5.24, but its
completion-only loss on conversational data needs `{% generation %}` markers that SmolLM2's
template lacks (TRL swaps in its own training template), its truncation drops response
tokens without the per-example accounting above, and it brings a second Trainer subclass
next to `sftlib.train.WorkbenchTrainer`. The masks here are the ones notebook 02 shows,
so what you inspect is what trains. Trainer plus `CausalLMCollator` does the rest.

Not supported: loss weights per turn (every assistant turn is trained), left truncation of
long prompts, tool calls, multimodal content.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy (and transformers' loss) skips
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
COUNT_COLUMNS = ("length", "prompt_tokens", "response_tokens", "prompt_tokens_kept",
                 "response_tokens_kept")


class TemplateError(ValueError):
    """The chat template cannot be used to find the assistant's tokens."""


class TruncationError(ValueError):
    """Examples lose their whole response at max_length and the config rejects that."""


# the template --------------------------------------------------------------------------

def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, chat_template: str = "auto") -> str:
    """Give the tokenizer a chat template and a pad token; return which template is used
    ("tokenizer" or "fallback"). `chat_template="fallback"` forces the fallback."""
    if not tokenizer.is_fast:
        raise TemplateError(f"{type(tokenizer).__name__} is not a fast tokenizer: the response "
                            "masks need token offsets")
    if tokenizer.eos_token is None:
        raise TemplateError("the tokenizer has no end-of-sequence token to end turns with")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # labels mask pads explicitly, not by id
    if chat_template == "fallback" or not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        return "fallback"
    return "tokenizer"


def _special_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return sorted(set(added) | set(tokenizer.all_special_tokens), key=len, reverse=True)


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]],
            generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def render_prompt(messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase) -> str:
    """The text a model continues to answer: the messages and the assistant header."""
    return _render(tokenizer, messages, generation_prompt=True)


def render_chat(messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase,
                ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of each assistant turn
    (its content and the end-of-turn token; see the module docstring)."""
    text = _render(tokenizer, messages)
    specials = _special_strings(tokenizer)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], generation_prompt=True)
        through = _render(tokenizer, messages[:index + 1])
        if not (through.startswith(before) and text.startswith(through)):
            raise TemplateError("the chat template renders a conversation differently from "
                                "its beginning, so the assistant's tokens cannot be located; "
                                "set chat_template=fallback")
        turn = through[len(before):]
        skip = len(message["content"]) if turn.startswith(message["content"]) else 0
        ends = [turn.find(s, skip) + len(s) for s in specials if turn.find(s, skip) >= 0]
        spans.append((len(before), len(before) + (min(ends) if ends else len(turn))))
    return text, spans


# encoding ---------------------------------------------------------------------------------

def encode_chat(messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase,
                max_length: int) -> dict[str, Any]:
    """input_ids, attention_mask and labels (-100 outside the assistant's spans), truncated
    at max_length, with prompt / response token counts before and after truncation."""
    text, spans = render_chat(messages, tokenizer)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    trained = [any(start <= begin < end for start, end in spans)
               for begin, _ in encoded["offset_mapping"]]
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(ids, trained)]
    # prompt: the untrained tokens up to the last response token (the template's separator
    # after it belongs to neither part)
    end = max((i + 1 for i, keep in enumerate(trained) if keep), default=len(ids))
    response, response_kept = sum(trained), sum(trained[:max_length])
    kept = min(len(ids), max_length)
    return {"input_ids": ids[:max_length], "attention_mask": [1] * kept,
            "labels": labels[:max_length], "length": len(ids),
            "prompt_tokens": end - response, "response_tokens": response,
            "prompt_tokens_kept": min(kept, end) - response_kept,
            "response_tokens_kept": response_kept}


def encode_splits(dd: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase,
                  max_length: int) -> datasets.DatasetDict:
    """`encode_chat` over every split (columns: input_ids, attention_mask, labels and the
    counts of COUNT_COLUMNS); the source columns are dropped."""
    def encode(row):
        return encode_chat(row["messages"], tokenizer, max_length)

    return dd.map(encode, remove_columns=dd["train"].column_names, desc="rendering chats")


def render_text(dd: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase,
                ) -> datasets.DatasetDict:
    """The same splits with `text` replaced by the rendered conversation: what the model
    reads, template markup included (for the generic token statistics of notebook 02)."""
    return dd.map(lambda row: {"text": _render(tokenizer, row["messages"])},
                  desc="rendering chats")


# truncation -------------------------------------------------------------------------------

def truncation_table(encoded: datasets.DatasetDict) -> pd.DataFrame:
    """Per split (rows): examples; share of examples whose prompt / response loses tokens;
    examples whose response is lost entirely; share of prompt / response tokens lost."""
    rows = {}
    for split, ds in encoded.items():
        c = {key: np.asarray(ds[key]) for key in COUNT_COLUMNS}
        rows[split] = {
            "examples": len(ds),
            "prompt_truncated_share": float(np.mean(c["prompt_tokens_kept"] < c["prompt_tokens"]))
            if len(ds) else 0.0,
            "response_truncated_share":
                float(np.mean(c["response_tokens_kept"] < c["response_tokens"]))
                if len(ds) else 0.0,
            "response_lost_entirely": int(np.sum(c["response_tokens_kept"] == 0)),
            "prompt_tokens_lost_share": _lost(c["prompt_tokens"], c["prompt_tokens_kept"]),
            "response_tokens_lost_share": _lost(c["response_tokens"],
                                                c["response_tokens_kept"]),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("split")


def _lost(total: np.ndarray, kept: np.ndarray) -> float:
    return float((total.sum() - kept.sum()) / max(int(total.sum()), 1))


def apply_truncation_policy(encoded: datasets.DatasetDict, policy: str, max_length: int,
                            log=print) -> tuple[datasets.DatasetDict, dict[str, int]]:
    """Drop (policy "drop") or reject (policy "error": TruncationError) the examples whose
    response max_length cuts off entirely. Returns the kept splits and the count per split."""
    from sftlib.tokens import suggest_max_length

    lost = {split: int(np.sum(np.asarray(ds["response_tokens_kept"]) == 0))
            for split, ds in encoded.items()}
    if not any(lost.values()):
        return encoded, lost
    counts = ", ".join(f"{n} {split}" for split, n in lost.items())
    if policy == "error":
        suggestion = suggest_max_length(encoded["train"]["length"])
        raise TruncationError(f"max_length={max_length} cuts off the whole response of "
                              f"{counts} example(s); raise max_length (covering 99.5% of train "
                              f"needs {suggestion}) or set truncated_responses=drop")
    log(f"[instruct] max_length={max_length} cuts off the whole response of {counts} "
        "example(s): dropped (truncated_responses=drop), so none trains on nothing")
    kept = encoded.filter(lambda n: n > 0, input_columns="response_tokens_kept",
                          desc="dropping examples without response tokens")
    return kept, lost


# packing ----------------------------------------------------------------------------------

def pack_bins(lengths: list[int], max_length: int) -> list[list[int]]:
    """Best-fit decreasing: example indices grouped into bins of at most max_length tokens,
    each example placed in the fullest bin it still fits (longest examples first)."""
    by_free: list[list[int]] = [[] for _ in range(max_length + 1)]  # free space -> bins
    bins: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        size = lengths[index]
        if size > max_length:
            raise ValueError(f"example {index} has {size} tokens, more than max_length "
                             f"{max_length}: truncate before packing")
        free = next((f for f in range(size, max_length + 1) if by_free[f]), None)
        if free is None:
            bins.append([])
            number, free = len(bins) - 1, max_length
        else:
            number = by_free[free].pop()
        bins[number].append(index)
        by_free[free - size].append(number)
    return bins


def pack_dataset(ds: datasets.Dataset, max_length: int) -> datasets.Dataset:
    """Rows of several whole examples (input_ids, labels, position_ids restarting at 0 per
    example, and `example_lengths`); the first label of each example is -100."""
    ids, labels = ds["input_ids"], ds["labels"]
    rows: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": [],
                             "example_lengths": []}
    for members in pack_bins([len(one) for one in ids], max_length):
        rows["input_ids"].append([t for i in members for t in ids[i]])
        rows["labels"].append([IGNORE_INDEX if p == 0 else t for i in members
                               for p, t in enumerate(labels[i])])
        rows["position_ids"].append([p for i in members for p in range(len(ids[i]))])
        rows["example_lengths"].append([len(ids[i]) for i in members])
    return datasets.Dataset.from_dict(rows)


def packing_summary(ds: datasets.Dataset, packed: datasets.Dataset, max_length: int,
                    ) -> dict[str, float]:
    """Examples per row and the share of row positions filled with real tokens."""
    tokens = sum(len(one) for one in ds["input_ids"])
    return {"examples": len(ds), "rows": len(packed),
            "examples_per_row": round(len(ds) / max(len(packed), 1), 2),
            "fill": round(tokens / max(len(packed) * max_length, 1), 4)}


@dataclass
class CausalLMCollator:
    """Pads a batch to its longest row (rounded up to `pad_to_multiple_of`).

    Two layouts, told apart by the features: plain examples get an attention_mask (pads
    masked); packed rows (with `position_ids`) get none, and the pad tail gets its own
    position ids restarting at 0, so transformers treats it as one more separate sequence.
    Labels are padded with -100 either way.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in features[0]
        batch = {"input_ids": torch.full((len(features), width), self.pad_token_id),
                 "labels": torch.full((len(features), width), IGNORE_INDEX)}
        batch["position_ids" if packed else "attention_mask"] = \
            torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            batch["input_ids"][row, :n] = torch.as_tensor(feature["input_ids"])
            batch["labels"][row, :n] = torch.as_tensor(feature["labels"])
            if packed:
                batch["position_ids"][row, :n] = torch.as_tensor(feature["position_ids"])
                batch["position_ids"][row, n:] = torch.arange(width - n)
            else:
                batch["attention_mask"][row, :n] = 1
        return batch


# views ------------------------------------------------------------------------------------

def prompt_response_lengths(source: datasets.DatasetDict) -> pd.DataFrame:
    """One row per example: split, prompt and response length in words (notebook 01)."""
    parts = []
    for split, ds in source.items():
        parts.append(pd.DataFrame({
            "split": split,
            "prompt_words": [len(t.split()) for t in ds["prompt"]],
            "response_words": [len(t.split()) for t in ds["response"]]}))
    return pd.concat(parts, ignore_index=True)


def prompt_response_summary(lengths: pd.DataFrame) -> pd.DataFrame:
    """Word-length percentiles (rows: split x part)."""
    long = lengths.melt(id_vars="split", var_name="part", value_name="words")
    long["part"] = long["part"].str.removesuffix("_words")
    return long.groupby(["split", "part"], sort=False)["words"].describe(
        percentiles=[0.5, 0.9, 0.99]).drop(columns="std").round(1)


def prompt_response_figure(lengths: pd.DataFrame):
    """Histograms of prompt and response length per split, side by side."""
    import matplotlib.pyplot as plt

    from sftlib.plots import finish_axes

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, part in zip(axes, ("prompt", "response")):
        values = lengths[f"{part}_words"]
        bins = np.linspace(0, max(int(values.quantile(0.995)), 1), 40)
        for split, group in lengths.groupby("split", sort=False):
            ax.hist(group[f"{part}_words"].clip(upper=bins[-1]), bins=bins, density=True,
                    histtype="step", lw=1.5, label=f"{split} (n={len(group)})")
        finish_axes(ax, f"{part.capitalize()} length per split (last bin: 99.5th percentile "
                    "and up)", f"{part} length (words)", "density (share of examples per word)")
    return fig


def mask_frame(example: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> pd.DataFrame:
    """One row per token of an encoded example: piece, id and whether it is trained."""
    ids = example["input_ids"]
    return pd.DataFrame({"piece": [tokenizer.decode([t]) for t in ids], "id": ids,
                         "trained": [label != IGNORE_INDEX for label in example["labels"]]},
                        index=pd.RangeIndex(len(ids), name="position"))


def mask_html(example: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokens of an encoded example as HTML: trained tokens highlighted green, the rest
    grey; each token's position, id and label in its tooltip. Static (survives papermill)."""
    frame = mask_frame(example, tokenizer)
    spans = []
    for position, row in frame.iterrows():
        style = ("background:#b7efb2;color:#000" if row["trained"]
                 else "background:#eeeeee;color:#777")
        piece = html.escape(row["piece"]).replace("\n", "\u21b5<br>")
        spans.append(f'<span title="position {position}, id {row["id"]}, '
                     f'{"trained" if row["trained"] else "label -100"}" '
                     f'style="{style};border:1px solid #fff;white-space:pre-wrap">{piece}</span>')
    trained = int(frame["trained"].sum())
    cut = example.get("length", len(frame)) - len(frame)
    header = (f'<div style="margin-top:0.8em"><b>{len(frame)} tokens, {trained} trained</b> '
              '(<span style="background:#b7efb2">green: in the loss</span>, '
              '<span style="background:#eeeeee;color:#777">grey: label -100</span>)'
              + (f"; {cut} more tokens cut off at max_length" if cut > 0 else "") + "</div>")
    return header + '<div style="font-family:monospace;line-height:1.7">' + "".join(spans) \
        + "</div>"
