"""LoRA training speed and peak memory for the SD 1.5 architecture (random weights), 512x512, batch 1.

Builds UNet, VAE and text encoder from egaku/models/configs/sd15 with random weights (nothing to
download), attaches peft LoRA (rank 8, to_q/k/v/out of every attention, as `egaku train lora`
does by default), and times full training steps: text encoding, UNet forward, backward and AdamW,
with the same loss code as the trainer. The first step is a warm-up and is not counted. Prints
steps/s, seconds per step and peak memory (process RSS; torch.cuda.max_memory_allocated on a GPU).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_lora_train.py --steps 3        # CPU: ~10+ s/step
    .venv/bin/python benchmarks/bench_lora_train.py --device cuda --steps 20 --json      # bf16 autocast on CUDA
    .venv/bin/python benchmarks/bench_lora_train.py --gradient-checkpointing --text-encoder
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psutil
import torch

CONFIG = Path(__file__).resolve().parent.parent / "egaku" / "models" / "configs" / "sd15"


def sd15_bundle(seed: int = 0):
    """The SD 1.5 layout (860M UNet, 123M text encoder, 84M VAE) with random weights, in float32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from egaku.models.bundle import ModelBundle, ModelFamily
    from egaku.models.tiny import load_sd_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIG / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIG / "vae"))
    te = CLIPTextModel(CLIPTextConfig.from_pretrained(CONFIG / "text_encoder"))
    scheduler = json.loads((CONFIG / "scheduler" / "scheduler_config.json").read_text())
    for m in (unet, vae, te):
        m.requires_grad_(False)
    return ModelBundle(ModelFamily.SD1, unet, vae, te, load_sd_tokenizer(), scheduler, name="sd15-random", default_size=512)


def peak_rss() -> int:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib if sys.platform == "darwin" else kib * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "bf16", "fp16"))
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--text-encoder", action="store_true", help="LoRA on the text encoder too")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from egaku.engine.devices import resolve_device
    from egaku.train.finetune.config import FinetuneConfig
    from egaku.train.finetune.lora import LoraAdapter
    from egaku.train.finetune.loop import _autocast
    from egaku.train.finetune.model import denoising_loss, encode_prompts, noise_scheduler

    device = resolve_device(args.device)
    autocast, precision = _autocast(args.mixed_precision, device)
    bundle = sd15_bundle()
    for m in (bundle.unet, bundle.vae, bundle.text_encoder):
        m.to(device)
    cfg = FinetuneConfig(data="-", steps=args.steps, lr=1e-4, rank=args.rank, train_text_encoder=args.text_encoder).resolved()
    adapter = LoraAdapter(cfg)
    adapter.prepare(bundle)
    if args.gradient_checkpointing:
        bundle.unet.enable_gradient_checkpointing()
    bundle.unet.train()
    groups = adapter.param_groups()
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = noise_scheduler(bundle)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, args.size // 8, args.size // 8, generator=gen).to(device)  # (1, 4, 64, 64): cached latents
    rss_model = psutil.Process().memory_info().rss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        with autocast():
            if adapter.trains_text:
                cond, _ = encode_prompts(bundle, ["a photo of sks dog"], device)
            else:
                with torch.no_grad():
                    cond, _ = encode_prompts(bundle, ["a photo of sks dog"], device)
            loss = denoising_loss(bundle, sched, latents, cond, None, None, gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()  # warm-up: allocations, kernels, optimizer state
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    s_per_step = sum(times) / len(times)
    result = {
        "architecture": "sd15", "size": args.size, "batch": 1, "rank": args.rank, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "mixed_precision": precision, "gradient_checkpointing": args.gradient_checkpointing,
        "text_encoder": args.text_encoder, "lora_parameters": sum(p.numel() for p in params),
        "steps_timed": len(times), "s_per_step": round(s_per_step, 3), "steps_per_s": round(1 / s_per_step, 4),
        "rss_after_model_bytes": rss_model, "peak_rss_bytes": peak_rss(),
    }
    if device.type == "cuda":
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    gib = 1024**3
    print(f"SD 1.5 LoRA (rank {args.rank}, {result['lora_parameters'] / 1e6:.1f}M trainable) at {args.size}x{args.size}, "
          f"batch 1 on {result['device_name']} ({'fp32' if precision == 'no' else precision + ' autocast'}"
          f"{', gradient checkpointing' if args.gradient_checkpointing else ''})")
    print(f"  {result['steps_per_s']:.4f} steps/s ({s_per_step:.2f} s/step over {len(times)} steps)")
    print(f"  peak RSS {result['peak_rss_bytes'] / gib:.2f} GiB (model alone {rss_model / gib:.2f} GiB)")
    if "peak_cuda_bytes" in result:
        print(f"  peak CUDA memory {result['peak_cuda_bytes'] / gib:.2f} GiB")


if __name__ == "__main__":
    main()
