"""Recipe options: layer-wise LR decay (sftlib.layerwise) and EMA weight averaging
(sftlib.averaging), on the tiny BERT against hand computations."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from sftlib import averaging, layerwise, schedules, train
from sftlib.config import ConfigError, RunConfig

# 32 rows in batches of 4: 8 steps an epoch, so every run here stays inside epoch 0
RECIPE = {"train_subset": 32, "eval_subset": 16, "batch_size": 4, "eval_batch_size": 16,
          "logging_steps": 1, "max_length": 32, "plot_interval_s": 0.0}


def _run(model_folder: Path, folder: Path, resume: bool = False, **settings):
    cfg = RunConfig(**{**RECIPE, "model": str(model_folder), "output_dir": str(folder),
                       **settings})
    return train.prepare_training(cfg, folder, notebook=False, log_fn=lambda _m: None,
                                  resume=resume)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# layer-wise LR decay -----------------------------------------------------------------------

def test_param_groups_carry_the_stated_per_layer_lrs(tiny_model_folder, tmp_path):
    lr, decay, weight_decay = 1e-3, 0.5, 0.01
    run = _run(tiny_model_folder, tmp_path, lr=lr, layerwise_lr_decay=decay,
               weight_decay=weight_decay, max_steps=10, warmup_ratio=0.2)
    trainer = run.trainer
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    # the tiny BERT has L = 2 layers: head and layer 1 at lr, layer 0 at lr * 0.5,
    # embeddings at lr * 0.5**2
    expected = {"classifier.": 1e-3, "bert.pooler.": 1e-3, "bert.encoder.layer.1.": 1e-3,
                "bert.encoder.layer.0.": 5e-4, "bert.embeddings.": 2.5e-4}
    seen = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            name = names[id(param)]
            seen.append(name)
            prefix, = (p for p in expected if name.startswith(p))
            assert group["lr"] == pytest.approx(expected[prefix]), name
            no_decay = "bias" in name or "LayerNorm" in name
            assert group["weight_decay"] == (0.0 if no_decay else weight_decay), name
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable)  # every trainable parameter in exactly one group
    assert optimizer.param_groups[0]["block"] == "head"
    assert [g["block"] for g in optimizer.param_groups][-1] == "embeddings"

    # 10 steps with 2 of warmup: after one step the factor is 1/2, for every group
    peaks = [g["lr"] for g in optimizer.param_groups]
    scheduler = trainer.create_scheduler(10, optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0] * len(peaks)  # warmup from 0
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([p / 2 for p in peaks])
    assert trainer._get_learning_rate() == pytest.approx(lr / 2)  # what is logged: the head's
    factor = schedules.lr_at(1, schedule="linear", lr=lr, total_steps=10, warmup_steps=2) / lr
    assert factor == pytest.approx(0.5)


def test_without_decay_the_optimizer_is_trainers_own(tiny_model_folder, tmp_path):
    run = _run(tiny_model_folder, tmp_path, max_steps=1)
    groups = run.trainer.create_optimizer().param_groups
    assert len(groups) == 2 and "block" not in groups[0]  # decay / no decay, both at lr


def test_mpnet_names_are_placed():
    from transformers import MPNetConfig, MPNetForSequenceClassification

    config = MPNetConfig(vocab_size=64, hidden_size=16, num_hidden_layers=3,
                         num_attention_heads=2, intermediate_size=32)
    model = MPNetForSequenceClassification(config)
    blocks = layerwise.assign_blocks(n for n, _ in model.named_parameters())
    assert blocks["mpnet.encoder.relative_attention_bias.weight"] == layerwise.Block(
        "embeddings", 3)
    assert blocks["mpnet.embeddings.word_embeddings.weight"].depth == 3
    assert blocks["mpnet.encoder.layer.0.attention.attn.q.weight"] == layerwise.Block(
        "layer 0", 2)
    assert blocks["mpnet.encoder.layer.2.output.dense.weight"].depth == 0
    assert blocks["classifier.dense.weight"] == blocks["classifier.out_proj.bias"] == \
        layerwise.Block("head", 0)
    table = layerwise.peak_lr_table(model, 1e-3, 0.5)
    assert list(table.index) == ["head", "layer 2", "layer 1", "layer 0", "embeddings"]
    assert list(table["peak lr"]) == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4, 1.25e-4])
    assert table["parameters"].sum() == sum(p.numel() for p in model.parameters())


def test_a_model_whose_layers_are_not_found_is_refused_when_the_trainer_is_built(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification, TrainingArguments

    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=64, n_embd=16, n_layer=1,
                                                     n_head=2, n_positions=32))
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ConfigError, match="layerwise_lr_decay: cannot find the encoder's "
                                          "layers.*Set layerwise_lr_decay=1.0"):
        train.WorkbenchTrainer(model=model, args=args,
                               run_config=RunConfig(layerwise_lr_decay=0.9))
    # with the decay off, the notebook's table of peak lrs is one row, not an error
    assert layerwise.peak_lr_table(model, 1e-3, 1.0).to_dict("index") == {"all": {
        "depth": 0, "lr factor": 1.0, "peak lr": 1e-3,
        "parameters": sum(p.numel() for p in model.parameters())}}
    with pytest.raises(ConfigError, match="cannot place parameter 'bert.encoder.gate"):
        layerwise.assign_blocks(["bert.encoder.layer.0.dense.weight",
                                 "bert.encoder.gate.weight"])
    # a LayerNorm of the encoder's own is DeBERTa-v2's only beside its relative embeddings
    with pytest.raises(ConfigError, match="cannot place parameter 'bert.encoder.LayerNorm"):
        layerwise.assign_blocks(["bert.encoder.layer.0.dense.weight",
                                 "bert.encoder.LayerNorm.weight"])


def test_the_encoder_alone_is_placed():
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=32))
    blocks = layerwise.assign_blocks(n for n, _ in model.named_parameters())
    assert blocks["embeddings.word_embeddings.weight"] == layerwise.Block("embeddings", 2)
    assert blocks["encoder.layer.0.output.dense.weight"] == layerwise.Block("layer 0", 1)
    assert blocks["pooler.dense.weight"] == layerwise.Block("head", 0)


@pytest.mark.parametrize("conv", [0, 3])  # DeBERTa-v3's shape; v2-xlarge's has a conv
def test_deberta_v2_names_are_placed(conv):
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    config = DebertaV2Config(vocab_size=64, hidden_size=16, num_hidden_layers=3,
                             num_attention_heads=2, intermediate_size=32,
                             max_position_embeddings=32, relative_attention=True,
                             position_buckets=8, norm_rel_ebd="layer_norm",
                             pos_att_type=["p2c", "c2p"], conv_kernel_size=conv)
    model = DebertaV2ForSequenceClassification(config)
    blocks = layerwise.assign_blocks(n for n, _ in model.named_parameters())
    assert blocks["deberta.encoder.rel_embeddings.weight"] == \
        blocks["deberta.encoder.LayerNorm.weight"] == layerwise.Block("embeddings", 3)
    assert blocks["deberta.encoder.layer.2.output.dense.weight"] == layerwise.Block("layer 2", 0)
    assert blocks["pooler.dense.weight"] == blocks["classifier.weight"] == \
        layerwise.Block("head", 0)
    if conv:
        assert blocks["deberta.encoder.conv.conv.weight"] == layerwise.Block("layer 0", 2)
    table = layerwise.peak_lr_table(model, 1e-3, 0.5)
    assert list(table.index) == ["head", "layer 2", "layer 1", "layer 0", "embeddings"]
    assert table["parameters"].sum() == sum(p.numel() for p in model.parameters())


def test_a_narrow_electra_projects_its_embeddings_below_the_layers():
    from transformers import ElectraConfig, ElectraForSequenceClassification

    model = ElectraForSequenceClassification(ElectraConfig(
        vocab_size=64, embedding_size=8, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32))
    blocks = layerwise.assign_blocks(n for n, _ in model.named_parameters())
    assert blocks["electra.embeddings_project.weight"] == layerwise.Block("embeddings", 2)
    assert blocks["electra.encoder.layer.1.output.dense.weight"] == layerwise.Block("layer 1", 0)


def test_modernbert_names_are_placed():
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    config = ModernBertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=3,
                              num_attention_heads=2, intermediate_size=32,
                              max_position_embeddings=32, pad_token_id=0, bos_token_id=1,
                              eos_token_id=2, cls_token_id=1, sep_token_id=2)
    model = ModernBertForSequenceClassification(config)
    blocks = layerwise.assign_blocks(n for n, _ in model.named_parameters())
    assert blocks["model.embeddings.tok_embeddings.weight"] == layerwise.Block("embeddings", 3)
    assert blocks["model.layers.0.attn.Wqkv.weight"] == layerwise.Block("layer 0", 2)
    assert blocks["model.final_norm.weight"] == layerwise.Block("final norm", 0)
    assert blocks["head.dense.weight"] == blocks["classifier.bias"] == layerwise.Block("head", 0)
    groups = layerwise.param_groups(model, 1e-3, 0.5, 0.01, [])
    assert {g["block"]: g["lr"] for g in groups} == pytest.approx({
        "head": 1e-3, "final norm": 1e-3, "layer 2": 1e-3, "layer 1": 5e-4, "layer 0": 2.5e-4,
        "embeddings": 1.25e-4})
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_recipe_keys_are_validated():
    with pytest.raises(ConfigError, match=r"layerwise_lr_decay: must be > 0 and <= 1"):
        RunConfig(layerwise_lr_decay=1.2)
    with pytest.raises(ConfigError, match="weight_averaging: 'swa' is not one of none, ema"):
        RunConfig(weight_averaging="swa")
    with pytest.raises(ConfigError, match=r"ema_decay: must be > 0 and < 1"):
        RunConfig(weight_averaging="ema", ema_decay=1.0)
    with pytest.raises(ConfigError, match="ema_decay: set without weight_averaging=ema"):
        RunConfig(ema_decay=0.99)
    with pytest.raises(ConfigError, match="weight_averaging: only for task 'classification'"):
        RunConfig(task="instruction", metric_for_best="loss", weight_averaging="ema")



@pytest.mark.parametrize(("fsdp", "zero_stage", "refused_by"),
                         [(True, None, "FSDP"), (False, 3, "DeepSpeed ZeRO-3"),
                          (False, 2, None), (False, None, None)])
def test_ema_of_sharded_weights_is_refused(fsdp, zero_stage, refused_by):
    # sharded parameters: each process would average its own shard only
    if refused_by is None:
        averaging.refuse_sharded_weights(fsdp, zero_stage)
    else:
        with pytest.raises(ConfigError, match=f"not supported with {refused_by}"):
            averaging.refuse_sharded_weights(fsdp, zero_stage)


# EMA weight averaging ----------------------------------------------------------------------

class _RecordWeights(TrainerCallback):
    """The trainable weights before the first step and after each step, in float64."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.weights.append({n: t.double() for n, t in _trainable(model).items()})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.on_train_begin(args, state, control, model=model)


