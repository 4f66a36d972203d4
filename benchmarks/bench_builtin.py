"""Seconds per 128x128 image of the built-in model at 20 steps, egaku vs a plain diffusers pipeline.

The issue's target is under 2 s per image on a 2-core CPU. The reference is diffusers'
StableDiffusionPipeline loaded from the very same folder, with the same scheduler and seed, so the
ratio shows what egaku's engine adds (or saves) around the same UNet calls.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_builtin.py --images 5
    .venv/bin/python benchmarks/bench_builtin.py --model runs/base/model --json
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

PROMPT = "a red circle on the left, blue background"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the built-in model)")
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from egaku.engine import Engine, GenerationRequest
    from egaku.models.loader import load_model

    engine = Engine(device="cpu", dtype="fp32")
    bundle = engine.load(args.model)
    request = GenerationRequest(PROMPT, model=args.model, steps=args.steps, sampler="DPM++ 2M", cfg_scale=5.0, seed=1)
    engine.generate(request)  # warm-up
    t = time.perf_counter()
    for i in range(args.images):
        engine.generate(request.with_(seed=1 + i))
    egaku_s = (time.perf_counter() - t) / args.images

    pipe = StableDiffusionPipeline(
        vae=bundle.vae, text_encoder=bundle.text_encoder, tokenizer=bundle.tokenizer, unet=bundle.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(bundle.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    size = bundle.default_size
    kw = dict(num_inference_steps=args.steps, guidance_scale=5.0, height=size, width=size)
    pipe(PROMPT, generator=torch.Generator().manual_seed(1), **kw)  # warm-up
    t = time.perf_counter()
    for i in range(args.images):
        pipe(PROMPT, generator=torch.Generator().manual_seed(1 + i), **kw)
    diffusers_s = (time.perf_counter() - t) / args.images

    result = {
        "model": args.model or "builtin",
        "size": size,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "egaku_s_per_image": round(egaku_s, 3),
        "diffusers_s_per_image": round(diffusers_s, 3),
        "ratio_egaku_over_diffusers": round(egaku_s / diffusers_s, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{size}x{size}, {args.steps} steps, {result['threads']} threads, mean of {args.images} images")
        print(f"  egaku     {egaku_s:6.3f} s/image")
        print(f"  diffusers {diffusers_s:6.3f} s/image")
        print(f"  ratio     {egaku_s / diffusers_s:6.3f}  (egaku / diffusers)")


if __name__ == "__main__":
    main()
