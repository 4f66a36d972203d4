"""SHA-256 of model files, the AutoV2 short hash A1111 and Civitai show, and a cache so big files hash once.

- A single file (.safetensors, .ckpt): SHA-256 of its bytes, streamed in 1 MiB chunks.
- A diffusers folder: SHA-256 over the bytes of its weight files (*.safetensors, *.bin) taken in sorted
  order of their relative POSIX paths (e.g. "text_encoder/model.safetensors" before "unet/..."); the
  bytes are concatenated without separators. Configs and tokenizer files are not part of the hash.
- AutoV2 = the first 10 hex digits of the SHA-256 (A1111's `model_hash` since v1.0, Civitai's AutoV2).

Hashes are cached in the library index (`$EGAKU_HOME/models/index.json`, key "hashes") under the
resolved path, with the size and mtime they were computed for; a changed file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from egaku.paths import models_dir

CHUNK = 1 << 20
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def autov2(sha256: str) -> str:
    """AutoV2 short hash: the first 10 hex digits of the SHA-256, as A1111 and Civitai show it."""
    return sha256[:10]


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a diffusers folder in hashing order (sorted relative POSIX paths)."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _stream(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(path: Path) -> tuple[int, int]:
    """(total size, newest mtime in ns) of a file, or of a folder's weight files."""
    paths = weight_files(path) if path.is_dir() else [path]
    stats = [p.stat() for p in paths]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def sha256_path(path: str | os.PathLike, *, use_cache: bool = True) -> str:
    """SHA-256 of a model file or diffusers folder (see module docstring), cached by (path, size, mtime)."""
    path = Path(path).resolve()
    size, mtime = _fingerprint(path)
    key = str(path)
    if use_cache:
        hit = read_index().get("hashes", {}).get(key)
        if hit and hit.get("size") == size and hit.get("mtime_ns") == mtime:
            return hit["sha256"]
    digest = _stream(weight_files(path) if path.is_dir() else [path])
    if use_cache:
        index = read_index()
        index.setdefault("hashes", {})[key] = {"size": size, "mtime_ns": mtime, "sha256": digest}
        write_index(index)
    return digest


def remember_hash(path: str | os.PathLike, digest: str) -> None:
    """Record a hash known without reading the file (e.g. of a fresh copy of an already hashed file)."""
    path = Path(path).resolve()
    size, mtime = _fingerprint(path)
    index = read_index()
    index.setdefault("hashes", {})[str(path)] = {"size": size, "mtime_ns": mtime, "sha256": digest}
    write_index(index)


def index_path() -> Path:
    return models_dir() / "index.json"


def read_index() -> dict:
    """The library index: {"models": {name: entry}, "hashes": {path: {size, mtime_ns, sha256}}}."""
    path = index_path()
    if not path.exists():
        return {"models": {}, "hashes": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"models": {}, "hashes": {}}  # a damaged index is rebuilt; model files are untouched
    data.setdefault("models", {})
    data.setdefault("hashes", {})
    return data


def write_index(index: dict) -> None:
    """Write the index atomically (temp file in the same folder + os.replace)."""
    path = index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".index-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
