"""Training engine: earlier runs kept, resume refuses a changed config, torchrun with 2
processes, a full disk is one line (kill-and-resume: test_resume.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sftlib import train
from sftlib.config import RunConfig
from sftlib.tasks.classification import build_classifier

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {"train_subset": 160, "eval_subset": 64, "max_steps": 16, "batch_size": 8,
         "eval_strategy": "steps", "eval_steps": 4, "logging_steps": 2, "max_length": 64}


def _train_cmd(output_dir, **overrides):
    settings = {**SMOKE, **overrides}
    args = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return [sys.executable, "-m", "sftlib", "train", *args, "--output-dir", str(output_dir)]


def _metrics(folder):
    return json.loads((Path(folder) / "metrics.json").read_text())


def test_planned_steps():
    cfg = RunConfig(batch_size=16, epochs=3, grad_accum_steps=2)
    assert train.planned_steps(cfg, 100) == 12  # ceil(100/16)=7 batches, /2 per step, x3
    assert train.planned_steps(cfg, 100, world_size=2) == 6
    assert train.planned_steps(RunConfig(max_steps=5), 10_000) == 5


def test_hardware_is_chosen_and_described():
    hardware = train.detect_hardware("auto")
    assert hardware.attn_implementation == "sdpa"
    assert hardware.device in hardware.describe() and "precision=" in hardware.describe()
    if hardware.device == "cpu":  # bf16 autocast only where the CPU computes bf16 natively
        assert hardware.bf16 == train.cpu_has_native_bf16()
        assert not train.detect_hardware("fp32").bf16
        with pytest.raises(ValueError, match="fp16 needs a GPU"):
            train.detect_hardware("fp16")


def test_fresh_run_archives_what_an_earlier_run_left(tmp_path):
    (tmp_path / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "training.png").write_bytes(b"earlier curves")
    (tmp_path / "figures" / "label_balance.png").write_bytes(b"notebook 01's, this run")
    earlier = {"data": {"rows": 10}, "training": {"steps": 4}, "validation": {"loss": 0.5},
               "test": {"loss": 0.6}}
    (tmp_path / "metrics.json").write_text(json.dumps(earlier))
    lines = []
    archive = train.archive_previous_run(tmp_path, log_fn=lines.append)

    assert (archive / "checkpoints" / "checkpoint-4").is_dir()
    assert (archive / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert (archive / "figures" / "training.png").read_bytes() == b"earlier curves"
    assert json.loads((archive / "metrics.json").read_text()) == earlier  # copied whole
    # the folder keeps what the current run's earlier stages wrote, and nothing of training
    assert _metrics(tmp_path) == {"data": {"rows": 10}}
    assert (tmp_path / "figures" / "label_balance.png").is_file()
    assert not (tmp_path / "checkpoints").exists()
    assert not (tmp_path / "figures" / "training.png").exists()
    assert len(lines) == 1 and str(archive) in lines[0]
    assert "figures/training.png" in lines[0] and "copied metrics.json" in lines[0]
    assert train.archive_previous_run(tmp_path, log_fn=lines.append) is None


def test_metrics_json_of_other_stages_alone_is_not_an_earlier_run(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"data": {"rows": 10}}))
    assert train.archive_previous_run(tmp_path, log_fn=lambda _m: None) is None
    assert _metrics(tmp_path) == {"data": {"rows": 10}}


@pytest.mark.slow
def test_resume_refuses_a_changed_config(tmp_path, tiny_model_folder):
    model = tiny_model_folder  # the bookkeeping of a run does not depend on the model's size
    subprocess.run(_train_cmd(tmp_path, max_steps=4, model=model), check=True,
                   capture_output=True, cwd=ROOT)
    result = subprocess.run(_train_cmd(tmp_path, max_steps=4, lr=0.001, model=model) +
                            ["--resume"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "different config" in result.stderr and "'lr'" in \
        result.stderr


def cache_without_teacher_logits(folder: Path) -> Path:
    """An SFTLIB_CACHE whose assets are the real cache's (linked: nothing fetched again) and
    whose teacher-logits are empty: a teacher's logits are computed afresh."""
    from sftlib import assets

    for name in ("minilm-l6", "rotten-tomatoes"):  # fetched before they are linked
        assets.fetch(name, log=lambda _m: None)
    folder.mkdir()
    for entry in assets.cache_dir().iterdir():
        if entry.name != "teacher-logits":
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.mark.slow
def test_torchrun_two_processes_share_the_data_and_rank0_writes(tmp_path, tiny_model_folder):
    from run_folders import save_tiny_classifier

    # distilled from a tiny teacher: one rank computes its logits, the other reads them
    teacher = save_tiny_classifier(tiny_model_folder, tmp_path / "teacher")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",  # whole lines
           "SFTLIB_CACHE": str(cache_without_teacher_logits(tmp_path / "cache"))}
    run = tmp_path / "run"
    command = _train_cmd(run, max_steps=4, model=tiny_model_folder, teacher=teacher)
    command[1:3] = ["-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "sftlib"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    train_texts = "teacher logits for 160 texts"
    assert len(re.findall(rf"{train_texts} computed on (cpu|cuda)", result.stdout)) == 1, \
        result.stdout
    assert result.stdout.count(f"{train_texts} read from the cache") == 1, result.stdout
    metrics = _metrics(run)
    assert metrics["teacher"]["path"] == str(teacher)
    # 4 steps x 8 per process x 2 processes = 64 of 160 rows: epoch 0.4 (one process: 0.2)
    assert metrics["training"]["epochs"] == pytest.approx(0.4)
    assert 0.0 < metrics["validation"]["loss"] < 1.0  # not scaled by the process count
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "loss" in r]
    assert train_steps == sorted(set(train_steps)), "only rank 0 writes the log"
    assert result.stdout.count('"output_dir"') == 1, "only rank 0 prints the result"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert train.cpu_has_native_bf16("flags : fpu sse2 avx512f amx_bf16 amx_tile")
    assert train.cpu_has_native_bf16("flags : fpu avx512f avx512_bf16")
    assert not train.cpu_has_native_bf16("flags : fpu sse2 avx2 avx512f")


