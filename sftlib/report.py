"""The run's report folder: where every stage writes figures, tables and metrics.

Layout of `reports/<run-id>/` (see reports/README.md):
    notebooks/NN_name.ipynb, html/NN_name.html   executed notebooks and their HTML export
    figures/*.png                                  every figure a notebook shows
    tables/*.csv                                   every table worth keeping
    metrics.json                                   headline metrics, one section per stage
    metrics.jsonl                                  training log (sftlib.live)
    model/                                         the fine-tuned model, tokenizer, run_config
    manifest.json                                  config, versions, git commit, file hashes

Paths in a RunConfig are relative to the project root (the folder holding this project's
pyproject.toml), so a notebook opened from notebooks/ and the CLI run from the root write
to the same place. Run folders are created with `exist_ok=False`: runs never overwrite
each other.

Not supported: remote report stores, concurrent writers to one metrics.json.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

_PYPROJECT_MARK = 'name = "sftlib"'


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding sftlib's pyproject.toml, searched upward; else the start folder."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and _PYPROJECT_MARK in pyproject.read_text():
            return folder
    return start


def resolve_path(path: str | Path) -> Path:
    """Absolute paths unchanged; relative ones against the project root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def new_run_dir(reports_root: str | Path, config: dict[str, Any]) -> Path:
    """reports/<UTC time>-<config hash>, never reusing an existing folder."""
    root = resolve_path(reports_root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:6]
    for attempt in range(1, 1000):
        name = f"{stamp}-{digest}" + (f"-{attempt}" if attempt > 1 else "")
        try:
            (root / name).mkdir()
            return root / name
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder in {root}")


class Report:
    """Writes one stage's outputs into the run folder named by cfg.output_dir."""

    def __init__(self, output_dir: str | Path) -> None:
        self.dir = resolve_path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_config(cls, cfg) -> Report:
        return cls(cfg.output_dir)

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    @property
    def metrics_log(self) -> Path:
        return self.dir / "metrics.jsonl"

    def path(self, *parts: str) -> Path:
        target = self.dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def figure(self, fig, name: str) -> None:
        """Save a matplotlib figure as figures/<name>.png and show it here, in the output of
        the cell that made it, with its titles as alternative text (the HTML export's)."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        target = self.path("figures", f"{name}.png")
        fig.savefig(target, dpi=110, bbox_inches="tight")
        display(fig, metadata={"image/png": {"alt": figure_alt_text(fig, name)}})
        plt.close(fig)  # shown once: the inline backend would show it again at cell end

    def table(self, frame: pd.DataFrame, name: str, index: bool = True) -> Path:
        target = self.path("tables", f"{name}.csv")
        frame.to_csv(target, index=index)
        return target

    def json(self, data: Any, name: str) -> Path:
        target = self.path(f"{name}.json")
        write_json_atomic(target, data)
        return target

    def metrics(self, section: str, values: dict[str, Any]) -> dict[str, Any]:
        """Merge `values` into metrics.json under `section`; returns the whole file."""
        target = self.dir / "metrics.json"
        current = json.loads(target.read_text()) if target.is_file() else {}
        current[section] = {**current.get(section, {}), **values}
        write_json_atomic(target, current)
        return current

    def read_metrics(self) -> dict[str, Any]:
        target = self.dir / "metrics.json"
        return json.loads(target.read_text()) if target.is_file() else {}


def figure_alt_text(fig, name: str) -> str:
    """A figure's titles (suptitle, then each panel's), else its file name, as one line."""
    titles = [fig._suptitle.get_text()] if getattr(fig, "_suptitle", None) else []
    titles += [ax.get_title() for ax in fig.axes if ax.get_title()]
    return "; ".join(titles) or name.replace("_", " ")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a JSON file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# tables of text shown as HTML ---------------------------------------------------------------
