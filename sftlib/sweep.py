"""`sftlib sweep`: many ordinary runs from one command, resumable.

    sftlib sweep --config configs/smoke.yaml --grid lr=3e-5,1e-4,3e-4 \\
        --grid schedule=linear,cosine --seeds 3 [--samples N] [--notebooks 03]

The points are the grid's product (or `--samples N` distinct points of it drawn at random,
seeded: random search over the grid), each with `--seeds K` seeds (the config's seed, +1,
...). Every point is an ordinary `sftlib run` into the sweep folder (`reports/sweep-<hash>/`
by default, the hash of the sweep's arguments), so `sftlib runs --reports-dir` lists them
and any one opens alone. The folder's `sweep.json` is the index: the spec, every point
with its run id, status, device and earlier attempts; `logs/<point>.log` holds each run's
terminal output.

Checked before any run starts: every point is a valid RunConfig (a bad key or value is one
ConfigError naming the point and the key), the keys exist and are not the sweep's own
(`output_dir`), the model and data of every distinct (model, dataset) pass the task's
preflight. Resuming: run the same command again; a point is done when a run folder in the
sweep folder has its exact config and ended "ok" (read from the run's own manifest, so a
run that finished after its sweep was killed still counts), and everything else runs
again, its earlier attempts kept on disk and listed. A failing point is recorded and the
sweep goes on; the exit status is 1 if any point failed. One sweep process per folder
(a lock file); Ctrl-C or SIGTERM stops the runs in flight (they end "interrupted").

Devices: on a CPU, one run at a time by default (two would share the same cores and each
take twice as long); `--jobs N` runs N at once, each with its share of the CPU threads
(OMP_NUM_THREADS), for runs too small to use the cores (a small model, a many-core machine).
With several GPUs, one run per GPU at a time: a slot per GPU, each run started
with CUDA_VISIBLE_DEVICES set to its GPU, the next pending point going to the first slot
that frees (`--devices 0,1,3` picks GPUs; `auto` takes all that torch sees). A run that
itself spans GPUs (torchrun) is not what this schedules.

Not supported: sweeping the task's data or model assets on several machines (use
`--search optuna` with a shared storage, `sftlib.search`), early stopping of bad points
(each point is a whole run), conditional grids.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sftlib.config import ConfigError, RunConfig, coerce_value, parse_overrides
from sftlib.report import resolve_path, write_json_atomic

# keys that are the sweep's to set, or that only change how a run is displayed
SWEEP_OWNED = ("output_dir",)
# keys that say nothing about the model a run trains: two configs differing only here are
# one config (plotting cadence; the seed is the sweep's other axis)
NOT_THE_RECIPE = ("output_dir", "plot_interval_s", "plot_max_share")
Log = Callable[[str], None]


class SweepError(RuntimeError):
    """The sweep cannot start or go on (another process holds the folder, a folder holds
    another sweep); one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of the sweep: the grid values (and seed) on top of the base config."""

    overrides: dict[str, Any]
    config: RunConfig

    @property
    def id(self) -> str:
        return config_id(self.config.to_dict())

    @property
    def group(self) -> str:
        """The config without its seed: the points that differ only in seed share it."""
        return config_id(self.config.to_dict(), ignore=("seed",))

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items())


def config_id(config: dict[str, Any], ignore: Sequence[str] = ()) -> str:
    """A short stable hash of a config's recipe (NOT_THE_RECIPE and `ignore` left out)."""
    kept = {k: v for k, v in config.items() if k not in NOT_THE_RECIPE and k not in ignore}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:10]


# building the points -------------------------------------------------------------------

