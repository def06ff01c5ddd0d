"""The comparison of runs on constructed run folders: grouping by config, mean ± std,
paired tests whose counts match statsmodels, what is left out and why."""

import json

import numpy as np
import pandas as pd
import pytest
from run_folders import write_run
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from sftlib import compare
from sftlib.compare import CompareConfig, CompareError

ROWS = 400


def correctness(seed: int, accuracy: float) -> np.ndarray:
    return np.random.default_rng(seed).random(ROWS) < accuracy


@pytest.fixture
def two_configs(tmp_path):
    """lr 1e-4 clearly ahead of lr 3e-5, 3 seeds each, plus a failed run."""
    folder = tmp_path / "runs"
    for seed in (42, 43, 44):
        good = correctness(seed, 0.9)
        weak = good & (np.random.default_rng(seed + 100).random(ROWS) < 0.85)
        for lr, right in ((1e-4, good), (3e-5, weak)):
            write_run(folder / f"lr{lr}-s{seed}", {"validation": right, "test": right},
                      lr=lr, seed=seed)
    write_run(folder / "crashed", {"validation": correctness(1, 0.5)}, status="failed",
              lr=3e-4, seed=42)
    return folder


def test_groups_tables_and_ranking(two_configs):
    result = compare.compare(CompareConfig(runs=[str(two_configs)], bootstrap_resamples=300))
    assert list(result.groups) == ["lr=0.0001", "lr=3e-05"] or \
        sorted(result.groups) == ["lr=0.0001", "lr=3e-05"]
    assert result.best == "lr=0.0001"
    assert result.skipped == [{"run": "crashed", "reason": "status failed"}]
    configs = compare.config_table(result.groups)
    assert list(configs.columns) == ["lr", "seeds", "runs"]  # only the key that differs
    assert configs.loc["lr=3e-05", "seeds"] == "42, 43, 44"
    accuracies = [json.loads((two_configs / f"lr0.0001-s{s}" / "metrics.json").read_text())
                  ["validation"]["accuracy"] for s in (42, 43, 44)]
    summary = result.summary.loc["lr=0.0001"]
    assert summary[("validation", "accuracy", "mean")] == pytest.approx(np.mean(accuracies))
    assert summary[("validation", "accuracy", "std")] == pytest.approx(np.std(accuracies,
                                                                              ddof=1))
    table = compare.metrics_table(result.summary)
    assert table.loc["lr=0.0001", "validation accuracy"] == \
        f"{np.mean(accuracies):.4f} ± {np.std(accuracies, ddof=1):.4f}"
    assert table.loc["lr=0.0001", "seeds"] == 3


def test_mcnemar_counts_and_p_values_match_statsmodels(two_configs):
    result = compare.compare(CompareConfig(runs=[str(two_configs)], bootstrap_resamples=300))
    table = result.significance["validation"]
    assert list(table["scope"]) == ["seed 42", "seed 43", "seed 44", "pooled (3 seed pairs)"]
    pooled_b = pooled_c = 0
    for seed, row in zip((42, 43, 44), table.itertuples()):
        best = pd.read_csv(two_configs / f"lr0.0001-s{seed}" / "predictions" / "validation.csv")
        other = pd.read_csv(two_configs / f"lr3e-05-s{seed}" / "predictions" / "validation.csv")
        b = int((best["correct"] & ~other["correct"]).sum())
        c = int((~best["correct"] & other["correct"]).sum())
        assert (row.only_a_right, row.only_b_right) == (b, c)
        assert row.p_value == pytest.approx(
            statsmodels_mcnemar([[0, b], [c, 0]], exact=True).pvalue, rel=1e-9)
        pooled_b, pooled_c = pooled_b + b, pooled_c + c
    assert set(table["test"][:3]) == {"McNemar exact"}
    pooled = table.iloc[-1]
    assert (pooled.only_a_right, pooled.only_b_right) == (pooled_b, pooled_c)
    # pooled over seed pairs scored on the same rows, p comes from the bootstrap: McNemar
    # on the summed counts would be far smaller (each row counted once per seed)
    assert pooled.test == "bootstrap"
    assert pooled.p_value > statsmodels_mcnemar([[0, pooled_b], [pooled_c, 0]],
                                                exact=True).pvalue
    assert pooled.verdict == "better"
    assert any(line.startswith("validation: lr=0.0001 is better than lr=3e-05")
               for line in result.verdicts())


