"""benchmarks/bench_teacher_labels.py: the closeness numbers by hand, and the script end to end
on a tiny teacher (both passes over the same texts, the ratio their rates make, the page and
the JSON it writes)."""

import json

import numpy as np
import pytest
from run_folders import save_tiny_classifier

from benchmarks import bench_teacher_labels


def test_closeness_by_hand():
    reference = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    other = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 1.0]])  # the last row's argmax flips
    close = bench_teacher_labels.closeness(reference, other, temperature=2.0)

    def softmax(row):
        return np.exp(row) / np.exp(row).sum()

    kl = [float((softmax(r / 2) * np.log(softmax(r / 2) / softmax(o / 2))).sum())
          for r, o in zip(reference, other)]
    assert close["argmax_agreement"] == pytest.approx(2 / 3)
    assert close["max_abs_logit_difference"] == 1.0
    assert close["mean_kl_at_temperature"] == pytest.approx(np.mean(kl))
    assert close["temperature"] == 2.0


@pytest.mark.slow
def test_the_bench_labels_the_same_texts_both_ways_and_writes_its_page(tiny_model_folder,
                                                                       tmp_path):
    teacher = save_tiny_classifier(tiny_model_folder, tmp_path / "run" / "model")
    out = tmp_path / "out"
    bench_teacher_labels.main(["--teacher", str(tmp_path / "run"), "--texts", "64",
                               "--output-dir", str(out)])
    result = json.loads((out / "bench_teacher_labels.json").read_text())
    rates, close = result["texts_per_s"], result["bf16_against_fp32"]
    assert result["meta"]["teacher"] == str(teacher)  # the run folder's model/
    assert result["meta"]["texts"] == 64 and result["meta"]["max_length"] == 64
    assert min(rates.values()) > 0
    assert result["bf16_speedup"] == pytest.approx(rates["bf16"] / rates["fp32"])
    # the same texts both ways: bf16 rounds, it does not relabel
    assert 0 < close["max_abs_logit_difference"] < 0.05
    assert close["argmax_agreement"] >= 0.9 and close["mean_kl_at_temperature"] >= 0
    validation = result["validation_accuracy"]
    assert validation["rows"] > 0 and 0 <= validation["bf16"] <= 1
    page = (out / "bench_teacher_labels.md").read_text()
    assert f"bf16 labels **{result['bf16_speedup']:.2f}x** as many texts" in page
    assert f"| fp32 | {rates['fp32']:.1f} |" in page
