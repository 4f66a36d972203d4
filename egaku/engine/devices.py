"""Where the engine runs and in which precision, plus the memory savers diffusers offers.

Nothing here runs at import time: every function inspects the machine when called.
"""

from __future__ import annotations

from enum import StrEnum

import torch

from egaku.errors import InvalidRequestError

# Above these sizes the "auto" memory savers switch on (the UNet's attention maps grow with the
# square of the latent pixel count; the VAE decoder's activations with the image's pixel count).
ATTENTION_SLICING_PIXELS = 1024 * 1024
VAE_TILING_PIXELS = 1536 * 1536

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


class Toggle(StrEnum):
    """A memory saver's setting: on when the image is large ("auto"), always, or never."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"

    @classmethod
    def parse(cls, value: "str | bool | Toggle", what: str) -> "Toggle":
        if isinstance(value, bool):
            return cls.ON if value else cls.OFF
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InvalidRequestError(f"{what} must be one of auto, on, off; got '{value}'") from None

    def wanted(self, pixels: int, threshold: int) -> bool:
        return self is Toggle.ON or (self is Toggle.AUTO and pixels > threshold)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' -> cuda if present, else mps, else cpu; 'cpu', 'cuda', 'cuda:N' or 'mps' explicitly."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InvalidRequestError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidRequestError("device 'cuda' was asked for but no CUDA GPU is available (try --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidRequestError(
                f"device '{name}' does not exist; this machine has {torch.cuda.device_count()} CUDA GPU(s)"
            )
    elif device.type == "mps":
        if not _mps_available():
            raise InvalidRequestError("device 'mps' was asked for but Apple MPS is not available")
    elif device.type != "cpu":
        raise InvalidRequestError(f"unsupported device '{name}'; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto' -> fp16 on cuda/mps, fp32 on cpu; 'fp32', 'fp16' or 'bf16' explicitly."""
    if isinstance(name, torch.dtype):
        if name not in _DTYPES.values():
            raise InvalidRequestError(f"unsupported dtype {name}; use fp32, fp16 or bf16")
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in _DTYPES:
        raise InvalidRequestError(f"unknown dtype '{name}'; use auto, fp32, fp16 or bf16")
    return _DTYPES[name]


def total_memory_bytes(device: torch.device) -> int:
    """Memory the models will live in: the GPU's for cuda, the machine's RAM otherwise."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    import psutil

    return int(psutil.virtual_memory().total)


def apply_memory_savers(
    bundle, *, width: int, height: int, batch_size: int, attention_slicing: Toggle, vae_tiling: Toggle
) -> dict:
    """Switch attention slicing and VAE tiling on or off for this request; returns what was set.

    Both are diffusers' own: `UNet2DConditionModel.set_attention_slice("auto")` (attention in two
    halves) and `AutoencoderKL.enable_tiling()` (decode in overlapping tiles, blended at the seams).
    The UNet sees the whole batch at once; the engine decodes one image at a time.
    """
    slicing = attention_slicing.wanted(width * height * batch_size, ATTENTION_SLICING_PIXELS)
    tiling = vae_tiling.wanted(width * height, VAE_TILING_PIXELS)
    if bundle.extra.get("_attention_slicing", False) != slicing:
        bundle.unet.set_attention_slice("auto" if slicing else None)
        bundle.extra["_attention_slicing"] = slicing
    if tiling:
        bundle.vae.enable_tiling()
    else:
        bundle.vae.disable_tiling()
    return {"attention_slicing": slicing, "vae_tiling": tiling}


def enable_cpu_offload(bundle, device: torch.device) -> None:
    """Keep every module on the CPU and move each to `device` only while it runs.

    As diffusers' `enable_model_cpu_offload`: accelerate's `cpu_offload_with_hook` chains the modules
    in the order they run (text encoders, UNet, VAE) so loading one offloads the previous one. The
    VAE's encode/decode trigger the hook too (diffusers marks them with `apply_forward_hook`).
    """
    if bundle.extra.get("_cpu_offload"):
        return
    from accelerate import cpu_offload_with_hook

    hook = None
    for module in (bundle.text_encoder, bundle.text_encoder_2, bundle.unet, bundle.vae):
        if module is None:
            continue
        module.to("cpu")
        _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
    bundle.extra["_cpu_offload"] = True


def module_device(module) -> torch.device:
    """The device a module computes on (its execution device when offloaded)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    return next(module.parameters()).device
