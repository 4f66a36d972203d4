"""Training data from the shapes world: rendered images, fresh captions, tokenized for the SD tokenizer."""

from __future__ import annotations

import random

import numpy as np
import torch

from egaku.world.captions import Span, caption_with_spans, style_span
from egaku.world.render import render
from egaku.world.scene import STYLE_SHARE, Scene, sample_scene


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) arrays -> float tensor (B, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    return x / 127.5 - 1.0


def render_batch(rng: random.Random, n: int, style_share: float = STYLE_SHARE) -> tuple[list[Scene], torch.Tensor]:
    scenes = [sample_scene(rng, style_share=style_share) for _ in range(n)]
    return scenes, images_to_tensor([render(s) for s in scenes])


def fitting_caption(scene: Scene, rng: random.Random, tokenizer, lang: str | None = None,
                    positions: bool | None = None) -> str:
    """A random caption (random language unless given) that fits one 77-token chunk; `positions`
    as `egaku.world.captions.caption` (None: named at random)."""
    return fitting_caption_with_spans(scene, rng, tokenizer, lang, positions)[0]


def fitting_caption_with_spans(scene: Scene, rng: random.Random, tokenizer, lang: str | None = None,
                               positions: bool | None = None, style: bool = False) -> tuple[str, list[Span]]:
    """`fitting_caption` and its object phrases (`egaku.world.captions.caption_with_spans`); with
    `style`, the artist's name too, as a last phrase owning every object."""
    lang = lang or rng.choice(("en", "ja"))
    for attempt in range(6):
        short = attempt >= 3  # long Japanese captions: drop sizes and background
        text, spans = caption_with_spans(scene, lang, rng, positions=positions, sizes=False if short else None,
                                         background=False if short else None)
        if len(tokenizer(text).input_ids) <= tokenizer.model_max_length:
            break
    # else the tokenizer truncates; rare
    named = style_span(scene, text) if style else None
    return text, (spans + [named] if named else spans)


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """(B, 77) ids padded exactly as the engine pads one chunk (BOS ... EOS, then the pad token)."""
    return tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
