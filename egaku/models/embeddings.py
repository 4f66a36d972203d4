"""Textual-inversion embeddings (Gal et al. 2022, "An Image is Worth One Word") in A1111's formats.

Read:
- `.pt` / `.bin` (torch.load with weights_only): A1111's `{"string_to_param": {"*": (N, D)}, "name",
  "step", ...}`, or diffusers' `learned_embeds.bin` `{"<token>": (D,) or (N, D)}`;
- `.safetensors`: `emb_params` (N, D) (SD 1.x/2.x), `clip_l` (N, 768) + `clip_g` (N, 1280) (SDXL),
  or a single tensor under any name (diffusers).
Written: `.safetensors` with `emb_params` (or `clip_l`/`clip_g`) and `name`/`step` in the header, or
A1111's `.pt` dict. The token is the file's stem, as in A1111.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from egaku.errors import ModelLoadError, UnsafeCheckpointError

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
FIRST, SECOND = "clip_l", "clip_g"  # vectors for the first / second (SDXL) text encoder


@dataclass
class Embedding:
    """Vectors per text encoder: {"clip_l": (N, D)} or, for SDXL, {"clip_l": ..., "clip_g": ...}."""

    name: str
    vectors: dict[str, torch.Tensor]
    step: int | None = None
    path: str = ""
    sha256: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def num_vectors(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def family(self) -> str:
        """sd1 / sd2 / sdxl by the vectors' widths (real SD text encoders), "builtin" for egaku's
        built-in model (as its trainer records), else "unknown"."""
        if self.metadata.get("sd_checkpoint_name") == "builtin":
            return "builtin"
        if SECOND in self.vectors:
            return "sdxl"
        return {768: "sd1", 1024: "sd2"}.get(self.vectors[FIRST].shape[-1], "unknown")


def _as_matrix(t: torch.Tensor, where: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim not in (1, 2):
        raise ModelLoadError(f"{where}: embedding vectors must be a float (N, D) tensor")
    return t.detach().float().reshape(-1, t.shape[-1])  # (N, D)


def embedding_from_dict(data: dict, name: str, where: str) -> Embedding:
    """The vectors of any supported layout (see module docstring)."""
    step = data.get("step") if isinstance(data.get("step"), int) else None
    if isinstance(data.get("string_to_param"), dict) and data["string_to_param"]:
        vec = next(iter(data["string_to_param"].values()))
        return Embedding(name, {FIRST: _as_matrix(vec, where)}, step)
    if "emb_params" in data:
        return Embedding(name, {FIRST: _as_matrix(data["emb_params"], where)}, step)
    if FIRST in data and SECOND in data:
        return Embedding(name, {FIRST: _as_matrix(data[FIRST], where), SECOND: _as_matrix(data[SECOND], where)}, step)
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:  # diffusers: {"<token>": (D,)}
        return Embedding(name, {FIRST: _as_matrix(tensors[0], where)}, step)
    raise ModelLoadError(f"{where} is not a textual-inversion embedding (no string_to_param, emb_params or clip_l/clip_g)")


def _load_pickle(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):
            raise UnsafeCheckpointError(f"{path} needs arbitrary code to unpickle; refusing") from None
        raise ModelLoadError(f"{path} is not a readable embedding file") from None
    except Exception as e:  # truncated or another format torch.load sniffed
        raise ModelLoadError(f"{path} is not a readable embedding file ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} does not hold an embedding dict")
    return data


def read_embedding(path: str | os.PathLike, name: str | None = None, sha256: str | None = None) -> Embedding:
    """An A1111/diffusers embedding file; its token is `name` (default: the file's stem)."""
    path = Path(path)
    if not path.is_file():
        from egaku.errors import ModelNotFoundError

        raise ModelNotFoundError(f"{path} does not exist")
    metadata: dict = {}
    if path.suffix.lower() == ".safetensors":
        from egaku.models.formats import SafetensorsSource

        with SafetensorsSource(path) as src:
            data = {k: src.take(k) for k in src.keys()}
            metadata = dict(src.metadata)
        if "step" in metadata and metadata["step"].isdigit():
            data["step"] = int(metadata["step"])
    else:
        data = _load_pickle(path)
        metadata = {k: str(data[k]) for k in ("sd_checkpoint", "sd_checkpoint_name") if isinstance(data.get(k), str)}
    emb = embedding_from_dict(data, name or path.stem, str(path))
    emb.path, emb.metadata = str(path), metadata
    if sha256 is None:
        from egaku.models.hashing import sha256_path

        sha256 = sha256_path(path)
    emb.sha256 = sha256
    return emb


def is_embedding_keys(keys) -> bool:
    keys = set(keys)
    return "emb_params" in keys or {FIRST, SECOND} <= keys or "string_to_param" in keys


def write_embedding(path: str | os.PathLike, emb: Embedding, base_model_hash: str = "", base_model_name: str = "") -> Path:
    """Write `emb` as A1111 reads it: .safetensors (`emb_params` or `clip_l`/`clip_g`) or .pt (`string_to_param`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pt"):
        raise ModelLoadError(f"{path}: embeddings are written as .safetensors or .pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in emb.vectors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    os.close(fd)
    try:
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            tensors = vectors if SECOND in vectors else {"emb_params": vectors[FIRST]}
            meta = {"name": emb.name, "step": str(emb.step or 0), "sd_checkpoint": base_model_hash[:10],
                    "sd_checkpoint_name": base_model_name, **{k: str(v) for k, v in emb.metadata.items()}}
            save_file(tensors, tmp, metadata=meta)
        else:
            data = {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors[FIRST]}, "name": emb.name,
                    "step": int(emb.step or 0), "sd_checkpoint": base_model_hash[:10], "sd_checkpoint_name": base_model_name}
            if SECOND in vectors:
                data.update(vectors)
            torch.save(data, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
