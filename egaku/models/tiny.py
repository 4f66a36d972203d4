"""Tiny random-weight models of each supported architecture, for tests and quick experiments.

They have the real layouts (key names, block types, conditioning) of SD 1.x, SD 2.x and SDXL at a
fraction of the width, and use the real SD tokenizer, so every code path that serves a real
checkpoint can be exercised in seconds on a CPU. A VAE with four levels keeps SD's factor of 8.
"""

from __future__ import annotations

from importlib.resources import files

import torch

from egaku.models.bundle import ModelBundle, ModelFamily

TOKENIZER_DIR = files("egaku.models") / "configs" / "tokenizer"

SD_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


def load_sd_tokenizer(pad_token: str = "<|endoftext|>"):
    """The standard SD CLIP tokenizer shipped with egaku. SD 2.x and SDXL's second encoder pad with '!'."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), pad_token=pad_token)


def _clip_config(hidden: int, layers: int, heads: int, act: str, pad_id: int, proj: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=proj or hidden,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=pad_id,
    )


# The UNet layout SD 1.x and 2.x share at tiny width; they differ only in attention heads/projection.
_SD_UNET = dict(
    sample_size=8,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    norm_num_groups=32,
)


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=8,
        sample_size=64,
    )


def tiny_bundle(
    family: ModelFamily | str = ModelFamily.SD1,
    *,
    inpaint: bool = False,
    v_prediction: bool = False,
    seed: int = 0,
) -> ModelBundle:
    """A random-weight model of `family` with the real layout; 64x64 images, 8x8 latents."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    family = ModelFamily(family)
    torch.manual_seed(seed)
    in_ch = 9 if inpaint else 4
    scheduler = dict(SD_SCHEDULER, prediction_type="v_prediction" if v_prediction else "epsilon")
    text_encoder_2 = tokenizer_2 = None
    if family is ModelFamily.SD1:
        text_encoder = CLIPTextModel(_clip_config(32, 2, 4, "quick_gelu", 49407))
        tokenizer = load_sd_tokenizer()
        # SD 1.x: 8 heads, conv projections around the transformer blocks
        unet = UNet2DConditionModel(**_SD_UNET, in_channels=in_ch, attention_head_dim=8)
    elif family is ModelFamily.SD2:
        text_encoder = CLIPTextModel(_clip_config(32, 3, 4, "gelu", 0))
        tokenizer = load_sd_tokenizer(pad_token="!")
        # SD 2.x: per-level head counts and linear projections
        unet = UNet2DConditionModel(**_SD_UNET, in_channels=in_ch, attention_head_dim=(2, 4), use_linear_projection=True)
    else:
        text_encoder = CLIPTextModel(_clip_config(32, 2, 4, "quick_gelu", 49407))
        tokenizer = load_sd_tokenizer()
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config(32, 3, 4, "gelu", 0, proj=32))
        tokenizer_2 = load_sd_tokenizer(pad_token="!")
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=in_ch,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 32,
            cross_attention_dim=64,
            norm_num_groups=32,
        )
        scheduler["timestep_spacing"] = "leading"
    vae = tiny_vae()
    for m in (unet, vae, text_encoder, text_encoder_2):
        if m is not None:
            m.eval().requires_grad_(False)
    return ModelBundle(
        family=family,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=scheduler,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        name=f"tiny-{family.value}{'-inpaint' if inpaint else ''}{'-v' if v_prediction else ''}",
        default_size=64,
    )
