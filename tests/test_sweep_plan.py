"""The sweep's plan and scheduling, without training: grids, points, refusals before any run,
one run per device at a time (real subprocesses standing in for runs), the folder lock."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftlib import search, sweep
from sftlib.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_grid_product_times_seeds():
    grid = sweep.parse_grid(["lr=3e-5,1e-4", "schedule=linear,cosine"])
    assert grid == {"lr": [3e-5, 1e-4], "schedule": ["linear", "cosine"]}
    points = sweep.build_points(RunConfig(seed=7), grid, seeds=2)
    assert len(points) == 8
    assert [p.overrides for p in points[:2]] == [{"lr": 3e-5, "schedule": "linear", "seed": 7},
                                                 {"lr": 3e-5, "schedule": "linear", "seed": 8}]
    assert len({p.id for p in points}) == 8  # every run its own point
    assert len({p.group for p in points}) == 4  # seeds share their config's group


def test_random_samples_are_distinct_points_of_the_grid_and_repeatable():
    grid = sweep.parse_grid(["lr=1e-5,3e-5,1e-4,3e-4", "warmup_ratio=0,0.06,0.1"])
    first = sweep.build_points(RunConfig(), grid, samples=5, sample_seed=3)
    again = sweep.build_points(RunConfig(), grid, samples=5, sample_seed=3)
    assert [p.id for p in first] == [p.id for p in again]
    assert len({p.id for p in first}) == 5
    with pytest.raises(ConfigError, match="--samples: between 1 and the grid's 12 points"):
        sweep.build_points(RunConfig(), grid, samples=13)


@pytest.mark.parametrize("items, message", [
    (["lrr=1e-4"], "--grid lrr: not a config key (did you mean lr?)"),
    (["output_dir=a,b"], "--grid output_dir: the sweep sets it"),
    (["lr=1e-4", "lr=3e-4"], "--grid lr: given twice"),
    (["lr="], "expected key=value1,value2"),
    (["lr=1e-4,1e-4"], "listed twice"),
    (["plot_interval_s=1,2"], "--grid plot_interval_s: only changes how a run is shown"),
])
def test_bad_grids_name_the_key(items, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        sweep.parse_grid(items)


def test_an_invalid_point_fails_before_any_run_naming_point_and_key():
    with pytest.raises(ConfigError, match=r"sweep point lr=2.0, schedule='linear': lr: must be"):
        sweep.build_points(RunConfig(), sweep.parse_grid(["lr=2", "schedule=linear"]))
    with pytest.raises(ConfigError, match="schedule: 'cosin' is not one of"):
        sweep.build_points(RunConfig(), sweep.parse_grid(["schedule=linear,cosin"]))
    with pytest.raises(ConfigError, match="--grid seed and --seeds"):
        sweep.build_points(RunConfig(), sweep.parse_grid(["seed=1,2"]), seeds=2)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_any_grid_text_is_a_grid_or_one_config_error(text):
    try:
        grid = sweep.parse_grid([text])
    except ConfigError:
        return
    key = text.partition("=")[0].strip()
    assert list(grid) == [key] and grid[key]


def test_cli_refuses_a_bad_grid_before_creating_anything(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sftlib", "sweep", "--grid", "lr=1e-4,7", "--seeds", "2",
         "--reports-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sftlib: config error: sweep point lr=7.0, seed=42: lr: must be > 0 and < 1, got 7.0 "
        "(AdamW diverges at 1 and above; 1e-5 to 1e-3 is usual)"]
    assert not list(tmp_path.iterdir())


def test_search_ranges_are_checked_at_both_ends():
    assert search.parse_ranges(["lr=1e-5:1e-3:log", "epochs=1:3"]) == {
        "lr": (1e-5, 1e-3, True), "epochs": (1, 3, False)}
    with pytest.raises(ConfigError, match="needs low < high"):
        search.parse_ranges(["lr=1e-3:1e-5"])
    with pytest.raises(ConfigError, match="--range lr: 2 is not a valid value"):
        search.check_space(RunConfig(), search.parse_ranges(["lr=1e-5:2"]), {})
    with pytest.raises(ConfigError, match="needs a space"):
        search.check_space(RunConfig(), {}, {})
    with pytest.raises(ConfigError, match="--range batch_size: an integer key"):
        search.check_space(RunConfig(), search.parse_ranges(["batch_size=8:32.5"]), {})
    with pytest.raises(ConfigError, match="do not also search the seed"):
        search.check_space(RunConfig(), search.parse_ranges(["seed=1:9"]), {}, seeds=2)


def test_search_draws_floats_for_float_keys_and_ints_for_int_keys():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = search.suggest(trial, search.parse_ranges(["warmup_ratio=0:1", "batch_size=8:64"]),
                            {"schedule": ["linear", "cosine"]})
    assert isinstance(values["warmup_ratio"], float) and 0 < values["warmup_ratio"] < 1
    assert isinstance(values["batch_size"], int) and values["schedule"] in ("linear", "cosine")


def test_a_search_never_writes_into_a_grid_sweep_or_another_study(tmp_path):
    grid_sweep = sweep.Sweep(tmp_path, {}, [], None)
    (tmp_path / "sweep.json").write_text(json.dumps({"spec": {}, "points": []}))
    with pytest.raises(sweep.SweepError, match="holds a grid sweep"):
        search.check_search_folder(grid_sweep, "mine")
    (tmp_path / "sweep.json").write_text(json.dumps({"search": "optuna", "study": "theirs"}))
    with pytest.raises(sweep.SweepError, match="--study theirs to continue that study"):
        search.check_search_folder(grid_sweep, "mine")
    search.check_search_folder(grid_sweep, "theirs")


# scheduling with real processes: each "run" records its device and when it ran ----------

RECORDER = """
import json, os, sys, time
began = time.time(); time.sleep(0.4)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"point": sys.argv[2], "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
                          "threads": os.environ.get("OMP_NUM_THREADS"),
                          "began": began, "ended": time.time()}) + "\\n")
