"""Distillation (sftlib.distill): the loss against hand computations, the teacher checked before
training, its logits computed once and then read from the cache, a tiny run end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from run_folders import LABELS, save_tiny_classifier, save_tiny_mean_classifier

from sftlib import distill
from sftlib.config import ConfigError, RunConfig, field_defaults, inert_options

TINY_DISTILL = {"train_subset": 32, "eval_subset": 16, "batch_size": 16, "eval_batch_size": 32,
                "max_length": 64, "epochs": 2.0, "logging_steps": 1, "eval_strategy": "no",
                "plot_interval_s": 0.0}


@pytest.fixture(scope="module")
def teacher_run(tiny_model_folder, tmp_path_factory):
    """A run folder holding a tiny classifier in model/, as notebook 03 leaves one."""
    run = tmp_path_factory.mktemp("teacher-run")
    save_tiny_classifier(tiny_model_folder, run / "model")
    return run


@pytest.fixture(scope="module")
def mean_teacher_run(tiny_model_folder, tmp_path_factory):
    """A run folder holding a tiny mean-pooled classifier: a teacher with sentence vectors."""
    run = tmp_path_factory.mktemp("mean-teacher-run")
    save_tiny_mean_classifier(tiny_model_folder, run / "model")
    return run


@pytest.fixture
def logits_cache(tmp_path, monkeypatch):
    """A cache of its own: a known teacher's logits from an earlier session are not reused."""
    monkeypatch.setattr(distill, "cache_dir", lambda: tmp_path / "teacher-logits")
    return tmp_path / "teacher-logits"


# the loss -------------------------------------------------------------------------------

def test_distillation_loss_by_hand_uniform_student():
    # student [0, 0] is uniform at any T; teacher [2 ln 3, 0] at T=2 is softmax([ln 3, 0]) =
    # [3/4, 1/4]. CE(label 0) = ln 2; KL = 3/4 ln(3/4 / 1/2) + 1/4 ln(1/4 / 1/2)
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2 * math.log(3), 0.0]])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    loss = distill.distillation_loss(student, teacher, torch.tensor([0]), 0.25, 2.0)
    assert loss.item() == pytest.approx(0.75 * math.log(2) + 0.25 * 4 * kl, rel=1e-6)


