"""The loop every fine-tuning method shares, in numbered steps: load the base model, read and bucket
the data, (DreamBooth) draw class images, attach what trains, cache latents, then optimise with
gradient accumulation, mixed precision, checkpoints that resume exactly, sample grids and a
progress bar; finally write the result and the report.

Exact resume: a checkpoint holds the trainable weights, the optimizer and schedule, the batch order
position and every random generator, so N steps, or N/2 then N/2 after a restart, give the same
weights (on the same device and thread count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from egaku.errors import InvalidRequestError
from egaku.models.bundle import ModelFamily
from egaku.train.finetune.config import FinetuneConfig, Method
from egaku.train.finetune.dataset import BatchOrder, Dataset, assign_buckets, example_pixels, scan_folder
from egaku.train.finetune.model import (
    FIXED_TIMESTEPS, denoising_loss, encode_latents, encode_prompts, fixed_loss, noise_scheduler, time_ids,
)

CHECKPOINT = "checkpoint.pt"
# Settings a resumed run may change; any other difference means another run (use another folder).
RESUMABLE_CHANGES = {"steps", "max_minutes", "samples", "sample_every", "sample_prompts", "sample_steps", "sample_cfg_scale",
                     "sample_sampler", "checkpoint_every", "device", "save_dtype", "embedding_format", "trigger_words"}


@dataclass
class FinetuneResult:
    out: Path
    output: Path  # the LoRA / embedding / checkpoint file
    steps_done: int
    complete: bool  # False when max_minutes stopped it early (run again to continue)
    report: dict
    bundle: object = None  # the trained model as the run left it (LoRA layers injected, weights trained, ...)


def _autocast(mode: str, device: torch.device) -> tuple[Callable, str]:
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    if mode == "no":
        return contextlib.nullcontext, mode
    if mode == "fp16" and device.type != "cuda":
        raise InvalidRequestError("fp16 mixed precision needs a CUDA GPU; use bf16 or no")
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), mode


def _lr_factor(cfg: FinetuneConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        done = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        if cfg.lr_scheduler == "linear":
            return max(0.0, 1.0 - done)
        if cfg.lr_scheduler == "cosine":
            import math

            return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        return 1.0

    return factor


def _cache_latents(bundle, dataset: Dataset, device, path: Path) -> list[torch.Tensor]:
    """Each example's (1, 4, h, w) latents, encoded once and kept in `path` for a resumed run."""
    rows = [(e.path, e.bucket, e.crop, (Path(dataset.root) / e.path).stat().st_mtime_ns) for e in dataset.examples]
    key = hashlib.sha256(json.dumps([rows, bundle.sha256, bundle.vae.config.scaling_factor]).encode()).hexdigest()
    if path.exists():
        cached = torch.load(path, weights_only=True)
        if cached.get("key") == key:
            return cached["latents"]
    latents = [encode_latents(bundle, example_pixels(dataset, e), device) for e in dataset.examples]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "latents": latents}, path)
    return latents


def _data(cfg: FinetuneConfig, out: Path, report) -> Dataset:
    if cfg.from_world:
        from egaku.train.finetune.world_concept import make_world_dataset

        token = (cfg.token or cfg.output_name) if cfg.method == Method.EMBEDDING else None
        folder = make_world_dataset(cfg.from_world, cfg.world_images, out / "data", cfg.seed, token)
    else:
        folder = Path(cfg.data)
    dataset = scan_folder(folder, caption_ext=cfg.caption_ext, default_caption=cfg.default_caption, report=report)
    if cfg.method == Method.DREAMBOOTH and cfg.instance_prompt:
        for e in dataset.examples:
            e.caption = cfg.instance_prompt
    return dataset


class _Samples:
    """Sample grids through the engine with the weights as they are now (out/samples/step_NNNNNN.png)."""

    def __init__(self, bundle, cfg: FinetuneConfig, prompts: list[str], out: Path, device):
        self.bundle, self.cfg, self.prompts, self.out, self.device = bundle, cfg, prompts, out, device
        self.engine = None
        self.written: list[Path] = []

    def __call__(self, step: int, trained: list[torch.nn.Module]) -> None:
        from egaku.engine import Engine, GenerationRequest
        from egaku.train.samples import save_grid

        if not self.prompts or not self.cfg.samples:
            return
        if self.engine is None:
            self.engine = Engine(device=str(self.device), dtype="fp32")
            self.engine.add_bundle("training", self.bundle)
        self.bundle.extra.pop("_prompt_encoder", None)  # the text encoder may have changed since
        for m in trained:
            m.eval()
        c = self.cfg
        images = [self.engine.generate(GenerationRequest(p, model="training", steps=c.sample_steps, seed=c.seed,
                                                         cfg_scale=c.sample_cfg_scale, sampler=c.sample_sampler)).images[0]
                  for p in self.prompts]
        for m in trained:
            m.train()
        self.bundle.extra.pop("_prompt_encoder", None)
        path = self.out / "samples" / f"step_{step:06d}.png"
        save_grid(images, path, columns=len(images))
        self.written.append(path)


