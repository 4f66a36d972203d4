"""The fixed prompt suite of `egaku eval`: GenEval-like categories over the shapes world.

Each prompt says what the image must show; the analyzer checks exactly that. Prompts come in
English and Japanese (the same specs, so the two languages are directly comparable) and in seen
and held-out combinations (pairs that training never showed, see vocab.HELDOUT_*).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from egaku.world.vocab import (
    COLOR_BY_NAME,
    COLORS,
    COUNT_EN,
    COUNT_JA,
    HELDOUT_COLOR_SHAPE,
    HELDOUT_STYLE_SHAPE,
    POSITION_EN,
    POSITION_JA,
    POSITIONS,
    SHAPE_JA,
    SHAPE_PLURAL,
    SHAPES,
    STYLES,
    contrasts,
)

CATEGORIES = ("single_object", "colors", "position", "two_objects", "counting", "color_attribution", "style")


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    color: str | None = None
    position: str | None = None
    count: int = 1


@dataclass(frozen=True)
class EvalPrompt:
    category: str
    lang: str
    heldout: bool
    text: str
    objects: tuple[ObjectSpec, ...]
    background: str
    artist: str | None = None

    def check(self, analysis) -> bool:
        """Whether the analyzed image shows everything the prompt asks for."""
        if analysis.background != self.background:
            return False
        if self.artist is not None and analysis.artist != self.artist:
            return False
        for spec in self.objects:
            n = sum(
                o.shape == spec.shape
                and (spec.color is None or o.color == spec.color)
                and (spec.position is None or o.position == spec.position)
                for o in analysis.objects
            )
            if (n != spec.count) if self.category == "counting" else (n < spec.count):
                return False
        return True

    def attributes(self, analysis) -> dict[str, bool]:
        """Partial credit: each kind of attribute the prompt names, checked on its own (a model can
        get colours right long before whole prompts). Keys: background, shape, and where the prompt
        names them color, position, count, style."""
        found = analysis.objects
        out = {
            "background": analysis.background == self.background,
            "shape": all(any(o.shape == s.shape for o in found) for s in self.objects),
        }
        if any(s.color for s in self.objects):
            out["color"] = all(any(o.color == s.color for o in found) for s in self.objects if s.color)
        if any(s.position for s in self.objects):
            out["position"] = all(any(o.position == s.position for o in found) for s in self.objects if s.position)
        if self.category == "counting":
            out["count"] = all(sum(o.shape == s.shape for o in found) == s.count for s in self.objects)
        if self.artist is not None:
            out["style"] = analysis.artist == self.artist
        return out


def _en_object(o: ObjectSpec) -> str:
    noun = o.shape if o.count == 1 else SHAPE_PLURAL[o.shape]
    words = ([o.color] if o.color else []) + [noun]
    article = COUNT_EN[o.count] if o.count > 1 else ("an" if words[0][0] in "aeiou" else "a")
    text = f"{article} {' '.join(words)}"
    return text + (f" {POSITION_EN[o.position][0]}" if o.position else "")


def _ja_object(o: ObjectSpec) -> str:
    noun = (COLOR_BY_NAME[o.color].ja if o.color else "") + SHAPE_JA[o.shape]
    if o.count > 1:
        noun = f"{noun}が{COUNT_JA[o.count]}"
    return f"{POSITION_JA[o.position]}に{noun}" if o.position else noun


def render_text(objects: tuple[ObjectSpec, ...], background: str, artist: str | None, lang: str) -> str:
    if lang == "en":
        parts = [_en_object(o) for o in objects]
        text = " and ".join(parts) + f", {background} background"
        return text + (f", in the style of {artist}" if artist else "")
    text = "、".join(_ja_object(o) for o in objects) + f"、背景は{COLOR_BY_NAME[background].ja_noun}"
    return text + (f"、{artist}の画風で" if artist else "")


def _pairs(heldout: bool) -> list[tuple[str, str]]:
    """(color, shape) pairs: the held-out ones, or all the others."""
    every = [(c.name, s) for c in COLORS for s in SHAPES]
    return sorted(HELDOUT_COLOR_SHAPE) if heldout else [p for p in every if p not in HELDOUT_COLOR_SHAPE]


def _background(rng: random.Random, colors: list[str | None]) -> str:
    options = [c for c in COLORS if all(col is None or contrasts(COLOR_BY_NAME[col], c) and col != c.name for col in colors)]
    return rng.choice(options).name


def _specs(category: str, heldout: bool, rng: random.Random) -> tuple[tuple[ObjectSpec, ...], str | None]:
    positions = list(POSITIONS)
    if category == "single_object":
        return (ObjectSpec(rng.choice(SHAPES)),), None
    if category == "colors":
        color, shape = rng.choice(_pairs(heldout))
        return (ObjectSpec(shape, color),), None
    if category == "position":
        color, shape = rng.choice(_pairs(heldout))
        return (ObjectSpec(shape, color, rng.choice(positions)),), None
    if category == "counting":
        color, shape = rng.choice(_pairs(heldout))
        return (ObjectSpec(shape, color, count=rng.choice((2, 3))),), None
    if category in ("two_objects", "color_attribution"):
        while True:
            (c1, s1), (c2, s2) = rng.choice(_pairs(heldout)), rng.choice(_pairs(False))
            if c1 != c2 and s1 != s2:
                break
        if category == "two_objects":
            return (ObjectSpec(s1, c1), ObjectSpec(s2, c2)), None
        p1, p2 = rng.sample(positions, 2)
        return (ObjectSpec(s1, c1, p1), ObjectSpec(s2, c2, p2)), None
    if category == "style":
        style = rng.choice(STYLES)
        if heldout:
            kind, shape = rng.choice(sorted(p for p in HELDOUT_STYLE_SHAPE))
            style = next(s for s in STYLES if s.kind == kind)
        else:
            shape = rng.choice([s for s in SHAPES if (style.kind, s) not in HELDOUT_STYLE_SHAPE])
        color = rng.choice([c for c, s in _pairs(False) if s == shape])
        return (ObjectSpec(shape, color),), style.artist
    raise ValueError(f"unknown category {category!r}")


def build_suite(per_category: int = 8, heldout_per_category: int = 4, seed: int = 2026) -> list[EvalPrompt]:
    """The suite: for each category, `per_category` seen and `heldout_per_category` held-out specs,
    each written in English and in Japanese. Fixed by `seed`."""
    rng = random.Random(seed)
    suite = []
    for category in CATEGORIES:
        for heldout, n in ((False, per_category), (True, heldout_per_category)):
            if heldout and category == "single_object":
                continue  # a bare shape has no combination to hold out
            for _ in range(n):
                objects, artist = _specs(category, heldout, rng)
                bg = _background(rng, [o.color for o in objects])
                for lang in ("en", "ja"):
                    text = render_text(objects, bg, artist, lang)
                    suite.append(EvalPrompt(category, lang, heldout, text, objects, bg, artist))
    return suite
