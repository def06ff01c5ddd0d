"""One `RunConfig` dataclass: every knob of a run, with validation.

It is the single source of truth. Papermill parameters, the YAML file given to
`sftlib run --config`, and `--set key=value` overrides all map onto it and are
validated here: an unknown key, a wrong type or an impossible combination is one
`ConfigError` naming the key and what is allowed, raised before any model or data
is loaded.

Supported tasks: `classification` (encoder + classification head) and `instruction`
(causal-LM SFT on chat-formatted examples, loss on the response tokens only, optional
packing and LoRA); their code is in `sftlib.tasks`. Every option that belongs to one task
only (`TASK_OPTIONS`) is rejected for the other, so a setting is never silently ignored.
`configs/instruction.yaml` holds the instruction defaults (the field defaults below are the
classification task's).
Not supported: nested configs, per-stage overrides, environment-variable config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Union

import yaml

# What belongs to one task only, declared once: a key owned by another task than
# cfg.task is rejected when it differs from its default, so it is never silently ignored.
TASK_OPTIONS = {
    "classification": ("text_column", "label_column", "pooling",
                       # distillation (sftlib.distill)
                       "teacher", "distill_weight", "distill_temperature", "distill_augment",
                       "teacher_precision", "distill_relation_weight",
                       # recipe: layer-wise LR decay, weight averaging (issue 14)
                       "layerwise_lr_decay", "weight_averaging", "ema_decay"),
    "instruction": ("chat_template", "truncated_responses", "packing", "lora", "lora_r",
                    "lora_alpha", "lora_dropout", "lora_target_modules", "max_new_tokens",
                    "eval_generations"),
}
TASK_METRICS = {"classification": ("accuracy", "f1", "loss"), "instruction": ("loss",)}
TASK_HINTS = {"classification": "the RunConfig defaults are the classification task's",
              "instruction": "configs/instruction.yaml sets every instruction default: "
                             "sftlib run --config configs/instruction.yaml"}
TASKS = tuple(TASK_OPTIONS)
TRUNCATED_RESPONSES = ("drop", "error")
CHAT_TEMPLATES = ("auto", "fallback")
SCHEDULES = ("linear", "cosine", "exponential", "constant")
HF_SCHEDULES = ("hf:linear", "hf:cosine", "hf:cosine_with_restarts", "hf:polynomial",
                "hf:constant", "hf:constant_with_warmup", "hf:inverse_sqrt")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TEACHER_PRECISIONS = ("fp32", "bf16", "auto")  # the teacher's labelling pass (sftlib.distill)
EVAL_STRATEGIES = ("epoch", "steps", "no")
METRICS = ("accuracy", "f1", "loss")
POOLINGS = ("cls", "mean")  # what the classification head reads (sftlib.pooling_model)
WEIGHT_AVERAGING = ("none", "ema")  # sftlib.averaging
REPORTERS = ("none", "tensorboard")  # sftlib.live's metrics.jsonl is written either way
# Upper bounds that only a mistake reaches (a typo, an extra zero, a value meant for another key)
MAX_EPOCHS = 1000
MAX_STEPS = 10_000_000  # max_steps, logging_steps, eval_steps, patience, checkpoints kept
MAX_BATCH = 65536  # batch_size, eval_batch_size, grad_accum_steps, lora_r
MAX_ROWS = 2**63 - 1  # train_subset, eval_subset, eval_generations: an int64 row count
MAX_SEED = 2**32 - 1  # numpy's legacy seeding and torch.manual_seed take 32 bits


class ConfigError(ValueError):
    """A configuration problem, with the key and what is allowed, found before any work."""


@dataclass
class RunConfig:
    """Every knob of a run. Each default has a one-line reason; a new field's default is what
    runs did before it existed (`with_defaults` reads older manifests that way)."""

    # --- what to train
    task: str = "classification"  # classification | instruction (configs/instruction.yaml)
    model: str = "minilm-l6"  # offline asset; a hub id or a local folder works too
    dataset: str = "rotten-tomatoes"  # offline asset; a file, a folder, or a hub id "glue:sst2"
    dataset_config: str | None = None  # hub dataset config name (e.g. "sst2" for glue)
    text_column: str = "text"  # column holding the input text in a file or hub dataset
    label_column: str = "label"  # column holding the gold label
    train_subset: int | None = None  # first N rows of a stratified shuffle of train: quick runs
    eval_subset: int | None = None  # the same for validation and test
    strict_data: bool = False  # leakage / conflicting labels: True stops the run, False warns

    # --- classification head (sftlib.pooling_model)
    pooling: str = "cls"  # cls: the seed's [CLS] + pooler head; mean: masked mean of all tokens

    # --- tokenization
    max_length: int | str = 128  # above the default data's longest (notebook 02); "auto" fits it

    # --- optimization (seed tutorial: lr 2e-5, batch 16, 3 epochs, wd 0.01, AdamW)
    epochs: float = 2.0  # two passes fit the 15-minute CPU budget of the main job
    max_steps: int = -1  # > 0 overrides epochs (smoke runs)
    batch_size: int = 32  # per device; dynamic padding keeps it cheap
    eval_batch_size: int = 32  # evaluation runs in length order (tokens.length_order)
    grad_accum_steps: int = 1  # raise to emulate a larger batch on a small device
    lr: float = 1e-4  # a 6-layer model wants a higher peak than BERT-base's 2e-5
    weight_decay: float = 0.01  # the tutorial's; not applied to biases and LayerNorm
    schedule: str = "linear"  # linear | cosine | exponential | constant | hf:<name>
    warmup_ratio: float = 0.06  # share of steps with linear warmup from 0
    final_lr: float = 0.0  # eta_f of the linear and cosine formulas
    gamma: float | None = None  # exponential decay factor per step; None derives it from final_lr
    max_grad_norm: float = 1.0  # gradient clipping
    seed: int = 42  # set before the model is created
    deterministic: bool = False  # opt-in: deterministic kernels, slower
    precision: str = "auto"  # auto: bf16 autocast where GPU / CPU (AMX) has it, else fp32
    group_by_length: bool = True  # fewer pad tokens per batch
    torch_compile: bool = False  # faster steps on a GPU, but each new shape compiles first

    # --- evaluation and checkpoints
    eval_strategy: str = "epoch"  # epoch | steps | no
    eval_steps: int = 100  # with eval_strategy="steps"
    metric_for_best: str = "accuracy"  # accuracy | f1 | loss: selects the checkpoint kept
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 = off
    save_total_limit: int = 2  # checkpoints kept on disk (the best one is always kept)
    logging_steps: int = 10  # how often the loss is logged and plotted

    # --- classification only: distillation from a fine-tuned teacher (sftlib.distill)
    teacher: str | None = None  # a run folder (its model/) or a saved classifier; None: plain CE
    distill_weight: float = 0.5  # w in (1-w)*CE(labels) + w*T^2*KL(teacher || student)
    distill_temperature: float = 2.0  # T > 1 softens both distributions; 1 compares them as-is
    distill_augment: int = 0  # perturbed copies of each train text, taught by the teacher alone
    teacher_precision: str = "fp32"  # fp32 | bf16 | auto (bf16 where the hardware has it):
    # the teacher's labelling pass; fp32 by default so that a cached entry stays the same logits
    distill_relation_weight: float = 0.0  # b: + b * relation term (mean-pooled student and
    # teacher): the student's pairwise cosines in a batch pulled to the teacher's; 0: off
    # --- classification recipe: layer-wise LR decay and weight averaging (sftlib.layerwise,
    # sftlib.averaging); off by default: the seed tutorial's recipe until a run measures better
    layerwise_lr_decay: float = 1.0  # in (0, 1]: layer i of L at lr * d**(L-1-i); 1 = off
    weight_averaging: str = "none"  # none | ema: evaluate, keep and save an EMA of the weights
    ema_decay: float = 0.999  # EMA factor per optimizer step, reached after a warm-up (averaging)

    # --- instruction task only (causal-LM SFT; sftlib.instruct)
    chat_template: str = "auto"  # auto: the tokenizer's own, else ChatML; "fallback" forces ChatML
    truncated_responses: str = "drop"  # examples whose response max_length cuts off entirely
    packing: bool = False  # several examples per sequence up to max_length, attention kept apart
    lora: bool = False  # train low-rank adapters (peft) instead of every weight
    lora_r: int = 16  # adapter rank: 16 is a common start for a small model
    lora_alpha: float = 32.0  # scale alpha / r = 2, the usual choice
    lora_dropout: float = 0.05  # on the adapter input
    lora_target_modules: str = "all-linear"  # or comma-separated names, e.g. "q_proj,v_proj"
    max_new_tokens: int = 96  # greedy generation length in notebooks 04 and 05
    eval_generations: int = 8  # held-out prompts generated for side by side with references

    # --- outputs
    output_dir: str = "reports/interactive"  # relative to the project root; runs get their own
    plot_interval_s: float = 2.0  # minimum seconds between live-plot redraws
    plot_max_share: float = 0.015  # redraws may take at most this share of training time
    report_to: str = "none"  # "tensorboard": also event files in <run>/tensorboard/

    def __post_init__(self) -> None:
        validate(self)

    # construction -----------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a mapping; unknown keys and wrong types raise ConfigError."""
        known = set(cls.field_names())
        unknown = sorted(set(values) - known, key=str)  # a YAML file's keys may be numbers
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {unknown}; allowed keys: {', '.join(sorted(known))}"
            )
        hints = typing.get_type_hints(cls)
        coerced = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
        return cls(**coerced)

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> RunConfig:
        """Build from a notebook's globals: picks the RunConfig fields defined there."""
        return cls.from_dict({k: namespace[k] for k in cls.field_names() if k in namespace})

    @classmethod
    def for_notebook(cls, namespace: dict[str, Any], task: str) -> RunConfig:
        """The RunConfig of a notebook in `task`'s sequence (notebooks/<task>/), from the
        fields its parameters cell (or papermill's injected one) defines; `task` defaults to
        the notebook's, and a config of another task is refused with where to go."""
        values = {k: namespace[k] for k in cls.field_names() if k in namespace}
        values.setdefault("task", task)
        if values["task"] != task:
            raise ConfigError(f"this notebook is part of the {task} tutorial "
                              f"(notebooks/{task}/) but task is {values['task']!r}; open "
                              f"notebooks/{values['task']}/ instead")
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- YAML/JSON file <- `key=value` overrides, validated once at the end."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        loaded = _parse_yaml(_read_config_file(path), f"config file {path}") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of key: value")
        values.update(loaded)
    values.update(parse_overrides(overrides or []))
    return RunConfig.from_dict(values)


