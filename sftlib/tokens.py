"""Tokenization and what it does to the data: lengths, truncation, UNKs, padding cost.

Works on anything `sftlib.data.rows_frame` accepts with a `text` column (classification
texts, or rendered prompt + response for instruction data), so the statistics serve both
tasks; labels are never needed here.

- `load_tokenizer` resolves asset names / hub ids / folders (see `sftlib.assets`);
- `tokenizer_summary`: vocabulary size, special tokens, model max length;
- `token_frame` counts, per example, tokens without truncation (special tokens included),
  content tokens (without them), whitespace words and unknown tokens; `token_lengths` is
  its split / tokens part;
- `truncation_stats` gives the share of examples and of tokens lost at a max length;
- `suggest_max_length` picks the smallest multiple of 8 covering 99.5% of train;
- `unk_stats` / `unk_words`: the UNK rate and the words that become the unknown token;
- `fertility`: content tokens per whitespace word;
- `padding_waste`: exact pad-token shares and compute ratios of three batching schemes;
- `tokenize_splits` is the tokenization the trainer uses: truncation on, no padding
  (padding happens per batch in the collator: dynamic padding);
- `inspect_tokens` gathers all of it into one JSON-ready dict (keys: docs/inspection.md).

Not supported: pair inputs (sentence A / B); `unk_words` needs a fast tokenizer (offsets),
and byte-level tokenizers (GPT-2 style, no unknown token) always report an UNK rate of 0.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pandas as pd

from sftlib import assets, data

if TYPE_CHECKING:  # imported where used: a preflight importing this module needs neither
    from transformers import PreTrainedTokenizerBase

COVERAGE_FOR_SUGGESTION = 0.995
PADDING_SCHEMES = ("pad_to_max_length", "dynamic_random", "length_grouped")


def load_tokenizer(model_spec: str) -> PreTrainedTokenizerBase:
    """The tokenizer of an asset, a model folder or a hub id; one whose vocabulary holds
    nothing but special tokens (it would read every word as the unknown token) is an
    `assets.ModelSpecError`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets.resolve_model(model_spec))
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise assets.ModelSpecError(
            f"model: the tokenizer of {model_spec!r} has no vocabulary beyond its "
            f"{len(tokenizer)} special tokens (every word would be {tokenizer.unk_token!r}); "
            "give a folder with its vocabulary file")
    return tokenizer


