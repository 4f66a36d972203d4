"""A loaded model: the diffusers components of one Stable Diffusion checkpoint, whatever its format."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ModelFamily(StrEnum):
    """Base architectures egaku knows. Detected from tensors, never from file names."""

    SD1 = "sd1"  # SD 1.x: one CLIP ViT-L text encoder (768), 4 or 9 channel UNet
    SD2 = "sd2"  # SD 2.x: OpenCLIP ViT-H text encoder (1024), eps or v-prediction
    SDXL = "sdxl"  # SDXL base: CLIP ViT-L + OpenCLIP ViT-bigG, size/crop conditioning


@dataclass
class ModelBundle:
    """Everything the engine needs to generate with one model.

    `unet`, `vae`, `text_encoder`(`_2`) are diffusers / transformers modules already on their device
    and dtype; `scheduler_config` is a diffusers scheduler config dict (betas, prediction_type, ...)
    from which the engine builds whichever sampler a request names.
    """

    family: ModelFamily
    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel (SD1/SD2/SDXL first encoder)
    tokenizer: Any  # transformers.CLIPTokenizer
    scheduler_config: dict
    text_encoder_2: Any | None = None  # transformers.CLIPTextModelWithProjection (SDXL only)
    tokenizer_2: Any | None = None
    name: str = ""  # what the user called it (library name or file stem)
    path: str = ""  # where it was loaded from
    sha256: str = ""  # of the single file; of the weights files for folders (see models.hashing)
    default_size: int = 512  # native resolution (128 built-in, 512 SD1, 768 SD2-v, 1024 SDXL)
    extra: dict = field(default_factory=dict)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def is_inpaint(self) -> bool:
        """Inpainting checkpoints have a 9-channel UNet: latents + mask + masked-image latents."""
        return self.unet.config.in_channels == 9

    @property
    def short_hash(self) -> str:
        """AutoV2 hash as A1111 and Civitai show it: the first 10 hex digits of the SHA-256."""
        return self.sha256[:10]

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)
