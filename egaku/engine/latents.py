"""Latents in and out: seeded noise, VAE encode/decode, PIL conversion, cheap previews."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from egaku.models.bundle import ModelBundle, ModelFamily

# A fixed linear map from the 4 SD latent channels to RGB: the community "latent2rgb" approximation
# (the same idea as A1111's "Approx cheap" live preview and ComfyUI's latent previews).
_LATENT_RGB_SD = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350),
                  (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))
_LATENT_RGB_SDXL = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068),
                    (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188))
_LATENT_RGB_SDXL_BIAS = (0.1084, -0.0175, -0.0011)


def image_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded with that image's seed (A1111's CPU RNG: same on any device)."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def initial_noise(
    generators: list[torch.Generator], shape: tuple[int, int, int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Image i's noise is drawn from generator i on the CPU in float32, then moved: device-independent seeds."""
    noise = torch.cat([torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generators])  # (B, C, h, w)
    return noise.to(device=device, dtype=dtype)


def pil_to_tensor(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """An RGB image resized to width x height (Lanczos, as A1111's resize) as a (1, 3, H, W) tensor in [-1, 1]."""
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL images, rounded as diffusers' numpy_to_pil."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)  # (B, 3, H, W)
    arrays = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)  # (B, H, W, 3)
    return [Image.fromarray(a) for a in arrays]


def _vae_upcast(bundle: ModelBundle, dtype: torch.dtype) -> bool:
    """SDXL's VAE overflows in fp16 (diffusers' force_upcast): run it in fp32 then."""
    return (
        bundle.family is ModelFamily.SDXL
        and dtype == torch.float16
        and bool(getattr(bundle.vae.config, "force_upcast", False))
    )


@torch.no_grad()
def encode_image(bundle: ModelBundle, pixels: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, 3, H, W) pixels -> scaled latents (B, 4, H/8, W/8), the mode of the posterior for determinism."""
    vae = bundle.vae
    upcast = _vae_upcast(bundle, dtype)
    if upcast:
        vae.to(torch.float32)
    try:
        x = pixels.to(device=device, dtype=torch.float32 if upcast else dtype)  # (B, 3, H, W)
        latents = vae.encode(x).latent_dist.mode()  # (B, 4, h, w)
    finally:
        if upcast:
            vae.to(dtype)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).to(dtype)


@torch.no_grad()
def decode_latents(bundle: ModelBundle, latents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Scaled latents (B, 4, h, w) -> pixels (B, 3, H, W) in [-1, 1], in float32."""
    vae = bundle.vae
    upcast = _vae_upcast(bundle, dtype)
    if upcast:
        vae.to(torch.float32)
    try:
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        z = latents / vae.config.scaling_factor + shift  # (B, 4, h, w)
        z = z.to(torch.float32 if upcast else dtype)
        # one image at a time: peak memory of the decoder grows with the batch
        pixels = torch.cat([vae.decode(z[i : i + 1]).sample for i in range(z.shape[0])])  # (B, 3, H, W)
    finally:
        if upcast:
            vae.to(dtype)
    return pixels.float()


def latent_preview(latents: torch.Tensor, family: ModelFamily) -> Image.Image:
    """A cheap RGB preview of one latent (4, h, w) through a fixed linear map; no VAE call."""
    sdxl = family is ModelFamily.SDXL
    factors = torch.tensor(_LATENT_RGB_SDXL if sdxl else _LATENT_RGB_SD)  # (4, 3)
    rgb = torch.einsum("chw,cr->rhw", latents.detach().float().cpu(), factors)  # (3, h, w)
    if sdxl:
        rgb = rgb + torch.tensor(_LATENT_RGB_SDXL_BIAS).view(3, 1, 1)
    array = ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()  # (h, w, 3)
    return Image.fromarray(array)
