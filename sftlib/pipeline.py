"""The headless runner: execute the task's numbered notebooks in order with papermill.

The notebooks are `notebooks/<task>/NN_*.ipynb`, the sequence named by the task object
(`sftlib.tasks`). `run_pipeline(cfg)` runs the task's checks first (assets fetched and
verified, dataset loaded, columns present) so bad input fails in seconds, then creates a new
`reports/<run-id>/` and executes each notebook with the RunConfig as papermill
parameters and the project root as working directory. It writes, per notebook, the
executed `.ipynb` and an HTML export, and at the end `manifest.json` (config, seed,
package versions, git commit, sha256 of data and model files, timings, status).

A failing notebook stops the run: `PipelineError` names the notebook, the cell and the
exception; the partial report (executed notebook with the error, its HTML, manifest with
status "failed") stays on disk.

Not supported: parallel notebook execution, remote kernels, notebook caching between runs.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sftlib import assets, html_report
from sftlib.config import RunConfig, field_defaults
from sftlib.metrics_log import HEADLESS_ENV, read_records
from sftlib.report import Report, new_run_dir, project_root, write_json_atomic
from sftlib.tasks import get_task

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "tokenizers", "scikit-learn",
            "pandas", "numpy", "matplotlib", "papermill", "nbconvert", "ipykernel", "peft",
            "gguf")


class _DropUnknownParameterWarnings(logging.Filter):
    """Papermill warns for RunConfig keys a notebook's parameter cell does not list; every
    key was validated by RunConfig already, and the notebook reads them all."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


logging.getLogger("papermill").addFilter(_DropUnknownParameterWarnings())


class PipelineError(RuntimeError):
    """A notebook failed; the message names it, the cell and the error."""


class RunInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM during a run; the manifest says "interrupted", the report stays."""


def notebook_dir(task: str, root: Path | None = None) -> Path:
    """The folder of a task's notebook sequence."""
    return (root or project_root(Path(__file__).parent)) / "notebooks" / task


def select_notebooks(task: str, names: list[str] | None) -> list[str]:
    """The task's notebooks, all or those named by number or name ("01", "03_fine_tuning")."""
    sequence = get_task(task).notebooks
    if not names:
        return list(sequence)
    chosen = []
    for name in names:
        match = [nb for nb in sequence if nb == name or nb.split("_")[0] == name.zfill(2)]
        if not match:
            raise ValueError(f"unknown notebook {name!r} for task {task!r}; choose from "
                             f"{', '.join(sequence)}")
        chosen.append(match[0])
    return sorted(set(chosen))


def absolutize_inputs(cfg: RunConfig) -> RunConfig:
    """Local model / dataset / teacher paths made absolute (notebooks run with another cwd)."""
    changes = {}
    for key in ("model", "dataset", "teacher"):
        value = getattr(cfg, key)
        if value is not None and Path(value).expanduser().exists():
            changes[key] = str(Path(value).expanduser().resolve())
    return cfg.replace(**changes) if changes else cfg


def preflight(cfg: RunConfig, log: Callable[[str], None] = print) -> dict:
    """The task's checks before any notebook starts (`Task.preflight`): assets fetched and
    verified, data loaded and checked; what they found goes into the manifest."""
    return get_task(cfg.task).preflight(cfg, log)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state(root: Path) -> dict[str, object]:
    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                    timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None
            else None}


def input_hashes(cfg: RunConfig, model_path: str) -> dict[str, object]:
    """sha256 of the data and model files this run read."""
    data_hashes: dict[str, object]
    if cfg.dataset in assets.ASSETS:
        folder = assets.fetch(cfg.dataset)
        data_hashes = assets.model_files_sha256(str(folder))
    elif Path(cfg.dataset).is_file():
        data_hashes = {Path(cfg.dataset).name: assets.sha256_file(cfg.dataset)}
    elif Path(cfg.dataset).is_dir():
        data_hashes = {p.name: assets.sha256_file(p) for p in sorted(Path(cfg.dataset).iterdir())
                       if p.is_file()}
    else:
        data_hashes = {"hub_id": cfg.dataset, "config": cfg.dataset_config}
    model_hashes = assets.model_files_sha256(model_path) or {"hub_id": cfg.model}
    return {"data": data_hashes, "model": model_hashes}


def _kernel_env(root: Path) -> dict[str, str]:
    """Kernels import this checkout's sftlib, whatever is installed, and know they are headless."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env[HEADLESS_ENV] = "1"  # static tables, not widgets (their state is lost headless)
    # a saved progress bar shows its last state forever (often 0%): the terminal line and
    # the live plot say how far a run is
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    return env


@contextlib.contextmanager
def kernel_environment(root: Path):
    """`_kernel_env` in this process's environment while papermill starts kernels (it starts
    them with this process's environment), restored after."""
    saved_env = dict(os.environ)
    os.environ.update(_kernel_env(root))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


