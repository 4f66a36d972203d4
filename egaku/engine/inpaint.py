"""Inpainting: the mask at pixel and latent size, the 9-channel UNet's extra input, A1111's overlay.

White mask pixels are repainted. The mask is blurred by `mask_blur` (a Gaussian of that radius, as
A1111's "Mask blur"); at the end the original is pasted back through the blurred mask (A1111's
`apply_overlay`), so pixels where the blurred mask is 0 equal the init image exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from egaku.engine.latents import encode_image, pil_to_tensor
from egaku.models.bundle import ModelBundle


@dataclass
class InpaintInputs:
    """Everything the denoising loop needs to inpaint."""

    pixel_mask: Image.Image  # L, width x height, blurred: the overlay's alpha
    latent_mask: torch.Tensor  # (1, 1, h, w), 1 = repaint, 0 = keep (rounded, as A1111's latmask)
    masked_image_latents: torch.Tensor | None  # (1, 4, h, w), the 9-channel UNet's extra input
    original: Image.Image  # RGB init image at width x height, pasted back at the end


def blurred_mask(mask: Image.Image, width: int, height: int, blur: int) -> Image.Image:
    """The user's mask as L at width x height, Gaussian-blurred with radius `blur` (0 = unchanged)."""
    mask = mask.convert("L")
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.LANCZOS)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return mask


def prepare_inpaint(
    bundle: ModelBundle,
    init_image: Image.Image,
    mask: Image.Image,
    *,
    width: int,
    height: int,
    blur: int,
    device: torch.device,
    dtype: torch.dtype,
) -> InpaintInputs:
    """Blur and downscale the mask; for 9-channel models also encode the image with the mask area erased.

    The latent mask is the blurred mask resized to latent size and rounded to 0/1; the masked image
    is the init image with repaint pixels set to 0 (mid grey in [-1, 1]), as diffusers' and A1111's
    inpainting-model conditioning.
    """
    pixel_mask = blurred_mask(mask, width, height, blur)
    scale = bundle.vae_scale_factor
    m = torch.from_numpy(np.asarray(pixel_mask, dtype=np.float32) / 255.0)[None, None]  # (1, 1, H, W)
    latent_mask = F.interpolate(m, size=(height // scale, width // scale), mode="bilinear", antialias=True)
    latent_mask = latent_mask.round().to(device=device, dtype=dtype)  # (1, 1, h, w)
    original = init_image.convert("RGB")
    if original.size != (width, height):
        original = original.resize((width, height), Image.LANCZOS)
    masked_latents = None
    if bundle.is_inpaint:
        pixels = pil_to_tensor(original, width, height)  # (1, 3, H, W)
        keep = (m < 0.5).float()  # (1, 1, H, W)
        masked_latents = encode_image(bundle, pixels * keep, device, dtype)  # (1, 4, h, w)
    return InpaintInputs(pixel_mask, latent_mask, masked_latents, original)


def whole_image_inputs(
    bundle: ModelBundle, init_image: Image.Image | None, width: int, height: int,
    device: torch.device, dtype: torch.dtype,
) -> InpaintInputs:
    """An inpainting model asked for txt2img or unmasked img2img repaints everything.

    As A1111's txt2img/img2img image conditioning for inpainting models: a mask of ones and the
    latents of an all-grey (fully masked) image.
    """
    pixel_mask = Image.new("L", (width, height), 255)
    scale = bundle.vae_scale_factor
    latent_mask = torch.ones((1, 1, height // scale, width // scale), device=device, dtype=dtype)  # (1, 1, h, w)
    grey = torch.zeros((1, 3, height, width))  # (1, 3, H, W): 0 is mid grey in [-1, 1]
    masked_latents = encode_image(bundle, grey, device, dtype)  # (1, 4, h, w)
    original = Image.new("RGB", (width, height))
    if init_image is not None:
        original = init_image.convert("RGB").resize((width, height), Image.LANCZOS)
    return InpaintInputs(pixel_mask, latent_mask, masked_latents, original)


def unet_extra_channels(inputs: InpaintInputs, batch: int) -> torch.Tensor:
    """[mask, masked-image latents] for a 9-channel UNet, repeated for `batch` latents: (batch, 5, h, w)."""
    extra = torch.cat([inputs.latent_mask, inputs.masked_image_latents], dim=1)  # (1, 5, h, w)
    return extra.expand(batch, -1, -1, -1)


def overlay(generated: Image.Image, inputs: InpaintInputs) -> Image.Image:
    """A1111's apply_overlay: the original shows through wherever the blurred mask is not white."""
    return Image.composite(generated.convert("RGB"), inputs.original, inputs.pixel_mask)
