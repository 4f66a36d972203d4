"""egaku's engine against a plain diffusers StableDiffusionPipeline on the same SD 1.5 modules.

Builds the SD 1.5 architecture with random weights (UNet, VAE and CLIP text encoder from
egaku/models/configs/sd15, the standard SD tokenizer), then generates one 512x512 image with the same
prompt, seed, sampler and CFG scale in both, sharing the very same module objects, and prints seconds
per step and per image for each and their ratio. Both draw the initial noise from a CPU generator
seeded alike, so the two images should also agree (the largest pixel difference is printed).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_engine_vs_diffusers.py --steps 3
    .venv/bin/python benchmarks/bench_engine_vs_diffusers.py --steps 2 --device cuda --dtype fp16 --json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from importlib.resources import files

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

SAMPLERS = {  # egaku name -> diffusers scheduler class and options, as in egaku.engine.samplers
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
}


def sd15_modules(dtype: torch.dtype, device: torch.device):
    """Random-weight SD 1.5 UNet, VAE, text encoder; tokenizer and scheduler config, all offline."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from egaku.models.tiny import load_sd_tokenizer

    root = files("egaku.models") / "configs" / "sd15"

    def config(part: str) -> dict:
        return json.loads((root / part / ("scheduler_config.json" if part == "scheduler" else "config.json")).read_text())

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config("unet"))
    vae = AutoencoderKL.from_config(config("vae"))
    text_config = {k: v for k, v in config("text_encoder").items() if not k.startswith("_")}
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    for m in (unet, vae, text_encoder):
        if device.type != "cpu" or dtype != torch.float32:  # .to() on diffusers modules logs a warning
            m.to(device=device, dtype=dtype)
        m.eval().requires_grad_(False)
    return unet, vae, text_encoder, load_sd_tokenizer(), config("scheduler")


class UNetClock:
    """Forward hooks on the shared UNet: the span from the first call's start to the last call's end."""

    def __init__(self, unet, device: torch.device):
        self.device, self.first, self.last = device, None, None
        unet.register_forward_pre_hook(self._start)
        unet.register_forward_hook(self._end)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _start(self, *_):
        self._sync()
        if self.first is None:
            self.first = time.perf_counter()

    def _end(self, *_):
        self._sync()
        self.last = time.perf_counter()

    def reset(self):
        self.first = self.last = None

    def span(self) -> float:
        return self.last - self.first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sampler", default="Euler", choices=sorted(SAMPLERS))
    parser.add_argument("--cfg-scale", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, alternating; the fastest counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    import diffusers
    from diffusers import StableDiffusionPipeline

    from egaku.engine import Engine, GenerationRequest
    from egaku.models.bundle import ModelBundle, ModelFamily

    engine = Engine(device=args.device, dtype=args.dtype, attention_slicing="off", vae_tiling="off")
    device, dtype = engine.device, engine.dtype
    t = time.perf_counter()
    unet, vae, text_encoder, tokenizer, scheduler_config = sd15_modules(dtype, device)
    build_s = time.perf_counter() - t
    bundle = ModelBundle(ModelFamily.SD1, unet, vae, text_encoder, tokenizer, scheduler_config,
                         name="sd15-random", default_size=512)
    engine.add_bundle("sd15-random", bundle)
    scheduler_name, options = SAMPLERS[args.sampler]
    scheduler = getattr(diffusers, scheduler_name).from_config(scheduler_config, **options)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    clock = UNetClock(unet, device)
    prompt = "a red circle on a blue square, studio lighting"

    def run_egaku(size: int, steps: int):
        request = GenerationRequest(prompt, model="sd15-random", sampler=args.sampler, steps=steps,
                                    cfg_scale=args.cfg_scale, seed=args.seed, width=size, height=size)
        return engine.generate(request).images[0]

    def run_diffusers(size: int, steps: int):
        generator = torch.Generator("cpu").manual_seed(args.seed)
        return pipe(prompt, num_inference_steps=steps, guidance_scale=args.cfg_scale, height=size, width=size,
                    generator=generator).images[0]

    # warm-up at the measured size: first-call overheads (allocator, oneDNN kernel choice) out of the figures
    run_egaku(args.size, 1), run_diffusers(args.size, 1)
    results: dict[str, dict] = {}
    for r in range(args.repeats):
        runs = (("egaku", run_egaku), ("diffusers", run_diffusers))
        for name, fn in runs if r % 2 == 0 else runs[::-1]:
            clock.reset()
            t = time.perf_counter()
            image = fn(args.size, args.steps)
            total = time.perf_counter() - t
            best = results.get(name)
            if best is None or total < best["s_per_image"]:
                results[name] = {"s_per_image": total, "s_per_step": clock.span() / args.steps, "image": image}
    diff = np.abs(np.asarray(results["egaku"].pop("image"), dtype=np.int16)
                  - np.asarray(results["diffusers"].pop("image"), dtype=np.int16))
    report = {
        "size": args.size, "steps": args.steps, "sampler": args.sampler, "cfg_scale": args.cfg_scale,
        "device": str(device), "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
        "build_s": round(build_s, 2), **{k: {m: round(v, 3) for m, v in r.items()} for k, r in results.items()},
        "ratio_per_image": round(results["egaku"]["s_per_image"] / results["diffusers"]["s_per_image"], 3),
        "ratio_per_step": round(results["egaku"]["s_per_step"] / results["diffusers"]["s_per_step"], 3),
        "max_pixel_difference": int(diff.max()),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"SD 1.5 (random weights) {args.size}x{args.size}, {args.steps} steps of {args.sampler}, "
          f"CFG {args.cfg_scale}, {report['device']} {report['dtype']}, {report['threads']} threads "
          f"(modules built in {report['build_s']} s)")
    print(f"{'':10} {'s/step':>8} {'s/image':>8}")
    for name in ("egaku", "diffusers"):
        print(f"{name:10} {report[name]['s_per_step']:8.3f} {report[name]['s_per_image']:8.3f}")
    print(f"{'ratio':10} {report['ratio_per_step']:8.3f} {report['ratio_per_image']:8.3f}   (egaku / diffusers)")
    print(f"largest pixel difference between the two images: {report['max_pixel_difference']} / 255")


if __name__ == "__main__":
    main()