@pytest.mark.slow
def test_the_average_is_the_hand_computed_recurrence_and_is_what_is_evaluated_and_kept(
        tiny_model_folder, tmp_path):
    steps, decay = 6, 0.3  # d_t = 0.1, 0.18, 0.25, then capped at 0.3
    run = _run(tiny_model_folder, tmp_path, lr=1e-3, max_steps=steps, eval_strategy="steps",
               eval_steps=steps, weight_averaging="ema", ema_decay=decay)
    recorder = _RecordWeights()
    run.trainer.add_callback(recorder)
    run.trainer.train()

    weights = recorder.weights
    assert len(weights) == steps + 1
    expected = dict(weights[0])
    for t in range(steps):
        d = min(decay, (1 + t) / (10 + t))
        expected = {n: d * expected[n] + (1 - d) * weights[t + 1][n] for n in expected}
    assert [averaging.decay_at(t, decay) for t in range(4)] == pytest.approx(
        [0.1, 2 / 11, 0.25, 0.3])
    final = _trainable(run.trainer.model)
    for name, value in expected.items():
        torch.testing.assert_close(final[name].double(), value, rtol=0, atol=1e-6)
    assert not torch.equal(final["classifier.weight"].double(), weights[-1]["classifier.weight"])

    # the checkpoint holds the average as its model, the trained weights next to it
    checkpoint = tmp_path / "checkpoints" / f"checkpoint-{steps}"
    saved, trained = (load_file(checkpoint / "model.safetensors"),
                      load_file(checkpoint / averaging.TRAINING_WEIGHTS))
    for name, value in final.items():
        assert torch.equal(saved[name], value) and torch.equal(trained[name].double(),
                                                               weights[-1][name])
    # the evaluation during training was of the average: the final model scores the same
    logged = [r["eval_loss"] for r in run.trainer.state.log_history if "eval_loss" in r]
    assert logged == [run.trainer.evaluate()["eval_loss"]]


