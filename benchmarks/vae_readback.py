"""How well a VAE keeps the shapes world: the share of random scenes that the world's analyzer reads
back fully right (background, every object's shape, colour and position, style) after encode -> decode,
and per object shape and per artist's style, the share read back as in the original render.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/vae_readback.py egaku/models/builtin/vae OTHER/vae

An image the VAE cannot reproduce is one the UNet cannot draw either, so this caps `egaku eval`.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter

import torch


def readback(folder: str, scenes: int, seed: int, style_share: float) -> tuple[int, Counter, Counter, Counter, Counter]:
    from diffusers import AutoencoderKL
    from PIL import Image

    from egaku.train.data import render_batch
    from egaku.world.analyze import analyze

    def key(a):
        return a.background, sorted((o.shape, o.color, o.position) for o in a.objects), a.artist

    def to_image(t: torch.Tensor) -> Image.Image:  # (3, H, W) in [-1, 1]
        return Image.fromarray(((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())

    vae = AutoencoderKL.from_pretrained(folder).float()
    rng, right = random.Random(seed), 0
    shape_ok, shape_n = Counter(), Counter()  # per shape: read back right, seen
    style_ok, style_n = Counter(), Counter()  # per artist ("none": plain scenes): read back right, seen
    for start in range(0, scenes, 8):
        _, x = render_batch(rng, min(8, scenes - start), style_share)  # (B, 3, 128, 128)
        with torch.no_grad():
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        for r, t in zip(rec, x):
            got, want = analyze(to_image(r)), analyze(to_image(t))
            right += key(got) == key(want)
            at = {o.position: o.shape for o in got.objects}
            for o in want.objects:
                shape_n[o.shape] += 1
                shape_ok[o.shape] += at.get(o.position) == o.shape
            artist = want.artist or "none"
            style_n[artist] += 1
            style_ok[artist] += got.artist == want.artist
    return right, shape_ok, shape_n, style_ok, style_n


def main() -> None:
    from egaku.world.scene import STYLE_SHARE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="diffusers VAE folders")
    ap.add_argument("--scenes", type=int, default=96)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--style-share", type=float, default=STYLE_SHARE,
                    help=f"share of scenes drawn in an artist's style (default {STYLE_SHARE}, as in training)")
    args = ap.parse_args()
    for folder in args.folders:
        right, shape_ok, shape_n, style_ok, style_n = readback(folder, args.scenes, args.seed, args.style_share)
        n = args.scenes
        print(f"{folder}: {right}/{n} scenes read back fully right ({right / n:.0%})")
        per_shape = ", ".join(f"{s} {shape_ok[s]}/{shape_n[s]}" for s in sorted(shape_n))
        ok, seen = sum(shape_ok.values()), sum(shape_n.values())
        print(f"  shapes {ok}/{seen} ({ok / seen:.0%}): {per_shape}")
        per_style = ", ".join(f"{a} {style_ok[a]}/{style_n[a]}" for a in sorted(style_n))
        print(f"  style (artist) {sum(style_ok.values())}/{n} ({sum(style_ok.values()) / n:.0%}): {per_style}")


if __name__ == "__main__":
    main()
