"""benchmarks.quality_summary on constructed studies: the baseline found by RunConfig's
defaults, differences signed option minus default whichever ranked first, the teacher's own
score read from runs.csv, the targets judged on validation."""

import json

from benchmarks import quality_summary
from benchmarks.quality_summary import Study


def summary_row(validation: float, test: float) -> dict:
    return {"validation/accuracy/mean": validation, "validation/accuracy/std": 0.004,
            "test/accuracy/mean": test, "test/accuracy/std": 0.002,
            "training/runtime_s/mean": 600.0}


def pooled(config: str, difference: float, verdict: str) -> dict:
    return {"config": config, "scope": "pooled (3 seed pairs)", "difference": difference,
            "low": difference - 0.01, "high": difference + 0.01, "p_value": 0.2,
            "verdict": verdict}


def write_study(folder, configs: dict, ranking: list, significance: dict) -> None:
    folder.mkdir(parents=True)
    comparison = {
        "ranking": ranking, "best": ranking[0],
        "configs": {label: {"runs": [f"{label}-run"], "seeds": [42, 43, 44], "config": config}
                    for label, (config, _) in configs.items()},
        "summary": {label: row for label, (_, row) in configs.items()},
        "significance": significance}
    (folder / "comparison.json").write_text(json.dumps(comparison))


def test_summary_signs_differences_finds_the_teachers_run_and_judges_targets(tmp_path):
    teacher = "/somewhere/reports/sweep-mpnet/20261204-1-aaaaaa/"
    # the default ranks first here: the option's difference must come out negative
    write_study(tmp_path / "sweep_llrd",
                {"decay=1": ({"layerwise_lr_decay": 1.0}, summary_row(0.85, 0.84)),
                 "decay=0.8": ({"layerwise_lr_decay": 0.8}, summary_row(0.84, 0.83))},
                ["decay=1", "decay=0.8"],
                {"validation": [pooled("decay=0.8", 0.01, "better than")], "test": []})
    write_study(tmp_path / "sweep_distill",
                {"t": ({"teacher": teacher}, summary_row(0.87, 0.86)),
                 "none": ({"teacher": None}, summary_row(0.85, 0.84))},
                ["t", "none"],
                {"validation": [pooled("none", 0.02, "not distinguishable from")], "test": []})
    write_study(tmp_path / "sweep_mpnet",
                {"one": ({}, summary_row(0.905, 0.895))}, ["one"], {})
    (tmp_path / "sweep_mpnet" / "runs.csv").write_text(
        "run,config,seed,validation_accuracy,test_accuracy,training_runtime_s,run_s\n"
        "20261204-1-aaaaaa,one,42,0.89,0.88,600,650\n")
    write_study(tmp_path / "sweep_more",  # two options, neither the default
                {"k=2": ({"distill_augment": 2}, summary_row(0.86, 0.85)),
                 "k=0": ({"distill_augment": 0}, summary_row(0.85, 0.845))},
                ["k=2", "k=0"],
                {"validation": [pooled("k=0", 0.01, "better than")], "test": []})
    studies = (Study("sweep_llrd", "LLRD"), Study("sweep_distill", "KD"),
               Study("sweep_missing", "not run"))
    text = quality_summary.summary(tmp_path, studies, "sweep_mpnet",
                                   (Study("sweep_more", "copies"),))
    assert ("- [sweep_more](sweep_more/README.md), copies: `k=2` (0.8600 ± 0.0040) ranked "
            "first on validation, against `k=0` (0.8500 ± 0.0040): better than (+1.00 points, "
            "+0.00 to +2.00, p = 0.20); test 0.8500 ± 0.0020 against 0.8450 ± 0.0020.") in text
    assert text.index("## Options against each other") < text.index("## The targets")

    llrd = next(line for line in text.splitlines() if "LLRD" in line)
    assert "worse than (-1.00 points, -2.00 to +0.00" in llrd
    kd = next(line for line in text.splitlines() if "| KD" in line)
    assert "`teacher=20261204-1-aaaaaa`" in kd and "(+2.00 points" in kd
    assert "not run" not in text
    assert "target 0.86: not reached." in text  # the default's 0.85
    assert "0.8700 (the highest mean; the verdicts above say which differences the seeds " \
        "can tell); target 0.86: reached by this option, which needs a fine-tuned teacher " \
        "run first" in text  # the best option is the distilled one
    assert "validation 0.9050 ± 0.0040" in text and "10.0 minutes" in text
    assert "target 0.88: reached." in text
    # the teacher's own run (0.89), not the recipe's mean: (0.87 - 0.85) / (0.89 - 0.85)
    assert "teacher's 0.8900 (teacher run 20261204-1-aaaaaa): 50% of the gap closed" in text
    assert "closer to the teacher than to the default: no." in text


def test_a_teacher_trained_again_is_found_in_its_own_study(tmp_path):
    # the teacher of a later study is a run of another committed study, not the recipe's
    teacher = "reports/sweep-mpnet/20261205-2-bbbbbb"
    write_study(tmp_path / "sweep_kd",
                {"t": ({"teacher": teacher}, summary_row(0.87, 0.86)),
                 "none": ({"teacher": None}, summary_row(0.85, 0.84))}, ["t", "none"],
                {"validation": [pooled("none", 0.02, "better than")], "test": []})
    write_study(tmp_path / "sweep_mpnet", {"one": ({}, summary_row(0.905, 0.895))}, ["one"], {})
    write_study(tmp_path / "sweep_mpnet_again", {"one": ({}, summary_row(0.91, 0.9))},
                ["one"], {})
    (tmp_path / "sweep_mpnet_again" / "runs.csv").write_text(
        "run,config,seed,validation_accuracy,test_accuracy,training_runtime_s,run_s\n"
        "20261205-2-bbbbbb,one,42,0.91,0.90,600,650\n")
    text = quality_summary.summary(tmp_path, (Study("sweep_kd", "KD"),), "sweep_mpnet", ())
    assert "teacher's 0.9100 (teacher run 20261205-2-bbbbbb): 33% of the gap closed" in text
    (tmp_path / "sweep_mpnet_again" / "runs.csv").unlink()  # not committed: the recipe's mean
    text = quality_summary.summary(tmp_path, (Study("sweep_kd", "KD"),), "sweep_mpnet", ())
    assert "teacher's 0.9050 (the teacher recipe's mean over seeds)" in text
