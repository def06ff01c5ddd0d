"""Kill and resume: `sftlib train --resume` after a SIGKILL ends where an uninterrupted run
ends (every metric but the timings, exactly, on CPU); the training log survives a
half-written last line.

The killed runs are real `sftlib train` processes. Each one is made to pause at an exact
point (a patched Trainer method writes a marker file and sleeps), and the test then kills
it from outside with SIGKILL: no polling race, no chance to clean up, as with a crash or a
lost machine.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sftlib import live, train

ROOT = Path(__file__).resolve().parents[1]
# On the tiny random BERT (tests/conftest.py): what is checked is the bookkeeping of a resumed
# run, which does not depend on the model's size; its checkpoints are small to write.
# 16 rows in batches of 4: 4 steps an epoch, so steps 5-8 are epoch 1 and 9-10 epoch 2;
# checkpoints (with an evaluation) at 3, 6, 9 and 10 (the last step), training-loss records
# at 1, 2, 4, 6, 8, 10: checkpoint-3 and -9 fall between two of them.
SETTINGS = {"train_subset": 16, "eval_subset": 16, "batch_size": 4, "max_steps": 10,
            "eval_strategy": "steps", "eval_steps": 3, "logging_steps": 2, "max_length": 64}
# Kill points: (step at which the process pauses, what it is doing, the checkpoint the
# resumed run continues from).
KILL_POINTS = {
    # step 9's gradients computed, the optimizer not stepped; its log already holds the
    # records of steps 7-8, past checkpoint-6 (which is in the middle of epoch 1)
    "mid-step": (8, 6),
    # checkpoint-6 has its weights but no optimizer, trainer_state.json or run_config.json;
    # the resumed run starts from checkpoint-3, one step past a training-loss record
    "mid-checkpoint-write": (6, 3),
    # the last checkpoint is complete, the model not yet saved: nothing is left to train
    "after-last-checkpoint": (10, 10),
}
# metrics.json values that measure this process's speed, not the training: left out
NOT_REPRODUCED = {"runtime_s": "wall time of the train() call",
                  "samples_per_s": "speed of the train() call",
                  "plot_share_of_training": "a share of wall time"}
# metrics.jsonl keys that are timings (`live` adds time_s, samples_per_s, tokens_per_s;
# Trainer adds <prefix>_runtime, <prefix>_samples_per_second, <prefix>_steps_per_second)
TIMING_KEYS = ("time_s", "samples_per_s", "tokens_per_s")
TIMING_SUFFIXES = ("_runtime", "_per_second")

PAUSE_MARKER = "paused-for-kill"


def pause_at(point: str, step: int, marker: str) -> None:
    """In the child process: patch Trainer so that it pauses at `point` of `step` (writes
    `marker`, then sleeps until killed)."""
    from transformers import Trainer

    from sftlib.train import WorkbenchTrainer

    def pause(trainer) -> None:
        if trainer.state.global_step == step:
            Path(marker).write_text(point)
            time.sleep(600)

    def wrap(owner, name, before: bool) -> None:
        original = getattr(owner, name)

        def paused(self, *args, **kwargs):
            if before:
                pause(self)
            result = original(self, *args, **kwargs)
            if not before:
                pause(self)
            return result

        setattr(owner, name, paused)

    if point == "mid-step":  # after the backward pass of the step after `step`
        wrap(WorkbenchTrainer, "training_step", before=False)
    elif point == "mid-checkpoint-write":  # the weights are written, the rest is not
        wrap(Trainer, "_save_optimizer_and_scheduler", before=True)
    else:  # after the whole checkpoint, run_config.json included
        wrap(WorkbenchTrainer, "_save_checkpoint", before=False)


def _train_cmd(output_dir: Path, model: Path) -> list[str]:
    settings = {**SETTINGS, "model": model}
    args = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return ["train", *args, "--output-dir", str(output_dir)]


def _run_sftlib(argv: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "sftlib", *argv], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _run_until_killed(output_dir: Path, model: Path, point: str, step: int) -> str:
    """`sftlib train` into output_dir, SIGKILLed once it pauses at the kill point; its
    stdout."""
    marker = output_dir.parent / f"{output_dir.name}.{PAUSE_MARKER}"
    child = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import test_resume; "
             f"test_resume.pause_at({point!r}, {step}, {str(marker)!r}); "
             f"from sftlib.__main__ import main; sys.exit(main({_train_cmd(output_dir, model)!r}))")
    stdout = output_dir.parent / f"{output_dir.name}.stdout"
    with open(stdout, "w") as out:
        process = subprocess.Popen([sys.executable, "-c", child], stdout=out,
                                   stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert process.poll() is None, f"exited before {point}: {stdout.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"never reached {point}"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    return stdout.read_text()


def _comparable_records(folder: Path) -> list[dict]:
    return [{key: value for key, value in record.items()
             if key not in TIMING_KEYS and not key.endswith(TIMING_SUFFIXES)}
            for record in live.read_records(folder / "metrics.jsonl")]


def _comparable_metrics(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    training = {key: value for key, value in metrics["training"].items()
                if key not in NOT_REPRODUCED}
    # the same checkpoint, in another folder
    training["best_checkpoint"] = Path(training["best_checkpoint"]).name
    return {**metrics, "training": training}


@pytest.fixture(scope="session")  # one build per worker (tests/conftest.py)
def uninterrupted(tmp_path_factory, tiny_model_folder) -> Path:
    """One uninterrupted run that every kill point is compared with."""
    folder = tmp_path_factory.mktemp("uninterrupted") / "run"
    _run_sftlib(_train_cmd(folder, tiny_model_folder))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted, point,
                                                         tiny_model_folder):
    step, resumed_from = KILL_POINTS[point]
    killed = tmp_path / "killed"
    if point == "mid-step":  # the folder holds an earlier run, which is kept, not overwritten
        killed.mkdir()
        for name in ("metrics.json", "metrics.jsonl", "figures/training.png"):
            (killed / name).parent.mkdir(exist_ok=True)
            (killed / name).write_bytes((uninterrupted / name).read_bytes())
    printed = _run_until_killed(killed, tiny_model_folder, point, step)

    newest = train.complete_checkpoints(killed / "checkpoints")[0]
    assert newest.name == f"checkpoint-{resumed_from}"
    assert not (killed / "model").exists()
    if point == "mid-step":
        archive, = killed.glob("previous-*")
        assert "held an earlier run" in printed and str(archive) in printed
        for name in ("metrics.json", "metrics.jsonl", "figures/training.png"):
            assert (archive / name).read_bytes() == (uninterrupted / name).read_bytes()
        assert max(r["step"] for r in live.read_records(killed / "metrics.jsonl")) > 6
        # a kill in the middle of writing a line of the log
        with open(killed / "metrics.jsonl", "a") as log:
            log.write('{"step": 9, "max_steps": 10, "epoch": 2.2')
    if point == "mid-checkpoint-write":
        incomplete = killed / "checkpoints" / "checkpoint-6"
        assert incomplete.is_dir() and not (incomplete / "trainer_state.json").exists()
    if point == "after-last-checkpoint":  # the run folder moved before it was resumed
        killed = killed.rename(tmp_path / "moved")

    _run_sftlib(_train_cmd(killed, tiny_model_folder) + ["--resume"])
    assert _comparable_metrics(killed) == _comparable_metrics(uninterrupted)
    assert _comparable_records(killed) == _comparable_records(uninterrupted)
    assert not (killed / "checkpoints" / "checkpoint-11").exists()


def test_a_half_written_last_line_of_the_log_is_skipped(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 0.7}\n\n{"step": 2, "loss": 0.6}\n{"step": 3, "lo')
    assert live.read_records(log) == [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}]
    log.write_bytes(b'{"step": 1, "loss": 0.7}\n{"step": 2, "lo\xe2\x82')  # cut in a character
    assert live.read_records(log) == [{"step": 1, "loss": 0.7}]


def test_a_damaged_line_inside_the_log_is_an_error_naming_it(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "lo\n{"step": 3, "loss": 0.6}\n')
    with pytest.raises(ValueError, match=rf"{log}, line 2: not a JSON record"):
        live.read_records(log)


def test_resuming_keeps_the_log_up_to_the_checkpoint(tmp_path):
    """Records after the checkpoint's step go, and so do the closing ones at its step
    (logged after the checkpoint was saved); a half-written last line goes too."""
    log = tmp_path / "metrics.jsonl"
    kept = [{"step": 2, "loss": 0.7}, {"step": 3, "eval_loss": 0.6},
            {"step": 4, "loss": 0.5}, {"step": 4, "eval_loss": 0.5}]
    dropped = [{"step": 4, "train_loss": 0.6, "train_runtime": 1.0},
               {"step": 4, "validation_loss": 0.5}, {"step": 5, "loss": 0.4}]
    log.write_text("".join(json.dumps(r) + "\n" for r in kept + dropped) + '{"step": 6, "l')
    callback = live.LivePlotCallback(log)
    callback._keep_records_up_to(4)
    assert callback.records == kept and live.read_records(log) == kept
    assert log.read_text().endswith("}\n")


def test_length_grouped_order_is_a_function_of_seed_and_epoch():
    lengths = list(range(1, 65))
    sampler = train.EpochSeededLengthGroupedSampler(4, lengths, seed=7)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    again = train.EpochSeededLengthGroupedSampler(4, lengths, seed=7)
    again.set_epoch(1)
    assert sorted(first) == sorted(second) == list(range(64)) and first != second
    assert list(again) == second  # whatever the global RNG did in between