def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """`["lr=3e-5,1e-4", "schedule=linear,cosine"]` -> {"lr": [3e-05, 0.0001], ...}.

    Values are split at commas and read as YAML scalars, as `--set` reads them; a list in
    brackets (`lora_target_modules=[q_proj,v_proj]`... is not supported: comma-separated
    values are always several values)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"--grid {item!r}: expected key=value1,value2,...")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; put every value in one --grid")
        if key not in RunConfig.field_names():
            from difflib import get_close_matches

            close = get_close_matches(key, RunConfig.field_names(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"--grid {key}: not a config key{hint}; `sftlib run --help` "
                              "lists them")
        if key in SWEEP_OWNED:
            raise ConfigError(f"--grid {key}: the sweep sets it (each point gets its own run "
                              "folder); use --sweep-dir for the sweep's folder")
        if key in NOT_THE_RECIPE:
            raise ConfigError(f"--grid {key}: only changes how a run is shown, not the model "
                              "it trains; set it with --set")
        try:
            values = [coerce_value(key, parse_overrides([f"{key}={part}"])[key])
                      for part in raw.split(",")]
        except ConfigError as error:
            raise ConfigError(f"--grid {error}") from None
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"--grid {key}: a value is listed twice: {raw}")
        grid[key] = values
    return grid


def build_points(base: RunConfig, grid: dict[str, list[Any]], seeds: int = 1,
                 samples: int | None = None, sample_seed: int = 0) -> list[Point]:
    """Every point, validated: the grid product (or `samples` distinct points of it), times
    the seeds. Any invalid point is one ConfigError before anything runs."""
    if seeds < 1:
        raise ConfigError(f"--seeds: at least 1, got {seeds}")
    if seeds > 1 and "seed" in grid:
        raise ConfigError("--grid seed and --seeds both set the seed; use one of them")
    from sftlib.pipeline import absolutize_inputs  # runs record local paths made absolute

    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if samples is not None:
        if not 1 <= samples <= len(combos):
            raise ConfigError(f"--samples: between 1 and the grid's {len(combos)} points, "
                              f"got {samples}")
        combos = random.Random(sample_seed).sample(combos, samples)
    points = []
    for combo in combos:
        for offset in range(seeds):
            overrides = dict(combo)
            if seeds > 1:
                overrides["seed"] = base.seed + offset
            try:
                config = absolutize_inputs(base.replace(**overrides))
            except ConfigError as error:
                shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
                raise ConfigError(f"sweep point {shown}: {error}") from None
            points.append(Point(overrides, config))
    if len({p.id for p in points}) != len(points):  # parse_grid keeps such keys out
        raise ConfigError("two sweep points have the same config; each value once")
    return points


def spec_of(base: RunConfig, grid: dict[str, list[Any]], seeds: int, samples: int | None,
            sample_seed: int, notebooks: list[str] | None) -> dict[str, Any]:
    """What defines a sweep: same spec, same folder, same points."""
    return {"base": {k: v for k, v in base.to_dict().items() if k not in SWEEP_OWNED},
            "grid": grid, "seeds": seeds, "samples": samples, "sample_seed": sample_seed,
            "notebooks": notebooks}


def default_sweep_dir(spec: dict[str, Any], reports_root: str | Path = "reports") -> Path:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    return resolve_path(reports_root) / f"sweep-{digest}"


# which points are done ------------------------------------------------------------------

def manifest_point_id(manifest: dict[str, Any]) -> str | None:
    """The point id of a run's config, read through RunConfig so that a key added to
    RunConfig since the run (at its default) does not make it another point; None for a
    config this version cannot read."""
    try:
        return config_id(RunConfig.from_dict(manifest.get("config", {})).to_dict())
    except (ConfigError, TypeError):
        return None


def finished_runs(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """point id -> {run, status} of the run folders in `sweep_dir`, from their manifests;
    where a point has several, an "ok" one wins, else the newest."""
    from sftlib.pipeline import run_status

    found: dict[str, dict[str, Any]] = {}
    for manifest_path in sorted(sweep_dir.glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        point = manifest_point_id(manifest)
        entry = {"run": manifest_path.parent.name, "status": run_status(manifest),
                 "pid": manifest.get("pid")}
        if point is not None and found.get(point, {}).get("status") != "ok":
            found[point] = entry
    return found


def attempts_of(sweep_dir: Path, point_id: str) -> list[dict[str, Any]]:
    """Every run folder of one point (oldest first) with how it ended."""
    from sftlib.pipeline import run_status

    attempts = []
    for manifest_path in sorted(sweep_dir.glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if manifest_point_id(manifest) == point_id:
            attempts.append({"run": manifest_path.parent.name, "status": run_status(manifest),
                             "pid": manifest.get("pid"),
                             "launch_id": manifest.get("launch_id")})
    return attempts


# scheduling ---------------------------------------------------------------------------------

def cuda_devices(requested: str = "auto", cpu_jobs: int = 1) -> list[str | None]:
    """The slots runs go to: GPU ids (one run each at a time), or `cpu_jobs` times None:
    runs on whatever they find (the CPU, or a single GPU), that many at a time."""
    if not 1 <= cpu_jobs <= (os.cpu_count() or 1):
        raise ConfigError(f"--jobs: between 1 and this machine's {os.cpu_count()} CPU "
                          f"threads, got {cpu_jobs}")
    if requested == "cpu":
        return [CPU_ONLY] * cpu_jobs
    if requested != "auto":
        if cpu_jobs > 1:
            raise ConfigError("--jobs is for runs on the CPU; with --devices each GPU runs "
                              "one at a time")
        devices = [part.strip() for part in requested.split(",") if part.strip()]
        if not devices or not all(d.isdigit() for d in devices):
            raise ConfigError(f"--devices: auto, cpu, or GPU numbers like 0,1,3; got "
                              f"{requested!r}")
        return list(dict.fromkeys(devices))
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count and cpu_jobs > 1:
        raise ConfigError(f"--jobs is for runs on the CPU; this machine has {count} GPU(s): "
                          "each runs one at a time (or --devices cpu --jobs N)")
    return [str(i) for i in range(count)] if count > 1 else [None] * cpu_jobs


CPU_ONLY = ""  # a slot's device for `--devices cpu`: CUDA_VISIBLE_DEVICES="" hides the GPUs


def on_the_cpu(device: str | None) -> bool:
    return device is None or device == CPU_ONLY


def cpu_threads_per_run(devices: Sequence[str | None]) -> int | None:
    """With several runs on the CPU at once, each gets its share of the threads
    (OMP_NUM_THREADS, which torch reads); None leaves a lone run all of them."""
    jobs = sum(on_the_cpu(d) for d in devices)
    return max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None


def describe_slots(devices: Sequence[str | None]) -> str:
    gpus = [d for d in devices if not on_the_cpu(d)]
    if gpus:
        return f"one run at a time on each of GPUs {', '.join(gpus)}"
    where = "the CPU (GPUs hidden)" if CPU_ONLY in devices else "this machine"
    return (f"{len(devices)} runs at a time on {where}" if len(devices) > 1
            else f"one run at a time on {where}")


LAUNCH_ENV = "SFTLIB_LAUNCH_ID"  # a run's manifest records it: which folder a launch made
ATTEMPT_MARK = "[sweep] launch"  # the line each launch starts its part of the point's log with


@dataclasses.dataclass
class Launched:
    point: Point
    device: str | None
    process: subprocess.Popen
    launch_id: str


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec function that makes the child receive SIGKILL when the sweep process dies
    (Linux prctl PR_SET_PDEATHSIG), so a killed sweep leaves no run training on with nobody
    to record it; None where there is no such call. libc is loaded here, in the parent: the
    child between fork and exec should only make the one call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)


def run_on_slots(points: Sequence[Point], devices: Sequence[str | None],
                 command: Callable[[Point], list[str]], log_path: Callable[[Point], Path],
                 on_start: Callable[[Point, str | None], None],
                 on_end: Callable[[Point, str | None, int, str], None],
                 poll_s: float = 0.5) -> None:
    """Run each point as a subprocess, at most one per device at a time, in order; the next
    pending point goes to the first slot that frees. A slot's device goes to its run as
    CUDA_VISIBLE_DEVICES; each launch gets a fresh id in SFTLIB_LAUNCH_ID, which its run's
    manifest records and `on_end` receives with the exit code.

    Children run in their own sessions, so Ctrl-C in a terminal reaches the sweep only; on
    KeyboardInterrupt (Ctrl-C, or SIGTERM through the command line) each running child gets
    exactly one SIGTERM (its run ends "interrupted"), is waited for, and the interrupt goes
    on up."""
    pending = list(points)
    running: dict[int, Launched] = {}  # slot index -> its run
    threads = cpu_threads_per_run(devices)
    preexec = _parent_death_signal()
    try:
        while pending or running:
            for slot, device in enumerate(devices):
                if slot in running or not pending:
                    continue
                point = pending.pop(0)
                launch_id = uuid.uuid4().hex
                env = {**os.environ, LAUNCH_ENV: launch_id}
                if device is not None:
                    env["CUDA_VISIBLE_DEVICES"] = device
                if on_the_cpu(device) and threads is not None:
                    env["OMP_NUM_THREADS"] = str(threads)
                log_file = log_path(point)
                log_file.parent.mkdir(parents=True, exist_ok=True)
                with open(log_file, "ab") as out:
                    out.write(f"{ATTEMPT_MARK} {launch_id}\n".encode())
                    out.flush()
                    process = subprocess.Popen(command(point), stdout=out,
                                               stderr=subprocess.STDOUT, env=env,
                                               stdin=subprocess.DEVNULL, preexec_fn=preexec,
                                               start_new_session=True)
                running[slot] = Launched(point, device, process, launch_id)
                on_start(point, device)
            for slot, launched in list(running.items()):
                code = launched.process.poll()
                if code is not None:
                    del running[slot]
                    on_end(launched.point, launched.device, code, launched.launch_id)
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        stop_children([launched.process for launched in running.values()])
        raise


def stop_children(processes: Sequence[subprocess.Popen], wait_s: float = 120.0) -> None:
    """One SIGTERM to each child (a second signal would cut its "interrupted" manifest
    short), then wait; SIGKILL a child that has not ended after `wait_s`. Further Ctrl-C or
    SIGTERM to the sweep meanwhile are ignored: it is already stopping."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT,
                                                                     signal.SIGTERM)}
    try:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# the sweep ----------------------------------------------------------------------------------

