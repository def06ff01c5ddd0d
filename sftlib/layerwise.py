"""Layer-wise learning-rate decay (LLRD): lower layers of the encoder train more slowly.

With decay factor d in (0, 1] and L encoder layers numbered 0 (next to the embeddings) to
L-1 (the top), the peak learning rates are

- the head (everything outside the encoder: classifier, and the encoder's pooler): lr
- a final norm after the top layer (`final_norm`, ModernBERT's): lr, as the top layer
- encoder layer i: lr * d**(L-1-i), so the top layer also trains at lr; DeBERTa-v2's
  `encoder.conv` (applied with layer 0's output) with layer 0
- the embeddings (and MPNet's `relative_attention_bias`, DeBERTa's `rel_embeddings` with
  DeBERTa-v2's `encoder.LayerNorm`, which normalizes them, ELECTRA's `embeddings_project`
  where its embeddings are narrower than its layers): lr * d**L

The schedule (`sftlib.schedules.make_scheduler`, a LambdaLR) multiplies every group's own
peak by the same factor, so each group follows the schedule's shape from its own peak; the
logged `learning_rate` (metrics.jsonl, the live plot) is the first group's: the head's.

Each block is split once more by Trainer's weight-decay rule
(`Trainer.get_decay_parameter_names`: no decay for biases and LayerNorm weights), so the
optimizer's param groups are (block) x (decay, no decay), empty ones left out.

Supported: encoders whose repeated layers are named `<base>.encoder.layer.<i>.`,
`<base>.transformer.layer.<i>.` or `<base>.layers.<i>.` (BERT, RoBERTa, ELECTRA, MiniLM,
MPNet, DistilBERT, DeBERTa and DeBERTa-v2/v3, ModernBERT), with the head outside `<base>.`
(or the encoder alone). Not supported, and refused with a `ConfigError` when the optimizer's
groups are built (before training): a model whose layers are not found that way, or an
encoder parameter that is none of the above (its depth would be a guess).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch

from sftlib.config import ConfigError

# the shortest base (lazy): "bert." for bert.encoder.layer.0., "" for encoder.layer.0.
LAYER = re.compile(r"^(?P<base>(?:.*?\.)??)(?:(?:encoder|transformer)\.)?layers?\."
                   r"(?P<index>\d+)\.")
# below the first layer: the input embeddings and position biases every layer shares
EMBEDDINGS = re.compile(r"(?:^|\.)(?:embeddings|embeddings_project|relative_attention_bias|"
                        r"rel_embeddings)\.")  # ELECTRA's projection when narrower
REL_EMBEDDINGS_NORM = re.compile(r"(?:^|\.)encoder\.LayerNorm\.")  # DeBERTa-v2's, see above
FIRST_LAYER_CONV = re.compile(r"(?:^|\.)encoder\.conv\.")  # DeBERTa-v2's, with layer 0
POOLER = re.compile(r"(?:^|\.)pooler\.")
FINAL_NORM = re.compile(r"(?:^|\.)final_norm\.")  # after the top layer: ModernBERT's


@dataclass(frozen=True)
class Block:
    """A set of parameters sharing one peak lr: "head", "final norm", "layer <i>" or
    "embeddings"."""

    name: str
    depth: int  # how many decay factors below the head: the peak is lr * decay**depth


def assign_blocks(names: Iterable[str]) -> dict[str, Block]:
    """Each parameter name's block (see the module docstring); ConfigError where the
    encoder's layers cannot be found or a parameter cannot be placed."""
    names = list(names)
    layers = {name: LAYER.match(name) for name in names}
    bases = {m["base"] for m in layers.values() if m}
    if len(bases) != 1:
        found = f"layer prefixes {sorted(bases)}" if bases else "no parameter named like that"
        raise ConfigError(
            "layerwise_lr_decay: cannot find the encoder's layers (parameters named "
            f"'<base>.encoder.layer.<i>.', '<base>.transformer.layer.<i>.' or "
            f"'<base>.layers.<i>.'; {found}); supported: BERT-family, MPNet, DeBERTa and "
            "ModernBERT encoders. Set layerwise_lr_decay=1.0")
    base, = bases
    count = 1 + max(int(m["index"]) for m in layers.values() if m)
    # DeBERTa-v2 normalizes its relative embeddings with encoder.LayerNorm; elsewhere a norm
    # of that name could sit anywhere
    rel_embeddings = any("rel_embeddings" in name for name in names)
    blocks = {}
    for name in names:
        if layers[name]:
            index = int(layers[name]["index"])
            blocks[name] = Block(f"layer {index}", count - 1 - index)
        elif not name.startswith(base) or POOLER.search(name):
            blocks[name] = Block("head", 0)
        elif FINAL_NORM.search(name):
            blocks[name] = Block("final norm", 0)
        elif FIRST_LAYER_CONV.search(name):
            blocks[name] = Block("layer 0", count - 1)
        elif EMBEDDINGS.search(name) or (rel_embeddings and REL_EMBEDDINGS_NORM.search(name)):
            blocks[name] = Block("embeddings", count)
        else:
            raise ConfigError(
                f"layerwise_lr_decay: cannot place parameter {name!r}: it is in the encoder "
                "but in no layer, embedding or pooler, so its depth is unknown. Set "
                "layerwise_lr_decay=1.0")
    return blocks


def _trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def param_groups(model: torch.nn.Module, lr: float, decay: float, weight_decay: float,
                 decay_names: Iterable[str]) -> list[dict]:
    """The optimizer's param groups: head first (its lr is the one Trainer logs), then
    the layers top to bottom, then the embeddings; each split into weight decay /
    none (`decay_names`: Trainer's `get_decay_parameter_names`). Every trainable
    parameter is in exactly one group; each group names its block in "block"."""
    trainable = _trainable(model)
    blocks = assign_blocks(n for n, _ in trainable)
    decay_names = set(decay_names)
    order = sorted(set(blocks.values()), key=lambda b: (b.depth, b.name != "head"))
    groups = []
    for block in order:
        for decayed in (True, False):
            params = [p for n, p in trainable
                      if blocks[n] == block and (n in decay_names) == decayed]
            if params:
                groups.append({"params": params, "lr": lr * decay**block.depth,
                               "weight_decay": weight_decay if decayed else 0.0,
                               "block": block.name})
    return groups


def peak_lr_table(model: torch.nn.Module, lr: float, decay: float) -> pd.DataFrame:
    """One row per block, head first, then layers top to bottom, then embeddings: its
    depth, lr factor decay**depth, peak learning rate and trainable parameter count (what
    notebook 03 shows). With decay 1 (off) a model whose layers are not found is one row,
    "all", rather than an error: nothing depends on the layers then."""
    trainable = _trainable(model)
    try:
        blocks = assign_blocks(n for n, _ in trainable)
    except ConfigError:
        if decay != 1.0:
            raise
        blocks = {n: Block("all", 0) for n, _ in trainable}
    sizes: dict[Block, int] = {}
    for name, param in trainable:
        sizes[blocks[name]] = sizes.get(blocks[name], 0) + param.numel()
    rows = [{"block": b.name, "depth": b.depth, "lr factor": decay**b.depth,
             "peak lr": lr * decay**b.depth, "parameters": sizes[b]}
            for b in sorted(sizes, key=lambda b: (b.depth, b.name != "head"))]
    return pd.DataFrame(rows).set_index("block")