def failing_cell(notebook_path: Path) -> tuple[int | None, str]:
    """Index (among code cells, 1-based) and first line of the cell that raised."""
    import nbformat

    nb = nbformat.read(notebook_path, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code_cells, start=1):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            return number, first
    return None, ""


def notebook_parameters(cfg: RunConfig, source: Path, root: Path) -> dict[str, Any]:
    """The RunConfig keys papermill must inject into `source`: those whose value differs
    from what the notebook would use on its own (its parameters cell, else the RunConfig
    defaults), so the executed notebook shows what this run changed, not every key."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    cell = next((c for c in nb.cells if c.cell_type == "code"
                 and "parameters" in c.metadata.get("tags", [])), None)
    own = field_defaults()
    own["task"] = cfg.task  # RunConfig.for_notebook: the notebook's folder sets the task
    for node in ast.parse(cell.source).body if cell is not None else []:
        if isinstance(node, ast.Assign):
            own.update({target.id: ast.literal_eval(node.value) for target in node.targets
                        if isinstance(target, ast.Name)})
    changed = {k: v for k, v in cfg.to_dict().items() if own.get(k, object()) != v}
    output_dir = Path(cfg.output_dir)
    if output_dir.is_relative_to(root):  # shown as the reader knows it: reports/<run-id>
        changed["output_dir"] = output_dir.relative_to(root).as_posix()
    return changed


class ProgressPrinter:
    """While a notebook runs, one terminal line every `interval_s`: elapsed time and, once
    training logs steps to metrics.jsonl, step / total and the time left at the pace so far."""

    def __init__(self, name: str, metrics_log: Path, log: Callable[[str], None],
                 interval_s: float = 30.0) -> None:
        self.name, self.metrics_log, self.log, self.interval_s = name, metrics_log, log, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._began = time.monotonic()

    def __enter__(self) -> ProgressPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.log(progress_line(self.name, time.monotonic() - self._began,
                                   last_step(self.metrics_log)))


def last_step(metrics_log: Path) -> tuple[int, int] | None:
    """(step, max_steps) of the newest training record in metrics.jsonl, if any (a line
    being written is skipped by `metrics_log.read_records`)."""
    try:
        records = read_records(metrics_log)
    except (OSError, ValueError):
        return None
    steps = [r for r in records if r.get("max_steps")]
    return (int(steps[-1]["step"]), int(steps[-1]["max_steps"])) if steps else None


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


def progress_line(name: str, elapsed_s: float, step: tuple[int, int] | None) -> str:
    """`[run] 03_fine_tuning: step 120/638 (19%), 2:10 elapsed, about 9:21 left`."""
    line = f"[run] {name}: {_clock(elapsed_s)} elapsed"
    if step is None or step[0] <= 0:
        return line
    done, total = step
    left = elapsed_s * (total - done) / done
    return (f"[run] {name}: step {done}/{total} ({done / total:.0%}), {_clock(elapsed_s)} "
            f"elapsed, about {_clock(left)} left")


@contextlib.contextmanager
def kernel_stderr_to(path: Path):
    """Send this process's file descriptor 2, which the kernels papermill starts inherit,
    to `path`: the terminal keeps to sftlib's own lines, the kernels' logs stay on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as target:
        os.dup2(target.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _finish(run_dir: Path, manifest: dict, report: Report, status: str) -> None:
    manifest["status"] = status
    manifest["finished_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
    if report.model_dir.is_dir():
        manifest["outputs"] = {"model": assets.model_files_sha256(str(report.model_dir))}
    manifest["metrics"] = report.read_metrics()
    write_json_atomic(run_dir / "manifest.json", manifest)
    html_report.write_index(run_dir, manifest)


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def run_status(manifest: dict[str, Any]) -> str:
    """ok / failed / interrupted / running, or "died" for a run marked running whose
    process is gone (killed with SIGKILL, or its machine stopped)."""
    status = manifest.get("status", "unknown")
    if status == "running" and not process_alive(manifest.get("pid")):
        return "died"
    return status


def list_runs(reports_root: str | Path = "reports") -> list[dict[str, Any]]:
    """Every run folder under `reports_root` with its status and headline, oldest first."""
    from sftlib.report import resolve_path

    rows = []
    for manifest_path in sorted(resolve_path(reports_root).glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            rows.append({"run": manifest_path.parent.name, "status": "unreadable manifest"})
            continue
        config = manifest.get("config", {})
        rows.append({"run": manifest_path.parent.name, "status": run_status(manifest),
                     "task": config.get("task"), "model": config.get("model"),
                     "dataset": config.get("dataset"),
                     "validation": (manifest.get("metrics") or {}).get("validation", {})})
    return rows


def run_pipeline(cfg: RunConfig, notebooks: list[str] | None = None,
                 reports_root: str | Path = "reports", kernel_name: str = "python3",
                 log: Callable[[str], None] = print) -> Path:
    """Run the notebooks headlessly; returns the run folder (raises PipelineError)."""
    import papermill as pm

    names = select_notebooks(cfg.task, notebooks)
    root = project_root(Path(__file__).parent)
    cfg = absolutize_inputs(cfg)
    for stale in (r for r in list_runs(reports_root) if r["status"] == "died"):
        log(f"[run] note: earlier run {stale['run']} never finished (its process is gone); "
            "its manifest says so in `sftlib runs`")
    log(f"[run] checking inputs: model {cfg.model!r}, dataset {cfg.dataset!r}")
    checked = preflight(cfg, log)
    run_dir = new_run_dir(reports_root, cfg.to_dict())
    cfg = cfg.replace(output_dir=str(run_dir))
    report = Report(run_dir)
    cfg.save(report.path("run_config.json"))
    manifest = {
        "run_id": run_dir.name, "status": "running", "pid": os.getpid(),
        # set by `sftlib sweep` for each run it starts: how it finds the folder a launch made
        "launch_id": os.environ.get("SFTLIB_LAUNCH_ID"),
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.to_dict(), "seed": cfg.seed, "notebooks": {},
        "packages": package_versions(), "git": git_state(root),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "inputs": {**checked, **input_hashes(cfg, checked["model_path"])},
    }
    write_json_atomic(run_dir / "manifest.json", manifest)
    log(f"[run] report folder: {run_dir}")
    try:
        with kernel_environment(root):
            for name in names:
                _run_one(pm, name, root, run_dir, cfg, kernel_name, manifest, log)
    except PipelineError:
        _finish(run_dir, manifest, report, "failed")
        raise
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through the command line's handler
        # the interrupted cell's task ends with a dead kernel; asyncio would print its
        # traceback when the task is collected: the RunInterrupted line says it all
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        _finish(run_dir, manifest, report, "interrupted")
        raise RunInterrupted(f"interrupted; the partial report is kept in {run_dir}") from None
    _finish(run_dir, manifest, report, "ok")
    return run_dir


def execute_notebook(source: Path, run_dir: Path, parameters: dict[str, Any], root: Path,
                     kernel_name: str = "python3", log: Callable[[str], None] = print) -> Path:
    """Execute `source` with papermill into `run_dir`/notebooks/ and export its HTML into
    `run_dir`/html/ (kernel stderr to logs/, a progress line while it runs); raises
    papermill's PapermillExecutionError, the executed notebook kept."""
    import papermill as pm

    name = source.stem
    executed = run_dir / "notebooks" / f"{name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    with kernel_stderr_to(run_dir / "logs" / f"{name}.log"), \
            ProgressPrinter(name, run_dir / "metrics.jsonl", log):
        pm.execute_notebook(str(source), str(executed), parameters=parameters,
                            kernel_name=kernel_name, cwd=str(root), progress_bar=False,
                            log_output=False, report_mode=False)
    html_report.export_html(executed, run_dir / "html" / f"{name}.html")
    return executed


def _run_one(pm, name: str, root: Path, run_dir: Path, cfg: RunConfig, kernel_name: str,
             manifest: dict, log: Callable[[str], None]) -> None:
    source = notebook_dir(cfg.task, root) / f"{name}.ipynb"
    executed = run_dir / "notebooks" / f"{name}.ipynb"
    log(f"[run] {name} ...")
    began = time.perf_counter()
    try:
        execute_notebook(source, run_dir, notebook_parameters(cfg, source, root), root,
                         kernel_name, log)
    except pm.PapermillExecutionError as error:
        cell, first_line = failing_cell(executed)
        manifest["notebooks"][name] = {"status": "failed", "seconds": time.perf_counter() - began,
                                       "cell": cell, "error": f"{error.ename}: {error.evalue}"}
        manifest["status"] = "failed"
        html_report.export_html(executed, run_dir / "html" / f"{name}.html")
        raise PipelineError(
            f"notebook {name} failed in code cell {cell} ({first_line!r}): "
            f"{error.ename}: {error.evalue}\n  partial report kept in {run_dir}") from None
    seconds = time.perf_counter() - began
    manifest["notebooks"][name] = {"status": "ok", "seconds": round(seconds, 1)}
    write_json_atomic(run_dir / "manifest.json", manifest)
    log(f"[run] {name} done in {seconds:.0f} s")
    sys.stdout.flush()
