"""LoRAs and textual-inversion embeddings in the local library, next to the checkpoints.

Layout (compatible with the checkpoint library in library.py, whose files stay at the top level):

    $EGAKU_HOME/models/index.json        {"models": {...}, "loras": {name: entry}, "embeddings": {name: entry}, "hashes": {...}}
    $EGAKU_HOME/models/loras/NAME.safetensors
    $EGAKU_HOME/models/embeddings/NAME.safetensors|.pt

Files copied into those folders by hand are found too (by file stem, as A1111 finds them), so a
`<lora:name:0.8>` tag or an embedding's name in a prompt works without `egaku models add`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from egaku.errors import InvalidRequestError, ModelLoadError, ModelNotFoundError
from egaku.models.hashing import autov2, read_index, remember_hash, sha256_path, write_index
from egaku.paths import models_dir

EXTRA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")


class ModelKind(StrEnum):
    CHECKPOINT = "checkpoint"
    LORA = "lora"
    EMBEDDING = "embedding"


FOLDERS = {ModelKind.LORA: "loras", ModelKind.EMBEDDING: "embeddings"}  # also the index keys


@dataclass(frozen=True)
class ExtraInfo:
    """What `egaku models list/info` shows about a LoRA or an embedding."""

    name: str
    kind: str  # ModelKind value
    path: str
    family: str  # sd1 | sd2 | sdxl | unknown (the base model family it was made for)
    sha256: str
    autov2: str  # first 10 hex digits, as Civitai shows
    size_bytes: int
    trigger_words: list[str] = field(default_factory=list)  # an embedding's is its own name
    rank: int | None = None  # LoRA: largest rank of its layers
    alpha: float | None = None
    layers: int | None = None  # LoRA layers
    vectors: int | None = None  # embedding: vectors per text encoder
    addnet_hash: str = ""  # LoRA: kohya's sshs_model_hash, the hash A1111 shows
    in_index: bool = True  # False for a file dropped into the folder by hand

    def to_dict(self) -> dict:
        return asdict(self)


def extras_dir(kind: ModelKind) -> Path:
    return models_dir() / FOLDERS[ModelKind(kind)]


def detect_kind(path: str | os.PathLike) -> ModelKind:
    """checkpoint, lora or embedding, from the file's keys (a folder is a checkpoint)."""
    from egaku.models.embeddings import _load_pickle, is_embedding_keys
    from egaku.models.formats import SafetensorsSource
    from egaku.models.lora import is_lora_keys

    path = Path(path)
    if path.is_dir():
        return ModelKind.CHECKPOINT
    if path.suffix.lower() == ".safetensors":
        with SafetensorsSource(path) as src:  # the header only
            keys = src.keys()
    elif path.stat().st_size > 1 << 30:  # a pickle this big is a checkpoint: do not unpickle it twice
        return ModelKind.CHECKPOINT
    else:
        try:
            data = _load_pickle(path)
        except ModelLoadError:  # unsafe or unreadable: the checkpoint reader says so in its own words
            return ModelKind.CHECKPOINT
        keys = list(data.get("state_dict", data).keys()) if isinstance(data.get("state_dict"), dict) else list(data)
    if is_lora_keys(keys):
        return ModelKind.LORA
    if is_embedding_keys(keys) or (len(keys) == 1 and path.stat().st_size < 1 << 20):
        return ModelKind.EMBEDDING
    return ModelKind.CHECKPOINT


def describe(kind: ModelKind, path: Path, name: str, sha256: str, in_index: bool) -> ExtraInfo:
    """Read a LoRA or embedding file's details (family, rank, trigger words, ...); remembered per file
    version, so listing a library of large LoRAs again (a server's GET /api/v1/loras) reads no file."""
    st = Path(path).stat()
    info = _describe(ModelKind(kind), Path(path), name, sha256, in_index, st.st_size, st.st_mtime_ns)
    return replace(info, trigger_words=list(info.trigger_words))  # the caller's own list


@lru_cache(maxsize=512)
def _describe(kind: ModelKind, path: Path, name: str, sha256: str, in_index: bool, size: int,
              mtime_ns: int) -> ExtraInfo:
    if kind is ModelKind.LORA:
        from egaku.models.lora import addnet_hash_file, guess_family, read_lora, trigger_words

        lora = read_lora(path, name, sha256)
        ranks = [layer.rank for layer in lora.layers.values() if layer.rank]  # an unfactorised LoKr has none
        alphas = {layer.alpha for layer in lora.layers.values()}
        sshs = lora.metadata.get("sshs_model_hash") or addnet_hash_file(path)
        return ExtraInfo(name, kind.value, str(path), guess_family(lora), sha256, autov2(sha256), size,
                         trigger_words(lora), max(ranks, default=None), next(iter(alphas)) if len(alphas) == 1 else None,
                         len(lora.layers), None, sshs, in_index)
    from egaku.models.embeddings import read_embedding

    emb = read_embedding(path, name, sha256)
    return ExtraInfo(name, kind.value, str(path), emb.family, sha256, autov2(sha256), size, [name],
                     vectors=emb.num_vectors, in_index=in_index)