"""


def _run_recorded(tmp_path, devices, count=5):
    record = tmp_path / "record.jsonl"
    points = sweep.build_points(RunConfig(), sweep.parse_grid(
        ["lr=" + ",".join(f"{i + 1}e-5" for i in range(count))]))
    events = []
    sweep.run_on_slots(points, devices,
                       command=lambda p: [sys.executable, "-c", RECORDER, str(record), p.id],
                       log_path=lambda p: tmp_path / "logs" / f"{p.id}.log",
                       on_start=lambda p, d: events.append(("start", p.id, d)),
                       on_end=lambda p, d, code, pid: events.append(("end", p.id, d, code)),
                       poll_s=0.05)
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    return points, runs, events


def _overlap(a, b):
    return a["began"] < b["ended"] and b["began"] < a["ended"]


def test_one_run_per_gpu_at_a_time(tmp_path):
    points, runs, events = _run_recorded(tmp_path, ["0", "1"])
    assert sorted(r["point"] for r in runs) == sorted(p.id for p in points)
    assert all(e[3] == 0 for e in events if e[0] == "end")
    for gpu in ("0", "1"):
        mine = [r for r in runs if r["gpu"] == gpu]
        assert mine, f"GPU {gpu} got no run"
        assert not any(_overlap(a, b) for i, a in enumerate(mine) for b in mine[i + 1:])
    assert any(_overlap(a, b) for a in runs if a["gpu"] == "0" for b in runs if b["gpu"] == "1")
    started = [e[1] for e in events if e[0] == "start"]
    assert started == [p.id for p in points]  # in order


def test_on_a_cpu_runs_go_one_at_a_time_with_the_environment_untouched(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _, runs, _ = _run_recorded(tmp_path, [None], count=3)
    assert all(r["gpu"] is None and r["threads"] is None for r in runs)
    assert not any(_overlap(a, b) for i, a in enumerate(runs) for b in runs[i + 1:])


def test_cpu_jobs_run_side_by_side_sharing_the_threads_with_gpus_hidden(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    _, runs, _ = _run_recorded(tmp_path, sweep.cuda_devices("cpu", cpu_jobs=2), count=4)
    assert {r["threads"] for r in runs} == {"4"} and {r["gpu"] for r in runs} == {""}
    assert any(_overlap(a, b) for i, a in enumerate(runs) for b in runs[i + 1:])


def test_devices_flag():
    assert sweep.cuda_devices("0,1,1") == ["0", "1"]
    assert sweep.cuda_devices("cpu") == [sweep.CPU_ONLY] == [""]  # GPUs hidden
    assert sweep.cuda_devices("cpu", cpu_jobs=2) == ["", ""]
    with pytest.raises(ConfigError, match="--jobs is for runs on the CPU"):
        sweep.cuda_devices("0,1", cpu_jobs=2)
    with pytest.raises(ConfigError, match="--jobs: between 1"):
        sweep.cuda_devices("cpu", cpu_jobs=0)
    with pytest.raises(ConfigError, match="--devices"):
        sweep.cuda_devices("gpu0")


def test_one_sweep_process_per_folder_and_no_mixing_of_sweeps(tmp_path):
    with sweep.folder_lock(tmp_path):
        with pytest.raises(sweep.SweepError, match="in use by sftlib sweep pid"):
            with sweep.folder_lock(tmp_path):
                pass
    base = RunConfig()
    spec_a = sweep.spec_of(base, {"lr": [1e-4]}, 1, None, 0, None)
    (tmp_path / "sweep.json").write_text(json.dumps({"spec": spec_a}))
    sweep.Sweep(tmp_path, spec_a, [], None).check_spec()
    spec_b = sweep.spec_of(base, {"lr": [3e-4]}, 1, None, 0, None)
    with pytest.raises(sweep.SweepError, match="holds another sweep"):
        sweep.Sweep(tmp_path, spec_b, [], None).check_spec()
    assert sweep.default_sweep_dir(spec_a, tmp_path) == sweep.default_sweep_dir(spec_a, tmp_path)
    assert sweep.default_sweep_dir(spec_a, tmp_path) != sweep.default_sweep_dir(spec_b, tmp_path)


SIGNAL_RECORDER = """
import signal, sys, time
def record(signum, frame):
    open(sys.argv[1], "a").write(signal.Signals(signum).name + "\\n"); sys.exit(130)
