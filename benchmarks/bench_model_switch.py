"""Switching between two models through the engine's cache must not grow the process.

Saves two random-weight SD 1.x models (the tiny layout, widened to a few hundred MB each so a leak
would show) as .safetensors files, then makes an Engine whose memory budget holds only one of them
and alternates between the two 20 times: every switch evicts one model and loads the other from
disk through egaku.models.load_model, then generates one small image with it. Prints the resident
memory (RSS) after each switch and the growth from the first full cycle to the end.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_model_switch.py
    .venv/bin/python benchmarks/bench_model_switch.py --switches 20 --width 256 --json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psutil
import torch


def widened_bundle(width: int, seed: int):
    """The tiny SD1 bundle's layout with `width` UNet channels and a 4-layer, width-wide text encoder."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from egaku.models.bundle import ModelBundle, ModelFamily
    from egaku.models.tiny import SD_SCHEDULER, _clip_config, load_sd_tokenizer, tiny_vae

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(width, 2 * width),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=width, attention_head_dim=8, norm_num_groups=32,
    )
    text_encoder = CLIPTextModel(_clip_config(width, 4, 8, "quick_gelu", 49407))
    modules = (unet, tiny_vae(), text_encoder)
    for m in modules:
        m.eval().requires_grad_(False)
    return ModelBundle(ModelFamily.SD1, unet, modules[1], text_encoder, load_sd_tokenizer(), dict(SD_SCHEDULER),
                       default_size=64)


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--width", type=int, default=256, help="UNet/text width: 256 gives ~0.3 GB models")
    parser.add_argument("--keep-both", action="store_true", help="a budget that holds both (no reloads)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from egaku.engine import Engine, GenerationRequest
    from egaku.engine.cache import bundle_bytes, release_memory
    from egaku.models import export_single_file

    with tempfile.TemporaryDirectory(prefix="egaku-switch-") as tmp:
        os.environ["EGAKU_HOME"] = tmp
        paths, size = [], 0
        for i in range(2):
            bundle = widened_bundle(args.width, seed=i)
            size = bundle_bytes(bundle)
            paths.append(str(export_single_file(bundle, Path(tmp) / f"model-{i}.safetensors")))
            del bundle
        release_memory()
        budget = int(size * (2.5 if args.keep_both else 1.5))
        engine = Engine(device="cpu", dtype="fp32", memory_budget=budget)
        rows = []
        start = rss_mib()
        for n in range(args.switches):
            path = paths[n % 2]
            t = time.perf_counter()
            engine.load(path)
            load_s = time.perf_counter() - t
            engine.generate(GenerationRequest("a red circle", model=path, steps=1, seed=n, sampler="Euler"))
            rows.append({"switch": n + 1, "model": Path(path).stem, "load_s": round(load_s, 3),
                         "rss_mib": round(rss_mib(), 1), "cached": len(engine.cache.keys())})
        baseline = rows[1]["rss_mib"] if len(rows) > 1 else rows[0]["rss_mib"]
        report = {
            "model_mib": round(size / 2**20, 1), "budget_mib": round(budget / 2**20, 1),
            "rss_before_mib": round(start, 1), "rss_after_first_cycle_mib": baseline,
            "rss_end_mib": rows[-1]["rss_mib"], "growth_mib": round(rows[-1]["rss_mib"] - baseline, 1),
            "switches": rows,
        }
    if args.json:
        print(json.dumps(report))
        return
    print(f"two models of {report['model_mib']} MiB, cache budget {report['budget_mib']} MiB, "
          f"RSS before the first load {report['rss_before_mib']} MiB")
    for row in rows:
        print(f"switch {row['switch']:3d}  {row['model']:8}  load {row['load_s']:6.2f} s  "
              f"RSS {row['rss_mib']:8.1f} MiB  cached {row['cached']}")
    print(f"growth from switch 2 to switch {rows[-1]['switch']}: {report['growth_mib']} MiB")


if __name__ == "__main__":
    main()
