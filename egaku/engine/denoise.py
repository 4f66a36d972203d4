"""Steps 3-6 of generation: the sampler, the starting latents and the denoising loop.

One loop serves a single request (any mode: txt2img, img2img, inpainting) and a batch of several
compatible txt2img requests run in one forward pass (`Engine.generate_many`): each request is a
`Part` of the batch with its own prompts, seeds, CFG scale, progress callback and cancel event.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from egaku.engine import inpaint as inp
from egaku.engine.latents import image_generators, initial_noise, latent_preview
from egaku.engine.request import GenerationRequest
from egaku.engine.samplers import build_scheduler, step_kwargs
from egaku.errors import EgakuError
from egaku.models.bundle import ModelBundle, ModelFamily

PREVIEW_EVERY = 4  # steps between live previews (and always at the last step)


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """CFG rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    §3.4): give the guided prediction the per-image std of the conditional one, blended by phi.
    Applied to the model's output as it predicts it (eps or v), as diffusers' `guidance_rescale`."""
    dims = tuple(range(1, guided.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return phi * rescaled + (1 - phi) * guided


class GenerationCancelled(EgakuError):
    """The caller set the cancel event; nothing was produced."""


@dataclass
class ProgressEvent:
    """Sent after every sampler step of every batch."""

    step: int  # steps done in this batch, 1..total
    total: int  # steps this batch takes (fewer than request.steps for img2img)
    image_index: int  # index of the batch's first image in the whole request
    batch_index: int  # which of request.batch_count batches
    preview: Image.Image | None = None  # cheap latent preview of the batch's first image, every few steps


@dataclass
class Plan:
    """What every batch of one request shares, resolved once."""

    request: GenerationRequest
    bundle: ModelBundle
    cond: list  # prompt schedule: [(end step, Conditioning)]
    uncond: list  # negative prompt schedule
    empty: object  # Conditioning of "", pads the shorter of cond / uncond
    init_latents: torch.Tensor | None  # (1, 4, h, w) scaled VAE latents of the init image
    inpaint: inp.InpaintInputs | None  # mask and 9-channel conditioning
    timings: dict = field(default_factory=dict)  # seconds: load, prompt, denoise, decode, total

    def batch_seeds(self, batch_index: int) -> list[int]:
        """Image i of the request uses seed + i (A1111)."""
        size = self.request.batch_size
        return [self.request.seed + batch_index * size + j for j in range(size)]


@dataclass
class Part:
    """One request's rows in a forward-pass batch: a batch of one request, or one of several requests."""

    plan: Plan
    seeds: list[int]
    batch_index: int
    progress: Callable[[ProgressEvent], None] | None
    cancel: threading.Event | None

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


