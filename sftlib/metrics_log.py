"""The training log, read without the training stack: `metrics.jsonl` records, the smoothing
the plots use, and whether code runs in a (headless) kernel.

Kept apart from `sftlib.live` (whose callback needs transformers) so that what only reads
logs (`pipeline`'s progress line, `compare`, `sftlib runs`) starts in a second, not in the
ten that importing transformers' Trainer takes on a 2-core CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

SMOOTHING = 0.9  # EMA weight for the smoothed loss


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab or papermill), False in a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


HEADLESS_ENV = "SFTLIB_HEADLESS"  # set by sftlib.pipeline for the kernels papermill starts


def headless() -> bool:
    """True in a kernel run by the pipeline (papermill): no one can click a widget there and
    its state is not saved, so show static outputs only. `in_notebook` cannot tell, since
    papermill runs a real Jupyter kernel too."""
    return os.environ.get(HEADLESS_ENV) == "1"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, in order (empty lines skipped).

    A last line that does not decode is skipped: the writing process was killed halfway
    through it (a resumed run rewrites it). An undecodable line anywhere else is a
    ValueError naming the file and the line: the log was damaged some other way, and
    skipping it would hide lost records."""
    lines = [(number, line) for number, line
             in enumerate(Path(path).read_bytes().split(b"\n"), start=1) if line.strip()]
    records = []
    for position, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            if position == len(lines) - 1:
                break
            raise ValueError(f"{path}, line {number}: not a JSON record ({error}); the "
                             "training log is damaged there") from None
    return records


def read_metrics(path: str | Path) -> pd.DataFrame:
    """A metrics.jsonl file as a DataFrame (rows: log records in order, see read_records)."""
    return pd.DataFrame(read_records(path))


def ema(values: pd.Series, weight: float = SMOOTHING) -> pd.Series:
    """Bias-corrected exponential moving average, as TensorBoard smooths curves."""
    smoothed = values.ewm(alpha=1 - weight, adjust=True).mean()
    return smoothed
