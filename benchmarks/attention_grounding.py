"""Where does a model's cross-attention look? For random captioned scenes, the share of each object
phrase's attention that falls on its object, per timestep and per cross-attention layer.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/attention_grounding.py egaku/models/builtin [OTHER ...]

A phrase is one object's words ("a small red circle on the left", 「左上に赤い円」). The figure is
TokenCompose's (Wang et al. 2024): attention inside the object's mask / all of the phrase's
attention, averaged over heads, phrases and scenes. `chance` is what attention spread evenly would
score (the masks' share of the layer's pixels). A model that places objects by the prompt has to
look at the right place; one near chance reads what to draw but not where.
"""

from __future__ import annotations

import argparse
import random

import torch

TIMESTEPS = (999, 800, 500, 200)


@torch.no_grad()
def grounding(folder: str, n: int = 48, seed: int = 5) -> dict:
    from diffusers import DDPMScheduler

    from egaku.models import load_model
    from egaku.train.data import fitting_caption_with_spans, images_to_tensor, tokenize
    from egaku.train.grounding import AttentionRecorder, attention_on_phrases, phrase_region_masks, phrase_token_masks
    from egaku.world.render import object_masks, render
    from egaku.world.scene import sample_scene

    bundle = load_model(folder)
    te, unet, vae, tok = bundle.text_encoder.float(), bundle.unet.float(), bundle.vae.float(), bundle.tokenizer
    noise_sched = DDPMScheduler.from_config(bundle.scheduler_config)
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    captions = [fitting_caption_with_spans(s, rng, tok) for s in scenes]
    texts, spans = [c for c, _ in captions], [s for _, s in captions]
    x0 = vae.encode(images_to_tensor([render(s) for s in scenes])).latent_dist.mean * vae.config.scaling_factor
    tokens = phrase_token_masks(tok, texts, spans, 3)  # (n, 3, 77)
    regions = phrase_region_masks([torch.from_numpy(object_masks(s)) for s in scenes], spans, 3)  # (n, 3, 128, 128)
    valid = tokens.sum(-1) > 0  # (n, 3)
    cond = te(tokenize(tok, texts)).last_hidden_state
    out = {}
    for t in TIMESTEPS:
        steps = torch.full((n,), t)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        with AttentionRecorder(unet) as rec:
            unet(noise_sched.add_noise(x0, noise, steps), steps, cond)
            maps = list(rec.maps)
        row = []
        for probs in maps:  # (n, heads, N, 77)
            share, inside = attention_on_phrases(probs, tokens, regions)  # (n, 3), (n, 3, N)
            row.append((int(probs.shape[2] ** 0.5), float(share[valid].mean()), float(inside.mean(-1)[valid].mean())))
        out[t] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("-n", type=int, default=48, help="scenes (default 48)")
    args = parser.parse_args()
    for folder in args.models:
        result = grounding(folder, args.n)
        sides = [side for side, _, _ in result[TIMESTEPS[0]]]
        print(f"\n{folder}: share of each phrase's attention on its object, per layer (resolution), then mean")
        print("t      " + " ".join(f"{s:>3}x{s:<3}" for s in sides) + "   mean  chance")
        for t, row in result.items():
            shares = [share for _, share, _ in row]
            chance = sum(c for _, _, c in row) / len(row)
            print(f"{t:<6} " + " ".join(f"{v:7.2f}" for v in shares) + f"  {sum(shares) / len(shares):5.2f}  {chance:5.2f}")


if __name__ == "__main__":
    main()
