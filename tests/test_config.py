import dataclasses
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftlib.config import ConfigError, RunConfig, _allowed_types, load_config, parse_overrides

INSTRUCTION = {"task": "instruction", "model": "smollm2-135m-instruct", "dataset": "alpaca-demo",
               "metric_for_best": "loss"}


def test_defaults_are_valid_and_round_trip():
    cfg = RunConfig()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict({"learning_rate": 1e-4})
    message = str(error.value)
    assert "learning_rate" in message and "lr" in message and "allowed keys" in message


@pytest.mark.parametrize("values, fragment", [
    ({"lr": "fast"}, "lr: expected float"),
    ({"batch_size": 2.5}, "batch_size: expected int"),
    ({"group_by_length": "yes"}, "group_by_length: expected bool"),
    ({"batch_size": True}, "batch_size: expected int, got bool"),
    ({"batch_size": 0}, "batch_size: must be >= 1"),
    ({"lr": 0}, "lr: must be > 0"),
    ({"schedule": "step"}, "schedule: 'step' is not one of"),
    ({"max_length": "long"}, "max_length: an integer >= 8 or 'auto'"),
    ({"max_length": 4}, "max_length: must be between 8"),
    ({"final_lr": 1.0}, "final_lr: 1.0 is above the peak lr"),
    ({"schedule": "exponential"}, "needs gamma, or final_lr > 0"),
    ({"gamma": 1.5}, "gamma: the exponential decay factor must be in (0, 1]"),
    ({"early_stopping_patience": 2, "eval_strategy": "no"}, "early_stopping_patience needs"),
    ({"precision": "int4"}, "precision: 'int4' is not one of"),
    ({"report_to": "wandb"}, "report_to: 'wandb' is not one of none, tensorboard"),
    ({"max_steps": 0}, "max_steps: -1 (use epochs) or a positive count"),
    ({"max_steps": 10**8}, "max_steps: -1 (use epochs) or a positive count up to 10000000, "
                           "got 100000000"),
    ({"lr": float("nan")}, "lr: must be a finite number, got nan"),
    ({"epochs": float("inf")}, "epochs: must be a finite number, got inf"),
    ({"warmup_ratio": float("nan")}, "warmup_ratio: must be a finite number, got nan"),
    ({"final_lr": float("nan")}, "final_lr: must be a finite number, got nan"),
    ({"max_grad_norm": float("inf")}, "max_grad_norm: must be a finite number, got inf"),
    ({"plot_interval_s": float("-inf")}, "plot_interval_s: must be a finite number, got -inf"),
    ({"gamma": float("nan")}, "gamma: must be a finite number, got nan"),
    ({"lr": 10**400}, "lr: must be a finite number, got an integer of about 401 digits"),
    ({"lr": 1.0}, "lr: must be > 0 and < 1, got 1.0 (AdamW diverges"),
    ({"epochs": 1001}, "epochs: must be >= 0 and <= 1000, got 1001.0"),
    ({"epochs": -1, "max_steps": 10}, "epochs: must be >= 0 and <= 1000, got -1.0"),
    ({"seed": 10**20}, "seed: must be >= 0 and <= 4294967295, got 100000000000000000000 "
                       "(numpy and torch seeds are 32-bit)"),
    ({"seed": -1}, "seed: must be >= 0 and <= 4294967295, got -1"),
    ({"seed": 1e20}, "seed: expected int, got float 1e+20"),
    ({"seed": "1e20"}, "seed: expected int, got str '1e20'"),
    ({"batch_size": 65537}, "batch_size: must be >= 1 and <= 65536, got 65537"),
    ({"eval_batch_size": 10**6}, "eval_batch_size: must be >= 1 and <= 65536, got 1000000"),
    ({"grad_accum_steps": 0}, "grad_accum_steps: must be >= 1 and <= 65536, got 0"),
    ({"logging_steps": 0}, "logging_steps: must be >= 1 and <= 10000000, got 0"),
    ({"eval_steps": -3}, "eval_steps: must be >= 1 and <= 10000000, got -3"),
    ({"early_stopping_patience": -1}, "early_stopping_patience: must be >= 0"),
    ({"train_subset": 0}, "train_subset: must be >= 1"),
    ({"weight_decay": 5.0}, "weight_decay: must be >= 0 and <= 1, got 5.0"),
    ({"warmup_ratio": 1.0}, "warmup_ratio: must be >= 0 and < 1, got 1.0"),
    ({"plot_max_share": float("nan")}, "plot_max_share: must be a finite number, got nan"),
    ({"task": "instruction"}, "model: 'minilm-l6' is a classification asset"),
    ({"task": "instruction"}, "configs/instruction.yaml"),
    ({"task": "summarize"}, "task: 'summarize' is not one of classification, instruction"),
    ({"lora": True}, "lora: only for task 'instruction'"),
    ({"packing": True}, "packing: only for task 'instruction'"),
    ({**INSTRUCTION, "metric_for_best": "accuracy"}, "does not exist for task 'instruction'"),
    ({**INSTRUCTION, "text_column": "body"}, "text_column: only for task 'classification'"),
    ({"pooling": "foo"}, "pooling: 'foo' is not one of cls, mean"),
    ({**INSTRUCTION, "pooling": "mean"}, "pooling: only for task 'classification'"),
    ({**INSTRUCTION, "lora_r": 8}, "lora_r: LoRA options without lora=true"),
    ({**INSTRUCTION, "lora": True, "lora_dropout": 1.0}, "lora_dropout: must be in [0, 1)"),
    ({**INSTRUCTION, "lora": True, "lora_alpha": float("inf")},
     "lora_alpha: must be a finite number, got inf"),
    ({**INSTRUCTION, "lora": True, "lora_r": 10**6}, "lora_r: must be >= 1 and <= 65536"),
    ({**INSTRUCTION, "max_new_tokens": 10**5}, "max_new_tokens: must be >= 1 and <= 8192"),
    ({**INSTRUCTION, "truncated_responses": "keep"}, "truncated_responses: 'keep' is not one of"),
    ({**INSTRUCTION, "dataset": "rotten-tomatoes"}, "dataset: 'rotten-tomatoes' is a "
                                                     "classification asset"),
])
def test_impossible_values_are_one_clear_error(values, fragment):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict(values)
    assert fragment in str(error.value)