def tokenizer_summary(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """Class, vocabulary size (with added tokens), special tokens and their ids, max length."""
    special = {role: {"token": str(token), "id": tokenizer.convert_tokens_to_ids(token)}
               for role, token in tokenizer.special_tokens_map.items() if isinstance(token, str)}
    return {"class": type(tokenizer).__name__, "fast": bool(tokenizer.is_fast),
            "vocab_size": len(tokenizer), "special_tokens": special,
            "special_tokens_per_example": tokenizer.num_special_tokens_to_add(pair=False),
            "model_max_length": model_max_length(tokenizer),
            "padding_side": tokenizer.padding_side, "unk_token": tokenizer.unk_token}


def token_frame(source: data.Source, tokenizer: PreTrainedTokenizerBase,
                batch_size: int = 1000) -> pd.DataFrame:
    """One row per example: split, tokens (untruncated, special tokens included),
    content_tokens (without them), words (whitespace-separated) and unk (unknown tokens)."""
    rows = data.rows_frame(source)
    texts = rows["text"].tolist()
    ids = [one for start in range(0, len(texts), batch_size)
           for one in tokenizer(texts[start:start + batch_size], truncation=False)["input_ids"]]
    unk_id = tokenizer.unk_token_id
    tokens = np.array([len(one) for one in ids], dtype=int)
    return pd.DataFrame({
        "split": rows["split"],
        "tokens": tokens,
        "content_tokens": tokens - tokenizer.num_special_tokens_to_add(pair=False),
        "words": rows["text"].str.split().str.len().fillna(0).astype(int),
        "unk": [one.count(unk_id) if unk_id is not None else 0 for one in ids],
    })


def token_lengths(dd: data.Source, tokenizer: PreTrainedTokenizerBase,
                  batch_size: int = 1000) -> pd.DataFrame:
    """One row per example: split and its untruncated token count (with special tokens)."""
    return token_frame(dd, tokenizer, batch_size)[["split", "tokens"]]


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
    return pd.DataFrame.from_dict(rows, orient="index")  # keeps counts integer


def suggest_max_length(train_lengths: np.ndarray | list[int],
                       coverage: float = COVERAGE_FOR_SUGGESTION, multiple: int = 8,
                       model_max: int | None = None) -> int:
    """Smallest multiple of `multiple` covering at least `coverage` of the training examples
    (capped at the model's maximum, if known)."""
    ordered = np.sort(np.asarray(train_lengths, dtype=int))
    # The k shortest examples must fit, k = ceil(coverage * n); 1e-9 absorbs float error
    # (0.995 * 1000 is 994.999...). A quantile with method="higher" overshoots at the boundary.
    k = max(1, math.ceil(coverage * len(ordered) - 1e-9))
    needed = int(ordered[k - 1])
    suggestion = max(multiple, math.ceil(needed / multiple) * multiple)
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


def unk_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Per split (rows): content tokens, unknown tokens, their share (the UNK rate) and the
    share of examples with at least one. Special tokens are left out of the rate."""
    grouped = frame.groupby("split", sort=False)
    table = pd.DataFrame({"content_tokens": grouped["content_tokens"].sum(),
                          "unk_tokens": grouped["unk"].sum(),
                          "examples_with_unk": grouped["unk"].apply(lambda s: int((s > 0).sum()))})
    table["unk_rate"] = table["unk_tokens"] / table["content_tokens"].clip(lower=1)
    table["examples_with_unk_share"] = table["examples_with_unk"] / grouped.size()
    return table


def unk_words(source: data.Source, tokenizer: PreTrainedTokenizerBase,
              frame: pd.DataFrame | None = None, top: int = 20) -> pd.DataFrame:
    """The text spans most often turned into the unknown token (rows: spans, most first).

    Reads the span of each unknown token from the fast tokenizer's offsets; with WordPiece
    (BERT) an unknown token stands for a whole word. Only examples that have one are
    tokenized again (`frame`, from `token_frame`, says which).
    """
    columns = ["word", "count"]
    if tokenizer.unk_token_id is None or not tokenizer.is_fast:
        return pd.DataFrame(columns=columns)
    rows = data.rows_frame(source)
    frame = token_frame(rows, tokenizer) if frame is None else frame
    texts = rows.loc[frame["unk"].to_numpy() > 0, "text"].tolist()
    counts: Counter = Counter()
    if texts:
        encoded = tokenizer(texts, truncation=False, return_offsets_mapping=True)
        for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"]):
            counts.update(text[start:end] for one, (start, end) in zip(ids, offsets)
                          if one == tokenizer.unk_token_id)
    return pd.DataFrame(counts.most_common(top), columns=columns)


def fertility(frame: pd.DataFrame) -> pd.DataFrame:
    """Per split (rows): whitespace words, content tokens and tokens per word (fertility).
    Near 1: the vocabulary fits the text; well above 1.5: words are shredded into pieces,
    sequences get longer and rare words harder to learn."""
    grouped = frame.groupby("split", sort=False)[["words", "content_tokens"]].sum()
    grouped["tokens_per_word"] = grouped["content_tokens"] / grouped["words"].clip(lower=1)
    return grouped


def _batch_cost(lengths: np.ndarray, order: np.ndarray, batch_size: int,
                multiple: int | None) -> tuple[int, int, int]:
    """(batches, token positions computed, sum of b * L^2) when `order` is cut into batches
    and each batch is padded to its longest example (rounded up to `multiple`)."""
    positions, attention, batches = 0, 0, 0
    for start in range(0, len(order), batch_size):
        batch = lengths[order[start:start + batch_size]]
        width = int(batch.max())
        if multiple:
            width = -(-width // multiple) * multiple
        positions += len(batch) * width
        attention += len(batch) * width * width
        batches += 1
    return batches, positions, attention


def padding_waste(lengths: np.ndarray | list[int], max_length: int, batch_size: int,
                  seed: int = 0, pad_to_multiple_of: int | None = None) -> pd.DataFrame:
    """Pad tokens and compute of three ways to batch the same examples (rows: scheme).

    Lengths are truncated at `max_length` first, as training sees them. Schemes:
    - `pad_to_max_length`: every example padded to `max_length` (the seed tutorial);
    - `dynamic_random`: a seeded random order cut into batches, each padded to its longest
      example (`DataCollatorWithPadding` with a random sampler);
    - `length_grouped`: the order `transformers`' own `get_length_grouped_indices` makes for
      `group_by_length=True` (random megabatches of up to 50 batches, each sorted by length,
      longest batch first), seeded, then padded per batch like `dynamic_random`.
    `pad_to_multiple_of` rounds each dynamic batch up (the trainer uses 8 on CUDA).

    Columns: batches, real_tokens, computed_tokens (real + pad), pad_tokens, pad_share,
    compute_ratio (computed tokens / those of pad_to_max_length: the cost of the linear
    layers) and attention_ratio (sum of batch x length^2, the same ratio for attention).
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    effective = np.minimum(np.asarray(lengths, dtype=int), max_length)
    n = len(effective)
    orders = {
        "pad_to_max_length": None,
        "dynamic_random": np.random.default_rng(seed).permutation(n),
        "length_grouped": np.asarray(get_length_grouped_indices(
            effective.tolist(), batch_size, generator=torch.Generator().manual_seed(seed))),
    }
    table = {}
    for scheme, order in orders.items():
        if order is None:
            costs = (-(-n // batch_size), n * max_length, n * max_length * max_length)
        else:
            costs = _batch_cost(effective, order, batch_size, pad_to_multiple_of)
        table[scheme] = dict(zip(("batches", "computed_tokens", "attention"), costs))
    out = pd.DataFrame(table).T.rename_axis("scheme")
    out.insert(1, "real_tokens", int(effective.sum()))
    out["pad_tokens"] = out["computed_tokens"] - out["real_tokens"]
    out["pad_share"] = out["pad_tokens"] / out["computed_tokens"].clip(lower=1)
    baseline = out.loc["pad_to_max_length"]
    out["compute_ratio"] = out["computed_tokens"] / baseline["computed_tokens"]
    out["attention_ratio"] = out["attention"] / baseline["attention"]
    return out.drop(columns="attention")


def padding_figure(waste: pd.DataFrame, batch_size: int):
    """Real and pad token positions per batching scheme, compute ratio annotated."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    schemes = list(waste.index)[::-1]
    real = waste.loc[schemes, "real_tokens"] / 1e3
    pad = waste.loc[schemes, "pad_tokens"] / 1e3
    ax.barh(schemes, real, label="real tokens", color="tab:blue")
    ax.barh(schemes, pad, left=real, label="pad tokens", color="tab:gray", alpha=0.6)
    for y, scheme in enumerate(schemes):
        row = waste.loc[scheme]
        ax.text(real.iloc[y] + pad.iloc[y], y, f"  {row['pad_share']:.0%} pad, "
                f"{row['compute_ratio']:.2f}x compute", va="center")
    ax.set_title(f"Token positions computed per epoch of train (batch size {batch_size})")
    ax.set_xlabel("token positions (thousands)")
    ax.set_ylabel("batching scheme")
    ax.set_xlim(0, float((real + pad).max()) * 1.45)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def pieces_view(tokenizer: PreTrainedTokenizerBase, texts: list[str],
                max_length: int | None = None) -> pd.DataFrame:
    """What each text becomes (rows: examples): its token count, its pieces in order
    separated by `·`, and their ids; whole, so a wrapped table shows every piece."""
    rows = []
    for text in texts:
        pieces = token_pieces(tokenizer, text, max_length)
        rows.append({"text": text, "tokens": len(pieces),
                     "pieces": " · ".join(pieces["piece"]),
                     "ids": " ".join(map(str, pieces["id"]))})
    return pd.DataFrame(rows).rename_axis("example")


def inspect_tokens(source: data.Source, tokenizer: PreTrainedTokenizerBase,
                   max_length: int | str, batch_size: int, seed: int = 0,
                   examples: int = 3) -> dict[str, Any]:
    """Every statistic of this module as one JSON-ready dict (keys: docs/inspection.md).
    `max_length="auto"` uses the suggestion, as training does."""
    rows = data.rows_frame(source)
    frame = token_frame(rows, tokenizer)
    train = frame[frame["split"] == "train"] if (frame["split"] == "train").any() else frame
    suggested = suggest_max_length(train["tokens"], model_max=model_max_length(tokenizer))
    in_use = suggested if max_length == "auto" else int(max_length)
    waste = padding_waste(train["tokens"], in_use, batch_size, seed)
    samples = rows.loc[train.index[:examples], "text"].tolist()
    return {
        "tokenizer": tokenizer_summary(tokenizer),
        "max_length": in_use, "max_length_setting": max_length,
        "suggested_max_length": suggested, "suggestion_coverage": COVERAGE_FOR_SUGGESTION,
        "truncation": truncation_stats(frame, in_use).to_dict(orient="index"),
        "unk": {"per_split": unk_stats(frame).to_dict(orient="index"),
                "top_words": unk_words(rows, tokenizer, frame).to_dict(orient="records")},
        "fertility": fertility(frame).to_dict(orient="index"),
        "padding_waste": {"split": str(train["split"].iloc[0]) if len(train) else None,
                          "batch_size": batch_size, "seed": seed,
                          "schemes": waste.to_dict(orient="index")},
        "examples": [{"text": text, **token_pieces(tokenizer, text, in_use)
                      .to_dict(orient="list")} for text in samples],
    }


def tokenize_splits(dd: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase,
                    max_length: int) -> datasets.DatasetDict:
    """input_ids / attention_mask truncated at max_length, unpadded (the collator pads)."""
    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    return dd.map(encode, batched=True, desc="tokenizing")


MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "label",
                 "labels",
                 # distillation (sftlib.distill's TRAIN_ONLY_COLUMNS): the trainer's loss reads them
                 "teacher_logits", "teacher_vectors")


def length_order(ds: datasets.Dataset) -> np.ndarray:
    """Row positions sorted by token count (stable). Evaluation in this order pads each batch
    to a similar length instead of to the longest of a random mix; a permutation only, so
    the metrics are those of the split."""
    return np.argsort([len(ids) for ids in ds["input_ids"]], kind="stable")


def eval_rows(ds: datasets.Dataset) -> datasets.Dataset:
    """The model's columns of an evaluation split, shortest rows first (`length_order`): what
    Trainer evaluates on, for metrics that do not depend on the rows' order."""
    ds = ds.select_columns(model_columns(ds))
    return ds.select(length_order(ds))


def model_columns(ds: datasets.Dataset) -> list[str]:
    """The columns the model reads: the rest (counts, lengths) stays out of the batches."""
    return [c for c in MODEL_COLUMNS if c in ds.column_names]


def token_pieces(tokenizer: PreTrainedTokenizerBase, text: str,
                 max_length: int | None = None) -> pd.DataFrame:
    """The pieces a text becomes, with their ids (rows: position)."""
    ids = tokenizer(text, truncation=max_length is not None, max_length=max_length)["input_ids"]
    return pd.DataFrame({"piece": tokenizer.convert_ids_to_tokens(ids), "id": ids},
                        index=pd.RangeIndex(len(ids), name="position"))


def length_cdf_figure(lengths: pd.DataFrame, max_length: int, suggested: int | None = None):
    """Cumulative share of examples by token length per split, max length marked."""
    import matplotlib.pyplot as plt

    from sftlib.plots import finish_axes

    fig, ax = plt.subplots(figsize=(8, 4))
    for split, group in lengths.groupby("split", sort=False):
        values = np.sort(group["tokens"].to_numpy())
        ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=split)
    ax.axvline(max_length, color="red", ls="--", label=f"max_length = {max_length}")
    if suggested is not None and suggested != max_length:
        ax.axvline(suggested, color="green", ls=":", label=f"suggested = {suggested}")
    finish_axes(ax, "Token length CDF (untruncated, special tokens included)",
                "length (tokens)", "share of examples at or below")
    return fig
