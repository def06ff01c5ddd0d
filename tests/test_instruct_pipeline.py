"""The instruction notebooks 01..05, headless, on a few steps (packing + LoRA); the run is
the session's shared `instruction_run` (tests/conftest.py)."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from sftlib.tasks import get_task

NOTEBOOKS = get_task("instruction").notebooks

ROOT = Path(__file__).resolve().parents[1]
def _outputs(run_dir, name):
    executed = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
    return [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.slow
def test_instruction_pipeline_writes_a_complete_report(instruction_run):
    manifest = json.loads((instruction_run / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["config"]["task"] == "instruction"
    assert manifest["inputs"]["chat_template"] == "tokenizer"
    assert manifest["inputs"]["model"]["model.safetensors"]  # hashes of the converted asset
    metrics = manifest["metrics"]
    assert metrics["training"]["steps"] == 3
    for section in ("before_training", "validation", "test"):
        values = metrics[section]
        assert 0 < values["loss"] < 10 and values["perplexity"] > 1 and values["tokens"] > 0
    assert metrics["packing"]["examples_per_row"] > 1
    assert 0 <= metrics["instruction_tokens"]["response_truncated_share"] <= 1
    overlap = metrics["generation_validation"]
    assert set(overlap) == {"before", "after"} and 0 <= overlap["after"]["rouge_l"] <= 1
    for name in NOTEBOOKS:
        assert not [o for o in _outputs(instruction_run, name) if o.output_type == "error"], name
    for figure in ("prompt_response_lengths", "token_length_cdf", "training", "lr_schedules"):
        assert (instruction_run / "figures" / f"{figure}.png").stat().st_size > 5000, figure


@pytest.mark.slow
def test_instruction_notebooks_show_no_noise(instruction_run):
    from notebook_checks import noise_in

    for name in NOTEBOOKS:
        executed = nbformat.read(instruction_run / "notebooks" / f"{name}.ipynb", as_version=4)
        assert not noise_in(executed), (name, noise_in(executed))


@pytest.mark.slow
def test_mask_view_and_chat_are_in_the_executed_notebooks(instruction_run):
    pages = [o["data"]["text/html"] for o in _outputs(instruction_run, "02_tokenization")
             if "text/html" in o.get("data", {})]
    assert any("trained</b>" in page and "#b7efb2" in page for page in pages)
    tables = [o["data"]["text/html"] for o in _outputs(instruction_run, "05_deployment")
              if "text/html" in o.get("data", {})]
    assert any("answer" in table and "capital of France" in table for table in tables)


@pytest.mark.slow
def test_lora_is_merged_and_the_export_is_a_plain_model(instruction_run):
    from transformers import AutoModelForCausalLM

    model_dir, export_dir = instruction_run / "model", instruction_run / "export"
    assert (model_dir / "adapter" / "adapter_config.json").is_file()
    assert not (export_dir / "adapter").exists()
    assert not (export_dir / "adapter_config.json").exists()
    described = json.loads((export_dir / "chat_export.json").read_text())
    assert described["lora_merged"] is True and described["task"] == "instruction"
    model = AutoModelForCausalLM.from_pretrained(export_dir)  # no peft involved
    assert type(model).__name__ == "LlamaForCausalLM"


def test_task_instruction_alone_fails_fast_with_the_way_out():
    result = subprocess.run([sys.executable, "-m", "sftlib", "run", "--set", "task=instruction"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "configs/instruction.yaml" in result.stderr and "smollm2-135m-instruct" in result.stderr
