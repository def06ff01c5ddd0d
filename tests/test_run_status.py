"""A run always ends as ok, failed or interrupted; a run whose process vanished is "died"."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sftlib import pipeline

ROOT = Path(__file__).resolve().parents[1]


def test_a_running_manifest_with_a_dead_process_is_reported_as_died(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert pipeline.run_status({"status": "running", "pid": gone.pid}) == "died"
    assert pipeline.run_status({"status": "running", "pid": pipeline.os.getpid()}) == "running"
    assert pipeline.run_status({"status": "ok", "pid": gone.pid}) == "ok"
    run = tmp_path / "20260101-000000-abcdef"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"status": "running", "pid": gone.pid,
                                                   "config": {"task": "classification"}}))
    result = subprocess.run([sys.executable, "-m", "sftlib", "runs", "--reports-dir",
                             str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "died" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_says_so_in_one_line_and_in_its_manifest(tmp_path, signum):
    reports = tmp_path / "reports"
    # a user's shell starts the run with Ctrl-C at its default; a pytest worker may not (a run
    # under xdist once finished with 0 and printed nothing, as if the signal never came)
    process = subprocess.Popen(
        [sys.executable, "-m", "sftlib", "run", "--notebooks", "01", "--reports-dir",
         str(reports), "--set", "train_subset=200", "--set", "eval_subset=50"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while not list(reports.glob("*/notebooks")) and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until a notebook is executing
    time.sleep(2)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (stderr, stdout[-2000:], signal.getsignal(signal.SIGINT))
    assert stderr.strip().splitlines() == [stderr.strip()] and "interrupted" in stderr
    assert "Traceback" not in stderr + stdout
    manifest = json.loads(next(reports.glob("*/manifest.json")).read_text())
    assert manifest["status"] == "interrupted" and manifest["finished_utc"]
    assert (next(reports.iterdir()) / "index.html").is_file()