def coerce_value(key: str, value: Any) -> Any:
    """`value` as RunConfig's field `key` takes it ("1e-4" -> 0.0001), else ConfigError."""
    return _coerce(key, value, typing.get_type_hints(RunConfig)[key])


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["lr=3e-5", "epochs=1"]` -> {"lr": 3e-05, "epochs": 1}; values parsed as YAML scalars."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        parsed[key.strip()] = _parse_yaml(
            raw, f"override {item!r}", "; quote a value meant as text, e.g. key='...'"
        ) if raw.strip() else None
    return parsed


def _read_config_file(path: Path) -> str:
    """The file's text; a missing, unreadable or non-UTF-8 file is one ConfigError naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; give a YAML file") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read it "
                          f"({error.strerror or error})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line, column = _line_column(data, error.start)
        raise ConfigError(f"config file {path}: not UTF-8 text (byte 0x{data[error.start]:02x} "
                          f"at line {line}, column {column}); save it as UTF-8") from None


def _parse_yaml(text: str, where: str, hint: str = "") -> Any:
    """`yaml.safe_load`; any failure is one ConfigError line: where, line, column, problem."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = _one_line(error.problem or error.context or "not valid YAML")
        raise ConfigError(f"{where}: YAML error{at}: {problem}{hint}") from None
    except yaml.reader.ReaderError as error:  # a control character YAML does not allow
        line, column = _line_column(text, error.position)
        char = error.character if isinstance(error.character, int) else ord(error.character)
        raise ConfigError(f"{where}: YAML error at line {line}, column {column}: character "
                          f"U+{char:04X} is not allowed in YAML{hint}") from None
    except Exception as error:  # tags such as `!!int x` reach int(), float(), re inside PyYAML
        raise ConfigError(f"{where}: YAML cannot read it: {type(error).__name__}: "
                          f"{_one_line(str(error))}{hint}") from None


def _line_column(text: str | bytes, offset: int) -> tuple[int, int]:
    newline = "\n" if isinstance(text, str) else b"\n"
    return text.count(newline, 0, offset) + 1, offset - text.rfind(newline, 0, offset)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# validation -------------------------------------------------------------------------

def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the field's type hint; widen int to float, nothing else."""
    allowed = _allowed_types(hint)
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool) and str in allowed and bool not in allowed:
        # YAML 1.1 reads an unquoted no / off as False: `eval_strategy: no` means "no"
        return "no" if value is False else "yes"
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{key}: expected {_type_names(allowed)}, got bool {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and int not in allowed \
            and float in allowed:
        try:
            return float(value)
        except OverflowError:  # an int beyond float's range, e.g. 10**400
            raise ConfigError(f"{key}: must be a finite number, got {_show(value)}") from None
    if isinstance(value, str) and str not in allowed and float in allowed:
        try:  # YAML reads "1e-4" as a string; accept it as the number it obviously is
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, tuple(t for t in allowed if t is not type(None))):
        raise ConfigError(
            f"{key}: expected {_type_names(allowed)}, got {type(value).__name__} {_show(value)}"
        )
    return value


def _allowed_types(hint: Any) -> tuple[type, ...]:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _allowed_types(arg))
    if origin is Literal:
        return tuple({type(a) for a in typing.get_args(hint)})
    return (hint,)


def _show(value: Any) -> str:
    """repr for a message; a huge int by its size (repr raises past 4300 digits)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return repr(value)


def _type_names(allowed: tuple[type, ...]) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in allowed)


def _one_of(cfg: RunConfig, key: str, choices: tuple[str, ...]) -> None:
    if getattr(cfg, key) not in choices:
        raise ConfigError(f"{key}: {getattr(cfg, key)!r} is not one of {', '.join(choices)}")


def _finite(cfg: RunConfig, key: str) -> None:
    value = getattr(cfg, key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")


def _in_range(cfg: RunConfig, key: str, low: float, high: float, *, low_open: bool = False,
              high_open: bool = False, why: str = "") -> None:
    """low <= value <= high (or < where open); None passes; NaN fails every comparison."""
    value = getattr(cfg, key)
    if value is None:
        return
    above = low < value if low_open else low <= value
    below = value < high if high_open else value <= high
    if not (above and below):
        raise ConfigError(f"{key}: must be {'>' if low_open else '>='} {low} and "
                          f"{'<' if high_open else '<='} {high}, got {_show(value)}{why}")


def _at_least(cfg: RunConfig, key: str, low: float, strict: bool = False) -> None:
    value = getattr(cfg, key)
    if value is None:
        return
    if value < low or (strict and value == low):
        raise ConfigError(f"{key}: must be {'>' if strict else '>='} {low}, got {value!r}")


def validate(cfg: RunConfig) -> None:
    """Reject impossible values and combinations with one actionable message."""
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(cfg):  # RunConfig(lr="1e-4") gets the float from_dict would
        setattr(cfg, f.name, _coerce(f.name, getattr(cfg, f.name), hints[f.name]))
    _one_of(cfg, "task", TASKS)
    _one_of(cfg, "chat_template", CHAT_TEMPLATES)
    _one_of(cfg, "truncated_responses", TRUNCATED_RESPONSES)
    _one_of(cfg, "schedule", SCHEDULES + HF_SCHEDULES)
    _one_of(cfg, "precision", PRECISIONS)
    _one_of(cfg, "eval_strategy", EVAL_STRATEGIES)
    _one_of(cfg, "metric_for_best", METRICS)
    _one_of(cfg, "report_to", REPORTERS)
    _one_of(cfg, "pooling", POOLINGS)
    _one_of(cfg, "weight_averaging", WEIGHT_AVERAGING)
    if isinstance(cfg.max_length, str) and cfg.max_length != "auto":
        raise ConfigError(f"max_length: an integer >= 8 or 'auto', got {cfg.max_length!r}")
    if isinstance(cfg.max_length, int) and not 8 <= cfg.max_length <= 8192:
        raise ConfigError(f"max_length: must be between 8 and 8192, got {cfg.max_length}")
    for f in dataclasses.fields(cfg):  # every float knob, present and future: no NaN, no inf
        _finite(cfg, f.name)
    for key in ("batch_size", "eval_batch_size", "grad_accum_steps"):
        _in_range(cfg, key, 1, MAX_BATCH)
    for key in ("logging_steps", "eval_steps", "save_total_limit"):
        _in_range(cfg, key, 1, MAX_STEPS)
    _in_range(cfg, "early_stopping_patience", 0, MAX_STEPS)
    for key in ("train_subset", "eval_subset"):
        _in_range(cfg, key, 1, MAX_ROWS)
    _in_range(cfg, "seed", 0, MAX_SEED, why=" (numpy and torch seeds are 32-bit)")
    _in_range(cfg, "lr", 0, 1, low_open=True, high_open=True,
              why=" (AdamW diverges at 1 and above; 1e-5 to 1e-3 is usual)")
    _in_range(cfg, "weight_decay", 0, 1, why=" (AdamW's decoupled decay; 0 to 0.1 is usual)")
    _in_range(cfg, "warmup_ratio", 0, 1, high_open=True, why=" (a share of the steps)")
    _in_range(cfg, "epochs", 0, MAX_EPOCHS)
    for key in ("final_lr", "max_grad_norm", "plot_interval_s"):
        _at_least(cfg, key, 0)
    if not 0 < cfg.plot_max_share <= 1:
        raise ConfigError(f"plot_max_share: a share in (0, 1], got {cfg.plot_max_share}")
    if cfg.final_lr > cfg.lr:
        raise ConfigError(f"final_lr: {cfg.final_lr} is above the peak lr {cfg.lr}; "
                          "schedules decay from lr to final_lr")
    if cfg.gamma is not None and not 0 < cfg.gamma <= 1:
        raise ConfigError(f"gamma: the exponential decay factor must be in (0, 1], got {cfg.gamma}")
    if cfg.schedule == "exponential" and cfg.gamma is None and cfg.final_lr <= 0:
        raise ConfigError("schedule 'exponential' needs gamma, or final_lr > 0 to derive it "
                          "(eta_t = lr * gamma**t never reaches 0)")
    if cfg.max_steps <= 0 and cfg.epochs <= 0:
        raise ConfigError("epochs: must be > 0 unless max_steps > 0")
    if not (cfg.max_steps == -1 or 1 <= cfg.max_steps <= MAX_STEPS):
        raise ConfigError(f"max_steps: -1 (use epochs) or a positive count up to {MAX_STEPS}, "
                          f"got {cfg.max_steps}")
    if cfg.early_stopping_patience and cfg.eval_strategy == "no":
        raise ConfigError("early_stopping_patience needs evaluation: set eval_strategy to "
                          "'epoch' or 'steps'")
    if not cfg.output_dir:
        raise ConfigError("output_dir: must name a folder")
    _in_range(cfg, "lora_r", 1, MAX_BATCH)
    _in_range(cfg, "max_new_tokens", 1, 8192, why=" (max_length's limit too)")
    _in_range(cfg, "eval_generations", 1, MAX_ROWS)
    _at_least(cfg, "lora_alpha", 0, strict=True)
    if not 0 <= cfg.lora_dropout < 1:
        raise ConfigError(f"lora_dropout: must be in [0, 1), got {cfg.lora_dropout}")
    if not cfg.lora_target_modules.strip():
        raise ConfigError("lora_target_modules: 'all-linear' or comma-separated module names")
    _validate_recipe(cfg)
    _validate_task(cfg)
    _validate_distillation(cfg)  # after the task check: for instruction, that one names it


DISTILL_OPTIONS = ("distill_weight", "distill_temperature", "distill_augment",
                   "teacher_precision", "distill_relation_weight")
MAX_DISTILL_AUGMENT = 16  # copies per text: each one a full pass of extra training


def with_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config (a manifest's) completed with RunConfig's defaults for the fields it
    lacks: a run made before an option existed ran as its default does, so it compares and
    groups with runs that record the default. That holds because a new RunConfig field must
    default to what runs did before it existed (a rule for whoever adds one)."""
    return {**field_defaults(), **values}


def field_defaults() -> dict[str, Any]:
    """RunConfig's fields and their default values."""
    return {f.name: f.default for f in dataclasses.fields(RunConfig)
            if f.default is not dataclasses.MISSING}


def inert_options(values: dict[str, Any]) -> set[str]:
    """The keys of a config (RunConfig fields as a dict, as manifests hold them) that change
    nothing given the others: the distillation knobs without a teacher, ema_decay without
    weight_averaging=ema. What a comparison's labels leave out."""
    inert = set()
    if values.get("teacher") is None:
        inert |= set(DISTILL_OPTIONS)
    if values.get("weight_averaging", "none") != "ema":
        inert.add("ema_decay")
    return inert


def _validate_distillation(cfg: RunConfig) -> None:
    """The soft-label knobs: a weight in [0, 1], a positive temperature, and a teacher; the
    relation term's weight (>= 0) with the mean-pooling head."""
    _in_range(cfg, "distill_weight", 0, 1, why=" (the share of the soft-label loss)")
    _at_least(cfg, "distill_temperature", 0, strict=True)
    _in_range(cfg, "distill_augment", 0, MAX_DISTILL_AUGMENT,
              why=" (copies per train text; each adds a pass's worth of training)")
    _one_of(cfg, "teacher_precision", TEACHER_PRECISIONS)
    _at_least(cfg, "distill_relation_weight", 0)
    if cfg.teacher is not None and not cfg.teacher.strip():
        raise ConfigError("teacher: a run folder (reports/<run-id>) or a saved classifier "
                          "folder, or None for no distillation")
    changed = _changed(cfg, DISTILL_OPTIONS)
    if changed and cfg.teacher is None:
        raise ConfigError(f"{', '.join(changed)}: distillation options without a teacher; "
                          "set teacher=<run folder or classifier folder>, or leave them at "
                          "their defaults")
    if cfg.distill_relation_weight > 0 and cfg.pooling != "mean":
        raise ConfigError("distill_relation_weight: the relation term compares sentence "
                          "vectors, which the mean-pooling head has; set pooling=mean, or "
                          "distill_relation_weight=0")


def _validate_recipe(cfg: RunConfig) -> None:
    """Layer-wise LR decay and weight averaging (their own block: issue 14, part 3)."""
    _in_range(cfg, "layerwise_lr_decay", 0, 1, low_open=True,
              why=" (1 = off; 0.8 to 0.95 is usual)")
    _in_range(cfg, "ema_decay", 0, 1, low_open=True, high_open=True,
              why=" (1 would never move the average; 0.99 to 0.9999 is usual)")
    if _changed(cfg, ("ema_decay",)) and cfg.weight_averaging != "ema":
        raise ConfigError(f"ema_decay: set without weight_averaging=ema (it is "
                          f"{cfg.weight_averaging!r}); set weight_averaging=ema, or leave "
                          "ema_decay at its default")


LORA_OPTIONS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


def _changed(cfg: RunConfig, keys: tuple[str, ...]) -> list[str]:
    defaults = field_defaults()
    return [key for key in keys if getattr(cfg, key) != defaults[key]]


def _validate_task(cfg: RunConfig) -> None:
    """Options of other tasks, the metric, and assets made for another task."""
    from sftlib.assets import ASSETS

    hint = TASK_HINTS[cfg.task]
    for owner, keys in TASK_OPTIONS.items():
        changed = _changed(cfg, keys) if owner != cfg.task else []
        if changed:
            raise ConfigError(f"{', '.join(changed)}: only for task {owner!r}; task is "
                              f"{cfg.task!r}. Remove them, or set task={owner} "
                              f"({TASK_HINTS[owner]})")
    for key in ("model", "dataset"):
        asset = ASSETS.get(getattr(cfg, key))
        if asset is not None and asset.task not in (None, cfg.task):
            fitting = [name for name, a in ASSETS.items()
                       if a.task == cfg.task and a.kind == asset.kind]
            raise ConfigError(f"{key}: {getattr(cfg, key)!r} is a {asset.task} asset; task "
                              f"{cfg.task!r} needs another, e.g. {key}={fitting[0]} ({hint})")
    if cfg.metric_for_best not in TASK_METRICS[cfg.task]:
        raise ConfigError(f"metric_for_best: {cfg.metric_for_best!r} does not exist for task "
                          f"{cfg.task!r}; use one of {', '.join(TASK_METRICS[cfg.task])} ({hint})")
    lora_options = _changed(cfg, LORA_OPTIONS)
    if lora_options and not cfg.lora:
        raise ConfigError(f"{', '.join(lora_options)}: LoRA options without lora=true; set "
                          "lora=true, or leave them at their defaults")
