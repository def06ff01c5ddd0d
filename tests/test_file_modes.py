"""Files sftlib writes get the modes the umask asks for, weights included (safetensors alone
writes them 0600): final model, export, fetched (and converted) asset, JSON files."""

import dataclasses
import os
import stat

import pytest

from sftlib import assets, deploy, filemodes, train
from sftlib.config import RunConfig
from sftlib.report import write_json_atomic


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def wrong_modes(folder) -> dict[str, str]:
    """Every path below `folder` (and itself) whose mode is not what the umask asks for."""
    mask = filemodes.current_umask()
    paths = [folder, *folder.rglob("*")]
    wanted = {path: (0o777 if path.is_dir() else 0o666) & ~mask for path in paths}
    return {str(path.relative_to(folder)): oct(stat.S_IMODE(path.stat().st_mode))
            for path in paths if stat.S_IMODE(path.stat().st_mode) != wanted[path]}


def test_current_umask_reads_without_changing_it(umask):
    assert filemodes.current_umask() == umask
    assert filemodes.current_umask() == umask
    assert filemodes.file_mode() == 0o666 & ~umask


def test_match_umask_fixes_a_tree_and_leaves_links(tmp_path, umask):
    (tmp_path / "inner").mkdir(mode=0o700)
    weights = tmp_path / "inner" / "model.safetensors"
    weights.write_bytes(b"0")
    weights.chmod(0o600)
    (tmp_path / "link").symlink_to(weights)
    filemodes.match_umask(tmp_path)
    assert wrong_modes(tmp_path) == {}


def test_write_json_atomic_follows_the_umask(tmp_path, umask):
    folder = tmp_path / "run"
    folder.mkdir()
    write_json_atomic(folder / "metrics.json", {"a": 1})
    write_json_atomic(folder / "metrics.json", {"a": 2})  # replacing keeps the mode too
    assert wrong_modes(folder) == {}


def _tiny_trainer(output_dir):
    """A Trainer around a 1-layer, 8-wide BERT classifier (random weights, no assets)."""
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=8, num_labels=2,
                        id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    args = TrainingArguments(output_dir=str(output_dir), report_to="none", use_cpu=True)
    return Trainer(model=BertForSequenceClassification(config), args=args)


def test_final_model_and_export_follow_the_umask(tmp_path, umask):
    model_dir = train.save_final(_tiny_trainer(tmp_path / "checkpoints"), RunConfig(),
                                 tmp_path / "model")
    assert (model_dir / "model.safetensors").is_file()
    assert wrong_modes(model_dir) == {}
    (model_dir / "model.safetensors").chmod(0o600)  # a model saved before this fix
    export_dir = deploy.export(model_dir, tmp_path / "export")
    assert wrong_modes(export_dir) == {}


def _safetensors_converter(folder, log):
    """A stand-in for the GGUF conversion: writes weights the way save_pretrained does."""
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, folder / "model.safetensors")
    return {"function": "test"}


def test_a_fetched_and_converted_asset_follows_the_umask(fake_asset, monkeypatch, umask):
    monkeypatch.setitem(assets.CONVERTERS, "test-safetensors", _safetensors_converter)
    converted = dataclasses.replace(fake_asset, convert="test-safetensors")
    monkeypatch.setitem(assets.ASSETS, converted.name, converted)
    folder = assets.fetch(converted.name, log=lambda _m: None)
    assert (folder / "model.safetensors").is_file()
    assert wrong_modes(folder) == {}