def denoise(parts: list[Part], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Steps 3-6 for one batch: returns its final latents (B, 4, h, w).

    Every part shares model, size, steps and sampler (its plan's request); prompts, seeds and
    CFG scale are per part. img2img and inpainting come as a single part.
    """
    from egaku.engine.prompts import conditioning_at, match_lengths

    plan = parts[0].plan
    request, bundle = plan.request, plan.bundle
    seeds = [s for part in parts for s in part.seeds]
    sizes = [len(part.seeds) for part in parts]
    batch, steps = len(seeds), request.steps
    scale = bundle.vae_scale_factor
    latent_shape = (4, request.height // scale, request.width // scale)

    # 3. the sampler's scheduler and timesteps; img2img starts part way, as diffusers' get_timesteps
    scheduler = build_scheduler(request.sampler, bundle.scheduler_config, steps=steps)
    scheduler.set_timesteps(steps, device=device)
    order = scheduler.order
    t_start = 0
    if plan.init_latents is not None:
        t_start = steps - min(int(steps * request.strength), steps)
    timesteps = scheduler.timesteps[t_start * order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * order)

    # 4. latents: per-image CPU noise; img2img noises the init latents to the first timestep
    generators = image_generators(seeds)
    noise = initial_noise(generators, latent_shape, device, dtype)  # (B, 4, h, w)
    init_latents = None
    if plan.init_latents is not None:
        init_latents = plan.init_latents.expand(batch, -1, -1, -1)  # (B, 4, h, w)
    pure_noise = init_latents is None or (plan.inpaint is not None and request.strength >= 1.0)
    if pure_noise:
        latents = noise * scheduler.init_noise_sigma  # (B, 4, h, w)
    elif len(timesteps) == 0:  # strength 0: nothing to denoise
        latents = init_latents
    else:
        latents = scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(batch))  # (B, 4, h, w)
    extra_step = step_kwargs(scheduler, generators)

    # 5. denoising loop: classifier-free guidance with cond and uncond in one UNet call
    guided = float(request.cfg_scale) != 1.0
    n_copies = 2 if guided else 1
    cfg_scales = torch.tensor(
        [float(part.plan.request.cfg_scale) for part in parts for _ in part.seeds], device=device, dtype=dtype
    ).view(batch, 1, 1, 1)  # (B, 1, 1, 1)
    rescales = [float(part.plan.request.cfg_rescale) for part in parts for _ in part.seeds]
    cfg_rescales = torch.tensor(rescales, device=device, dtype=dtype).view(batch, 1, 1, 1) if any(rescales) else None
    blend = plan.inpaint is not None and not bundle.is_inpaint and request.mask is not None
    nine = None
    if bundle.is_inpaint:
        nine = inp.unet_extra_channels(plan.inpaint, batch * n_copies)  # (n*B, 5, h, w)
    time_ids = None
    if bundle.family is ModelFamily.SDXL:  # original size, crop top-left, target size (SDXL paper §2.2)
        h, w = request.height, request.width
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=device, dtype=dtype).repeat(batch * n_copies, 1)
    total = math.ceil(len(timesteps) / order)
    done = 0
    for i, t in enumerate(timesteps):
        if all(part.cancelled for part in parts):
            raise GenerationCancelled("generation cancelled")
        prompt_step = min((t_start * order + i) // order, steps - 1)
        conds = [conditioning_at(part.plan.cond, prompt_step) for part in parts]
        if guided:
            conds = [conditioning_at(part.plan.uncond, prompt_step) for part in parts] + conds
        conds = match_lengths(conds, plan.empty)
        counts = sizes * n_copies
        embeds = torch.cat([c.embeds.to(device, dtype).expand(k, -1, -1) for c, k in zip(conds, counts)])  # (n*B, 77k, D)
        added = None
        if time_ids is not None:
            pooled = torch.cat([c.pooled.to(device, dtype).expand(k, -1) for c, k in zip(conds, counts)])  # (n*B, D2)
            added = {"text_embeds": pooled, "time_ids": time_ids}

        model_in = torch.cat([latents] * n_copies)  # (n*B, 4, h, w)
        model_in = scheduler.scale_model_input(model_in, t)
        if nine is not None:
            model_in = torch.cat([model_in, nine], dim=1)  # (n*B, 9, h, w)
        out = bundle.unet(model_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
        if guided:
            out_uncond, out_cond = out.chunk(2)  # (B, 4, h, w) each
            out = out_uncond + cfg_scales * (out_cond - out_uncond)
            if cfg_rescales is not None:
                out = rescale_guidance(out, out_cond, cfg_rescales)
        latents = scheduler.step(out, t, latents, **extra_step).prev_sample  # (B, 4, h, w)

        # 6. 4-channel inpainting: keep the unmasked area on the init image's noising path
        if blend:
            kept = init_latents
            if i < len(timesteps) - 1:
                kept = scheduler.add_noise(init_latents, noise, timesteps[i + 1 : i + 2])
            mask = plan.inpaint.latent_mask  # (1, 1, h, w)
            latents = (1 - mask) * kept + mask * latents

        if (i + 1) % order == 0 or i == len(timesteps) - 1:
            done += 1
            show = done % PREVIEW_EVERY == 0 or done == total
            start = 0
            for part, k in zip(parts, sizes):
                if part.progress is not None and not part.cancelled:
                    preview = latent_preview(latents[start], bundle.family) if show else None
                    first = part.batch_index * part.plan.request.batch_size
                    part.progress(ProgressEvent(done, total, first, part.batch_index, preview))
                start += k
    if all(part.cancelled for part in parts):
        raise GenerationCancelled("generation cancelled")
    return latents