def train(cfg: FinetuneConfig, out: str | Path, report: Callable[[str], None] = print, bundle=None) -> FinetuneResult:
    """Run (or resume) a fine-tuning run in folder `out`; see the module docstring.

    `bundle` is an already loaded base model to train in place (else cfg.base is loaded).
    """
    from tqdm import tqdm

    from egaku.engine.devices import resolve_device
    from egaku.models import load_model
    from egaku.train.finetune.dreambooth import generate_class_images, make_adapter
    from egaku.train.finetune.report import write_report

    out = Path(out)
    cfg = dataclasses.replace(cfg, output_name=cfg.output_name or out.name).resolved()
    if cfg.from_world and not cfg.trigger_words:
        from egaku.train.finetune.world_concept import parse_concept

        cfg = dataclasses.replace(cfg, trigger_words=[parse_concept(cfg.from_world).words])
    adapter = make_adapter(cfg)  # checks the method's settings (e.g. an embedding's word) before any work
    out.mkdir(parents=True, exist_ok=True)
    ck_path = out / CHECKPOINT
    checkpoint = torch.load(ck_path, weights_only=True) if ck_path.exists() else None
    if checkpoint is not None:
        saved = checkpoint["config"]
        changed = sorted(k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k) != v)
        if changed:
            raise InvalidRequestError(f"{out} holds a run with other settings ({', '.join(changed)}); "
                                      "resume it with the same settings or use another --out folder")
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False))
    t_start, timings = time.perf_counter(), {}

    # 1. the data (read first: a bad folder fails before a model loads), device, precision and the
    # base model in float32 (the master weights)
    dataset = _data(cfg, out, report)
    class_set = scan_folder(cfg.class_data, caption_ext=cfg.caption_ext, default_caption=cfg.default_caption,
                            report=report) if cfg.class_data else None
    device = resolve_device(cfg.device)
    autocast, precision = _autocast(cfg.mixed_precision, device)
    if bundle is None:
        bundle = load_model(cfg.base, device=device, dtype=torch.float32)
    for m in (bundle.unet, bundle.vae, bundle.text_encoder, bundle.text_encoder_2):
        if m is not None:
            p = next(m.parameters())
            if p.device != device or p.dtype != torch.float32:  # diffusers warns on every .to()
                m.to(device=device, dtype=torch.float32)
            m.requires_grad_(False)
    native = bundle.default_size
    side, step_px = cfg.resolution or native, cfg.bucket_step or (64 if native > 256 else 8)
    timings["load_s"] = time.perf_counter() - t_start

    # 2. buckets; prior preservation's class images: the user's, or drawn by the untouched base model
    assign_buckets(dataset, side, step_px)
    if cfg.class_prompt:
        class_set = scan_folder(generate_class_images(bundle, cfg, out, device, report), report=report)
    if class_set is not None:
        assign_buckets(class_set, side, step_px)

    # 3. what trains, and the latents (the VAE never trains)
    t = time.perf_counter()
    torch.manual_seed(cfg.seed)
    adapter.prepare(bundle)
    latents = _cache_latents(bundle, dataset, device, out / "cache" / "latents.pt")
    class_latents = _cache_latents(bundle, class_set, device, out / "cache" / "class_latents.pt") if class_set else None
    timings["prepare_s"] = time.perf_counter() - t
    trained = [bundle.unet] + ([m for m in (bundle.text_encoder, bundle.text_encoder_2) if m is not None]
                               if adapter.trains_text else [])
    for m in trained:
        m.train()
    if cfg.gradient_checkpointing:
        bundle.unet.enable_gradient_checkpointing()
        for m in trained[1:]:
            if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5
                m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # 4. optimizer, schedule, generators; restored from the checkpoint when resuming
    groups = adapter.param_groups()
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg))
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    noise_gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    order = BatchOrder(dataset, cfg.batch_size, cfg.seed)
    class_order = BatchOrder(class_set, cfg.batch_size, cfg.seed + 1) if class_set else None
    step, curve, train_s = 0, [], 0.0
    if checkpoint is not None:
        adapter.load_state(checkpoint["adapter"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        noise_gen.set_state(checkpoint["noise_gen"])
        rng.setstate(checkpoint["rng"])
        torch.set_rng_state(checkpoint["torch_rng"])
        order.load_state(checkpoint["order"])
        if class_order:
            class_order.load_state(checkpoint["class_order"])
        step, curve, train_s = checkpoint["step"], checkpoint["curve"], checkpoint["train_s"]
        report(f"resuming at step {step} of {cfg.steps}")

    def save_checkpoint() -> None:
        state = {"config": cfg.to_dict(), "step": step, "adapter": adapter.state(), "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict(), "noise_gen": noise_gen.get_state(), "rng": rng.getstate(),
                 "torch_rng": torch.get_rng_state(), "order": order.state(), "curve": curve, "train_s": train_s,
                 "loss_before": loss_before,
                 "class_order": class_order.state() if class_order else None}
        tmp = ck_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(ck_path)

    sched = noise_scheduler(bundle)
    cond_cache: dict[str, tuple] = {}

    def conditioning(captions: list[str]):
        if adapter.trains_text:
            return encode_prompts(bundle, captions, device)
        for c in captions:
            if c not in cond_cache:
                with torch.no_grad():
                    cond_cache[c] = encode_prompts(bundle, [c], device)
        cond = torch.cat([cond_cache[c][0] for c in captions])
        pooled = torch.cat([cond_cache[c][1] for c in captions]) if bundle.family is ModelFamily.SDXL else None
        return cond, pooled

    def batch_loss(ds: Dataset, lat: list[torch.Tensor], indices: list[int]) -> torch.Tensor:
        examples = [ds.examples[i] for i in indices]
        x0 = torch.cat([lat[i] for i in indices]).to(device)  # (B, 4, h, w)
        captions = [adapter.caption("" if rng.random() < cfg.caption_dropout else e.caption, rng) for e in examples]
        with autocast():
            cond, pooled = conditioning(captions)
            tids = time_ids(examples, device) if bundle.family is ModelFamily.SDXL else None
            return denoising_loss(bundle, sched, x0, cond, pooled, tids, noise_gen,
                                  min_snr_gamma=cfg.min_snr_gamma, noise_offset=cfg.noise_offset)

    probe = list(range(min(cfg.eval_examples, len(dataset.examples))))

    def probe_loss() -> float | None:
        if not probe:
            return None
        for m in trained:
            m.eval()
        value = fixed_loss(bundle, sched, [dataset.examples[i] for i in probe], [latents[i] for i in probe],
                           [adapter.caption(dataset.examples[i].caption, random.Random(0)) for i in probe], device)
        for m in trained:
            m.train()
        return value

    loss_before = checkpoint["loss_before"] if checkpoint is not None else probe_loss()
    prompts = cfg.sample_prompts or list(dict.fromkeys(e.caption for e in dataset.examples))[:4]
    prompts = [adapter.caption(p, random.Random(0)) for p in prompts]
    samples = _Samples(bundle, cfg, prompts, out, device)

    # 5. optimise
    deadline = time.perf_counter() + cfg.max_minutes * 60 if cfg.max_minutes else None
    bar = tqdm(total=cfg.steps, initial=step, desc=f"{cfg.method} {cfg.output_name}", unit="step", disable=None,
               dynamic_ncols=True)
    while step < cfg.steps and (deadline is None or time.perf_counter() < deadline):
        t = time.perf_counter()
        total = 0.0
        for _ in range(cfg.grad_accum):
            loss = batch_loss(dataset, latents, order.next())
            if class_order is not None:
                loss = loss + cfg.prior_loss_weight * batch_loss(class_set, class_latents, class_order.next())
            scaled = loss / cfg.grad_accum
            (scaler.scale(scaled) if scaler else scaled).backward()
            total += float(loss.detach()) / cfg.grad_accum
        if scaler:
            scaler.unscale_(optimizer)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        train_s += time.perf_counter() - t
        curve.append([step, total])
        bar.update(1)
        bar.set_postfix(loss=f"{total:.4f}")
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save_checkpoint()
        if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.steps:
            samples(step, trained)
    bar.close()
    save_checkpoint()

    # 6. the result, a last sample grid and the report
    loss_after = probe_loss()
    for m in trained:
        m.eval()
    meta = {"output_name": cfg.output_name, "dataset": dataset, "resolution": side, "started_at": time.time() - train_s,
            "batches_per_epoch": order.batches_per_epoch, "epochs": order.epoch + 1, "steps": step,
            "class_images": len(class_set.examples) if class_set else 0, "mixed_precision": precision}
    output = adapter.save(bundle, out, meta)
    samples(step, [])
    timings.update(train_s=train_s, s_per_step=train_s / max(1, len(curve)), total_s=time.perf_counter() - t_start)
    timings.update(_peak_memory(device))
    summary = {
        "method": cfg.method, "output_name": cfg.output_name, "output": str(output), "steps_done": step,
        "complete": step >= cfg.steps, "final_loss": sum(v for _, v in curve[-20:]) / len(curve[-20:]) if curve else None,
        "fixed_loss": {"before": loss_before, "after": loss_after, "examples": len(probe),
                       "timesteps": list(FIXED_TIMESTEPS)},
        "config": cfg.to_dict(), "base_model": {"name": bundle.name, "sha256": bundle.sha256, "family": bundle.family.value},
        "dataset": {"folder": dataset.root, "images": len(dataset.examples), "buckets": dataset.buckets(),
                    "skipped": [{"file": f, "reason": r} for f, r in dataset.skipped],
                    "class_images": meta["class_images"]},
        "mixed_precision": precision, "device": str(device), "timings": timings,
        "samples": [str(p) for p in samples.written], "sample_prompts": prompts, "loss_curve": curve,
    }
    write_report(out, summary, samples.written)
    return FinetuneResult(out, output, step, step >= cfg.steps, summary, bundle)


def _peak_memory(device) -> dict:
    import resource
    import sys

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak = {"peak_rss_bytes": kib if sys.platform == "darwin" else kib * 1024}
    if device.type == "cuda":
        peak["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
    return peak
