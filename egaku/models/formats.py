"""One reader per checkpoint format, each giving a `TensorSource`: key names and shapes up front,
tensors read one at a time so a loader never holds two copies of a state dict.

- `.safetensors` single files (the safetensors format: 8-byte header length, JSON header, raw data);
  the header's `__metadata__` string map is kept (egaku writes its configs there, see export.py).
- `.ckpt` / `.pt` / `.pth` PyTorch pickles, read with `torch.load(weights_only=True)` only: a pickle
  that needs code to rebuild is refused, never run. A nested "state_dict" (Lightning/CompVis) is unwrapped.
- diffusers folders (`model_index.json` + one subfolder per component, as `save_pretrained` writes);
  weights are `.safetensors` or `.bin` (weights_only), whole or sharded with an `*.index.json`.
"""

from __future__ import annotations

import json
import pickle
from enum import StrEnum
from pathlib import Path

import torch

from egaku.errors import ModelLoadError, ModelNotFoundError, UnsafeCheckpointError

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class ModelFormat(StrEnum):
    SAFETENSORS = "safetensors"
    CHECKPOINT = "ckpt"  # a PyTorch pickle (.ckpt, .pt, .pth)
    DIFFUSERS = "diffusers"  # a folder with model_index.json


def detect_format(path: str | Path) -> ModelFormat:
    """The format of a model path, from its suffix or folder layout. Missing path -> ModelNotFoundError."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"{path} does not exist")
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return ModelFormat.DIFFUSERS
        raise ModelLoadError(f"{path} is a folder without model_index.json (not a diffusers model)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return ModelFormat.SAFETENSORS
    if suffix in CHECKPOINT_SUFFIXES:
        return ModelFormat.CHECKPOINT
    raise ModelLoadError(f"{path}: unsupported file type {suffix or '(none)'}; use .safetensors, .ckpt or a diffusers folder")


class TensorSource:
    """A state dict read lazily: `keys()`, `shape(key)` without reading data, `take(key)` reads one tensor."""

    metadata: dict[str, str]
    borrowed: bool = False  # tensors view a memory-mapped file: copy them before keeping them

    def keys(self) -> list[str]:
        raise NotImplementedError

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def take(self, key: str) -> torch.Tensor:
        """The tensor under `key`; an in-memory source forgets it so its memory can be freed."""
        raise NotImplementedError

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: self.shape(k) for k in self.keys()}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DictSource(TensorSource):
    """An in-memory state dict (from a pickle). `take` pops, so tensors are freed once the model owns them."""

    def __init__(self, state_dict: dict[str, torch.Tensor], metadata: dict | None = None):
        self._sd = state_dict
        self._shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
        self.metadata = dict(metadata or {})

    def keys(self) -> list[str]:
        return list(self._shapes)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def take(self, key: str) -> torch.Tensor:
        return self._sd.pop(key)

    def close(self) -> None:
        self._sd.clear()


class SafetensorsSource(TensorSource):
    """A .safetensors file opened with safetensors.safe_open; tensors are read on `take`.

    They view the file's memory map at unaligned offsets, so a loader copies each one once
    (aligned memory gives the same numerics as a freshly built model, and the file stays untouched).
    """

    borrowed = True

    def __init__(self, path: str | Path):
        from safetensors import SafetensorError, safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelNotFoundError(f"{self.path} does not exist")
        try:
            self._file = safe_open(str(self.path), framework="pt", device="cpu")
            self._keys = list(self._file.keys())
            self._shapes = {k: tuple(self._file.get_slice(k).get_shape()) for k in self._keys}
            self.metadata = dict(self._file.metadata() or {})
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{self.path} is truncated or not a safetensors file ({_first_line(e)})") from None

    def keys(self) -> list[str]:
        return list(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def take(self, key: str) -> torch.Tensor:
        return self._file.get_tensor(key)

    def close(self) -> None:
        self._file = None


class MultiSource(TensorSource):
    """Several sources seen as one state dict (sharded diffusers weights)."""

    def __init__(self, sources: list[TensorSource]):
        self._sources = sources
        self._owner = {k: s for s in sources for k in s.keys()}
        self.metadata = {}
        self.borrowed = any(s.borrowed for s in sources)

    def keys(self) -> list[str]:
        return list(self._owner)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._owner[key].shape(key)

    def take(self, key: str) -> torch.Tensor:
        return self._owner[key].take(key)

    def close(self) -> None:
        for s in self._sources:
            s.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_checkpoint(path: str | Path) -> DictSource:
    """A PyTorch pickle via torch.load(weights_only=True); unwraps {"state_dict": ...}; keeps tensors only."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # the weights-only unpickler met a class/function it will not import
            raise UnsafeCheckpointError(
                f"{path} needs arbitrary code to unpickle; refusing (convert it to .safetensors with a tool you trust)"
            ) from None
        raise ModelLoadError(f"{path} is not a readable PyTorch checkpoint (corrupt or not a checkpoint)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ModelLoadError(f"{path} is truncated or not a PyTorch checkpoint ({_first_line(e)[:120]})") from None
    except Exception as e:  # torch.load may sniff other formats and raise their errors
        raise ModelLoadError(f"{path} is not a readable PyTorch checkpoint ({_first_line(e)[:120]})") from None
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} does not hold a state dict")
    return DictSource({k: v for k, v in data.items() if isinstance(v, torch.Tensor)})


def read_single_file(path: str | Path) -> TensorSource:
    """The reader for a single-file checkpoint, chosen by its format."""
    fmt = detect_format(path)
    if fmt is ModelFormat.SAFETENSORS:
        return SafetensorsSource(path)
    if fmt is ModelFormat.CHECKPOINT:
        return read_checkpoint(path)
    raise ModelLoadError(f"{path} is a folder, not a single-file checkpoint")


WEIGHT_STEMS = ("diffusion_pytorch_model", "model")


def read_component(folder: str | Path) -> TensorSource:
    """The weights of one diffusers component folder (unet/, vae/, text_encoder/, ...).

    Prefers full-precision .safetensors, then .fp16 variants, then sharded safetensors, then .bin
    (torch.load weights_only), as diffusers' own loader does.
    """
    folder = Path(folder)
    for suffix in (".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin"):
        for stem in WEIGHT_STEMS:
            single = folder / f"{stem}{suffix}"
            if single.is_file():
                return SafetensorsSource(single) if suffix.endswith("safetensors") else read_checkpoint(single)
            index = folder / f"{stem}{suffix}.index.json"
            if index.is_file():
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                return MultiSource([read_component_file(folder / s) for s in shards])
    raise ModelLoadError(f"{folder} has no weights (diffusion_pytorch_model/model .safetensors or .bin)")


def read_component_file(path: Path) -> TensorSource:
    return SafetensorsSource(path) if path.suffix == ".safetensors" else read_checkpoint(path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path} is not valid JSON ({_first_line(e)})") from None