def test_seeds_of_one_recipe_are_not_distinguishable(tmp_path):
    """Two 'configs' that are the same recipe (a no-op key differs): the verdict must not
    call one better."""
    rng = np.random.default_rng(7)
    easy = rng.random(ROWS) < 0.85
    for seed in (1, 2, 3):
        for decay in (0.01, 0.0100001):
            noise = np.random.default_rng([seed, int(decay * 1e7)]).random(ROWS) < 0.03
            write_run(tmp_path / f"wd{decay}-{seed}", {"validation": easy ^ noise},
                      weight_decay=decay, seed=seed)
    result = compare.compare(CompareConfig(runs=[str(tmp_path)], bootstrap_resamples=500))
    assert result.significance["validation"].iloc[-1]["verdict"] == "not distinguishable from"


def test_runs_scored_on_other_rows_are_not_paired(tmp_path):
    write_run(tmp_path / "a", {"validation": correctness(1, 0.9)}, lr=1e-4)
    write_run(tmp_path / "b", {"validation": correctness(2, 0.8)}, lr=3e-5,
              texts=[f"another review {i}" for i in range(ROWS)])
    result = compare.compare(CompareConfig(runs=[str(tmp_path / "a"), str(tmp_path / "b")],
                                           bootstrap_resamples=200))
    row = result.significance["validation"].iloc[0]
    assert row["scope"] == "not tested" and "different validation rows" in row["verdict"]


def test_nothing_to_compare_is_one_clear_error(tmp_path):
    with pytest.raises(CompareError, match="no such folder"):
        compare.compare(CompareConfig(runs=[str(tmp_path / "nope")]))
    write_run(tmp_path / "died", {"validation": correctness(1, 0.9)}, status="failed")
    with pytest.raises(CompareError, match="no finished run"):
        compare.compare(CompareConfig(runs=[str(tmp_path)]))
    with pytest.raises(CompareError, match="alpha"):
        CompareConfig(alpha=1.5)


def test_loss_ranks_lowest_first(two_configs):
    result = compare.compare(CompareConfig(runs=[str(two_configs)], metric="loss",
                                           bootstrap_resamples=200))
    means = [result.summary.loc[c, ("validation", "loss", "mean")] for c in result.ranking]
    assert means == sorted(means)


def test_outputs_written_and_never_overwritten(two_configs, tmp_path):
    result = compare.compare(CompareConfig(runs=[str(two_configs)], bootstrap_resamples=200))
    saved = compare.write_outputs(result, tmp_path / "out")
    data = json.loads(saved.read_text())
    assert data["best"] == "lr=0.0001" and data["ranking"][0] == data["best"]
    assert {p.name for p in (tmp_path / "out" / "tables").iterdir()} == {
        "configs.csv", "metrics.csv", "significance_validation.csv", "significance_test.csv"}
    sweep = tmp_path / "sweep"
    (sweep / "comparison").mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    assert compare.default_output_dir([str(sweep)]) == sweep / "comparison-2"


def test_a_hostile_config_value_is_shown_escaped(tmp_path):
    from sftlib.tables import readable_html

    payload = '<script>alert("x")</script>'
    write_run(tmp_path / "a", {"validation": correctness(1, 0.9)}, dataset=payload)
    write_run(tmp_path / "b", {"validation": correctness(2, 0.8)})
    result = compare.compare(CompareConfig(runs=[str(tmp_path)], bootstrap_resamples=200))
    html = readable_html(compare.config_table(result.groups))
    assert payload not in html and "&lt;script&gt;" in html