signal.signal(signal.SIGTERM, record)
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _signal_child(tmp_path, name, lifetime_s):
    record = tmp_path / f"{name}.signals"
    child = subprocess.Popen([sys.executable, "-c", SIGNAL_RECORDER, str(record),
                              str(lifetime_s)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child, record


def test_stopping_a_sweep_sends_each_run_one_sigterm_and_ignores_a_second_ctrl_c(tmp_path):
    first, first_record = _signal_child(tmp_path, "first", 60)
    second, second_record = _signal_child(tmp_path, "second", 60)
    previous = signal.getsignal(signal.SIGINT)
    original_send = subprocess.Popen.send_signal

    def send_and_press_ctrl_c(process, sig):  # the user presses Ctrl-C again meanwhile
        original_send(process, sig)
        os.kill(os.getpid(), signal.SIGINT)

    subprocess.Popen.send_signal = send_and_press_ctrl_c
    try:
        sweep.stop_children([first, second], wait_s=30)
    finally:
        subprocess.Popen.send_signal = original_send
    assert (first.returncode, second.returncode) == (130, 130)
    assert first_record.read_text() == second_record.read_text() == "SIGTERM\n"
    assert signal.getsignal(signal.SIGINT) is previous  # restored after


def test_a_killed_childs_run_is_not_mistaken_for_another_launch(tmp_path):
    """Launches are told apart by the id each gets, not by pid (pids are reused)."""
    points = sweep.build_points(RunConfig(), sweep.parse_grid(["lr=1e-4,3e-4"]))
    ids = []
    code = "import os, sys; open(sys.argv[1], 'a').write(os.environ['SFTLIB_LAUNCH_ID'] + '\\n')"
    sweep.run_on_slots(points, [None],
                       command=lambda p: [sys.executable, "-c", code, str(tmp_path / "ids")],
                       log_path=lambda p: tmp_path / f"{p.id}.log", on_start=lambda p, d: None,
                       on_end=lambda p, d, rc, launch: ids.append(launch), poll_s=0.05)
    assert (tmp_path / "ids").read_text().split() == ids and len(set(ids)) == 2
    assert all(f"{sweep.ATTEMPT_MARK} {launch}" in (tmp_path / f"{p.id}.log").read_text()
               for p, launch in zip(points, ids))


# the sweep's bookkeeping with stand-in runs: each writes the manifest a run would ----------

STAND_IN_RUN = """
import json, os, sys
config, reports = json.load(open(sys.argv[1])), sys.argv[2]
if config["lr"] == 0.5:
    print("[run] FAILED: notebook 03_fine_tuning failed in code cell 3: boom", flush=True)
    sys.exit(1)
with open(os.path.join(reports, "launched.txt"), "a") as out:
    out.write(str(config["lr"]) + "\\n")
folder = os.path.join(reports, "run-%s-%s" % (config["lr"], config["seed"]))
os.makedirs(folder)
json.dump({"run_id": os.path.basename(folder), "status": "ok", "pid": os.getpid(),
           "launch_id": os.environ["SFTLIB_LAUNCH_ID"], "config": dict(config, output_dir=folder)},
          open(os.path.join(folder, "manifest.json"), "w"))
"""


class StandInSweep(sweep.Sweep):
    """A Sweep whose runs are a few lines of Python instead of `sftlib run`."""

    def command(self, point):
        config_file = self.dir / "configs" / f"{point.id}.json"
        point.config.save(config_file)
        return [sys.executable, "-c", STAND_IN_RUN, str(config_file), str(self.dir)]


def _stand_in(folder, values="1e-4,0.5,3e-4"):
    grid = sweep.parse_grid([f"lr={values}"])
    points = sweep.build_points(RunConfig(), grid)
    spec = sweep.spec_of(RunConfig(), grid, 1, None, 0, None)
    return StandInSweep(folder, spec, points, None, log=lambda _line: None)


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    counts = _stand_in(tmp_path).run([None])
    assert counts == {"ok": 2, "failed": 1, "interrupted": 0}
    index = json.loads((tmp_path / "sweep.json").read_text())
    assert index["status"] == "failed"
    failed = [p for p in index["points"] if p["status"] == "failed"]
    assert [p["overrides"] for p in failed] == [{"lr": 0.5}]
    assert failed[0]["error"] == ("[run] FAILED: notebook 03_fine_tuning failed in code cell 3: "
                                  "boom")
    assert (tmp_path / "launched.txt").read_text().split() == ["0.0001", "0.0003"]


def test_a_rerun_runs_only_what_failed_or_died(tmp_path):
    _stand_in(tmp_path).run([None])
    died = tmp_path / "run-0.0001-42"  # as a SIGKILL leaves it: running, its process gone
    manifest = json.loads((died / "manifest.json").read_text())
    manifest.update(status="running", pid=2**22 + 12345)
    (died / "manifest.json").write_text(json.dumps(manifest))
    died.rename(tmp_path / "run-killed")
    (tmp_path / "launched.txt").unlink()
    counts = _stand_in(tmp_path).run([None])
    assert counts["ok"] == 2 and counts["failed"] == 1
    assert (tmp_path / "launched.txt").read_text().split() == ["0.0001"]  # not 3e-4 again
    index = json.loads((tmp_path / "sweep.json").read_text())
    point = next(p for p in index["points"] if p["overrides"] == {"lr": 0.0001})
    assert [(a["run"], a["status"]) for a in point["attempts"]] == [
        ("run-0.0001-42", "ok"), ("run-killed", "died")]