def test_seed_is_set_before_the_head_is_created():
    import torch

    names = ["neg", "pos"]
    first = build_classifier(RunConfig(seed=1), names).classifier.weight
    again = build_classifier(RunConfig(seed=1), names).classifier.weight
    other = build_classifier(RunConfig(seed=2), names).classifier.weight
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_half_precision_checkpoint_trains_with_fp32_master_weights(tmp_path):
    """transformers 5 would load an fp16 checkpoint as fp16; autocast needs fp32 weights."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)
    BertModel(config).half().save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n")  # a model folder has its vocabulary
    model = build_classifier(RunConfig(model=str(tmp_path)), ["neg", "pos"])
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_training_arguments_follow_the_config(tmp_path):
    hardware = train.detect_hardware("auto")
    args = train.training_arguments(
        RunConfig(deterministic=True, group_by_length=False, eval_strategy="steps",
                  eval_steps=7, grad_accum_steps=3, metric_for_best="loss"),
        tmp_path, hardware)
    assert args.full_determinism and args.train_sampling_strategy == "random"
    assert (args.eval_steps, args.save_steps, args.gradient_accumulation_steps) == (7, 7, 3)
    assert args.metric_for_best_model == "loss" and args.greater_is_better is False
    fused = hardware.device in ("cuda", "cpu")
    assert args.optim == ("adamw_torch_fused" if fused else "adamw_torch")
    default = train.training_arguments(RunConfig(), tmp_path, hardware)
    assert default.train_sampling_strategy == "group_by_length" and default.load_best_model_at_end
    assert not default.torch_compile
    assert train.training_arguments(RunConfig(torch_compile=True), tmp_path,
                                    hardware).torch_compile


def test_weight_decay_skips_biases_and_layernorm(tmp_path):
    cfg = RunConfig(train_subset=32, eval_subset=16, max_steps=1, output_dir=str(tmp_path))
    run = train.prepare_training(cfg, tmp_path, notebook=False, log_fn=lambda _m: None)
    optimizer = run.trainer.create_optimizer()
    names = {id(p): n for n, p in run.trainer.model.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0
               for p in g["params"]}
    plain = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0
             for p in g["params"]}
    assert all(g["weight_decay"] in (0.0, cfg.weight_decay) for g in optimizer.param_groups)
    assert "bert.encoder.layer.0.attention.self.query.weight" in decayed
    assert "bert.encoder.layer.0.attention.self.query.bias" in plain
    assert "bert.encoder.layer.0.output.LayerNorm.weight" in plain
    assert not any("bias" in n or "LayerNorm" in n for n in decayed)


# a disk that fills up while a checkpoint or the model is written -------------------------
SAFETENSORS_DISK_FULL = ('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                         'message: "No space left on device" })')


@pytest.mark.slow
@pytest.mark.parametrize("writing", ["checkpoint", "model"])
def test_a_full_disk_while_saving_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys,
                                                         writing):
    """Saving a checkpoint raises OSError ENOSPC; saving the model, safetensors' error."""
    import errno

    from safetensors import SafetensorError
    from transformers import Trainer

    from sftlib.__main__ import main

    save_model = Trainer.save_model

    def full_disk(self, output_dir=None, _internal_call=False):
        if writing == "checkpoint":
            raise OSError(errno.ENOSPC, "No space left on device")
        if not _internal_call:  # not a checkpoint's weights: the final model's
            raise SafetensorError(SAFETENSORS_DISK_FULL)
        save_model(self, output_dir, _internal_call)

    monkeypatch.setattr(Trainer, "save_model", full_disk)
    settings = {**SMOKE, "max_steps": 1, "eval_steps": 1, "train_subset": 16,
                "eval_subset": 8}
    args = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    assert main(["train", *args, "--output-dir", str(tmp_path)]) == 1

    folder = tmp_path / ("checkpoints/checkpoint-1" if writing == "checkpoint" else "model")
    message = f"sftlib: no space left on {train._filesystem_of(tmp_path)} while writing {folder}"
    stderr = capsys.readouterr().err
    assert stderr.splitlines()[-1] == message and "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "sftlib" in line] == [message]


