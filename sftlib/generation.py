"""Generate with a chat model and score generations against references (task "instruction").

`ChatGenerator` loads a causal LM folder (a run's `model/`, an export, the asset or a hub
id), renders conversations through the tokenizer's chat template with the assistant header
appended, and decodes greedily in batches (left padding, stopping at the end-of-turn token),
so notebook 04 can compare models on held-out prompts and notebook 05 can chat.

Overlap scores are small pure functions over lower-cased word tokens (`\\w+`):
- `token_f1`: the harmonic mean of precision and recall of the bag of tokens (SQuAD's F1);
- `rouge_l`: F-measure of the longest common subsequence (Lin, 2004), word order counting.
Written here because `rouge-score` pulls in nltk and absl for about thirty lines of logic;
`rouge_l` follows its `rougeL` F-measure without stemming (rouge-score keeps only [a-z0-9]
in tokens; `\\w` also keeps accented letters and other scripts).
Both are crude: a correct answer in other words scores low. Read the generations too.

Not supported: sampling strategies beyond greedy, streaming, stop strings.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sftlib import assets, instruct
from sftlib.deploy import check_model_dir

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def token_f1(prediction: str, reference: str) -> float:
    """Bag-of-words F1 between two texts (0 when either is empty)."""
    pred, ref = words(prediction), words(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len a * len b))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure: LCS-based precision and recall over words, harmonic mean."""
    pred, ref = words(prediction), words(reference)
    common = lcs_length(pred, ref) if pred and ref else 0
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _looks_local(spec: str | Path) -> bool:
    """A local folder (existing, or a path as a run writes it) rather than a hub id."""
    return isinstance(spec, Path) or Path(spec).expanduser().exists() or \
        str(spec).startswith((".", "/", "~"))


class ChatGenerator:
    """Greedy chat generation in batches from a causal LM (folder, asset name or hub id)."""

    def __init__(self, model_spec: str | Path, batch_size: int = 8, device: str | None = None,
                 chat_template: str = "auto") -> None:
        path = assets.resolve_model(str(model_spec)) if str(model_spec) in assets.ASSETS \
            else check_model_dir(model_spec) if _looks_local(model_spec) \
            else assets.resolve_model(str(model_spec))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.template = instruct.prepare_tokenizer(self.tokenizer, chat_template)
        self.tokenizer.padding_side = "left"  # new tokens continue every row at the same column
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        self.model.to(self.device).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def generate(self, conversations: list[list[dict[str, str]]],
                 max_new_tokens: int = 96) -> list[str]:
        """The assistant's next turn for each conversation, in input order."""
        prompts = [instruct.render_prompt(c, self.tokenizer) for c in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            batch = self.tokenizer([prompts[i] for i in index], return_tensors="pt",
                                   padding=True, add_special_tokens=False).to(self.device)
            generated = self.model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id)
            new = generated[:, batch["input_ids"].shape[1]:]
            for i, text in zip(index, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                out[i] = text.strip()
        return out

    def chat(self, prompts: list[str], max_new_tokens: int = 96) -> list[str]:
        """One-turn answers to plain user prompts."""
        return self.generate([[{"role": "user", "content": p}] for p in prompts], max_new_tokens)


def held_out(split, n: int) -> tuple[list[list[dict[str, str]]], list[str]]:
    """The first `n` examples of a split (hash order: a fixed, unbiased sample): the
    conversation before the last assistant turn, and that turn as the reference."""
    rows = split.select(range(min(n, len(split))))
    conversations = [m[:max(i for i, x in enumerate(m) if x["role"] == "assistant")]
                     for m in rows["messages"]]
    return conversations, list(rows["response"])


def generation_frame(generators: dict[str, ChatGenerator], split, n: int,
                     max_new_tokens: int = 96) -> pd.DataFrame:
    """One row per held-out prompt: prompt, reference, and per model its generation,
    ROUGE-L and token F1 against the reference."""
    conversations, references = held_out(split, n)
    frame = pd.DataFrame({"prompt": [c[-1]["content"] if c else "" for c in conversations],
                          "reference": references})
    for name, generator in generators.items():
        generations = generator.generate(conversations, max_new_tokens)
        frame[name] = generations
        frame[f"rouge_l_{name}"] = [rouge_l(g, r) for g, r in zip(generations, references)]
        frame[f"token_f1_{name}"] = [token_f1(g, r) for g, r in zip(generations, references)]
    return frame


def overlap_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean ROUGE-L and token F1 per model (rows: models)."""
    names = [c.removeprefix("rouge_l_") for c in frame.columns if c.startswith("rouge_l_")]
    return pd.DataFrame({name: {"rouge_l": frame[f"rouge_l_{name}"].mean(),
                                "token_f1": frame[f"token_f1_{name}"].mean(),
                                "mean_words": frame[name].map(lambda t: len(t.split())).mean()}
                         for name in names}).T.rename_axis("model")
