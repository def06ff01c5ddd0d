"""benchmarks/bench_quantize.py: the CPU line and the tables it writes (no model runs here)."""

import pandas as pd
import pytest

from benchmarks.bench_quantize import cpu_description, markdown_table
from sftlib import deploy


def test_cpu_description_names_the_int8_and_bf16_units(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\n"
                       "flags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_int8\n")
    assert cpu_description(str(cpuinfo)) == {
        "model": "Some CPU 9000", "cpus": cpu_description()["cpus"],
        "flags": ["avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8"]}
    cpuinfo.write_text("model name\t: AMD EPYC\ncpu family\t: 26\nmodel\t\t: 2\n"
                       "flags\t\t: avx512f avx512_bf16\n")  # a VM's bare name: the generation
    assert cpu_description(str(cpuinfo))["model"] == "AMD EPYC (family 26, model 2)"


def test_tables_compare_every_row_with_pytorch_fp32():
    table = pd.DataFrame(
        {"size_mb": [90.0, 60.0, 91.0, 22.5], "latency_ms_batch_1_p50": [10.0, 5, 8, 2.5],
         "latency_ms_batch_1_p95": [20.0, 9, 12, 4],
         "examples_per_s_batch_32": [200.0, 400, 300, 800],
         "accuracy": [0.8, 0.795, 0.8, 0.81], "agreement_with_fp32": [1, 0.97, 1, 0.98]},
        index=pd.Index(["PyTorch fp32", "PyTorch int8", "ONNX fp32", "ONNX int8"], name="model"))
    ratios = deploy.compare_to_fp32(table)
    assert ratios.loc["ONNX int8"].tolist() == pytest.approx([0.25, 4.0, 4.0, 1.0])
    metrics = deploy.deployment_metrics(table)
    assert metrics["onnx_int8_speedup_batch_1_p50"] == 4.0 and metrics["onnx_fp32_size_mb"] == 91
    assert (metrics["fp32_size_mb"], metrics["int8_size_mb"]) == (90, 60)  # earlier names
    text = markdown_table(ratios)
    assert text.splitlines()[0] == ("| model | size_ratio | speedup_batch_1_p50 | "
                                    "speedup_batch_32 | accuracy_change_points |")
    assert "| ONNX int8 | 0.25 | 4.00 | 4.00 | 1.00 |" in text
    assert "| PyTorch int8 | 60.0 | 5.00 | 9.00 | 400 | 0.7950 | 0.9700 |" in \
        markdown_table(table)
