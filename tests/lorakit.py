"""A tiny real LoRA for any loaded model (tests/ is on sys.path): random kohya-layout adapters on the
attention projections of its UNet and text encoder, written with egaku.models.lora.write_kohya."""

from __future__ import annotations

from pathlib import Path

import torch

from egaku.models.lora import LoraLayer, kohya_name, write_kohya

TARGETS = ("to_q", "to_k", "to_v", "q_proj", "v_proj")


def write_random_lora(bundle, path: Path, *, seed: int = 0, attrs=("unet", "text_encoder"), rank: int = 4,
                      alpha: float = 2.0, scale: float = 0.4, trigger: str = "zqx style") -> Path:
    """A LoRA for `bundle` with random (seeded) weights, large enough to change its images visibly."""
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for attr in attrs:
        for name, m in getattr(bundle, attr).named_modules():
            if isinstance(m, torch.nn.Linear) and name.endswith(TARGETS):
                down = torch.randn(rank, m.in_features, generator=g) * scale
                up = torch.randn(m.out_features, rank, generator=g) * scale
                layers[kohya_name(bundle, attr, name)] = LoraLayer(down, up, alpha)
    assert layers, "no attention projections found"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_kohya(path, layers, {"ss_tag_frequency": f'{{"data": {{"{trigger}": 3}}}}',
                                      "ss_output_name": path.stem})


def builtin_lora(home: Path, name: str = "zqx", **kw) -> Path:
    """A LoRA for the built-in model in $EGAKU_HOME/models/loras/NAME.safetensors (found by file stem)."""
    from egaku.engine import Engine

    bundle = _builtin_bundle(Engine)
    return write_random_lora(bundle, Path(home) / "models" / "loras" / f"{name}.safetensors", **kw)


_BUNDLE = {}


def _builtin_bundle(engine_cls):
    """The built-in model's components (loaded once per process; only their module names and shapes are used)."""
    if "b" not in _BUNDLE:
        _BUNDLE["b"] = engine_cls(device="cpu").load(None)
    return _BUNDLE["b"]