def _folder_files(kind: ModelKind) -> dict[str, Path]:
    """Files dropped in the kind's folder, by stem (first by sorted path wins)."""
    root = extras_dir(kind)
    if not root.is_dir():
        return {}
    found: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in EXTRA_SUFFIXES and not p.name.startswith("."):
            found.setdefault(p.stem, p)
    return found


def _entries(kind: ModelKind) -> dict[str, dict]:
    return read_index().get(FOLDERS[ModelKind(kind)], {})


def resolve_extra(kind: ModelKind, name_or_path: str | os.PathLike) -> Path:
    """The file of a library LoRA/embedding (indexed name, then a file stem in its folder), or a path."""
    kind = ModelKind(kind)
    entry = _entries(kind).get(str(name_or_path))
    if entry is not None:
        path = models_dir() / entry["file"]
        if not path.exists():
            raise ModelNotFoundError(f"library {kind.value} {name_or_path!r} is missing its file {path}")
        return path
    files = _folder_files(kind)
    hit = files.get(str(name_or_path)) or next(
        (p for stem, p in files.items() if stem.lower() == str(name_or_path).lower()), None)
    if hit is not None:
        return hit
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    names = sorted(set(_entries(kind)) | set(files))
    have = f" (have: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''})" if names else ""
    raise ModelNotFoundError(f"no {kind.value} named {str(name_or_path)!r} in {extras_dir(kind)}{have}")


def known_names(kind: ModelKind) -> dict[str, Path]:
    """Every available name of `kind` -> its file (index entries and folder files)."""
    out = {stem: p for stem, p in _folder_files(kind).items()}
    for name, entry in _entries(kind).items():
        out[name] = models_dir() / entry["file"]
    return out


def list_extras(kind: ModelKind) -> list[ExtraInfo]:
    """Every LoRA (or embedding) of the library, indexed or dropped into its folder, sorted by name."""
    kind = ModelKind(kind)
    entries = _entries(kind)
    indexed_files = {str((models_dir() / e["file"]).resolve()) for e in entries.values()}
    out = []
    for name, entry in entries.items():
        path = models_dir() / entry["file"]
        if path.exists():
            out.append(describe(kind, path, name, entry["sha256"], True))
    for stem, path in _folder_files(kind).items():
        if str(path.resolve()) not in indexed_files and stem not in entries:
            try:
                out.append(describe(kind, path, stem, sha256_path(path), False))
            except ModelLoadError:
                continue  # not a readable LoRA/embedding: not listed
    return sorted(out, key=lambda i: i.name.lower())


def extra_info(kind: ModelKind, name_or_path: str | os.PathLike) -> ExtraInfo:
    kind = ModelKind(kind)
    path = resolve_extra(kind, name_or_path)
    entries = _entries(kind)
    name = str(name_or_path) if str(name_or_path) in entries else path.stem
    return describe(kind, path, name, sha256_path(path), str(name_or_path) in entries)


def add_extra(path: str | os.PathLike, name: str | None = None, kind: ModelKind | None = None) -> ExtraInfo:
    """Copy a LoRA or embedding file into its library folder under `name` (default: its stem)."""
    from egaku.models.library import NAME_RE, _default_name

    src = Path(path).expanduser()
    if not src.is_file():
        raise ModelNotFoundError(f"{src} does not exist")
    src = src.resolve()
    kind = ModelKind(kind or detect_kind(src))
    if kind is ModelKind.CHECKPOINT:
        raise InvalidRequestError(f"{src} is a checkpoint, not a LoRA or embedding")
    name = name or _default_name(src)
    if not NAME_RE.match(name):
        raise InvalidRequestError(f"invalid {kind.value} name {name!r}: use letters, digits, '.', '_', '+' or '-'")
    digest = sha256_path(src)
    describe(kind, src, name, digest, True)  # an unreadable file is refused before anything is copied
    index = read_index()
    entries = index.setdefault(FOLDERS[kind], {})
    for existing, entry in entries.items():
        if entry["sha256"] == digest:
            return describe(kind, models_dir() / entry["file"], existing, digest, True)
    if name in entries:
        raise InvalidRequestError(f"a different {kind.value} is already named {name!r}; choose another name")
    folder = extras_dir(kind)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name + src.suffix.lower())
    if target.exists():
        raise InvalidRequestError(f"{target} already exists; choose another name")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".adding-")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    index = read_index()
    index.setdefault(FOLDERS[kind], {})[name] = dict(
        file=target.relative_to(models_dir()).as_posix(), sha256=digest, size_bytes=target.stat().st_size,
        added=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_index(index)
    remember_hash(target, digest)
    return describe(kind, target, name, digest, True)


def remove_extra(kind: ModelKind, name: str) -> None:
    """Delete a library LoRA/embedding (index entry and file; or a file dropped into the folder)."""
    kind = ModelKind(kind)
    index = read_index()
    entries = index.setdefault(FOLDERS[kind], {})
    if name in entries:
        target = models_dir() / entries.pop(name)["file"]
        index["hashes"].pop(str(target.resolve()), None)
        write_index(index)
    else:
        target = resolve_extra(kind, name)
        if extras_dir(kind).resolve() not in target.resolve().parents:
            raise ModelNotFoundError(f"no {kind.value} named {name!r} in the library")
    target.unlink(missing_ok=True)
