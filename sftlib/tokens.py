"""Tokenization and what it does to the data: lengths, truncation, padding cost.

Works on any `DatasetDict` with a `text` column (classification texts, or rendered
prompt + response for instruction data), so the statistics serve both tasks.

- `load_tokenizer` resolves asset names / hub ids / folders (see `sftlib.assets`);
- `token_lengths` counts tokens per example without truncation (special tokens included);
- `truncation_stats` gives the share of examples and of tokens lost at a max length;
- `suggest_max_length` picks the smallest multiple of 8 covering 99.5% of train;
- `tokenize_splits` is the tokenization the trainer uses: truncation on, no padding
  (padding happens per batch in the collator: dynamic padding).

Not supported: pair inputs (sentence A / B), tokenizers without a fast implementation
for offsets-based views.
"""

from __future__ import annotations

import math

import datasets
import numpy as np
import pandas as pd
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sftlib import assets

COVERAGE_FOR_SUGGESTION = 0.995


def load_tokenizer(model_spec: str) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(assets.resolve_model(model_spec))


def token_lengths(dd: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase,
                  batch_size: int = 1000) -> pd.DataFrame:
    """One row per example: split and its untruncated token count (with special tokens)."""
    frames = []
    for split, ds in dd.items():
        lengths = [len(ids) for start in range(0, len(ds), batch_size)
                   for ids in tokenizer(ds["text"][start:start + batch_size],
                                        truncation=False)["input_ids"]]
        frames.append(pd.DataFrame({"split": split, "tokens": lengths}))
    return pd.concat(frames, ignore_index=True)


def truncation_stats(lengths: pd.DataFrame, max_length: int) -> pd.DataFrame:
    """Per split: examples truncated at max_length and the share of tokens cut off."""
    rows = {}
    for split, group in lengths.groupby("split", sort=False):
        tokens = group["tokens"].to_numpy()
        lost = np.clip(tokens - max_length, 0, None)
        rows[split] = {
            "examples": len(tokens),
            "truncated_examples": int((tokens > max_length).sum()),
            "truncated_share": float((tokens > max_length).mean()),
            "tokens_lost_share": float(lost.sum() / max(tokens.sum(), 1)),
            "mean_tokens": float(tokens.mean()),
            "p99_tokens": float(np.percentile(tokens, 99)),
            "max_tokens": int(tokens.max()),
        }
    return pd.DataFrame(rows).T


def suggest_max_length(train_lengths: np.ndarray | list[int],
                       coverage: float = COVERAGE_FOR_SUGGESTION, multiple: int = 8,
                       model_max: int | None = None) -> int:
    """Smallest multiple of `multiple` covering `coverage` of the training examples."""
    needed = float(np.quantile(np.asarray(train_lengths), coverage, method="higher"))
    suggestion = max(multiple, int(math.ceil(needed / multiple) * multiple))
    return min(suggestion, model_max) if model_max else suggestion


def model_max_length(tokenizer: PreTrainedTokenizerBase) -> int | None:
    value = getattr(tokenizer, "model_max_length", None)
    return value if value and value < 1_000_000 else None  # HF uses 1e30 for "unknown"


def resolve_max_length(max_length: int | str, tokenizer: PreTrainedTokenizerBase,
                       dd: datasets.DatasetDict) -> int:
    """An explicit max length as is; "auto" -> `suggest_max_length` on the train split."""
    if max_length != "auto":
        return int(max_length)
    train = token_lengths(datasets.DatasetDict({"train": dd["train"]}), tokenizer)
    return suggest_max_length(train["tokens"], model_max=model_max_length(tokenizer))


def tokenize_splits(dd: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase,
                    max_length: int) -> datasets.DatasetDict:
    """input_ids / attention_mask truncated at max_length, unpadded (the collator pads)."""
    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    return dd.map(encode, batched=True, desc="tokenizing")


def token_pieces(tokenizer: PreTrainedTokenizerBase, text: str,
                 max_length: int | None = None) -> pd.DataFrame:
    """The pieces a text becomes, with their ids (rows: position)."""
    ids = tokenizer(text, truncation=max_length is not None, max_length=max_length)["input_ids"]
    return pd.DataFrame({"piece": tokenizer.convert_ids_to_tokens(ids), "id": ids},
                        index=pd.RangeIndex(len(ids), name="position"))


def length_cdf_figure(lengths: pd.DataFrame, max_length: int, suggested: int | None = None):
    """Cumulative share of examples by token length per split, max length marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for split, group in lengths.groupby("split", sort=False):
        values = np.sort(group["tokens"].to_numpy())
        ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=split)
    ax.axvline(max_length, color="red", ls="--", label=f"max_length = {max_length}")
    if suggested is not None and suggested != max_length:
        ax.axvline(suggested, color="green", ls=":", label=f"suggested = {suggested}")
    ax.set_title("Token length CDF (untruncated, special tokens included)")
    ax.set_xlabel("length (tokens)")
    ax.set_ylabel("share of examples at or below")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
