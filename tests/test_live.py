"""Live plots: metrics log, text fallback, redraw from metrics.jsonl for comparison."""

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftlib import live


def _records():
    rows = []
    for step in range(1, 21):
        rows.append({"step": step, "epoch": step / 20, "loss": 0.7 - step * 0.01,
                     "learning_rate": 1e-4 * (1 - step / 20), "grad_norm": 1.0,
                     "samples_per_s": 50.0, "tokens_per_s": 1400.0})
        if step % 10 == 0:
            rows.append({"step": step, "eval_loss": 0.6, "eval_accuracy": 0.7 + step / 100})
    return rows


def test_ema_smooths_and_keeps_first_value():
    values = pd.Series([1.0, 0.0, 0.0, 0.0])
    smoothed = live.ema(values, weight=0.5)
    assert smoothed.iloc[0] == 1.0 and 0 < smoothed.iloc[-1] < smoothed.iloc[1] < 1


def test_plot_metrics_compares_runs(tmp_path):
    paths = {}
    for name in ("run-a", "run-b"):
        path = tmp_path / name / "metrics.jsonl"
        path.parent.mkdir()
        path.write_text("\n".join(json.dumps(r) for r in _records()) + "\n")
        paths[name] = path
    fig = live.plot_metrics(list(paths.values()))
    axes = fig.axes
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes][:3] == ["Loss (cross-entropy)", "Validation accuracy",
                                                   "Learning rate"]
    assert all(ax.get_xlabel() == "optimizer step" and ax.get_ylabel() for ax in axes)
    assert len(axes[1].get_lines()) == 2  # one validation curve per run
    assert {t.get_text() for t in axes[1].get_legend().get_texts()} == {"run-a", "run-b"}
    plt.close(fig)


def test_text_line_is_concise():
    line = live._text_line({"step": 12, "epoch": 0.5, "loss": 0.5123, "learning_rate": 5e-5,
                            "samples_per_s": 48.2, "eval_accuracy": 0.81}, "accuracy")
    assert line == ("step    12 | epoch 0.50 | loss 0.5123 | lr 5.00e-05 | 48.2 samples/s | "
                    "accuracy 0.8100")


@pytest.mark.slow
def test_headless_training_prints_lines_and_writes_log(tmp_path, tiny_config):
    from sftlib import train

    printed = []
    cfg = tiny_config.replace(output_dir=str(tmp_path))
    run = train.prepare_training(cfg, tmp_path, notebook=False, log_fn=printed.append)
    run.trainer.train()
    records = live.read_metrics(tmp_path / "metrics.jsonl")
    assert records["loss"].notna().sum() >= 4 and records["eval_accuracy"].notna().sum() == 2
    assert any(line.startswith("step ") and "samples/s" in line for line in printed)
    assert run.live.redraws == 0  # no notebook, no figure redraws
    assert (tmp_path / "figures" / "training.png").stat().st_size > 5000


@settings(max_examples=200, deadline=None)
@given(cost=st.floats(0.01, 2.0), log_every=st.floats(0.05, 5.0),
       duration=st.floats(60.0, 3600.0), max_share=st.floats(0.005, 0.25),
       interval=st.floats(0.0, 5.0))
def test_redraws_stay_within_their_share_of_training_time(cost, log_every, duration, max_share,
                                                          interval):
    # a training run simulated on a clock: a log every `log_every` s, each draw `cost` s
    now, last_draw, plot_seconds, last_cost, draws = 0.0, float("-inf"), 0.0, 0.0, 0
    while now < duration:
        now += log_every
        if live.draw_due(now, now - last_draw, plot_seconds, last_cost, interval, max_share):
            if draws == 0:
                assert now == log_every  # the first log is drawn at once
            now += cost
            plot_seconds, last_cost, last_draw, draws = plot_seconds + cost, cost, now, draws + 1
    plot_seconds += cost  # the closing draw at the end of training, always made
    # within the share but for the closing draw (and a first draw larger than the whole budget)
    assert plot_seconds / now <= max(max_share, cost / now) + cost / now + 1e-12
    # and it does not starve: with room for many draws, it makes many
    if max_share * duration > 20 * cost and duration > 20 * (log_every + interval + cost):
        assert draws >= 5
