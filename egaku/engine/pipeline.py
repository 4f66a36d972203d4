"""The engine: a GenerationRequest in, images plus their exact A1111 parameters out.

`Engine.generate` reads top to bottom in numbered steps, as diffusers' StableDiffusionPipeline:
validate and resolve, encode prompts, build the sampler, prepare latents, denoise (classifier-free
guidance, per-step prompt schedules, inpainting), decode, describe. Seeds follow A1111: image i of
a request uses seed + i, its noise drawn from a CPU generator so a seed gives the same image on any
device, and image i of a batch equals the same image generated alone.
"""

from __future__ import annotations

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
from egaku.engine.denoise import GenerationCancelled, Part, Plan, ProgressEvent, denoise
from egaku.engine.extras import Extras, lora_key
from egaku.engine.latents import decode_latents, encode_image, pil_to_tensor, tensor_to_pil
from egaku.engine.request import GenerationRequest
from egaku.engine.samplers import check_steps, get_sampler
from egaku.errors import EgakuError
from egaku.models.bundle import ModelBundle

BUILTIN = "builtin"
DEFAULT_BUDGET_FRACTION = 0.5  # of RAM (cpu/mps) or VRAM (cuda) that cached models may use


@dataclass
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]  # seed of each image
    infotexts: list[str]  # A1111 "parameters" text of each image
    request: GenerationRequest  # as run: seed, width, height and the canonical sampler name filled in
    model_name: str
    model_hash: str  # AutoV2 (10 hex digits) or "" for models without a file
    timings: dict = field(default_factory=dict)  # seconds: load, prompt, denoise, decode, total


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
        self.extras = Extras()  # LoRAs merged per request (undone after it) and embeddings

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
        with self._lock, torch.no_grad(), self.extras.session():
            t0 = time.perf_counter()
            plan = self._plan(request)
            images: list[Image.Image] = []
            seeds: list[int] = []
            for b in range(plan.request.batch_count):
                part = Part(plan, plan.batch_seeds(b), b, progress, cancel)
                images += self._run([part])[0]
                seeds += part.seeds
            return self._result(plan, images, seeds, t0)

    @staticmethod
    def batch_key(request: GenerationRequest) -> tuple | None:
        """Requests with equal keys can share one forward pass (`generate_many`); None = run alone.

        Shared: model, size, steps, sampler, clip skip, whether guidance is on and the LoRA set;
        each request keeps its own prompts, seeds and CFG scale. img2img, inpainting and
        multi-batch requests run alone.
        """
        if request.init_image is not None or request.mask is not None or request.batch_count != 1:
            return None
        try:
            sampler = get_sampler(request.sampler).name
        except EgakuError:
            return None
        guided = float(request.cfg_scale) != 1.0
        loras = lora_key(request)
        if loras is None:
            return None
        return (request.model or BUILTIN, request.width, request.height, request.steps, sampler, request.clip_skip, guided,
                loras)

    def generate_many(
        self,
        requests: list[GenerationRequest],
        progress: list[Callable[[ProgressEvent], None] | None] | None = None,
        cancel: list[threading.Event | None] | None = None,
    ) -> list[GenerationResult | EgakuError]:
        """Run several requests, in one forward pass when their `batch_key`s are equal.

        Returns, in order, each request's result or the EgakuError it raised (GenerationCancelled
        for one whose cancel event was set). A batched image matches the same image generated
        alone within 1/255 (a bigger batch sums in a different order), not bitwise.
        """
        n = len(requests)
        progress = list(progress or [None] * n)
        cancel = list(cancel or [None] * n)
        keys = {self.batch_key(r) for r in requests}
        if n == 1 or None in keys or len(keys) > 1:
            return [_outcome(lambda i=i: self.generate(requests[i], progress[i], cancel[i])) for i in range(n)]
        with self._lock, torch.no_grad(), self.extras.session():
            t0 = time.perf_counter()
            outcomes: list = [_outcome(lambda r=r: self._plan(r)) for r in requests]
            parts = [
                Part(plan, plan.batch_seeds(0), 0, progress[i], cancel[i])
                for i, plan in enumerate(outcomes) if isinstance(plan, Plan)
            ]
            results: dict[int, list | Exception] = {}
            for group in _same_prompt_lengths(parts):
                try:
                    images = self._run(group)
                except GenerationCancelled as e:  # every request of the group was cancelled
                    images = [e] * len(group)
                results.update((id(part), imgs) for part, imgs in zip(group, images))
            done = iter(parts)
            for i, plan in enumerate(outcomes):
                if isinstance(plan, Plan):
                    part = next(done)
                    imgs = results[id(part)]
                    outcomes[i] = (GenerationCancelled("generation cancelled") if isinstance(imgs, Exception) or part.cancelled
                                   else self._result(plan, imgs, part.seeds, t0))
            return outcomes

    def _plan(self, request: GenerationRequest) -> Plan:
        """Steps 1-2: validate, resolve the model and defaults, encode prompts and init images once."""
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

        # 2. merge the request's LoRAs (undone when the request ends), register the embeddings its
        # prompts name, then encode the prompt and negative prompt schedules once for the whole request
        t = time.perf_counter()
        active = self.extras.apply(bundle, request)
        encoder = bundle.extra.get("_prompt_encoder")
        if encoder is None:  # one per model, so its cache of encoded prompts lives as long as the model
            encoder = bundle.extra["_prompt_encoder"] = PromptEncoder(bundle)
        plan = Plan(
            request=request,
            bundle=bundle,
            cond=encoder.encode_schedule(active.prompt, request.steps, clip_skip=request.clip_skip),
            uncond=encoder.encode_schedule(active.negative_prompt, request.steps, clip_skip=request.clip_skip),
            empty=encoder.empty(clip_skip=request.clip_skip),
            init_latents=None,
            inpaint=None,
            timings=timings,
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
        return plan

    def _run(self, parts: list[Part]) -> list[list[Image.Image]]:
        """Steps 3-7 for one forward-pass batch made of `parts`: denoise, decode; images per part."""
        t = time.perf_counter()
        latents = denoise(parts, self.device, self.dtype)  # (sum of part sizes, 4, h, w)
        denoise_s = time.perf_counter() - t
        t = time.perf_counter()
        bundle = parts[0].plan.bundle
        images = tensor_to_pil(decode_latents(bundle, latents, self.dtype))
        decode_s = time.perf_counter() - t
        out, start = [], 0
        for part in parts:
            part_images = images[start : start + len(part.seeds)]
            start += len(part.seeds)
            if part.plan.request.mask is not None:  # A1111's overlay: unmasked pixels are the original's
                part_images = [inp.overlay(img, part.plan.inpaint) for img in part_images]
            for key, seconds in (("denoise", denoise_s), ("decode", decode_s)):
                part.plan.timings[key] = part.plan.timings.get(key, 0.0) + seconds
            out.append(part_images)
        return out

    def _result(self, plan: Plan, images: list[Image.Image], seeds: list[int], t0: float) -> GenerationResult:
        """Step 8: the result, with each image's A1111 infotext."""
        from egaku.engine.metadata import format_parameters

        request, bundle = plan.request, plan.bundle
        name, short_hash = bundle.name or (request.model or BUILTIN), bundle.short_hash
        extra = self.extras.infotext_fields(request)  # "Lora hashes", "TI hashes"
        infotexts = [format_parameters(request, seed=s, model_name=name, model_hash=short_hash, extra=extra) for s in seeds]
        plan.timings["total"] = time.perf_counter() - t0
        return GenerationResult(images, seeds, infotexts, request, name, short_hash, plan.timings)

def _same_prompt_lengths(parts: list[Part]) -> list[list[Part]]:
    """Split a batch where prompts differ in chunk count: padding a prompt with empty chunks would
    change its image (cross-attention sees the padding), so only equal lengths share a pass."""
    from egaku.engine.prompts import conditioning_at

    groups: dict[tuple, list[Part]] = {}
    for part in parts:
        request = part.plan.request
        guided = float(request.cfg_scale) != 1.0
        length = tuple(
            max(conditioning_at(part.plan.cond, s).chunk_count,
                conditioning_at(part.plan.uncond, s).chunk_count if guided else 0)
            for s in range(request.steps)
        )
        groups.setdefault(length, []).append(part)
    return list(groups.values())


def _outcome(fn: Callable):
    """fn() or the EgakuError it raised: one request's failure must not sink the others of its batch."""
    try:
        return fn()
    except EgakuError as e:
        return e


def _disk_size(path: Path) -> int | None:
    """Bytes of a model file or folder: the estimate used to make room before loading it."""
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return None
