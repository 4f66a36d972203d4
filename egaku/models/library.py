"""The local model library: model files under `$EGAKU_HOME/models`, indexed by name in index.json.

Plain functions the CLI (`egaku models list|add|remove|info|export`) and the server call:

    add(path, name=None) -> ModelInfo       copy a checkpoint or diffusers folder in (atomically)
    list_models() -> list[ModelInfo]         everything added, sorted by name
    remove(name)                             delete the copy and its index entry
    info(name_or_path) -> ModelInfo          what a library model or any path is (family, hashes, ...)
    export(name_or_path, out_path) -> ModelInfo   write a single-file LDM .safetensors
    resolve(name_or_path) -> Path            where a library name or path lives on disk

Models are identified by SHA-256 (and the AutoV2 short hash), see hashing.py; adding a file whose
hash is already in the library returns the existing entry instead of a second copy.
LoRAs and textual-inversion embeddings live beside the checkpoints (models/loras, models/embeddings;
see library_extras.py); `add` hands such a file to `library_extras.add_extra`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from egaku.errors import InvalidRequestError, ModelNotFoundError
from egaku.models.bundle import ModelFamily
from egaku.models.detect import plan_single_file, probe_v_prediction
from egaku.models.formats import ModelFormat, detect_format, read_json, read_single_file
from egaku.models.hashing import autov2, read_index, remember_hash, sha256_path, write_index
from egaku.paths import models_dir

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass(frozen=True)
class ModelInfo:
    """What `egaku models info` shows about one model."""

    name: str  # library name, or the file/folder name for a path outside the library
    path: str  # absolute path of the file or folder
    format: str  # ModelFormat value: "safetensors", "ckpt" or "diffusers"
    family: str  # ModelFamily value: "sd1", "sd2" or "sdxl"
    inpaint: bool  # 9-channel UNet
    prediction_type: str  # "epsilon" or "v_prediction"
    sha256: str  # of the file, or of a folder's weight files (see hashing.py)
    autov2: str  # first 10 hex digits of sha256, as A1111 and Civitai show
    size_bytes: int
    default_size: int  # native resolution in pixels

    def to_dict(self) -> dict:
        return asdict(self)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def inspect_model(path: Path) -> dict:
    """Family, inpainting, prediction type and native size of a model, without building all of it.

    Single files are detected from tensor names and shapes; only an SD 2.x file with no hint about its
    prediction type has its UNet loaded to run A1111's probe. Diffusers folders are read from configs.
    """
    fmt = detect_format(path)
    if fmt is ModelFormat.DIFFUSERS:
        from egaku.models.loader import folder_family

        unet = read_json(path / "unet" / "config.json")
        vae = read_json(path / "vae" / "config.json")
        scheduler = read_json(path / "scheduler" / "scheduler_config.json")
        return dict(format=fmt.value, family=folder_family(path).value, inpaint=unet.get("in_channels") == 9,
                    prediction_type=scheduler.get("prediction_type", "epsilon"),
                    default_size=int(unet.get("sample_size", 64)) * 2 ** (len(vae["block_out_channels"]) - 1))
    with read_single_file(path) as src:
        plan = plan_single_file(src.shapes(), src.metadata)
        unet_cfg = plan.configs["unet"]
        pred = plan.prediction_type
        if pred is None:
            from egaku.models.ldm import unet_rules
            from egaku.models.loader import empty_unet, fill

            unet = empty_unet(unet_cfg)
            fill(unet, src, unet_rules(unet.state_dict().keys(), unet.config), unet.dtype, "unet")
            pred = "v_prediction" if probe_v_prediction(unet.eval()) else "epsilon"
            del unet
    sample = unet_cfg["sample_size"]
    if pred == "v_prediction" and plan.family is ModelFamily.SD2 and plan.prediction_source == "probe":
        sample = 96
    factor = 2 ** (len(plan.configs["vae"]["block_out_channels"]) - 1)
    return dict(format=fmt.value, family=plan.family.value, inpaint=plan.inpaint, prediction_type=pred,
                default_size=int(sample) * factor)


def _entry_info(name: str, entry: dict) -> ModelInfo:
    path = models_dir() / entry["file"]
    return ModelInfo(name=name, path=str(path), format=entry["format"], family=entry["family"],
                     inpaint=entry["inpaint"], prediction_type=entry["prediction_type"], sha256=entry["sha256"],
                     autov2=autov2(entry["sha256"]), size_bytes=entry["size_bytes"],
                     default_size=entry["default_size"])


def _not_found(name: str, names: list[str]) -> ModelNotFoundError:
    if not names:
        return ModelNotFoundError(f"no model named {name!r}: the library is empty (add one with `egaku models add`)")
    shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return ModelNotFoundError(f"no model named {name!r} in the library (have: {shown})")


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The file or folder for a library name, or an existing path as given."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path.resolve()
    models = read_index()["models"]
    entry = models.get(str(name_or_path))
    if entry is None:
        raise _not_found(str(name_or_path), list(models))
    found = models_dir() / entry["file"]
    if not found.exists():
        raise ModelNotFoundError(f"library model {name_or_path!r} is missing its file {found}")
    return found


def list_models() -> list[ModelInfo]:
    """Every model in the library, sorted by name."""
    models = read_index()["models"]
    return [_entry_info(name, models[name]) for name in sorted(models)]


def info(name_or_path: str | os.PathLike) -> ModelInfo:
    """Info on a library model (from the index) or on any model path (detected and hashed now)."""
    models = read_index()["models"]
    if str(name_or_path) in models and not Path(name_or_path).exists():
        return _entry_info(str(name_or_path), models[str(name_or_path)])
    path = resolve(name_or_path)
    digest = sha256_path(path)
    return ModelInfo(name=path.stem if path.is_file() else path.name, path=str(path), sha256=digest,
                     autov2=autov2(digest), size_bytes=_size(path), **inspect_model(path))


def _default_name(path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", stem).strip("-.") or "model"


def add(path: str | os.PathLike, name: str | None = None):
    """Copy a checkpoint file or diffusers folder into the library under `name` (default: its stem).

    The model is detected first (an unreadable or unsupported file is never added). A model whose
    SHA-256 is already in the library is not copied again: its existing entry is returned.
    A LoRA or embedding file goes to its own folder instead (returns a library_extras.ExtraInfo).
    """
    from egaku.models.library_extras import ModelKind, add_extra, detect_kind

    src = Path(path).expanduser()
    if not src.exists():
        raise ModelNotFoundError(f"{src} does not exist")
    src = src.resolve()
    if src.is_file() and (kind := detect_kind(src)) is not ModelKind.CHECKPOINT:
        return add_extra(src, name, kind)
    name = name or _default_name(src)
    if not NAME_RE.match(name):
        raise InvalidRequestError(f"invalid model name {name!r}: use letters, digits, '.', '_', '+' or '-'")
    detected = inspect_model(src)  # raises ModelLoadError / UnsafeCheckpointError before anything is copied
    digest = sha256_path(src)
    models = read_index()["models"]
    for existing, entry in models.items():
        if entry["sha256"] == digest:
            return _entry_info(existing, entry)
    if name in models:
        raise InvalidRequestError(f"a different model is already named {name!r}; choose another name")
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / (name + (src.suffix.lower() if src.is_file() else ""))
    if target.exists():
        raise InvalidRequestError(f"{target} already exists; choose another name")
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".adding-"))
    try:
        staged = tmp / target.name
        if src.is_file():
            shutil.copyfile(src, staged)
        else:
            shutil.copytree(src, staged)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    index = read_index()
    index["models"][name] = dict(file=target.name, sha256=digest, size_bytes=_size(target),
                                 added=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **detected)
    write_index(index)
    remember_hash(target, digest)  # same bytes: no need to read the copy again
    return _entry_info(name, index["models"][name])


def remove(name: str) -> None:
    """Delete a library model's file or folder and its index entry."""
    index = read_index()
    entry = index["models"].get(name)
    if entry is None:
        raise _not_found(name, list(index["models"]))
    target = models_dir() / entry["file"]
    del index["models"][name]
    index["hashes"].pop(str(target.resolve()), None)
    write_index(index)
    if target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


def export(name_or_path: str | os.PathLike, out_path: str | os.PathLike) -> ModelInfo:
    """Write a library model or any model path as one LDM-layout .safetensors (A1111/ComfyUI keys)."""
    from egaku.models.export import export_single_file
    from egaku.models.loader import load_model

    bundle = load_model(resolve(name_or_path))
    written = export_single_file(bundle, out_path)
    del bundle
    return info(written)
