"""`sftlib sweep --search optuna --trials N`: hyper-parameter search with Optuna, every trial
an ordinary run folder in the sweep folder (so `sftlib compare` reads them like a grid's).

    sftlib sweep --search optuna --trials 20 --range lr=1e-5:1e-3:log \\
        --range warmup_ratio=0:0.2 --grid schedule=linear,cosine [--seeds 2]

The space: `--range key=low:high` (a float, or an int when both ends are integers; `:log`
samples on a log scale) and `--grid key=a,b` (categorical). Each trial's config is checked
like any RunConfig; the objective is its run's validation `metric_for_best` (the mean over
`--seeds` seeds when several), maximized (minimized for loss). The sampler is Optuna's TPE,
seeded with `--sample-seed` mixed with the worker's host and pid, so that workers sharing a
study (or a resumed study) do not draw the same start-up trials.

The study lives in an RDB storage: `sqlite:///<sweep folder>/optuna.db` by default, or any
SQLAlchemy URL with `--storage` (PostgreSQL or MySQL for several machines). `--trials N` is
the study's total: each worker started with the same `--storage` and `--study` pulls trials
until the study's complete and running trials together reach N (Optuna's
`MaxTrialsCallback`; workers starting at the same moment can each take one more). Re-running
the command continues the study, e.g. to replace trials that failed. A worker that dies
leaves its trial RUNNING; the storage's heartbeat marks it failed after the grace period and
Optuna retries it once (`RetryHeartbeatStaleTrialCallback`).

Not supported: pruning inside a run (a trial is a whole run: learning curves are not
reported to Optuna), multi-objective search, search spaces that depend on other values.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sftlib.config import ConfigError, RunConfig, parse_overrides
from sftlib.report import write_json_atomic
from sftlib.sweep import Log, Point, Sweep, SweepError, build_points, run_on_slots

HEARTBEAT_S = 60  # a trial's worker reports alive this often ...
GRACE_S = 180  # ... and its trial is failed (then retried once) after this much silence


def parse_ranges(items: Sequence[str]) -> dict[str, tuple[Any, Any, bool]]:
    """`["lr=1e-5:1e-3:log", "warmup_ratio=0:0.2"]` -> {"lr": (1e-05, 0.001, True), ...}."""
    ranges: dict[str, tuple[Any, Any, bool]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, parts = key.strip(), raw.split(":")
        log = parts[-1].strip() == "log"
        ends = parts[:-1] if log else parts
        if not sep or len(ends) != 2 or key in ranges:
            raise ConfigError(f"--range {item!r}: expected key=low:high or key=low:high:log, "
                              "each key once")
        if key not in RunConfig.field_names():
            raise ConfigError(f"--range {key}: not a config key; `sftlib run --help` lists them")
        low, high = (_number(parse_overrides([f"{key}={end}"])[key]) for end in ends)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
            raise ConfigError(f"--range {key}: low and high must be numbers, got {raw!r}")
        if not low < high or (log and low <= 0):
            raise ConfigError(f"--range {key}: needs low < high (and low > 0 with :log), "
                              f"got {raw!r}")
        ranges[key] = (low, high, log)
    return ranges


def _number(value: Any) -> Any:
    """YAML reads 1e-5 as text: a number written so is the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def check_space(base: RunConfig, ranges: dict[str, tuple[Any, Any, bool]],
                grid: dict[str, list[Any]], seeds: int = 1) -> None:
    """Both ends of every range and every grid value make a valid config (with the base);
    an integer key takes integer ends; the seed is searched or repeated, not both."""
    if not ranges and not grid:
        raise ConfigError("--search optuna needs a space: --range key=low:high and/or "
                          "--grid key=a,b")
    overlap = set(ranges) & set(grid)
    if overlap:
        raise ConfigError(f"{', '.join(sorted(overlap))}: both --range and --grid; use one")
    if seeds > 1 and ("seed" in ranges or "seed" in grid):
        raise ConfigError("--seeds repeats each trial with seed, seed+1, ...; do not also "
                          "search the seed")
    for key, (low, high, _) in ranges.items():
        if _is_int_field(key) and not (isinstance(low, int) and isinstance(high, int)):
            raise ConfigError(f"--range {key}: an integer key; give integer ends, got "
                              f"{low!r}:{high!r}")
    for key, (low, high, _) in ranges.items():
        for value in (low, high):
            try:
                base.replace(**{key: value})
            except ConfigError as error:
                raise ConfigError(f"--range {key}: {value!r} is not a valid value: "
                                  f"{error}") from None
    build_points(base, grid)  # each grid value, the same check


