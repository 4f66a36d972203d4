"""The pieces every method trains through: prompts to conditioning (with gradients when a text
encoder trains), cached VAE latents, and the denoising loss of one batch.

Conditioning matches the engine's for a one-chunk prompt at clip skip 1: SD 1.x/2.x use the text
encoder's last hidden state; SDXL concatenates both encoders' penultimate layers and adds the
second's pooled projection plus the size/crop `time_ids` (SDXL paper, section 2.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from egaku.models.bundle import ModelBundle, ModelFamily
from egaku.train.data import tokenize
from egaku.train.objective import diffusion_target, min_snr_weights


def encode_prompts(bundle: ModelBundle, captions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, 77, D) conditioning and SDXL's (B, D2) pooled embedding (else None) for one-chunk captions."""
    ids = tokenize(bundle.tokenizer, captions).to(device)  # (B, 77)
    if bundle.family is not ModelFamily.SDXL:
        return bundle.text_encoder(ids).last_hidden_state, None  # (B, 77, D)
    ids2 = tokenize(bundle.tokenizer_2, captions).to(device)
    h1 = bundle.text_encoder(ids, output_hidden_states=True).hidden_states[-2]  # (B, 77, D1)
    out2 = bundle.text_encoder_2(ids2, output_hidden_states=True)
    return torch.cat([h1, out2.hidden_states[-2]], dim=-1), out2.text_embeds  # (B, 77, D1+D2), (B, D2)


@torch.no_grad()
def encode_latents(bundle: ModelBundle, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(1, 4, h, w) scaled latents (posterior mean) of (3, H, W) pixels in [-1, 1]."""
    vae = bundle.vae
    x = pixels[None].to(device, next(vae.parameters()).dtype)  # (1, 3, H, W)
    mean = vae.encode(x).latent_dist.mean.float()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((mean - shift) * vae.config.scaling_factor).cpu()


def noise_scheduler(bundle: ModelBundle):
    from diffusers import DDPMScheduler

    config = {k: v for k, v in bundle.scheduler_config.items() if not k.startswith("_")}
    return DDPMScheduler.from_config(config)


def time_ids(examples, device: torch.device) -> torch.Tensor:
    """SDXL micro-conditioning per example: (original h, w, crop top, left, target h, w) -> (B, 6)."""
    rows = [[e.size[1], e.size[0], e.crop[0], e.crop[1], e.bucket[1], e.bucket[0]] for e in examples]
    return torch.tensor(rows, dtype=torch.float32, device=device)


def denoising_loss(
    bundle: ModelBundle,
    scheduler,
    latents: torch.Tensor,  # (B, 4, h, w) scaled clean latents
    cond: torch.Tensor,  # (B, 77, D)
    pooled: torch.Tensor | None,  # (B, D2) for SDXL
    added_time_ids: torch.Tensor | None,  # (B, 6) for SDXL
    generator: torch.Generator,
    *,
    min_snr_gamma: float = 0.0,
    noise_offset: float = 0.0,
) -> torch.Tensor:
    """Mean noise-prediction loss (epsilon or v target, as the model predicts) of one batch.

    Noise and timesteps come from `generator` on the CPU, so a seeded run draws the same on any device.
    """
    b = latents.shape[0]
    device = latents.device
    noise = torch.randn(latents.shape, generator=generator)  # (B, 4, h, w)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=generator)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    noise, t_dev = noise.to(device), t.to(device)
    noisy = scheduler.add_noise(latents, noise, t_dev)  # (B, 4, h, w)
    target = diffusion_target(scheduler, latents, noise, t_dev)
    added = {"text_embeds": pooled, "time_ids": added_time_ids} if pooled is not None else None
    pred = bundle.unet(noisy, t_dev, encoder_hidden_states=cond, added_cond_kwargs=added).sample  # (B, 4, h, w)
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))  # (B,)
    if min_snr_gamma:
        per_sample = per_sample * min_snr_weights(scheduler, t_dev, min_snr_gamma)
    return per_sample.mean()


FIXED_TIMESTEPS = (150, 400, 650, 900)


@torch.no_grad()
def fixed_loss(bundle: ModelBundle, scheduler, examples, latents: list[torch.Tensor], captions: list[str],
               device: torch.device, seed: int = 1234) -> float:
    """The denoising loss on fixed examples, noise and timesteps: comparable before and after
    training, unlike the noisy loss of each step."""
    gen = torch.Generator().manual_seed(seed)
    total, n = 0.0, 0
    for e, lat, caption in zip(examples, latents, captions):
        x0 = lat.to(device)  # (1, 4, h, w)
        cond, pooled = encode_prompts(bundle, [caption], device)
        tids = time_ids([e], device) if bundle.family is ModelFamily.SDXL else None
        added = {"text_embeds": pooled, "time_ids": tids} if pooled is not None else None
        for t in FIXED_TIMESTEPS:
            noise = torch.randn(x0.shape, generator=gen).to(device)
            tt = torch.tensor([t], device=device)
            target = diffusion_target(scheduler, x0, noise, tt)
            pred = bundle.unet(scheduler.add_noise(x0, noise, tt), tt, encoder_hidden_states=cond,
                               added_cond_kwargs=added).sample
            total += float(F.mse_loss(pred.float(), target.float()))
            n += 1
    return total / max(n, 1)
