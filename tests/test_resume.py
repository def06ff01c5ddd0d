"""Resume: the training log survives a half-written last line and continues from the
checkpoint."""

import json

import pytest

from sftlib import live


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