def test_numbers_are_widened_but_not_invented():
    cfg = RunConfig.from_dict({"max_grad_norm": 5, "epochs": 3, "max_length": "auto",
                               "gamma": None})
    assert cfg.max_grad_norm == 5.0 and isinstance(cfg.max_grad_norm, float)
    assert cfg.epochs == 3.0
    assert RunConfig.from_dict({"lr": "3e-5"}).lr == 3e-5  # YAML reads 3e-5 as a string


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 3.0e-5\nepochs: 1\nschedule: cosine\n")
    cfg = load_config(path, ["epochs=2", "train_subset=100", "eval_subset=null"])
    assert (cfg.lr, cfg.epochs, cfg.schedule, cfg.train_subset, cfg.eval_subset) == \
        (3e-5, 2.0, "cosine", 100, None)


def test_bad_yaml_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- lr\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["lr"])


def test_cli_reports_config_errors_with_exit_2():
    result = subprocess.run([sys.executable, "-m", "sftlib", "config", "--set", "lr=fast"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "config error: lr: expected float" in result.stderr
    ok = subprocess.run([sys.executable, "-m", "sftlib", "config", "--set", "lr=2e-5"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and '"lr": 2e-05' in ok.stdout


def test_shipped_configs_are_valid():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        load_config(path)
    assert load_config(Path(__file__).parents[1] / "configs" / "default.yaml") == RunConfig()


def test_instruction_config_is_valid_with_its_options():
    cfg = RunConfig.from_dict({**INSTRUCTION, "packing": True, "lora": True, "lora_r": 8,
                               "lora_target_modules": "q_proj,v_proj"})
    assert (cfg.task, cfg.lora_r, cfg.packing) == ("instruction", 8, True)
    shipped = load_config(Path(__file__).parents[1] / "configs" / "instruction.yaml")
    assert shipped.task == "instruction" and shipped.metric_for_best == "loss"


def test_direct_construction_coerces_like_from_dict():
    assert RunConfig(lr="1e-4").lr == 1e-4 and RunConfig(epochs=3).epochs == 3.0
    with pytest.raises(ConfigError, match="seed: must be >= 0"):
        RunConfig(seed=2**32)


@pytest.mark.parametrize("override, message", [
    ("lr=.nan", "lr: must be a finite number, got nan"),
    ("epochs=.inf", "epochs: must be a finite number, got inf"),
    ("warmup_ratio=nan", "warmup_ratio: must be a finite number, got nan"),
    ("max_grad_norm=-.inf", "max_grad_norm: must be a finite number, got -inf"),
    ("seed=1e20", "seed: expected int, got str '1e20'"),
    ("seed=100000000000000000000", "seed: must be >= 0 and <= 4294967295"),
    ("lr=[1", "override 'lr=[1': YAML error at line 1, column 3: expected ',' or ']', but got "
              "'<stream end>'; quote a value meant as text, e.g. key='...'"),
    ("model=a: b: c", "override 'model=a: b: c': YAML error at line 1, column 5: mapping values "
                      "are not allowed here"),
    ("lr=!!int x", "override 'lr=!!int x': YAML cannot read it: ValueError: invalid literal"),
    ("model=\x01", "override 'model=\\x01': YAML error at line 1, column 1: character U+0001 "
                   "is not allowed in YAML"),
    ("lr=[1, 2]", "lr: expected float, got list [1, 2]"),
    ("model={a: 1}", "model: expected str, got dict {'a': 1}"),
    ("batch_size=" + "9" * 5000, "override 'batch_size=999"),
])
def test_override_errors_are_one_line_naming_key_and_value(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_config_file_errors_name_file_and_position(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 3.0e-5\nepochs: [1\nschedule: cosine\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"config file {path}: YAML error at line 3, column 9: ")
    path.write_text("lr: 3.0e-5\n  epochs: 1\n")
    with pytest.raises(ConfigError, match=r"run.yaml: YAML error at line 2, column 9: mapping "
                                          "values are not allowed here$"):
        load_config(path)
    path.write_text("lr: 1e-4\nmodel: x\x07y\n")
    with pytest.raises(ConfigError, match="line 2, column 9: character U\\+0007 is not allowed"):
        load_config(path)
    path.write_bytes(b"lr: 1.0e-4\nmodel: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"run.yaml: not UTF-8 text \(byte 0xe9 at line 2, "
                                          r"column 11\); save it as UTF-8"):
        load_config(path)
    path.write_text("1: 2\nlr: .nan\n")  # numeric keys once crashed the sorted() of unknowns
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \[1\]"):
        load_config(path)
    path.write_text("lr: .nan\n")
    with pytest.raises(ConfigError, match="lr: must be a finite number, got nan"):
        load_config(path)
    with pytest.raises(ConfigError, match="is a folder; give a YAML file"):
        load_config(tmp_path)


def test_unreadable_config_file_is_a_config_error(tmp_path, monkeypatch):
    path = tmp_path / "secret.yaml"
    path.write_text("lr: 1.0e-4\n")

    def denied(self):  # chmod 0 does not stop root, so the refusal is simulated
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError, match=f"config file {path}: cannot read it "
                                          r"\(Permission denied\)$"):
        load_config(path)


def test_cli_prints_yaml_errors_as_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lr: [1\n")
    result = subprocess.run([sys.executable, "-m", "sftlib", "config", "--config", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"sftlib: config error: config file {path}: YAML error at "
                                    "line 2, column 1: ")


# property-based: whatever the input, a valid RunConfig or one ConfigError, nothing else ------

FLOAT_FIELDS = [f.name for f in dataclasses.fields(RunConfig)
                if float in _allowed_types(typing.get_type_hints(RunConfig)[f.name])]
FAST = settings(max_examples=200, deadline=None, database=None)
BASES = [{}, {**INSTRUCTION, "lora": True}]  # lora_* floats are checked on the instruction task
BASES.append({"teacher": "reports/teacher"})  # distill_* floats are checked with a teacher
any_number = st.floats() | st.integers(min_value=-10**400, max_value=10**400)


def test_float_fields_are_all_found():
    assert {"lr", "epochs", "warmup_ratio", "gamma", "lora_alpha", "plot_max_share"} \
        <= set(FLOAT_FIELDS)


@FAST
@given(base=st.sampled_from(BASES),
       values=st.dictionaries(st.sampled_from(FLOAT_FIELDS), any_number, min_size=1))
def test_any_float_values_give_a_config_or_a_config_error(base, values):
    try:
        cfg = RunConfig.from_dict({**base, **values})
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    for key in values:
        value = getattr(cfg, key)
        assert value is None or (isinstance(value, float) and math.isfinite(value))


@FAST
@given(seed=st.integers(min_value=-2**70, max_value=2**70))
def test_seed_is_a_32_bit_unsigned_int(seed):
    if 0 <= seed < 2**32:
        assert RunConfig(seed=seed).seed == seed
    else:
        with pytest.raises(ConfigError, match="seed: must be >= 0 and <= 4294967295"):
            RunConfig(seed=seed)


@FAST
@given(item=st.text() | st.builds("{}={}".format, st.sampled_from(RunConfig.field_names()),
                                  st.text()))
def test_any_override_text_gives_a_config_or_a_config_error(item):
    try:
        load_config(None, [item])
    except ConfigError as error:
        assert "\n" not in str(error)


def test_an_unquoted_yaml_no_is_the_string_for_a_text_key():
    assert load_config(None, ["eval_strategy=no"]).eval_strategy == "no"
    with pytest.raises(ConfigError, match="eval_strategy: 'yes' is not one of"):
        load_config(None, ["eval_strategy=yes"])