@contextlib.contextmanager
def folder_lock(sweep_dir: Path):
    """One sweep process per folder: an flock, released by the kernel if the process dies."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    handle = open(sweep_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise SweepError(f"{sweep_dir} is in use by {holder}: one sweep process per folder "
                         "(wait for it, or stop it)") from None
    handle.truncate(0)
    handle.write(f"sftlib sweep pid {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def last_error_line(log_file: Path) -> str:
    """The line the latest launch in a point's log ended with ("[run] FAILED: ..." or
    "sftlib: ..."), for the index; earlier attempts' lines above it are not read."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return ""
    latest = text.rsplit(ATTEMPT_MARK, 1)[-1].splitlines()[1:]
    lines = [line for line in latest if line.strip()]
    marked = [line for line in lines if line.startswith(("[run] FAILED", "sftlib:", "[run] "
                                                         "interrupted"))]
    return (marked or lines or [""])[-1][:500]


class Sweep:
    """The sweep folder and its index; `run()` runs what is missing."""

    def __init__(self, sweep_dir: Path, spec: dict[str, Any], points: list[Point],
                 notebooks: list[str] | None, log: Log = print) -> None:
        self.dir, self.spec, self.points, self.notebooks, self.log = (
            sweep_dir, spec, points, notebooks, log)
        self.index_path = sweep_dir / "sweep.json"
        self.entries: dict[str, dict[str, Any]] = {}
        self.launched = 0  # runs started by the last `run()`

    def check_spec(self) -> None:
        """A folder holding another sweep is never mixed into this one."""
        if not self.index_path.is_file():
            return
        try:
            earlier = json.loads(self.index_path.read_text()).get("spec")
        except (OSError, json.JSONDecodeError):
            raise SweepError(f"{self.index_path} is damaged; move it away to start this sweep "
                             "there, or use another --sweep-dir") from None
        if earlier != json.loads(json.dumps(self.spec)):
            raise SweepError(f"{self.dir} holds another sweep (its sweep.json has a different "
                             "grid, seeds or base config); use another --sweep-dir, or omit "
                             "it for a folder named after these arguments")

    def write_index(self, status: str) -> None:
        write_json_atomic(self.index_path, {
            "sweep": self.dir.name, "status": status, "pid": os.getpid(),
            "updated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "spec": self.spec, "points": [self.entries[p.id] for p in self.points]})

    def refresh(self) -> list[Point]:
        """Entries from the run folders on disk; returns the points still to run."""
        done = finished_runs(self.dir)
        todo = []
        for number, point in enumerate(self.points, start=1):
            found = done.get(point.id, {})
            status = found.get("status", "pending")
            self.entries[point.id] = {
                "number": number, "point": point.id, "group": point.group,
                "overrides": point.overrides, "seed": point.config.seed,
                "status": "ok" if status == "ok" else "pending", "run": found.get("run"),
                "attempts": attempts_of(self.dir, point.id)}
            if status != "ok":
                todo.append(point)
        return todo

    def refuse_live_runs(self, todo: Sequence[Point]) -> None:
        """A point whose earlier run is still going (its process alive: started by hand, or
        left by a sweep that could not stop it) is not started a second time."""
        for point in todo:
            live = [a for a in attempts_of(self.dir, point.id) if a["status"] == "running"]
            if live:
                raise SweepError(f"run {live[0]['run']} of point {point.label() or 'base'} "
                                 f"is still running (pid {live[0]['pid']}); wait for it or "
                                 "stop it, then run the sweep again")

    def command(self, point: Point) -> list[str]:
        config_file = self.dir / "configs" / f"{point.id}.json"
        point.config.save(config_file)
        command = [sys.executable, "-m", "sftlib", "run", "--config", str(config_file),
                   "--reports-dir", str(self.dir)]
        return command + (["--notebooks", *self.notebooks] if self.notebooks else [])

    def log_file(self, point: Point) -> Path:
        return self.dir / "logs" / f"{point.id}.log"

    def run(self, devices: Sequence[str | None]) -> dict[str, int]:
        """Runs every point not done yet; returns the count per final status."""
        with folder_lock(self.dir):
            self.check_spec()
            todo = self.refresh()
            self.refuse_live_runs(todo)
            total = len(self.points)
            self.log(f"[sweep] {self.dir}: {total} runs, {total - len(todo)} done, "
                     f"{len(todo)} to run" + (f", {describe_slots(devices)}" if todo else ""))
            self.launched = len(todo)
            self.write_index("running")

            def on_start(point: Point, device: str | None) -> None:
                entry = self.entries[point.id]
                entry.update(status="running", device=device, run=None)
                self.write_index("running")
                self.log(f"[sweep] {entry['number']}/{total} {point.label() or 'base'} ...")

            def on_end(point: Point, device: str | None, code: int, launch_id: str) -> None:
                entry = self.entries[point.id]
                entry["attempts"] = attempts_of(self.dir, point.id)
                # this launch's run: the manifest with its launch id (none if it failed
                # before creating a run folder)
                latest = next((a for a in entry["attempts"] if a["launch_id"] == launch_id),
                              {})
                ok = code == 0 and latest.get("status") == "ok"
                entry.update(status="ok" if ok else ("interrupted" if code == 130 else
                                                     "failed"), run=latest.get("run"))
                if not ok:
                    entry["error"] = last_error_line(self.log_file(point))
                self.write_index("running")
                self.log(f"[sweep] {entry['number']}/{total} {entry['status']}: "
                         f"{point.label() or 'base'} -> {entry['run']}"
                         + (f" ({entry['error']})" if not ok else ""))

            try:
                run_on_slots(todo, devices, self.command, self.log_file, on_start, on_end)
            except KeyboardInterrupt:
                for entry in self.entries.values():
                    if entry["status"] == "running":
                        entry["status"] = "interrupted"
                        entry["attempts"] = attempts_of(self.dir, entry["point"])
                self.write_index("interrupted")
                raise
            counts = {s: sum(e["status"] == s for e in self.entries.values())
                      for s in ("ok", "failed", "interrupted")}
            self.write_index("ok" if counts["ok"] == total else "failed")
            return counts


def preflight_inputs(points: Sequence[Point], log: Log) -> None:
    """The task's checks once per distinct (task, model, dataset, columns, subsets): a
    missing model or refused data stops the sweep before its first run."""
    from sftlib.tasks import get_task

    keys = ("task", "model", "dataset", "dataset_config", "text_column", "label_column",
            "train_subset", "eval_subset", "strict_data")
    seen = set()
    for point in points:
        signature = tuple(getattr(point.config, k) for k in keys)
        if signature in seen:
            continue
        seen.add(signature)
        log(f"[sweep] checking inputs: model {point.config.model!r}, dataset "
            f"{point.config.dataset!r}")
        get_task(point.config.task).preflight(point.config, lambda line: None)
