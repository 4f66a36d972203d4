"""Sample grids during training: fixed prompts drawn with the current EMA weights through the engine."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

SAMPLE_PROMPTS = (
    "a red circle on the left, blue background",
    "a yellow star in the top right and a green square at the bottom left, black background",
    "three pink hearts, white background",
    "a large white ring in the center, purple background, in the style of Mira Fenn",
    "左上に赤い三角、右下に青い円、背景は黄色",
    "a black cross at the top, orange background, in the style of Kaito Arima",
    "two cyan diamonds, red background, in the style of Oskar Lund",
    "中央に大きい緑の星、背景は白、レナ・ロートの画風で",
)


def save_grid(images, path: Path, columns: int = 8) -> None:
    """Images (PIL, same size) as one PNG grid, written atomically."""
    from egaku.engine.images import save_png

    arrays = [np.asarray(im.convert("RGB")) for im in images]
    while len(arrays) % columns:
        arrays.append(np.zeros_like(arrays[0]))
    rows = [np.concatenate(arrays[i : i + columns], axis=1) for i in range(0, len(arrays), columns)]
    from PIL import Image

    save_png(Image.fromarray(np.concatenate(rows, axis=0)), Path(path))


def sample_grid_writer(out: Path, steps: int = 20, seed: int = 7):
    """A callback for train_unet: on_sample(step, ema, modules) writes out/samples/step_NNNNNN.png."""

    def on_sample(step: int, ema: dict, modules: dict) -> None:
        from egaku.engine import Engine, GenerationRequest
        from egaku.models.bundle import ModelBundle, ModelFamily

        unet = copy.deepcopy(modules["unet"]).eval()
        te = copy.deepcopy(modules["te"]).eval()
        unet.load_state_dict(ema["unet"])
        te.load_state_dict(ema["te"])
        vae = copy.deepcopy(modules["vae"]).eval()
        vae.register_to_config(scaling_factor=modules["scaling_factor"])
        bundle = ModelBundle(ModelFamily.SD1, unet, vae, te, modules["tokenizer"], dict(modules["scheduler_config"]),
                             name=f"training-step-{step}", default_size=128)
        engine = Engine(device="cpu", dtype="fp32")
        engine.add_bundle("training", bundle)
        with torch.no_grad():
            images = [engine.generate(GenerationRequest(p, model="training", steps=steps, seed=seed, cfg_scale=5.0,
                                                        sampler="DPM++ 2M")).images[0] for p in SAMPLE_PROMPTS]
        folder = Path(out) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        save_grid(images, folder / f"step_{step:06d}.png")
        (folder / "prompts.json").write_text(json.dumps(SAMPLE_PROMPTS, ensure_ascii=False, indent=2))

    return on_sample