@pytest.mark.slow
def test_a_resumed_ema_run_ends_where_the_uninterrupted_one_ends(tiny_model_folder, tmp_path):
    settings = {"max_steps": 4, "eval_strategy": "steps", "eval_steps": 2,
                "weight_averaging": "ema", "ema_decay": 0.5, "layerwise_lr_decay": 0.8,
                "lr": 1e-3}
    whole = _run(tiny_model_folder, tmp_path / "whole", **settings)
    whole.trainer.train()

    # a run stopped after its checkpoint at step 2 left what the whole run wrote by then
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "checkpoint-2",
                    tmp_path / "resumed" / "checkpoints" / "checkpoint-2")
    resumed = _run(tiny_model_folder, tmp_path / "resumed", resume=True, **settings)
    resumed.trainer.train(resume_from_checkpoint=True)

    assert resumed.trainer.state.global_step == 4
    evals = [[r for r in run.trainer.state.log_history if "eval_loss" in r]
             for run in (whole, resumed)]
    assert [r["eval_loss"] for r in evals[0]] == [r["eval_loss"] for r in evals[1]]
    final_whole, final_resumed = _trainable(whole.trainer.model), _trainable(
        resumed.trainer.model)
    assert all(torch.equal(final_whole[n], final_resumed[n]) for n in final_whole)
    for name in ("model.safetensors", averaging.TRAINING_WEIGHTS):
        a, b = (load_file(tmp_path / run / "checkpoints" / "checkpoint-4" / name)
                for run in ("whole", "resumed"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("schedule", ["linear", "cosine", "exponential", "constant",
                                      "hf:cosine", "hf:polynomial", "hf:inverse_sqrt"])
def test_every_schedule_scales_each_group_from_its_own_peak(schedule):
    cfg = RunConfig(lr=1e-3, schedule=schedule, warmup_ratio=0.1, final_lr=1e-5)
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": peak}
              for peak in (1e-3, 2.5e-4)]
    optimizer = torch.optim.SGD(groups, lr=1e-3)
    scheduler = schedules.make_scheduler(optimizer, cfg, 20)
    alone = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    reference = schedules.make_scheduler(alone, cfg, 20)  # one group: the schedule itself
    for _ in range(20):
        optimizer.step(), alone.step(), scheduler.step(), reference.step()
        head, lower = (g["lr"] for g in optimizer.param_groups)
        assert head == pytest.approx(alone.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        assert lower == pytest.approx(head / 4, rel=1e-9, abs=1e-15)
