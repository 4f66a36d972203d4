"""Key names of the original single-file layout (CompVis latent-diffusion / Stability sgm), both ways.

One table per component maps each diffusers key to its LDM key plus a tensor op; loading reads it
one way, export writes it the other, so the two can never disagree. The layouts are those of
CompVis' `ldm.modules.diffusionmodules.openaimodel.UNetModel` and `...model.Encoder/Decoder`, the HF
CLIP text model (SD 1.x, SDXL embedder 0) and OpenCLIP's text transformer (SD 2.x, SDXL embedder 1),
the same correspondence diffusers' scripts/convert_diffusers_to_original_{stable_diffusion,sdxl}.py use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."


class TextLayout(StrEnum):
    CLIP = "clip"  # HF CLIPTextModel keys under `<prefix>text_model.`
    OPENCLIP = "openclip"  # open_clip: resblocks, fused in_proj, text_projection as a matrix


class Op(StrEnum):
    COPY = "copy"
    TRANSPOSE = "transpose"  # OpenCLIP text_projection is x @ P; the Linear weight is P.T
    CONV1X1 = "conv1x1"  # LDM VAE mid attention uses 1x1 convs where diffusers uses Linear
    QKV = "qkv"  # OpenCLIP fuses q, k, v into in_proj_weight/bias (part 0, 1, 2 along dim 0)


@dataclass(frozen=True)
class KeyRule:
    ldm: str
    op: Op = Op.COPY
    part: int = 0  # for Op.QKV: 0 = q, 1 = k, 2 = v


# diffusers resnet names -> LDM ResBlock names (UNet) and ResnetBlock names (VAE)
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _has_attention(block_type: str) -> bool:
    return block_type.startswith("CrossAttn")


def unet_table(config: dict) -> list[tuple[str, str, dict]]:
    """(diffusers prefix, LDM prefix, renames of the rest) for a UNet2DConditionModel config."""
    lpb = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    table = [("time_embedding.linear_1", "time_embed.0", {}), ("time_embedding.linear_2", "time_embed.2", {}),
             ("add_embedding.linear_1", "label_emb.0.0", {}), ("add_embedding.linear_2", "label_emb.0.2", {}),
             ("conv_in", "input_blocks.0.0", {}), ("conv_norm_out", "out.0", {}), ("conv_out", "out.2", {}),
             ("mid_block.resnets.0", "middle_block.0", UNET_RESNET), ("mid_block.attentions.0", "middle_block.1", {}),
             ("mid_block.resnets.1", "middle_block.2", UNET_RESNET)]
    for level in range(levels):
        for j in range(lpb):
            i = 1 + level * (lpb + 1) + j
            table.append((f"down_blocks.{level}.resnets.{j}", f"input_blocks.{i}.0", UNET_RESNET))
            table.append((f"down_blocks.{level}.attentions.{j}", f"input_blocks.{i}.1", {}))
        if level < levels - 1:
            i = 1 + level * (lpb + 1) + lpb
            table.append((f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{i}.0.op", {}))
    for level, block_type in enumerate(config["up_block_types"]):
        for j in range(lpb + 1):
            i = level * (lpb + 1) + j
            table.append((f"up_blocks.{level}.resnets.{j}", f"output_blocks.{i}.0", UNET_RESNET))
            table.append((f"up_blocks.{level}.attentions.{j}", f"output_blocks.{i}.1", {}))
        if level < levels - 1:
            i = level * (lpb + 1) + lpb
            up = 2 if _has_attention(block_type) else 1
            table.append((f"up_blocks.{level}.upsamplers.0.conv", f"output_blocks.{i}.{up}.conv", {}))
    return table


def vae_table(config: dict) -> list[tuple[str, str, dict]]:
    """The same for an AutoencoderKL config. The LDM decoder numbers its levels bottom-up."""
    levels = len(config["block_out_channels"])
    lpb = config["layers_per_block"]
    table = [("encoder.conv_norm_out", "encoder.norm_out", {}), ("decoder.conv_norm_out", "decoder.norm_out", {})]
    for part in ("encoder", "decoder"):
        table += [(f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", VAE_RESNET),
                  (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", VAE_RESNET),
                  (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", VAE_ATTENTION)]
    for level in range(levels):
        for j in range(lpb):
            table.append((f"encoder.down_blocks.{level}.resnets.{j}", f"encoder.down.{level}.block.{j}", VAE_RESNET))
        table.append((f"encoder.down_blocks.{level}.downsamplers.0", f"encoder.down.{level}.downsample", {}))
        ldm_level = levels - 1 - level
        for j in range(lpb + 1):
            table.append((f"decoder.up_blocks.{level}.resnets.{j}", f"decoder.up.{ldm_level}.block.{j}", VAE_RESNET))
        table.append((f"decoder.up_blocks.{level}.upsamplers.0", f"decoder.up.{ldm_level}.upsample", {}))
    return table


def _map_by_table(key: str, table: list[tuple[str, str, dict]], by_prefix: dict) -> str:
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):  # longest diffusers prefix first
        hit = by_prefix.get(".".join(parts[:n]))
        if hit is None:
            continue
        ldm_prefix, renames = hit
        module, leaf = ".".join(parts[n:-1]), parts[-1]
        module = renames.get(module, module)
        return ".".join(p for p in (ldm_prefix, module, leaf) if p)
    return key  # conv_in etc. are in the table; quant_conv, post_quant_conv and VAE convs keep their names


def unet_rules(keys, config: dict) -> dict[str, KeyRule]:
    table = unet_table(config)
    by_prefix = {d: (ldm, r) for d, ldm, r in table}
    return {k: KeyRule(UNET_PREFIX + _map_by_table(k, table, by_prefix)) for k in keys}


def vae_rules(keys, config: dict) -> dict[str, KeyRule]:
    table = vae_table(config)
    by_prefix = {d: (ldm, r) for d, ldm, r in table}
    rules = {}
    for k in keys:
        ldm = VAE_PREFIX + _map_by_table(k, table, by_prefix)
        is_attn_weight = ".mid_block.attentions.0." in k and k.endswith(".weight") and "group_norm" not in k
        rules[k] = KeyRule(ldm, Op.CONV1X1 if is_attn_weight else Op.COPY)
    return rules


OPENCLIP_NAMES = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
                  ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj")]
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_QKV = re.compile(r"^self_attn\.([qkv])_proj$")


def text_key(module_key: str) -> str:
    """A transformers CLIP key without the `text_model.` wrapper some classes add (canonical form)."""
    return module_key.removeprefix("text_model.")


def text_rules(keys, layout: TextLayout, prefix: str) -> dict[str, KeyRule]:
    """Rules for a CLIPTextModel(WithProjection)'s keys under an LDM prefix such as `cond_stage_model.`."""
    rules = {}
    for k in keys:
        c = text_key(k)
        if layout is TextLayout.CLIP:
            rules[k] = KeyRule(f"{prefix}text_model.{c}")
            continue
        fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
                 "embeddings.position_embedding.weight": "positional_embedding",
                 "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
        if c in fixed:
            rules[k] = KeyRule(prefix + fixed[c])
        elif c == "text_projection.weight":
            rules[k] = KeyRule(prefix + "text_projection", Op.TRANSPOSE)
        elif m := _LAYER.match(c):
            layer, module, leaf = m.groups()
            base = f"{prefix}transformer.resblocks.{layer}."
            if q := _QKV.match(module):
                rules[k] = KeyRule(f"{base}attn.in_proj_{leaf}", Op.QKV, "qkv".index(q.group(1)))
            else:
                module = dict(OPENCLIP_NAMES).get(module, module)
                rules[k] = KeyRule(f"{base}{module}.{leaf}")
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {k}")
    return rules


