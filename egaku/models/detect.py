"""What a single-file checkpoint is, from its tensors: ComfyUI's idea of a declarative table of
supported models matched on key names and tensor shapes, never on file names.

`plan_single_file(shapes, metadata)` returns the family, variant and every component config. Shapes
give channels per level, layers per block, transformer depth, context dim, in_channels, VAE channels
and text-encoder width/depth; what shapes cannot tell (attention heads, norm groups, VAE scaling,
sample size) comes from egaku metadata in the safetensors header (see export.py) or else from the
family's standard config in egaku/models/configs/<name>/.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.resources import files

import torch

from egaku.errors import ModelLoadError
from egaku.models.bundle import ModelFamily
from egaku.models.ldm import UNET_PREFIX, VAE_PREFIX, TextLayout


@dataclass(frozen=True)
class TextEncoderSpec:
    attr: str  # ModelBundle attribute: "text_encoder" or "text_encoder_2"
    layout: TextLayout
    prefix: str  # LDM key prefix


@dataclass(frozen=True)
class SupportedModel:
    """One row of the table: a family, the key only its checkpoints have, where its encoders live."""

    family: ModelFamily
    marker: str
    text_encoders: tuple[TextEncoderSpec, ...]
    config: str  # standard config folder (eps, 4-channel)
    architecture: str  # SAI modelspec architecture (eps, 4-channel)


SUPPORTED: tuple[SupportedModel, ...] = (
    SupportedModel(ModelFamily.SDXL, "conditioner.embedders.1.model.token_embedding.weight",
                   (TextEncoderSpec("text_encoder", TextLayout.CLIP, "conditioner.embedders.0.transformer."),
                    TextEncoderSpec("text_encoder_2", TextLayout.OPENCLIP, "conditioner.embedders.1.model.")),
                   "sdxl", "stable-diffusion-xl-v1-base"),
    SupportedModel(ModelFamily.SD2, "cond_stage_model.model.token_embedding.weight",
                   (TextEncoderSpec("text_encoder", TextLayout.OPENCLIP, "cond_stage_model.model."),),
                   "sd2", "stable-diffusion-v2-512"),
    SupportedModel(ModelFamily.SD1, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                   (TextEncoderSpec("text_encoder", TextLayout.CLIP, "cond_stage_model.transformer."),),
                   "sd15", "stable-diffusion-v1"),
)
SPECS = {s.family: s for s in SUPPORTED}


def config_name(family: ModelFamily, inpaint: bool, prediction_type: str | None) -> str:
    """The shipped config folder for a variant: sd15, sd15-inpaint, sd2, sd2-v, sd2-inpaint, sdxl, sdxl-inpaint."""
    base = SPECS[family].config
    if inpaint:
        return f"{base}-inpaint"
    if family is ModelFamily.SD2 and prediction_type == "v_prediction":
        return "sd2-v"
    return base


def architecture(family: ModelFamily, inpaint: bool, prediction_type: str) -> str:
    """SAI modelspec architecture, e.g. "stable-diffusion-v2-768-v" or "stable-diffusion-v1/inpaint"."""
    arch = SPECS[family].architecture
    if family is ModelFamily.SD2 and prediction_type == "v_prediction" and not inpaint:
        arch = "stable-diffusion-v2-768-v"
    return arch + ("/inpaint" if inpaint else "")


def standard_config(name: str, component: str) -> dict:
    """A component config (unet, vae, text_encoder, text_encoder_2, scheduler) of a shipped model."""
    folder = files("egaku.models") / "configs" / name / component
    filename = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((folder / filename).read_text())


@dataclass
class Plan:
    """Everything needed to build the components of one single-file checkpoint."""

    family: ModelFamily
    inpaint: bool
    prediction_type: str | None  # None: SD2 without a hint; the loader probes the UNet (see probe_v_prediction)
    prediction_source: str  # "override", "metadata", "v_pred key", "family default" or "probe"
    configs: dict[str, dict] = field(default_factory=dict)  # unet, vae, text_encoder(_2), scheduler
    text_encoders: tuple[TextEncoderSpec, ...] = ()


def normalize_prediction(value: str) -> str:
    v = value.strip().lower()
    if v in ("v", "v_prediction", "v-prediction", "vpred", "v_pred"):
        return "v_prediction"
    if v in ("eps", "epsilon"):
        return "epsilon"
    raise ModelLoadError(f"unknown prediction type {value!r} (use epsilon or v_prediction)")


def detect_family(shapes: dict[str, tuple]) -> SupportedModel:
    for spec in SUPPORTED:
        if spec.marker in shapes:
            return spec
    if UNET_PREFIX + "input_blocks.0.0.weight" not in shapes:
        raise ModelLoadError("not a Stable Diffusion checkpoint (no model.diffusion_model UNet weights)")
    if "conditioner.embedders.0.model.token_embedding.weight" in shapes:
        raise ModelLoadError("SDXL refiner checkpoints are not supported")
    raise ModelLoadError("unsupported architecture: no SD1/SD2/SDXL text encoder weights in the checkpoint")


def plan_single_file(shapes: dict[str, tuple], metadata: dict[str, str], prediction_type: str | None = None) -> Plan:
    """Detect family, inpainting and prediction type, and derive every component config."""
    spec = detect_family(shapes)
    family = spec.family
    inpaint = shapes[UNET_PREFIX + "input_blocks.0.0.weight"][1] == 9
    if prediction_type:
        pred, source = normalize_prediction(prediction_type), "override"
    elif metadata.get("egaku.prediction_type") or metadata.get("modelspec.prediction_type"):
        pred = normalize_prediction(metadata.get("egaku.prediction_type") or metadata["modelspec.prediction_type"])
        source = "metadata"
    elif "v_pred" in shapes:  # ComfyUI's marker key for v-prediction checkpoints
        pred, source = "v_prediction", "v_pred key"
    elif family is ModelFamily.SD2 and not inpaint:
        pred, source = None, "probe"
    else:
        pred, source = "epsilon", "family default"
    std = config_name(family, inpaint, pred)
    meta = {c: json.loads(metadata[f"egaku.{c}_config"]) for c in ("unet", "vae", "text_encoder", "text_encoder_2",
                                                                    "scheduler") if f"egaku.{c}_config" in metadata}
    configs = {}
    for enc in spec.text_encoders:
        configs[enc.attr] = text_config(shapes, enc, meta.get(enc.attr) or standard_config(std, enc.attr), family)
    pooled = configs.get("text_encoder_2", {}).get("projection_dim", 0)
    configs["unet"] = unet_config(shapes, meta.get("unet") or standard_config(std, "unet"), pooled, "unet" in meta)
    configs["vae"] = vae_config(shapes, meta.get("vae") or standard_config(std, "vae"), "vae" in meta)
    configs["scheduler"] = meta.get("scheduler") or standard_config(std, "scheduler")
    return Plan(family, inpaint, pred, source, configs, spec.text_encoders)


def _depths(shapes) -> dict[str, int]:
    """Number of transformer blocks under each module prefix."""
    depth: dict[str, int] = defaultdict(int)
    for key in shapes:
        if m := re.match(r"^(.*)\.transformer_blocks\.(\d+)\.", key):
            depth[m.group(1)] = max(depth[m.group(1)], int(m.group(2)) + 1)
    return depth


def _groups(channels: list[int], standard: int) -> int:
    """GroupNorm groups: the standard 32 when it divides every width, else the largest power of two that does."""
    g = standard
    while g > 1 and any(c % g for c in channels):
        g //= 2
    return g


def unet_config(shapes, base: dict, pooled_dim: int, exact: bool) -> dict:
    """A UNet2DConditionModel config from the CompVis UNetModel's tensors; `base` supplies the rest."""
    p = UNET_PREFIX
    depth = _depths(shapes)
    levels, lpb, i = [[]], None, 1
    while f"{p}input_blocks.{i}.0.op.weight" in shapes or f"{p}input_blocks.{i}.0.out_layers.3.weight" in shapes:
        if f"{p}input_blocks.{i}.0.op.weight" in shapes:
            levels.append([])
        else:
            levels[-1].append((shapes[f"{p}input_blocks.{i}.0.out_layers.3.weight"][0], depth[f"{p}input_blocks.{i}.1"]))
        i += 1
    lpb = len(levels[0])
    if not lpb or any(len(lv) != lpb for lv in levels):
        raise ModelLoadError("unsupported UNet layout (levels with different numbers of blocks)")
    channels = [lv[0][0] for lv in levels]
    depths = [lv[0][1] for lv in levels]
    mid_depth = depth[f"{p}middle_block.1"]
    per_level = [d if d else 1 for d in depths]
    if not depths[-1]:
        per_level[-1] = mid_depth
    elif depths[-1] != mid_depth:
        raise ModelLoadError("unsupported UNet layout (middle block depth differs from the last level)")
    attn_key = next((k for k in shapes if k.startswith(p) and k.endswith("attn2.to_k.weight")), None)
    proj_in = next((k for k in shapes if k.startswith(p) and k.endswith(".proj_in.weight")), None)
    cfg = dict(base)
    cfg.update(
        in_channels=shapes[p + "input_blocks.0.0.weight"][1],
        out_channels=shapes[p + "out.2.weight"][0],
        block_out_channels=channels,
        layers_per_block=lpb,
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        up_block_types=["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depths)],
        transformer_layers_per_block=per_level if len(set(per_level)) > 1 else per_level[0],
    )
    if attn_key:
        cfg["cross_attention_dim"] = shapes[attn_key][1]
    if proj_in:
        cfg["use_linear_projection"] = len(shapes[proj_in]) == 2
    if p + "label_emb.0.0.weight" in shapes:
        proj_dim = shapes[p + "label_emb.0.0.weight"][1]
        cfg.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=proj_dim)
        if not exact:
            cfg["addition_time_embed_dim"] = (proj_dim - pooled_dim) // 6  # 6 size/crop numbers + pooled text
    if not exact:  # heads: SD1 uses 8 heads; SD2/SDXL use 64-wide heads (attention_head_dim holds head counts)
        heads = cfg["attention_head_dim"]
        if isinstance(heads, int) and all(c % heads == 0 for c in channels):
            pass
        elif all(c % 64 == 0 for c in channels):
            cfg["attention_head_dim"] = [c // 64 for c in channels]
        else:
            cfg["attention_head_dim"] = [max(1, c // 16) for c in channels]
        cfg["norm_num_groups"] = _groups(channels, cfg.get("norm_num_groups", 32))
    return cfg


def vae_config(shapes, base: dict, exact: bool) -> dict:
    """An AutoencoderKL config from the LDM Encoder/Decoder tensors."""
    p = VAE_PREFIX + "encoder.down."
    channels = []
    while f"{p}{len(channels)}.block.0.conv1.weight" in shapes:
        channels.append(shapes[f"{p}{len(channels)}.block.0.conv1.weight"][0])
    if not channels:
        raise ModelLoadError("the checkpoint has no VAE (first_stage_model) weights")
    lpb = len({k[len(p):].split(".")[2] for k in shapes if k.startswith(f"{p}0.block.")})
    cfg = dict(base)
    cfg.update(
        in_channels=shapes[VAE_PREFIX + "encoder.conv_in.weight"][1],
        out_channels=shapes[VAE_PREFIX + "decoder.conv_out.weight"][0],
        latent_channels=shapes[VAE_PREFIX + "post_quant_conv.weight"][0],
        block_out_channels=channels,
        layers_per_block=lpb,
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
    )
    if not exact:
        cfg["norm_num_groups"] = _groups(channels, cfg.get("norm_num_groups", 32))
    return cfg


def text_config(shapes, enc: TextEncoderSpec, base: dict, family: ModelFamily) -> dict:
    """A CLIPTextConfig dict from HF-CLIP or OpenCLIP tensors."""
    if enc.layout is TextLayout.CLIP:
        p = enc.prefix + "text_model."
        vocab, hidden = shapes[p + "embeddings.token_embedding.weight"]
        positions = shapes[p + "embeddings.position_embedding.weight"][0]
        layer_re, fc1 = re.compile(re.escape(p) + r"encoder\.layers\.(\d+)\."), "encoder.layers.0.mlp.fc1.weight"
    else:
        p = enc.prefix
        vocab, hidden = shapes[p + "token_embedding.weight"]
        positions = shapes[p + "positional_embedding"][0]
        layer_re, fc1 = re.compile(re.escape(p) + r"transformer\.resblocks\.(\d+)\."), "transformer.resblocks.0.mlp.c_fc.weight"
    layers = len({m.group(1) for k in shapes if (m := layer_re.match(k))})
    if family is ModelFamily.SD2 and layers == 24 and hidden == 1024:
        layers = 23  # SD 2.x conditions on ViT-H's penultimate layer; diffusers keeps 23 of 24
    cfg = dict(base)
    cfg.update(vocab_size=vocab, hidden_size=hidden, max_position_embeddings=positions,
               num_hidden_layers=layers, intermediate_size=shapes[p + fc1][0])
    if enc.layout is TextLayout.OPENCLIP and p + "text_projection" in shapes:
        cfg["projection_dim"] = shapes[p + "text_projection"][1]
    if hidden % cfg["num_attention_heads"]:
        cfg["num_attention_heads"] = hidden // 64 if hidden % 64 == 0 else max(1, hidden // 8)
    return cfg


@torch.no_grad()
def probe_v_prediction(unet) -> bool:
    """A1111's test for SD 2.x v-models: at t=999 on a flat input an eps-model's output stays near
    the input, while a v-model's output lands well below it (mean(out - x) < -1)."""
    p = next(unet.parameters())
    x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, device=p.device, dtype=p.dtype)  # (B, C, H, W)
    context = torch.full((1, 77, unet.config.cross_attention_dim), 0.5, device=p.device, dtype=p.dtype)  # (B, T, D)
    t = torch.tensor([999], device=p.device)
    out = unet(x, t, encoder_hidden_states=context).sample  # (B, C, H, W)
    return (out.float() - x.float()).mean().item() < -1
