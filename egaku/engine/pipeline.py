"""The engine: a GenerationRequest in, images plus their exact A1111 parameters out.

`Engine.generate` reads top to bottom in numbered steps, as diffusers' StableDiffusionPipeline:
validate and resolve, encode prompts, build the sampler, prepare latents, denoise (classifier-free
guidance, per-step prompt schedules, inpainting), decode, describe. Seeds follow A1111: image i of
a request uses seed + i, its noise drawn from a CPU generator so a seed gives the same image on any
device, and image i of a batch equals the same image generated alone.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from egaku.engine import inpaint as inp
from egaku.engine.cache import ModelCache
from egaku.engine.devices import (
    Toggle, apply_memory_savers, enable_cpu_offload, resolve_device, resolve_dtype, total_memory_bytes,
)
from egaku.engine.latents import (
    decode_latents, encode_image, image_generators, initial_noise, latent_preview, pil_to_tensor, tensor_to_pil,
)
from egaku.engine.request import GenerationRequest
from egaku.engine.samplers import build_scheduler, check_steps, step_kwargs
from egaku.errors import EgakuError, ModelNotFoundError
from egaku.models.bundle import ModelBundle, ModelFamily

BUILTIN = "builtin"
DEFAULT_BUDGET_FRACTION = 0.5  # of RAM (cpu/mps) or VRAM (cuda) that cached models may use
PREVIEW_EVERY = 4  # steps between live previews (and always at the last step)


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
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]  # seed of each image
    infotexts: list[str]  # A1111 "parameters" text of each image
    request: GenerationRequest  # as run: seed, width, height and the canonical sampler name filled in
    model_name: str
    model_hash: str  # AutoV2 (10 hex digits) or "" for models without a file
    timings: dict = field(default_factory=dict)  # seconds: load, prompt, denoise, decode, total


@dataclass
class _Plan:
    """What every batch of one request shares, resolved once."""

    request: GenerationRequest
    bundle: ModelBundle
    cond: list  # prompt schedule: [(end step, Conditioning)]
    uncond: list  # negative prompt schedule
    empty: object  # Conditioning of "", pads the shorter of cond / uncond
    init_latents: torch.Tensor | None  # (1, 4, h, w) scaled VAE latents of the init image
    inpaint: inp.InpaintInputs | None  # mask and 9-channel conditioning


class Engine:
    """Loads models (cached), runs requests. One request at a time per engine (the models are shared)."""

    def __init__(
        self,
        device: str = "auto",
        dtype: str = "auto",
        memory_budget: int | None = None,
        attention_slicing: str | bool = "auto",
        vae_tiling: str | bool = "auto",
        cpu_offload: bool = False,
    ):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if memory_budget is None:
            memory_budget = int(total_memory_bytes(self.device) * DEFAULT_BUDGET_FRACTION)
        self.cache = ModelCache(memory_budget)
        self.attention_slicing = Toggle.parse(attention_slicing, "attention slicing")
        self.vae_tiling = Toggle.parse(vae_tiling, "VAE tiling")
        self.cpu_offload = bool(cpu_offload)  # on a CPU-only engine the hooks are harmless no-ops
        self._lock = threading.RLock()

    # -- models -----------------------------------------------------------------------------------

    def add_bundle(self, name: str, bundle: ModelBundle) -> None:
        """Register an already loaded model under `name`; it is moved to the engine's device and never evicted."""
        self._place(bundle)
        bundle.name = bundle.name or name
        self.cache.pin(name, bundle)

    def load(self, model: str | None) -> ModelBundle:
        """The model `model` names (None = built-in), from the cache or loaded through egaku.models."""
        name = model or BUILTIN
        bundle = self.cache.get(name)  # registered bundles, and models loaded under this very key
        if bundle is not None:
            return bundle
        key, path = self._resolve(name)
        size_hint = _disk_size(path) if path is not None else None

        def loader() -> ModelBundle:
            from egaku.models import load_model

            # by the name as given, so a library model keeps its library name in infotexts
            home = "cpu" if self.cpu_offload else self.device
            loaded = load_model(None if name == BUILTIN else name, device=home, dtype=self.dtype)
            self._place(loaded)
            return loaded

        with self._lock:
            return self.cache.get_or_load(key, loader, size_hint)

    @staticmethod
    def _resolve(name: str) -> tuple[str, Path | None]:
        """Cache key (the resolved path, so two spellings of one model share it) and the path."""
        if name == BUILTIN:
            return BUILTIN, None
        from egaku.models.library import resolve

        path = Path(resolve(name)).resolve()
        return str(path), path

    def _place(self, bundle: ModelBundle) -> None:
        """Move the bundle's modules to the engine's device and dtype (or offload them)."""
        home = torch.device("cpu") if self.cpu_offload else self.device
        for m in (bundle.unet, bundle.vae, bundle.text_encoder, bundle.text_encoder_2):
            if m is None:
                continue
            p = next(m.parameters())
            moved = p.device.type != home.type or home.index not in (None, p.device.index)
            if moved or p.dtype != self.dtype:  # .to() on a diffusers module logs a warning: only when needed
                m.to(device=home, dtype=self.dtype)
        if self.cpu_offload:
            enable_cpu_offload(bundle, self.device)

    # -- generation -------------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest,
        progress: Callable[[ProgressEvent], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Run `request`: batch_count batches of batch_size images; raises GenerationCancelled if cancelled."""
        with self._lock, torch.no_grad():
            return self._generate(request, progress, cancel)

    def _generate(self, request, progress, cancel) -> GenerationResult:
        from egaku.engine.prompts import PromptEncoder

        t0 = time.perf_counter()
        timings: dict[str, float] = {}

        # 1. validate the request, resolve the model and the defaults
        request = request.validated()
        sampler = check_steps(request.sampler, request.steps)  # a bad sampler fails before any model loads
        bundle = self.load(request.model)
        timings["load"] = time.perf_counter() - t0
        width = request.width or bundle.default_size
        height = request.height or bundle.default_size
        seed = request.seed if request.seed != -1 else secrets.randbelow(2**32)
        request = request.with_(seed=seed, width=width, height=height, sampler=sampler.name).validated()
        apply_memory_savers(
            bundle, width=width, height=height, batch_size=request.batch_size,
            attention_slicing=self.attention_slicing, vae_tiling=self.vae_tiling,
        )

        # 2. encode the prompt and negative prompt schedules once for the whole request
        t = time.perf_counter()
        encoder = bundle.extra.get("_prompt_encoder")
        if encoder is None:  # one per model, so its cache of encoded prompts lives as long as the model
            encoder = bundle.extra["_prompt_encoder"] = PromptEncoder(bundle)
        plan = _Plan(
            request=request,
            bundle=bundle,
            cond=encoder.encode_schedule(request.prompt, request.steps, clip_skip=request.clip_skip),
            uncond=encoder.encode_schedule(request.negative_prompt, request.steps, clip_skip=request.clip_skip),
            empty=encoder.empty(clip_skip=request.clip_skip),
            init_latents=None,
            inpaint=None,
        )
        timings["prompt"] = time.perf_counter() - t

        # img2img / inpainting inputs, encoded once: the init image's latents, the mask
        if request.init_image is not None:
            pixels = pil_to_tensor(request.init_image, width, height)  # (1, 3, H, W)
            plan.init_latents = encode_image(bundle, pixels, self.device, self.dtype)  # (1, 4, h, w)
        if request.mask is not None:
            plan.inpaint = inp.prepare_inpaint(
                bundle, request.init_image, request.mask, width=width, height=height,
                blur=request.mask_blur, device=self.device, dtype=self.dtype,
            )
        elif bundle.is_inpaint:
            plan.inpaint = inp.whole_image_inputs(bundle, request.init_image, width, height, self.device, self.dtype)

        # 3-7 for each batch: sampler, latents, denoising loop, decode
        images: list[Image.Image] = []
        seeds: list[int] = []
        timings["denoise"] = timings["decode"] = 0.0
        for b in range(request.batch_count):
            batch_seeds = [seed + b * request.batch_size + j for j in range(request.batch_size)]
            t = time.perf_counter()
            latents = self._denoise(plan, batch_seeds, b, progress, cancel)
            timings["denoise"] += time.perf_counter() - t
            t = time.perf_counter()
            batch_images = tensor_to_pil(decode_latents(bundle, latents, self.dtype))
            if request.mask is not None:  # A1111's overlay: unmasked pixels are the original's
                batch_images = [inp.overlay(img, plan.inpaint) for img in batch_images]
            timings["decode"] += time.perf_counter() - t
            images += batch_images
            seeds += batch_seeds

        # 8. the result, with each image's A1111 infotext
        from egaku.engine.metadata import format_parameters

        name, short_hash = bundle.name or (request.model or BUILTIN), bundle.short_hash
        infotexts = [format_parameters(request, seed=s, model_name=name, model_hash=short_hash) for s in seeds]
        timings["total"] = time.perf_counter() - t0
        return GenerationResult(images, seeds, infotexts, request, name, short_hash, timings)

    def _denoise(self, plan: _Plan, seeds: list[int], batch_index: int, progress, cancel) -> torch.Tensor:
        """Steps 3-6 for one batch: returns its final latents (B, 4, h, w)."""
        from egaku.engine.prompts import conditioning_at, match_length

        request, bundle = plan.request, plan.bundle
        batch, steps = len(seeds), request.steps
        device, dtype = self.device, self.dtype
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
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("generation cancelled")
            prompt_step = min((t_start * order + i) // order, steps - 1)
            cond = conditioning_at(plan.cond, prompt_step)
            conds = [cond]
            if guided:
                uncond, cond = match_length(conditioning_at(plan.uncond, prompt_step), cond, plan.empty)
                conds = [uncond, cond]
            embeds = torch.cat([c.embeds.to(device, dtype).expand(batch, -1, -1) for c in conds])  # (n*B, 77k, D)
            added = None
            if time_ids is not None:
                pooled = torch.cat([c.pooled.to(device, dtype).expand(batch, -1) for c in conds])  # (n*B, D2)
                added = {"text_embeds": pooled, "time_ids": time_ids}

            model_in = torch.cat([latents] * n_copies)  # (n*B, 4, h, w)
            model_in = scheduler.scale_model_input(model_in, t)
            if nine is not None:
                model_in = torch.cat([model_in, nine], dim=1)  # (n*B, 9, h, w)
            out = bundle.unet(model_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
            if guided:
                out_uncond, out_cond = out.chunk(2)  # (B, 4, h, w) each
                out = out_uncond + float(request.cfg_scale) * (out_cond - out_uncond)
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
                if progress is not None:
                    show = done % PREVIEW_EVERY == 0 or done == total
                    preview = latent_preview(latents[0], bundle.family) if show else None
                    progress(ProgressEvent(done, total, batch_index * request.batch_size, batch_index, preview))
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("generation cancelled")
        return latents


def _disk_size(path: Path) -> int | None:
    """Bytes of a model file or folder: the estimate used to make room before loading it."""
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return None