def test_distillation_loss_matches_numpy_on_a_constructed_batch():
    student = np.array([[1.0, -0.5, 2.0], [0.3, 0.1, -1.2], [-2.0, 0.5, 0.0]])
    teacher = np.array([[0.5, 0.0, 3.0], [2.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    labels = np.array([2, 0, 1])
    weight, temperature = 0.7, 3.0

    def log_softmax(x):
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    ce = -log_softmax(student)[np.arange(3), labels].mean()
    p_teacher = np.exp(log_softmax(teacher / temperature))
    kl = (p_teacher * (np.log(p_teacher) - log_softmax(student / temperature))).sum(1).mean()
    expected = (1 - weight) * ce + weight * temperature**2 * kl
    loss = distill.distillation_loss(torch.tensor(student), torch.tensor(teacher),
                                     torch.tensor(labels), weight, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    plain = distill.distillation_loss(torch.tensor(student), torch.tensor(teacher),
                                      torch.tensor(labels), 0.0, temperature)
    assert plain.item() == pytest.approx(ce, rel=1e-6)  # weight 0: cross-entropy alone


def test_the_train_only_columns_reach_the_trainer():
    from sftlib import tokens

    # tokens keeps the model's columns by name (it cannot import distill: a cycle)
    assert set(distill.TRAIN_ONLY_COLUMNS) <= set(tokens.MODEL_COLUMNS)


def test_relation_loss_by_hand():
    # student: two orthogonal vectors (cosines [[1, 0], [0, 1]]); teacher: the same direction
    # twice, at other lengths and width (cosines all 1): two of the four entries differ by 1
    student = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    assert distill.relation_loss(student, teacher).item() == pytest.approx(0.5, rel=1e-6)
    # cosines 0.6 (student) and -1 (teacher) off the diagonal: 2 * 1.6^2 / 4
    student = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    teacher = torch.tensor([[0.0, 2.0, 0.0], [0.0, -1.0, 0.0]])
    assert distill.relation_loss(student, teacher).item() == pytest.approx(1.28, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.integers(2, 6), st.integers(0, 10_000))
def test_relation_loss_sees_angles_only(rows, width, seed):
    """Zero for a teacher that is the student rotated into a wider space and each row
    rescaled: only the angles between the rows count."""
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(rows, width, generator=generator, dtype=torch.float64)
    wide = torch.linalg.qr(torch.randn(width + 3, width + 3, generator=generator,
                                       dtype=torch.float64))[0][:, :width]  # orthonormal
    scales = torch.rand(rows, 1, generator=generator, dtype=torch.float64) * 10 + 0.1
    teacher = (student @ wide.T) * scales
    assert distill.relation_loss(student, teacher).item() == pytest.approx(0, abs=1e-10)


def test_transfer_copies_are_taught_by_the_teacher_alone():
    # rows labelled NO_GOLD_LABEL (perturbed copies) lose T^2 * KL at full weight; gold rows
    # (1 - w) * CE + w * T^2 * KL; the batch mean of the rows' losses
    student = np.array([[1.0, -0.5], [0.3, 0.1], [-2.0, 0.5], [0.0, 1.0]])
    teacher = np.array([[0.5, 0.0], [2.0, -1.0], [0.0, 3.0], [1.0, 1.0]])
    labels = np.array([1, distill.NO_GOLD_LABEL, 0, distill.NO_GOLD_LABEL])
    weight, temperature = 0.3, 2.0

    def log_softmax(x):
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    p_teacher = np.exp(log_softmax(teacher / temperature))
    kl = (p_teacher * (np.log(p_teacher) - log_softmax(student / temperature))).sum(1)
    ce = -log_softmax(student)
    rows = [(1 - weight) * ce[0, 1] + weight * 4 * kl[0], 4 * kl[1],
            (1 - weight) * ce[2, 0] + weight * 4 * kl[2], 4 * kl[3]]
    loss = distill.distillation_loss(torch.tensor(student), torch.tensor(teacher),
                                     torch.tensor(labels), weight, temperature)
    assert loss.item() == pytest.approx(np.mean(rows), rel=1e-6)


@given(texts=st.lists(st.text(st.characters(codec="utf-8"), max_size=60), min_size=1,
                      max_size=8),
       copies=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_perturbed_copies_are_phrases_or_thinned_texts(texts, copies, seed):
    augmented = distill.augment_texts(texts, copies, seed)
    assert augmented == distill.augment_texts(texts, copies, seed)  # the seed's copies
    assert len(augmented) == copies * len(texts)
    for i, copy in enumerate(augmented):
        words, kept = texts[i % len(texts)].split(), copy.split()
        if len(words) <= 1:
            assert copy == texts[i % len(texts)]
            continue
        assert kept, "a copy keeps at least one word"
        ngram = len(kept) <= distill.NGRAM_MAX and any(
            words[start:start + len(kept)] == kept for start in range(len(words)))
        it = iter(words)
        thinned = all(word in it for word in kept)  # the words in their order, some dropped
        assert ngram or thinned


def test_the_copies_differ_from_seed_to_seed_and_vary():
    texts = ["a gripping , funny and surprisingly moving film about growing old"] * 50
    copies = distill.augment_texts(texts, 2, seed=42)
    assert copies != distill.augment_texts(texts, 2, seed=43)
    phrases = [c for c in copies if len(c.split()) <= distill.NGRAM_MAX]
    # about NGRAM_SHARE of the copies are short phrases, the rest thinned texts (binomial)
    assert 0.1 < len(phrases) / len(copies) < 0.45
    assert len(set(copies)) > 25  # not one copy repeated


def test_distillation_keys_are_validated():
    with pytest.raises(ConfigError, match=r"distill_weight: must be >= 0 and <= 1"):
        RunConfig(teacher="reports/x", distill_weight=1.5)
    with pytest.raises(ConfigError, match=r"distill_temperature: must be > 0"):
        RunConfig(teacher="reports/x", distill_temperature=0)
    with pytest.raises(ConfigError, match=r"distill_weight: distillation options without a "
                                          r"teacher"):
        RunConfig(distill_weight=0.3)
    with pytest.raises(ConfigError, match=r"distill_augment: distillation options without a "
                                          r"teacher"):
        RunConfig(distill_augment=1)
    with pytest.raises(ConfigError, match=r"distill_augment: must be >= 0 and <= 16"):
        RunConfig(teacher="reports/x", distill_augment=17)
    with pytest.raises(ConfigError, match=r"distill_augment: expected int"):
        RunConfig(teacher="reports/x", distill_augment=1.5)
    with pytest.raises(ConfigError, match=r"teacher: only for task 'classification'"):
        RunConfig(task="instruction", model="smollm2-135m-instruct", dataset="alpaca-demo",
                  metric_for_best="loss", teacher="reports/x")
    with pytest.raises(ConfigError, match=r"teacher_precision: distillation options without"):
        RunConfig(teacher_precision="bf16")
    with pytest.raises(ConfigError, match=r"teacher_precision: 'fp16' is not one of fp32, bf16"):
        RunConfig(teacher="reports/x", teacher_precision="fp16")
    assert "teacher_precision" in inert_options(field_defaults())  # no teacher: no label
    with pytest.raises(ConfigError, match=r"distill_relation_weight: distillation options"):
        RunConfig(pooling="mean", distill_relation_weight=1.0)
    with pytest.raises(ConfigError, match=r"distill_relation_weight: must be >= 0"):
        RunConfig(teacher="reports/x", pooling="mean", distill_relation_weight=-0.5)
    with pytest.raises(ConfigError, match=r"distill_relation_weight: the relation term compares "
                                          r"sentence vectors, which the mean-pooling head has; "
                                          r"set pooling=mean"):
        RunConfig(teacher="reports/x", distill_relation_weight=1.0)  # pooling=cls
    assert RunConfig(teacher="reports/x", pooling="mean",
                     distill_relation_weight=1.0).distill_relation_weight == 1.0
    assert "distill_relation_weight" in inert_options(field_defaults())


# the teacher, checked in the preflight ---------------------------------------------------

def test_a_missing_teacher_is_refused(tmp_path):
    with pytest.raises(distill.TeacherError, match=r"teacher: .*nowhere does not exist; give a "
                                                   r"finished run's folder"):
        distill.check_teacher(str(tmp_path / "nowhere"), LABELS)


@pytest.mark.slow  # the tiny model folders take seconds to make
def test_a_base_model_is_not_a_teacher(tiny_model_folder):
    with pytest.raises(distill.TeacherError, match=r"holds BertModel, not a sequence "
                                                   r"classifier"):
        distill.check_teacher(str(tiny_model_folder), LABELS)


@pytest.mark.slow  # the tiny model folders take seconds to make
def test_a_run_folder_teaches_with_its_model(teacher_run):
    assert distill.check_teacher(str(teacher_run), LABELS) == {
        "path": str(teacher_run / "model"), "labels": LABELS}


@pytest.mark.slow
def test_other_label_names_are_refused_before_training(tiny_model_folder, tmp_path):
    from sftlib import train

    teacher = save_tiny_classifier(tiny_model_folder, tmp_path / "teacher", ["fresh", "rotten"])
    output = tmp_path / "run"
    (output / "model").mkdir(parents=True)  # an earlier run's output: must stay where it is
    cfg = RunConfig(**TINY_DISTILL, model=str(tiny_model_folder), teacher=str(teacher))
    with pytest.raises(distill.TeacherError) as refused:
        train.prepare_training(cfg, output, notebook=False, log_fn=lambda _m: None)
    assert str(refused.value) == (
        f"teacher: {teacher} predicts labels ['fresh', 'rotten'] (by id), the data has "
        "['rotten', 'fresh']; a teacher must have been trained on the same label names in the "
        "same order")
    assert (output / "model").is_dir() and not list(output.glob("previous-*"))


@pytest.mark.slow  # the tiny model folders take seconds to make
def test_a_relative_teacher_path_is_made_absolute_for_the_notebooks(teacher_run, monkeypatch):
    from sftlib.pipeline import absolutize_inputs

    monkeypatch.chdir(teacher_run.parent)
    cfg = absolutize_inputs(RunConfig(teacher=teacher_run.name))
    assert cfg.teacher == str(teacher_run)
    assert absolutize_inputs(RunConfig()).teacher is None


# computed once, cached, used by the loss -------------------------------------------------

class TeacherForwardCounter:
    """Counts the examples the real teacher model reads: a forward hook on every module,
    keeping calls of the model loaded from the teacher's folder (the student is another)."""

    def __init__(self, folder) -> None:
        self.folder, self.rows = str(folder), 0

    def __enter__(self):
        self.handle = torch.nn.modules.module.register_module_forward_hook(self.hook)
        return self

    def hook(self, module, args, kwargs_or_output, *rest):
        config = getattr(module, "config", None)
        if getattr(config, "_name_or_path", None) == self.folder and \
                type(module).__name__.endswith("ForSequenceClassification"):
            self.rows += int(kwargs_or_output.logits.shape[0])

    def __exit__(self, *exc):
        self.handle.remove()


def distilled_tiny_run(base, teacher_run, folder, **options):
    """A tiny run distilled from `teacher_run`, prepared and trained in `folder`: its config,
    the run, Trainer's output and the rows the teacher read meanwhile."""
    from sftlib import train

    cfg = RunConfig(**TINY_DISTILL, model=str(base), teacher=str(teacher_run), **options)
    with TeacherForwardCounter(teacher_run / "model") as counter:
        run = train.prepare_training(cfg, folder, notebook=False, log_fn=lambda _m: None)
        output = run.trainer.train()
    return cfg, run, output, counter.rows


@pytest.mark.slow
def test_teacher_logits_are_computed_once_cached_and_scored(tiny_model_folder, teacher_run,
                                                     logits_cache, tmp_path):
    from sftlib import train
    from sftlib.deploy import Predictor
    from sftlib.report import Report

    teacher = teacher_run / "model"
    cfg, run, output, read = distilled_tiny_run(tiny_model_folder, teacher_run, tmp_path / "run",
                                                distill_weight=0.6, distill_temperature=3.0)
    assert output.global_step == 4 and read == 32  # each train text once, not per epoch
    assert len(list(logits_cache.glob("*.npy"))) == 1

    expected = Predictor(teacher).logits(run.dataset["train"]["text"])
    assert np.allclose(run.tokenized["train"][distill.TEACHER_COLUMN], expected, atol=1e-6)
    # the batches Trainer builds carry them to compute_loss, which distills
    batch = next(iter(run.trainer.get_train_dataloader()))
    assert batch[distill.TEACHER_COLUMN].shape == (16, 2)
    model = run.trainer.model.eval()
    with torch.no_grad():
        student = model(**{k: v for k, v in batch.items() if k != distill.TEACHER_COLUMN}).logits
        by_hand = distill.distillation_loss(student, batch[distill.TEACHER_COLUMN],
                                            batch["labels"], 0.6, 3.0)
        assert run.trainer.compute_loss(model, dict(batch)).item() == \
            pytest.approx(by_hand.item(), rel=1e-5)
        # evaluation batches carry no teacher logits: plain cross-entropy
        plain = run.trainer.compute_loss(model, {k: v for k, v in batch.items()
                                                 if k != distill.TEACHER_COLUMN})
        assert plain.item() == pytest.approx(
            torch.nn.functional.cross_entropy(student, batch["labels"]).item(), rel=1e-5)

    with TeacherForwardCounter(teacher) as counter:  # a second run (another seed) hits it
        train.prepare_training(cfg.replace(seed=7), tmp_path / "run2", notebook=False,
                               log_fn=lambda _m: None)
    assert counter.rows == 0

    # the end of the first run, as notebook 03 ends it: scores, the teacher's beside them
    scores = train.evaluate_splits(run)
    report = Report(tmp_path / "run")
    teacher_scores = distill.record_teacher_scores(cfg, run.dataset, report, log=lambda _m: None)
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["teacher"]
    assert recorded["path"] == str(teacher) and recorded["max_length"] == 64
    assert recorded["precision"] == "fp32"  # teacher_precision's default
    assert (recorded["distill_weight"], recorded["distill_augment"],
            recorded["transfer_copies"]) == (0.6, 0, 0)
    assert recorded["sha256"] == distill.teacher_sha256(teacher)
    test_predictions = Predictor(teacher).logits(run.dataset["test"]["text"]).argmax(1)
    assert len(test_predictions) == 16 and recorded["test"]["accuracy"] == pytest.approx(
        np.mean(test_predictions == np.asarray(run.dataset["test"]["label"])))
    table = distill.teacher_vs_student(teacher_scores, scores)
    assert list(table.index) == [("validation", "teacher"), ("validation", "student"),
                                 ("test", "teacher"), ("test", "student")]
    assert table.loc[("test", "student"), "accuracy"] == scores["test"]["accuracy"]
    assert distill.teacher_vs_student({}, scores).empty
    assert distill.record_teacher_scores(RunConfig(), run.dataset, report) == {}

    # teacher_precision=bf16 reaches both passes: the train rows' labels and the scores
    bf16_cfg = cfg.replace(teacher_precision="bf16")
    plain = {"train": run.tokenized["train"].remove_columns([distill.TEACHER_COLUMN])}
    distill.add_teacher_logits(bf16_cfg, run.dataset, plain, None, 64, log=lambda _m: None)
    labels_bf16 = np.asarray(plain["train"][distill.TEACHER_COLUMN])
    assert np.allclose(labels_bf16, Predictor(teacher, bf16=True).logits(
        run.dataset["train"]["text"]), atol=1e-6)
    assert not np.allclose(labels_bf16, expected, atol=1e-6)
    distill.record_teacher_scores(bf16_cfg, run.dataset, report, log=lambda _m: None)
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["teacher"]
    assert recorded["precision"] == "bf16"
    assert len(list(logits_cache.glob("*.npy"))) == 3 + 3  # train, validation, test: twice


@pytest.mark.slow
def test_a_transfer_set_adds_copies_the_teacher_labels_once(tiny_model_folder, teacher_run,
                                                            logits_cache, tmp_path):
    from sftlib import data, train
    from sftlib.deploy import Predictor

    teacher = teacher_run / "model"
    # as the measured recipe: mean pooling; and two accumulated batches a step
    cfg, run, output, read = distilled_tiny_run(tiny_model_folder, teacher_run, tmp_path / "run",
                                                distill_augment=2, distill_weight=0.6,
                                                pooling="mean", grad_accum_steps=2)
    rows = run.tokenized["train"]
    texts = list(run.dataset["train"]["text"])
    copies = distill.augment_texts(texts, 2, cfg.seed)
    assert rows["text"] == texts + copies and read == 32 + 64
    assert rows["label"][32:] == [distill.NO_GOLD_LABEL] * 64
    assert rows["label"][:32] == list(run.dataset["train"]["label"])
    assert np.allclose(rows[distill.TEACHER_COLUMN][32:], Predictor(teacher).logits(copies),
                       atol=1e-6)
    assert output.global_step == 2 * 96 // 32  # the copies are trained on: 96 rows an epoch
    assert np.isfinite(output.training_loss)
    # the validation and test splits are not augmented, and still name the classes
    assert len(run.tokenized["validation"]) == len(run.dataset["validation"])
    assert data.label_names(run.tokenized) == data.label_names(run.dataset) == LABELS

    with TeacherForwardCounter(teacher) as counter:  # another seed: new copies, same texts
        train.prepare_training(cfg.replace(seed=7), tmp_path / "run2", notebook=False,
                               log_fn=lambda _m: None)
    assert counter.rows == 64


LABELLING_RANK = """
import hashlib, sys, time
from pathlib import Path
from sftlib import deploy, distill
teacher, ready, go = (Path(arg) for arg in sys.argv[1:4])
texts = [f"review {i}: " + "a fine film, " * (i % 20) for i in range(400)]
outputs = deploy.Predictor.outputs
def slow_outputs(self, texts, which):  # the tiny teacher would be done before the other asks
    time.sleep(3)
    return outputs(self, texts, which)
deploy.Predictor.outputs = slow_outputs
ready.touch()
while not go.exists():  # both ranks ask for the logits at the same moment
    time.sleep(0.002)
logits, info = distill.cached_logits(teacher, texts, log=lambda message: print(message))
print("array", hashlib.sha256(logits.tobytes()).hexdigest(), "cached", info["cached"])
"""


@pytest.mark.slow
def test_two_ranks_missing_the_cache_at_once_compute_the_logits_once(teacher_run, tmp_path):
    """torchrun's ranks (or a sweep's concurrent runs) miss the cache together: one computes,
    the other waits for it and reads the cache."""
    import os
    import subprocess
    import sys
    import time

    go = tmp_path / "go"
    env = {**os.environ, "SFTLIB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    ranks = [subprocess.Popen([sys.executable, "-c", LABELLING_RANK, str(teacher_run / "model"),
                               str(tmp_path / f"ready{rank}"), str(go)],
                              env={**env, "LOCAL_RANK": str(rank), "RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{rank}").exists() for rank in (0, 1)):
            assert time.monotonic() < deadline, "the ranks did not start in 2 minutes"
            assert all(p.poll() is None for p in ranks), "a rank died before it was ready"
            time.sleep(0.01)
        go.touch()
        outputs = [p.communicate(timeout=300) for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    assert all(p.returncode == 0 for p in ranks), outputs
    logs = [out for out, _err in outputs]
    computed = [log for log in logs if "computed on cpu" in log]
    waited = [log for log in logs if "another process is computing" in log]
    assert len(computed) == 1 and len(waited) == 1, logs
    assert "read from the cache" in waited[0]
    arrays = {line for log in logs for line in log.splitlines() if line.startswith("array")}
    assert len(arrays) == 2 and {line.split()[-1] for line in arrays} == {"True", "False"}
    assert len({line.split()[1] for line in arrays}) == 1  # the same logits in both ranks
    assert len(list((tmp_path / "cache" / "teacher-logits").glob("*.npy"))) == 1


def test_a_waiting_process_says_so_and_goes_on_once_the_holder_is_done(tmp_path):
    import fcntl
    import os
    import threading

    lock_path, said, order = tmp_path / "entry.npy.lock", [], []
    holder = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # flocks of two open files conflict, one process too

    def waiter():
        with distill._computing_alone(lock_path, "4 texts", said.append, poll_s=0.01):
            order.append("waiter")

    thread = threading.Thread(target=waiter)
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive() and order == []  # still waiting
    order.append("holder done")
    os.close(holder)
    thread.join(timeout=10)
    assert order == ["holder done", "waiter"]
    assert len(said) == 1 and "another process is computing the teacher's outputs for 4 texts" \
        in said[0]


def test_without_a_lock_file_the_logits_are_computed_all_the_same(tmp_path):
    said = []
    with distill._computing_alone(tmp_path / "gone" / "entry.npy.lock", "4 texts", said.append):
        said.append("computed")
    assert said[-1] == "computed" and "computing without the lock" in said[0]


def test_an_empty_cache_entry_is_computed_again(teacher_run, logits_cache):
    texts = ["a fine film", "a dull one"]
    first, _ = distill.cached_logits(teacher_run / "model", texts, log=lambda _m: None)
    entry = next(logits_cache.glob("*.npy"))
    entry.write_bytes(b"")  # a disk that filled up mid-write, say
    again, info = distill.cached_logits(teacher_run / "model", texts, log=lambda _m: None)
    assert info["cached"] is False and np.array_equal(first, again)
    assert np.array_equal(np.load(entry), first)


def test_under_torchrun_a_rank_labels_on_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert distill._rank_device() is None  # one process: Predictor's default
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distill._rank_device() == "cuda:3"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # each rank sees its own GPU
    assert distill._rank_device() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distill._rank_device() is None


def test_bf16_labels_are_an_entry_of_their_own_close_to_fp32(teacher_run, logits_cache):
    texts = [f"review {i}: " + "a fine film, " * (i % 7) for i in range(40)]
    teacher = teacher_run / "model"
    fp32, fp32_info = distill.cached_logits(teacher, texts, log=lambda _m: None)
    bf16, bf16_info = distill.cached_logits(teacher, texts, log=lambda _m: None,
                                            precision="bf16")
    assert (fp32_info["precision"], bf16_info["precision"]) == ("fp32", "bf16")
    assert not bf16_info["cached"] and fp32_info["cache"] != bf16_info["cache"]
    assert len(list(logits_cache.glob("*.npy"))) == 2
    assert not np.array_equal(fp32, bf16)  # autocast ran: bf16 rounds the matmuls' inputs
    assert np.abs(fp32 - bf16).max() < 0.05 * max(1.0, np.abs(fp32).max())
    again, info = distill.cached_logits(teacher, texts, log=lambda _m: None, precision="bf16")
    assert info["cached"] and np.array_equal(again, bf16)
    from sftlib.deploy import Predictor

    assert Predictor(teacher, bf16=True).describe() == "PyTorch bf16"
    for refused in ({"quantize": True}, {"backend": "onnx"}):
        with pytest.raises(ValueError, match="bf16 autocast is for the torch backend"):
            Predictor(teacher, bf16=True, **refused)


def test_an_fp32_entry_keeps_the_key_it_had_before_bf16_labelling():
    import hashlib

    texts = ["a fine film", "a dull one"]
    before = hashlib.sha256(b"abc\n64\n2\n" + b"a fine film\0" + b"a dull one\0").hexdigest()
    assert distill.cache_key("abc", texts, 64) == distill.cache_key("abc", texts, 64, "fp32") \
        == before
    assert distill.cache_key("abc", texts, 64, "bf16") != before
    # no texts make an fp32 key equal to a bf16 one
    assert distill.cache_key("abc", ["bf16\nX", "Y"], 64) != \
        distill.cache_key("abc", ["X", "Y"], 64, "bf16")


def test_teacher_precision_resolves_for_the_device_that_labels(monkeypatch):
    from sftlib import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distill.labelling_precision("fp32") == "fp32"
    for native, auto in ((True, "bf16"), (False, "fp32")):  # a CPU with and without bf16 units
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda native=native: native)
        assert distill.labelling_precision("auto") == auto
        assert distill.labelling_precision("bf16") == "bf16"  # asked for: emulated if need be
    # a GPU without bf16: auto labels in fp32, bf16 is refused before any labelling
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert distill.labelling_precision("auto") == "fp32"
    with pytest.raises(ConfigError, match="teacher_precision: bf16 was asked for but this GPU "
                                          "does not support it; use teacher_precision=fp32"):
        distill.labelling_precision("bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert distill.labelling_precision("auto") == "bf16"


# the relation term: the teacher's sentence vectors -------------------------------------

@pytest.mark.slow  # the tiny model folders take seconds to make
def test_the_relation_term_needs_a_mean_pooled_teacher_before_training(teacher_run,
                                                                        mean_teacher_run,
                                                                        tiny_model_folder,
                                                                        tmp_path):
    from sftlib import train

    assert distill.check_teacher(str(mean_teacher_run), LABELS,
                                 needs_vectors=True)["labels"] == LABELS
    assert distill.check_teacher(str(teacher_run), LABELS)["labels"] == LABELS  # logits only
    cfg = RunConfig(**TINY_DISTILL, model=str(tiny_model_folder), teacher=str(teacher_run),
                    pooling="mean", distill_relation_weight=1.0)
    with pytest.raises(distill.TeacherError) as refused:
        train.prepare_training(cfg, tmp_path / "run", notebook=False, log_fn=lambda _m: None)
    assert str(refused.value) == (
        f"teacher: {teacher_run / 'model'} is not a mean-pooled classifier, so it has no "
        "sentence vectors for distill_relation_weight; give a run trained with pooling=mean, "
        "or set distill_relation_weight=0")
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.slow  # the tiny model folders take seconds to make
def test_predictor_gives_logits_and_sentence_vectors_from_one_pass(mean_teacher_run,
                                                                    teacher_run):
    from sftlib.deploy import Predictor
    from sftlib.pooling_model import masked_mean

    texts = ["a fine film", "a tedious, overlong mess of a film that never ends", "ok",
             "the cast is fine but the script is not", "fine"]
    predictor = Predictor(mean_teacher_run / "model", batch_size=2)
    with TeacherForwardCounter(mean_teacher_run / "model") as counter:
        both = predictor.outputs(texts, ("logits", "vectors"))
    assert counter.rows == len(texts)  # one forward a batch gave both
    assert np.array_equal(both["logits"], predictor.logits(texts))
    model = predictor.model
    for text, vector in zip(texts, both["vectors"]):  # each text alone: no padding
        batch = predictor.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            states = model.encoder(**batch).last_hidden_state
        assert np.allclose(vector, masked_mean(states, batch["attention_mask"])[0], atol=1e-5)
    assert np.array_equal(predictor.sentence_vectors(texts), both["vectors"])
    assert both["vectors"].shape == (5, model.config.hidden_size)
    with pytest.raises(TypeError, match=r"is not a mean-pooled classifier \(a \[CLS\] head"):
        Predictor(teacher_run / "model").sentence_vectors(texts)
    with pytest.raises(ValueError, match=r"outputs \['pooler'\]: unknown or none; choose from "
                                         r"logits, vectors"):
        predictor.outputs(texts, ("pooler",))
    from sftlib.pooling_model import MeanPoolingForSequenceClassification

    assert distill.MEAN_POOLING_CLASS == MeanPoolingForSequenceClassification.__name__
    assert predictor.outputs([], ("logits", "vectors"))["vectors"].shape == (
        0, model.config.hidden_size)


@pytest.mark.slow
def test_the_relation_term_trains_on_cached_teacher_vectors(tiny_model_folder, mean_teacher_run,
                                                            logits_cache, tmp_path):
    from sftlib import train
    from sftlib.deploy import Predictor
    from sftlib.pooling_model import masked_mean
    from sftlib.report import Report

    teacher = mean_teacher_run / "model"
    cfg, run, output, read = distilled_tiny_run(tiny_model_folder, mean_teacher_run,
                                                tmp_path / "run", pooling="mean",
                                                distill_augment=1, distill_weight=0.6,
                                                distill_relation_weight=0.5)
    assert read == 32 + 32  # each text and each copy read once: logits and vectors together
    assert len(list(logits_cache.glob("*.npy"))) == 4  # both outputs, texts and copies
    rows = run.tokenized["train"]
    assert np.allclose(rows[distill.VECTORS_COLUMN], Predictor(teacher).sentence_vectors(
        rows["text"]), atol=1e-6)
    assert output.global_step == 2 * 64 // 16 and np.isfinite(output.training_loss)

    # compute_loss: the distillation loss plus 0.5 x the relation term of the student's means
    batch = next(iter(run.trainer.get_train_dataloader()))
    assert batch[distill.VECTORS_COLUMN].shape == (16, teacher_width(teacher))
    model = run.trainer.model.eval()
    inputs = {k: v for k, v in batch.items() if k not in distill.TRAIN_ONLY_COLUMNS}
    with torch.no_grad():
        student = model(**inputs).logits
        means = masked_mean(model.encoder(input_ids=inputs["input_ids"],
                                          attention_mask=inputs["attention_mask"],
                                          token_type_ids=inputs.get("token_type_ids"),
                                          ).last_hidden_state, inputs["attention_mask"])
        by_hand = (distill.distillation_loss(student, batch[distill.TEACHER_COLUMN],
                                             batch["labels"], 0.6, 2.0)
                   + 0.5 * distill.relation_loss(means, batch[distill.VECTORS_COLUMN]))
        assert run.trainer.compute_loss(model, dict(batch)).item() == \
            pytest.approx(by_hand.item(), rel=1e-5)

    # the term's gradient reaches the encoder: weight 0.5 moves it otherwise than the
    # distillation loss alone
    def encoder_grads(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for n, p in model.named_parameters()
                          if n.startswith(model.base_model_prefix) and p.grad is not None])

    with_term = encoder_grads(run.trainer.compute_loss(model, dict(batch)))
    without = encoder_grads(distill.distillation_loss(model(**inputs).logits,
                                                      batch[distill.TEACHER_COLUMN],
                                                      batch["labels"], 0.6, 2.0))
    assert with_term.abs().sum() > 0 and not torch.allclose(with_term, without)
    # a batch that lost the teacher's vectors is an error, not a run without the term
    with pytest.raises(RuntimeError, match="no teacher_vectors: the data pipeline dropped"):
        run.trainer.compute_loss(model, {k: v for k, v in batch.items()
                                         if k != distill.VECTORS_COLUMN})

    with TeacherForwardCounter(teacher) as counter:  # another seed: only the new copies
        train.prepare_training(cfg.replace(seed=7), tmp_path / "run2", notebook=False,
                               log_fn=lambda _m: None)
    assert counter.rows == 32

    scores = train.evaluate_splits(run)  # evaluation rows carry no teacher columns
    assert set(scores) == {"validation", "test"}
    distill.record_teacher_scores(cfg, run.dataset, Report(tmp_path / "run"),
                                  log=lambda _m: None)
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["teacher"]
    assert recorded["distill_relation_weight"] == 0.5


def teacher_width(folder) -> int:
    return json.loads((folder / "config.json").read_text())["hidden_size"]
