"""A sequence classifier that reads the mask-weighted mean of an encoder's token states.

`MeanPoolingForSequenceClassification`: any `transformers.AutoModel` encoder (BERT, MPNet, ...)
-> the mean of its last hidden states over the tokens the attention mask keeps (pad tokens
count zero) -> dropout -> one linear layer to the labels. No BERT pooler: the sentence encoders
sftlib ships (all-MiniLM-L6-v2, all-mpnet-base-v2) were trained on that mean, while the
pooler's tanh layer on the [CLS] state, which `AutoModelForSequenceClassification` reads, was
not trained for them. `RunConfig.pooling="mean"` selects it (`tasks.classification`).
`forward(..., output_sentence_vectors=True)` also returns that mean (`sentence_vectors`: what
distillation's relation term compares, `sftlib.distill`).

Saved folders. The config (`MeanPoolingConfig`, model type `sftlib-mean-pooling`) is the
encoder's own config, flat (its keys as the encoder names them: DistilBERT's width is `dim`),
plus `encoder_model_type`. The encoder keeps its architecture's usual prefix (`bert.`,
`mpnet.`: parameter names `bert.encoder.layer.3...` as in a BERT classifier), the head is
`classifier.`. `save_pretrained` writes `auto_map` into config.json and copies this file
beside the weights (the Hugging Face custom-code convention), so the folder loads without
sftlib: `pipeline("text-classification", model=folder, trust_remote_code=True)`. sftlib
registers the classes with `AutoConfig` / `AutoModelForSequenceClassification` (`register`),
so sftlib loads the folder without trust_remote_code. Without either, transformers does not
know the model type and refuses the folder: a mean-pooled model never loads silently as a
[CLS] one (a class named explicitly, `BertForSequenceClassification.from_pretrained`, only
warns about the model type: do not do that).

This file is copied into every saved folder and imported from there, so it imports torch and
transformers only, never sftlib.

Not supported: other poolings (max, weighted, last token), sentence pairs, regression or
multi-label heads, encoder-decoder models.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "sftlib-mean-pooling"
# keys of the wrapper's config that are not the encoder's
_WRAPPER_KEYS = ("model_type", "encoder_model_type", "auto_map", "architectures",
                 "transformers_version")


class MeanPoolingConfig(PreTrainedConfig):
    """The encoder's config, flat, plus `encoder_model_type` (e.g. "bert", "mpnet")."""

    model_type = MODEL_TYPE
    encoder_model_type: str = "bert"

    @classmethod
    def from_encoder(cls, encoder_config: PreTrainedConfig, **changes) -> MeanPoolingConfig:
        """Wrap `encoder_config` (its fields copied) with `changes` (num_labels, id2label ...)."""
        values = {k: v for k, v in encoder_config.to_dict().items()
                  if k not in (*_WRAPPER_KEYS, "id2label", "label2id")}  # not this head's labels
        return cls(encoder_model_type=encoder_config.model_type, **{**values, **changes})

    def encoder_config(self) -> PreTrainedConfig:
        values = {k: v for k, v in self.to_dict().items() if k not in _WRAPPER_KEYS}
        config = AutoConfig.for_model(self.encoder_model_type, **values)
        config._attn_implementation = self._attn_implementation
        return config


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, sequence, hidden] -> [batch, hidden]: the mean over positions whose mask is 1.

    The count is clamped at a tiny value (as sentence-transformers does), so an all-pad row
    gives zeros, not NaN."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


@dataclass
class MeanPoolingClassifierOutput(SequenceClassifierOutput):
    """SequenceClassifierOutput plus, when asked for, `sentence_vectors` [batch, hidden]: the
    masked mean the head reads (before dropout). None otherwise, so evaluation sees the
    usual fields only."""

    sentence_vectors: torch.FloatTensor | None = None


class MeanPoolingForSequenceClassification(PreTrainedModel):
    """Encoder -> masked mean of the last hidden states -> dropout -> linear classifier."""

    config_class = MeanPoolingConfig
    base_model_prefix = ""  # per instance: the encoder's own prefix ("bert", "mpnet")
    supports_gradient_checkpointing = True
    # what the encoder supports decides; these only let a request through to it
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: MeanPoolingConfig) -> None:
        super().__init__(config)
        encoder = build_encoder(config.encoder_config())
        self.base_model_prefix = encoder.base_model_prefix
        setattr(self, self.base_model_prefix, encoder)
        self.config._attn_implementation = encoder.config._attn_implementation  # what runs
        self.dropout = nn.Dropout(head_dropout(encoder.config))
        # the encoder's config maps its own names (DistilBERT's `dim`) to hidden_size
        self.classifier = nn.Linear(encoder.config.hidden_size, config.num_labels)
        self.post_init()

    @property
    def encoder(self) -> PreTrainedModel:
        return getattr(self, self.base_model_prefix)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder.set_input_embeddings(value)

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_sentence_vectors: bool = False,
                **kwargs) -> MeanPoolingClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:  # BERT has them; MPNet's tokenizer gives none
            inputs["token_type_ids"] = token_type_ids
        kwargs.pop("num_items_in_batch", None)  # Trainer's; the loss is a per-example mean
        outputs = self.encoder(**inputs, return_dict=True, **kwargs)
        pooled = masked_mean(outputs.last_hidden_state, attention_mask)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.config.num_labels),
                                               labels.view(-1))
        return MeanPoolingClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            sentence_vectors=pooled if output_sentence_vectors else None)


def head_dropout(config: PreTrainedConfig) -> float:
    """The dropout before the head, as the architecture's own classifier sets it:
    `classifier_dropout` where given, else DistilBERT's `seq_classif_dropout`, else the
    encoder's `hidden_dropout_prob` (BERT's and MPNet's rule), else 0.1."""
    for name in ("classifier_dropout", "seq_classif_dropout", "hidden_dropout_prob"):
        value = getattr(config, name, None)
        if value is not None:
            return value
    return 0.1


def build_encoder(config: PreTrainedConfig) -> PreTrainedModel:
    """The AutoModel for `config`, without its pooler where it has one (mean pooling does not
    use it: its weights would train on nothing and sit in every saved folder). An SDPA request
    for an encoder without SDPA (MPNet) gets the encoder's default attention instead: the
    wrapper passes requests on, and the choice changes speed, not the logits beyond rounding."""
    model_class = AutoModel._model_mapping[type(config)]
    if config._attn_implementation == "sdpa" and not model_class._supports_sdpa:
        config._attn_implementation = None
    options = {}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        options["add_pooling_layer"] = False
    return model_class(config, **options)


# save_pretrained writes auto_map and copies this file: the folder loads without sftlib
MeanPoolingConfig.register_for_auto_class()
MeanPoolingForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")


def register() -> None:
    """Let `AutoConfig` / `AutoModelForSequenceClassification` load mean-pooled folders without
    trust_remote_code (sftlib calls this; a plain user of a saved folder does not need it)."""
    AutoConfig.register(MODEL_TYPE, MeanPoolingConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(MeanPoolingConfig,
                                                MeanPoolingForSequenceClassification,
                                                exist_ok=True)