def to_diffusers(tensor: torch.Tensor, rule: KeyRule) -> torch.Tensor:
    """The diffusers tensor for `rule` from the LDM tensor (views where possible: no copies)."""
    if rule.op is Op.TRANSPOSE:
        return tensor.t().contiguous()
    if rule.op is Op.CONV1X1:
        return tensor.reshape(tensor.shape[0], -1) if tensor.ndim > 2 else tensor  # (O, I, 1, 1) -> (O, I)
    if rule.op is Op.QKV:
        return tensor.chunk(3, dim=0)[rule.part]  # in_proj (3D, D) or (3D,) -> (D, D) or (D,)
    return tensor


def to_ldm(state_dict: dict[str, torch.Tensor], rules: dict[str, KeyRule]) -> dict[str, torch.Tensor]:
    """An LDM state dict from a diffusers one (export): renames, 1x1 convs, fused q/k/v, transposes."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, list] = {}
    for key, tensor in state_dict.items():
        rule = rules[key]
        if rule.op is Op.QKV:
            fused.setdefault(rule.ldm, [None, None, None])[rule.part] = tensor
        elif rule.op is Op.TRANSPOSE:
            out[rule.ldm] = tensor.t().contiguous()
        elif rule.op is Op.CONV1X1:
            out[rule.ldm] = tensor.reshape(*tensor.shape, 1, 1)  # (O, I) -> (O, I, 1, 1)
        else:
            out[rule.ldm] = tensor
    for ldm_key, parts in fused.items():
        if any(p is None for p in parts):
            raise KeyError(f"incomplete q/k/v for {ldm_key}")
        out[ldm_key] = torch.cat(parts, dim=0)  # (3D, D) or (3D,)
    return out
