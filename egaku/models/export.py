"""Export a loaded model to one LDM-layout `.safetensors` file that A1111, ComfyUI and Forge load.

Key names are the original CompVis/Stability ones (see ldm.py): `model.diffusion_model.*`,
`first_stage_model.*` (mid-block attention as 1x1 convs), `cond_stage_model.transformer.*` (SD 1.x),
`cond_stage_model.model.*` (SD 2.x, OpenCLIP: fused `in_proj_weight`, `text_projection`),
`conditioner.embedders.0/1.*` (SDXL). The header's `__metadata__` carries the SAI model spec
(`modelspec.architecture` = "stable-diffusion-v1", "stable-diffusion-v2-768-v",
"stable-diffusion-xl-v1-base", plus "/inpaint") and egaku's exact component configs as JSON
(`egaku.unet_config`, ...), so a non-standard model (the built-in one, a tiny test model) reimports exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from egaku.errors import InvalidRequestError
from egaku.models.bundle import ModelBundle, ModelFamily
from egaku.models.detect import SPECS, architecture
from egaku.models.ldm import text_rules, to_ldm, unet_rules, vae_rules
from egaku.models.loader import bundle_configs

IMPLEMENTATION = {
    ModelFamily.SD1: "https://github.com/CompVis/stable-diffusion",
    ModelFamily.SD2: "https://github.com/Stability-AI/stablediffusion",
    ModelFamily.SDXL: "https://github.com/Stability-AI/generative-models",
}
FORMAT_VERSION = "1"


def ldm_state_dict(bundle: ModelBundle, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The bundle's weights under LDM key names (tensors shared with the modules unless cast)."""

    def prepared(module) -> dict[str, torch.Tensor]:
        sd = module.state_dict()
        return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu()
                for k, v in sd.items()}

    out = {}
    unet_sd = prepared(bundle.unet)
    out.update(to_ldm(unet_sd, unet_rules(unet_sd.keys(), bundle.unet.config)))
    del unet_sd
    vae_sd = prepared(bundle.vae)
    out.update(to_ldm(vae_sd, vae_rules(vae_sd.keys(), bundle.vae.config)))
    del vae_sd
    for enc in SPECS[bundle.family].text_encoders:
        sd = prepared(getattr(bundle, enc.attr))
        out.update(to_ldm(sd, text_rules(sd.keys(), enc.layout, enc.prefix)))
    return out


def export_metadata(bundle: ModelBundle) -> dict[str, str]:
    """The `__metadata__` strings: SAI model spec plus egaku's configs."""
    pred = bundle.prediction_type
    size = bundle.default_size
    meta = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture(bundle.family, bundle.is_inpaint, pred),
        "modelspec.implementation": IMPLEMENTATION[bundle.family],
        "modelspec.title": bundle.name or "egaku export",
        "modelspec.resolution": f"{size}x{size}",
        "modelspec.prediction_type": "v" if pred == "v_prediction" else "epsilon",
        "egaku.format_version": FORMAT_VERSION,
        "egaku.family": bundle.family.value,
        "egaku.prediction_type": pred,
    }
    for name, config in bundle_configs(bundle).items():
        meta[f"egaku.{name}_config"] = json.dumps(config, sort_keys=True)
    return meta


def export_single_file(bundle: ModelBundle, out_path: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
    """Write `bundle` as one LDM-layout .safetensors at `out_path` (atomically); returns the path.

    `dtype` (e.g. torch.float16) casts floating-point weights; None keeps the loaded dtype.
    """
    from safetensors.torch import save_file

    out_path = Path(out_path)
    if out_path.suffix.lower() != ".safetensors":
        raise InvalidRequestError(f"{out_path}: export writes .safetensors files only")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in ldm_state_dict(bundle, dtype).items()}
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}-", suffix=".safetensors.tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=export_metadata(bundle))
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path