def _is_int_field(key: str) -> bool:
    """A RunConfig field that takes an int and no float (batch_size; not epochs)."""
    import typing

    hint = typing.get_type_hints(RunConfig)[key]
    allowed = typing.get_args(hint) or (hint,)
    return int in allowed and float not in allowed


def suggest(trial, ranges: dict[str, tuple[Any, Any, bool]],
            grid: dict[str, list[Any]]) -> dict[str, Any]:
    """The trial's values for the space (floats, ints, categories)."""
    values: dict[str, Any] = {}
    for key, (low, high, log) in ranges.items():
        if _is_int_field(key):  # the field's type decides: warmup_ratio=0:1 is a float
            values[key] = trial.suggest_int(key, low, high, log=log)
        else:
            values[key] = trial.suggest_float(key, float(low), float(high), log=log)
    for key, choices in grid.items():
        values[key] = trial.suggest_categorical(key, choices)
    return values


def storage_for(url: str):
    """The RDB storage with heartbeats; SQLite waits for the file lock instead of failing
    when two workers write at once."""
    import optuna

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S, heartbeat_stale_trial_callback=(
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)))


def check_search_folder(sweep: Sweep, study_name: str) -> None:
    """A grid sweep's folder, or another study's, is not written into."""
    if not sweep.index_path.is_file():
        return
    try:
        index = json.loads(sweep.index_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise SweepError(f"{sweep.index_path} is damaged; use another --sweep-dir") from None
    other = index.get("study")
    if index.get("search") == "optuna" and other == study_name:
        return
    if index.get("search") == "optuna":
        raise SweepError(f"{sweep.dir} holds study {other!r}; use another --sweep-dir, or "
                         f"--study {other} to continue that study")
    raise SweepError(f"{sweep.dir} holds a grid sweep; use another --sweep-dir")


def open_study(url: str, study_name: str, direction: str, sample_seed: int):
    """Create the study or join it. Workers started together race to create the storage's
    tables and the study: the loser of a race tries again and finds them."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):
        try:
            return optuna.create_study(storage=storage_for(url), study_name=study_name,
                                       direction=direction, load_if_exists=True,
                                       sampler=optuna.samplers.TPESampler(seed=sample_seed))
        except SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def objective_value(sweep_dir: Path, run_name: str | None, metric: str) -> float | None:
    if not run_name:
        return None
    metrics_path = sweep_dir / run_name / "metrics.json"
    if not metrics_path.is_file():
        return None
    return json.loads(metrics_path.read_text()).get("validation", {}).get(metric)


def run_search(base: RunConfig, sweep: Sweep, ranges: dict[str, tuple[Any, Any, bool]],
               grid: dict[str, list[Any]], trials: int, storage: str | None, study_name: str,
               seeds: int = 1, sample_seed: int = 0, log: Log = print) -> dict[str, Any]:
    """Pull trials from the study until it holds `trials` complete ones; returns its best."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep.dir.mkdir(parents=True, exist_ok=True)
    check_search_folder(sweep, study_name)
    url = storage or f"sqlite:///{sweep.dir / 'optuna.db'}"
    direction = "minimize" if base.metric_for_best == "loss" else "maximize"
    worker = f"{socket.gethostname()}:{os.getpid()}"
    # workers sharing a study must not draw the same random start-up trials, nor a resumed
    # study the ones it drew before: each worker mixes its identity into the seed (so the
    # trials' values are not reproducible from --sample-seed; each run is, from its seed)
    seed = zlib.crc32(f"{sample_seed}:{worker}".encode())
    study = open_study(url, study_name, direction, seed)
    log(f"[search] study {study_name!r} in {_shown(url)}: {len(_complete(study))} of {trials} "
        f"trials complete; worker {worker}")

    def objective(trial) -> float:
        values = suggest(trial, ranges, grid)
        try:
            points = build_points(base, {k: [v] for k, v in values.items()}, seeds)
        except ConfigError as error:
            raise optuna.TrialPruned(f"invalid config: {error}") from None
        scores, names = [], []
        for point in points:
            name = _run_point(sweep, point, log)
            names.append(name)
            scores.append(objective_value(sweep.dir, name, base.metric_for_best))
        trial.set_user_attr("runs", names)
        trial.set_user_attr("worker", worker)
        if any(score is None for score in scores):
            raise RuntimeError(f"trial {trial.number}: a run failed (see {sweep.dir}/logs)")
        score = sum(scores) / len(scores)
        log(f"[search] trial {trial.number}: {_label(values)} -> validation "
            f"{base.metric_for_best} {score:.4f}")
        return score

    # a worker stops when complete + running trials reach `trials`: the ones in flight on
    # other workers count, so the study does not overshoot as each worker finishes
    callback = optuna.study.MaxTrialsCallback(
        trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING))
    missing = trials - len(_complete(study))
    if missing > 0:  # failed trials are retried, up to as many again as are missing
        study.optimize(objective, callbacks=[callback], catch=(RuntimeError,),
                       n_trials=2 * missing)
    write_search_index(sweep, study, url)
    best = study.best_trial if _complete(study) else None
    in_flight = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return {"study": study_name, "storage": _shown(url), "complete": len(_complete(study)),
            "running_elsewhere": len(in_flight),
            "best": None if best is None else {"number": best.number, "value": best.value,
                                                "params": best.params,
                                                "runs": best.user_attrs.get("runs")}}