def test_a_rerun_of_one_seed_is_not_another_seed_and_nan_runs_do_not_blank_a_config(tmp_path):
    write_run(tmp_path / "a1", {"validation": correctness(1, 0.9)}, lr=1e-4, seed=1)
    write_run(tmp_path / "a1-again", {"validation": correctness(2, 0.9)}, lr=1e-4, seed=1)
    write_run(tmp_path / "b1", {"validation": correctness(3, 0.8)}, lr=3e-5, seed=1)
    write_run(tmp_path / "b2", {"validation": correctness(4, 0.8)}, lr=3e-5, seed=2)
    metrics = json.loads((tmp_path / "b2" / "metrics.json").read_text())
    metrics["validation"]["loss"] = float("nan")  # a diverged seed
    (tmp_path / "b2" / "metrics.json").write_text(json.dumps(metrics))
    result = compare.compare(CompareConfig(runs=[str(tmp_path)], bootstrap_resamples=200))
    assert [r.name for r in result.groups["lr=0.0001"]] == ["a1-again"]
    assert result.skipped == [{"run": "a1", "reason": "same config and seed as the newer "
                                                      "run a1-again"}]
    b_loss = result.summary.loc["lr=3e-05"]
    assert b_loss[("validation", "loss", "n")] == 1 and np.isfinite(
        b_loss[("validation", "loss", "mean")])


def test_one_config_has_no_tests_and_no_verdicts(tmp_path):
    write_run(tmp_path / "a", {"validation": correctness(1, 0.9)}, seed=1)
    write_run(tmp_path / "b", {"validation": correctness(2, 0.9)}, seed=2)
    result = compare.compare(CompareConfig(runs=[str(tmp_path)], bootstrap_resamples=200))
    assert list(result.groups) == ["the one config"] and result.significance == {}
    assert result.verdicts() == []
    assert compare.verdict_lines(pd.DataFrame(), result.best, "validation") == []


def test_a_teacher_run_is_labelled_by_its_run_id_unless_that_is_ambiguous():
    teachers = {"a": {"teacher": "/home/me/reports/sweep-t/20261204-1-aaa/", "lr": 1e-4},
                "b": {"teacher": None, "lr": 1e-4}}
    assert compare.config_labels(teachers) == {"a": "teacher=20261204-1-aaa",
                                               "b": "teacher=None"}
    same_name = {"a": {"dataset": "one/train.csv"}, "b": {"dataset": "two/train.csv"}}
    assert compare.config_labels(same_name) == {"a": "dataset=one/train.csv",
                                                "b": "dataset=two/train.csv"}
    # only the keys that hold paths are shortened
    assert compare.config_labels({"a": {"schedule": "hf:a/b"}, "b": {"schedule": "linear"}}) \
        == {"a": "schedule=hf:a/b", "b": "schedule=linear"}


def test_labels_leave_out_what_changes_nothing_in_that_config():
    # the default's distill_weight (no teacher) and ema_decay (no EMA) act on nothing
    default = {"teacher": None, "distill_weight": 0.5, "pooling": "cls",
               "weight_averaging": "none", "ema_decay": 0.999}
    distilled = {**default, "teacher": "runs/t1", "distill_weight": 0.8, "pooling": "mean"}
    ema = {**default, "weight_averaging": "ema", "ema_decay": 0.99}
    assert compare.config_labels({"d": default, "s": distilled, "e": ema}) == {
        "d": "pooling=cls, teacher=None, weight_averaging=none",
        "s": "distill_weight=0.8, pooling=mean, teacher=t1, weight_averaging=none",
        "e": "ema_decay=0.99, pooling=cls, teacher=None, weight_averaging=ema"}
    # configs told apart by an inert key alone (older manifests) keep it in their labels
    assert compare.config_labels({"a": default, "b": {**default, "distill_weight": 0.7}}) == {
        "a": "distill_weight=0.5", "b": "distill_weight=0.7"}


def test_a_run_older_than_an_option_groups_with_runs_that_record_its_default(tmp_path):
    # two seeds of one recipe; the older manifest predates distill_augment (no such key)
    old = write_run(tmp_path / "old", {"validation": correctness(1, 0.8)}, seed=42)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["config"]["distill_augment"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    write_run(tmp_path / "new", {"validation": correctness(2, 0.8)}, seed=43)
    write_run(tmp_path / "other", {"validation": correctness(3, 0.8)}, seed=42, lr=3e-5)
    result = compare.compare(CompareConfig(runs=[str(tmp_path)], bootstrap_resamples=100))
    assert {label: [run.name for run in runs] for label, runs in result.groups.items()} == {
        "lr=0.0001": ["old", "new"], "lr=3e-05": ["other"]}
