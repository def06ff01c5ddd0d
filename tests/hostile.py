"""Hostile strings (markup that would run if a page showed it unescaped) and datasets made
of them, shared by the hostile-text tests and the shared tiny instruction run."""

from __future__ import annotations

import json
from pathlib import Path

PAYLOAD = "alert(1)"  # what each active string below would run
HOSTILE = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "</textarea><script>alert(1)</script>",
    "{{7*7}}",
    '<a href="javascript:alert(1)">click</a>',
    "[click](javascript:alert(1))",
    "\u202egnp.exe\u202c right-to-left override",
)
HOSTILE_LABEL = "<img src=x onerror=alert(1)>"  # a label is a column name in many tables


def hostile_instruction_rows(n: int = 40) -> list[dict[str, str]]:
    """Alpaca rows whose instructions, inputs and outputs carry the hostile strings; the
    instruction asks the model to repeat them, so its answers may carry them too."""
    return [{"instruction": f"Repeat exactly: {HOSTILE[i % len(HOSTILE)]}",
             "input": f"case {i}", "output": f"{HOSTILE[(i + 3) % len(HOSTILE)]} (answer {i})"}
            for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
