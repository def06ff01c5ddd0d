"""Benchmark scripts: the GPU script runs (tiny, on CPU); the summary arithmetic is right."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # runs a model: the full tier, not the inner loop
def test_gpu_script_smoke_runs_on_cpu(tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--smoke"], cwd=ROOT,
                            env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "benchmarks_gpu.json").read_text())["results"]
    assert rows and rows[0]["samples_per_s"] > 0 and 0 < rows[0]["share_of_peak"] < 1


def test_flops_per_token_counts_dense_weights_and_attention():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_gpu
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=2)
    model = BertForSequenceClassification(config)
    dense = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    assert bench_gpu.flops_per_token(model, config, 16) == 6 * dense + 12 * 2 * 32 * 16


def test_summary_medians_and_ratios():
    from benchmarks.bench_train import markdown, summarize

    def row(samples, tokens):
        return {"samples_per_s": samples, "tokens_per_s": tokens, "peak_mem_mb": 100.0,
                "achieved_flops": 1e9, "matmul_fp32_flops": 1e11, "matmul_bf16_flops": 2e11}

    speed = {"tutorial": [row(1, 10), row(2, 20), row(30, 300)],
             "plain": [row(10, 100), row(20, 200), row(30, 300)],
             "sftlib": [row(60, 600), row(40, 400), row(50, 500)]}
    summary = summarize(speed, {"sftlib": {"accuracy": 0.8, "macro_f1": 0.79}})
    assert summary["recipes"]["tutorial"]["samples_per_s"] == 2  # the median, not the mean
    assert summary["ratios"]["sftlib/tutorial"]["samples_per_s"] == pytest.approx(25.0)
    assert summary["ratios"]["sftlib/plain"]["tokens_per_s"] == pytest.approx(2.5)
    assert summary["recipes"]["sftlib"]["mfu_fp32"] == pytest.approx(0.01)
    text = markdown(summary, {"machine": "m", "date": "d", "reps": 3, "train_rows": 10})
    assert "| sftlib/tutorial | 25.00x | 25.00x |" in text and "0.8000" in text


def test_a_study_readme_averages_run_minutes_per_config():
    from benchmarks import sweep_report

    times = {"run_mean_s": 900.0}
    one = [{"config": "epochs=1.0", "run_s": s} for s in (600.0, 660.0)]
    assert sweep_report._mean_minutes(times, one) == "15.0 minutes a run on average"
    two = one + [{"config": "epochs=4.0", "run_s": 2400.0}]
    assert sweep_report._mean_minutes(times, two) == \
        "minutes a run on average: epochs=1.0: 10.5; epochs=4.0: 40.0"


def test_a_committed_study_holds_paths_relative_to_the_project(tmp_path):
    from benchmarks import sweep_report

    root = tmp_path / "project"
    notebook = tmp_path / "06.ipynb"
    notebook.write_text(json.dumps({"parameters": {"sweeps": [f"{root}/reports/sweep-a"],
                                                   "output": str(root),
                                                   "others": [f"{root}-old/x", f"/srv{root}/y"]}}))
    sweep_report.copy_relative(notebook, tmp_path / "copy.ipynb", root)
    assert json.loads((tmp_path / "copy.ipynb").read_text()) == {"parameters": {
        "sweeps": ["reports/sweep-a"], "output": ".",
        "others": [f"{root}-old/x", f"/srv{root}/y"]}}  # not paths under the root
    table = tmp_path / "runs.csv"
    table.write_bytes(f"run,config\r\nr1,teacher={root}/reports/t\r\n".encode())
    sweep_report.copy_relative(table, tmp_path / "copy.csv", root)
    assert (tmp_path / "copy.csv").read_bytes() == b"run,config\r\nr1,teacher=reports/t\r\n"
    figure = tmp_path / "curves.png"
    figure.write_bytes(f"{root}/x".encode())  # not text: copied as it is
    sweep_report.copy_relative(figure, tmp_path / "copy.png", root)
    assert (tmp_path / "copy.png").read_bytes() == figure.read_bytes()