def test_only_errors_of_a_full_disk_are_named_so(tmp_path, monkeypatch):
    import errno

    from safetensors import SafetensorError

    assert train.is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert train.is_disk_full(SafetensorError(SAFETENSORS_DISK_FULL), tmp_path)
    assert not train.is_disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
    torch_save_failed = RuntimeError("[enforce fail at inline_container.cc:672] . "
                                     "unexpected pos 704 vs 598")  # torch.save: no errno
    assert not train.is_disk_full(torch_save_failed, tmp_path)
    monkeypatch.setattr(train.shutil, "disk_usage", lambda _path: SimpleNamespace(free=0))
    assert train.is_disk_full(torch_save_failed, tmp_path / "checkpoint-1")
    with pytest.raises(PermissionError), train.naming_a_full_disk(tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(train.DiskFullError, match=f"while writing {tmp_path}$"), \
            train.naming_a_full_disk(tmp_path):
        raise SafetensorError(SAFETENSORS_DISK_FULL)


def test_tied_output_head_is_not_reported_missing_when_the_best_model_loads(tmp_path, caplog):
    """A causal LM saves its output head tied to the embedding; loading the best checkpoint
    must tie it again, not print "missing keys: lm_head.weight" into notebook 03."""
    import logging

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    trainer = train.WorkbenchTrainer(
        model=model, args=TrainingArguments(str(tmp_path), use_cpu=True, report_to="none"),
        run_config=RunConfig())
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(torch.zeros_like(model.lm_head.weight))
    result = model.load_state_dict(state, strict=False)
    with caplog.at_level(logging.WARNING, logger="transformers.trainer"):
        trainer._issue_warnings_after_load(result)  # WorkbenchTrainer's, not Trainer's
    assert "missing keys" not in caplog.text
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


ACCUMULATION_CASES = {  # the instruction task's loss is token-averaged by Trainer itself
    "classification-cls": {"pooling": "cls"},
    "classification-mean": {"pooling": "mean"},
    "instruction": {"task": "instruction", "model": "smollm2-135m-instruct",
                    "dataset": "alpaca-demo", "max_length": 64, "metric_for_best": "loss",
                    "lora": True, "lora_r": 4},
}


@pytest.mark.parametrize("case", [
    pytest.param(name, marks=[pytest.mark.slow] * (name == "instruction"))  # a 135M model
    for name in ACCUMULATION_CASES])
def test_two_accumulated_batches_of_four_are_one_batch_of_eight(tmp_path, tiny_model_folder,
                                                                 case):
    """grad_accum_steps=2 over batches of 4 is one optimizer step over the same 8 rows: the
    same logged loss and gradient norm. A classifier's loss is a mean over its batch, so
    Trainer must divide each micro-batch's by the accumulation steps; transformers 5 skips
    that for models whose forward takes **kwargs (it assumes they scaled by
    num_items_in_batch), which doubled both."""
    import torch

    def first_step(batch_size: int, accumulation: int) -> dict:
        folder = tmp_path / f"accumulate-{accumulation}"
        cfg = RunConfig(**{"model": str(tiny_model_folder), **ACCUMULATION_CASES[case]},
                        train_subset=16, eval_subset=4, max_steps=1, batch_size=batch_size,
                        grad_accum_steps=accumulation, group_by_length=False, logging_steps=1,
                        precision="fp32", eval_strategy="no", output_dir=str(folder))
        run = train.prepare_training(cfg, folder, notebook=False, log_fn=lambda _m: None)
        for module in run.trainer.model.modules():  # the same function of the rows, both ways
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        run.trainer.train()
        return next(r for r in run.trainer.state.log_history if "loss" in r)

    one, accumulated = first_step(8, 1), first_step(4, 2)
    assert accumulated["loss"] == pytest.approx(one["loss"], rel=1e-4)
    assert accumulated["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-3)