def _complete(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())


def _shown(url: str) -> str:
    """The storage URL without its password."""
    from sqlalchemy.engine import make_url

    with contextlib.suppress(Exception):
        return make_url(url).render_as_string(hide_password=True)
    return url


def _run_point(sweep: Sweep, point: Point, log: Log) -> str | None:
    """One run of a trial, in the sweep folder; the run folder's name, or None if none."""
    from sftlib.sweep import attempts_of

    ended: dict[str, int] = {}
    run_on_slots([point], [None], sweep.command, sweep.log_file,
                 on_start=lambda p, d: log(f"[search] run {p.label()} ..."),
                 on_end=lambda p, d, code, launch: ended.update(code=code, launch=launch))
    mine = [a for a in attempts_of(sweep.dir, point.id)
            if a["launch_id"] == ended.get("launch")]
    if ended.get("code") != 0 or not mine or mine[0]["status"] != "ok":
        return None
    return mine[0]["run"]


def write_search_index(sweep: Sweep, study, url: str) -> None:
    """sweep.json from the study (every worker writes it; an flock keeps writes whole)."""
    points = []
    for trial in study.get_trials(deepcopy=False):
        for run in trial.user_attrs.get("runs") or []:
            points.append({"trial": trial.number, "state": trial.state.name,
                           "params": trial.params, "value": trial.value, "run": run,
                           "worker": trial.user_attrs.get("worker"),
                           "status": "ok" if run and trial.state.name == "COMPLETE"
                           else "failed"})
    with open(sweep.dir / ".index.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_json_atomic(sweep.index_path, {
            "sweep": sweep.dir.name, "search": "optuna", "study": study.study_name,
            "storage": _shown(url), "spec": sweep.spec, "points": points})
