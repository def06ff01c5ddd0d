"""What a notebook in notebooks/<task>/ must be as source, shared by the notebook tests and
the browser test (a notebook saved by JupyterLab must pass after the strip step)."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import nbformat

from sftlib.config import RunConfig
from sftlib.tasks import TASK_MODULES, get_task

ROOT = Path(__file__).resolve().parents[1]
MAX_CELL_LINES = 16
MAX_PARAMETER_LINES = 20  # a list of settings, not logic
STRIP_KEYS = "metadata.language_info"  # the Makefile's STRIP_KEYS


def notebook_names(task: str) -> list[str]:
    """A task's run sequence and, after it, its comparison notebook if it has one."""
    comparison = get_task(task).comparison_notebook
    return [*get_task(task).notebooks, *([comparison] if comparison else [])]


def notebook_paths() -> list[tuple[str, Path]]:
    """(task, path) of every notebook of every task, in reading order."""
    return [(task, ROOT / "notebooks" / task / f"{name}.ipynb")
            for task in TASK_MODULES for name in notebook_names(task)]


def stripped_text(path: Path) -> str:
    """The notebook as `git add` stores it: nbstripout with the project's keys."""
    return subprocess.run([sys.executable, "-m", "nbstripout", "-t", "--extra-keys", STRIP_KEYS,
                           str(path)], capture_output=True, text=True, check=True).stdout


def committed_text(path: Path) -> str | None:
    """The notebook as staged in git (what a commit holds); None outside a git checkout."""
    relative = path.relative_to(ROOT).as_posix()
    result = subprocess.run(["git", "show", f":{relative}"], cwd=ROOT, capture_output=True,
                            text=True)
    return result.stdout if result.returncode == 0 else None


def check_source(nb: nbformat.NotebookNode, task: str) -> None:
    """Clean, thin, parameterized, and no cell that branches on the task."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs"
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell: parameters"
    assigned = {t.id for node in ast.parse(code[0].source).body for t in node.targets}
    if "CompareConfig" in code[1].source:
        # the comparison notebook reads runs: its parameters are CompareConfig's
        from sftlib.compare import CompareConfig

        fields = {f.name for f in dataclasses.fields(CompareConfig)}
        assert assigned <= fields, assigned - fields
        assert "CompareConfig.for_notebook(globals())" in code[1].source
    else:
        assert assigned <= set(RunConfig.field_names()), assigned - set(RunConfig.field_names())
        assert f'RunConfig.for_notebook(globals(), task="{task}")' in code[1].source
    assert "task" not in assigned, "the task is the notebook folder's, not a parameter"
    assert nb.cells[0].cell_type == "markdown" and len(nb.cells[0].source) > 300
    assert len(code[0].source.splitlines()) <= MAX_PARAMETER_LINES, code[0].source
    for cell in code[1:]:
        assert len(cell.source.splitlines()) <= MAX_CELL_LINES, cell.source
        assert "cfg.task" not in cell.source, cell.source


# What an executed notebook must not show a reader, and why each is noise.
NOISE = {
    "LOAD REPORT": "transformers' new-head report: notebook 03 explains the new head in words",
    "newly initialized": "the same report",
    "No artists with labels": "matplotlib's empty-legend warning",
    "Writing model shards": "a progress bar frozen in the saved notebook",
    "%|": "any tqdm progress bar (frozen at its last state once saved)",
    "PosixPath(": "a path returned as a cell's value",
    "FutureWarning": "library deprecation notes are for developers, not readers",
    "UserWarning": "the same",
}
# stderr lines that may stay, with the reason
ALLOWED_STDERR: dict[str, str] = {}


def noise_in(nb: nbformat.NotebookNode) -> list[str]:
    """Noise strings and stderr outputs found in an executed notebook's outputs."""
    found = []
    for number, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else \
                "\n".join(str(v) for k, v in output.get("data", {}).items()
                          if k.startswith("text/"))
            if output.get("name") == "stderr" and not any(a in text for a in ALLOWED_STDERR):
                found.append(f"code cell {number + 1}: stderr {text[:200]!r}")
            found += [f"code cell {number + 1}: {marker!r} ({why})"
                      for marker, why in NOISE.items() if marker in text]
    return found
