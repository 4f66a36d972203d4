"""Scenes of the shapes world: what is drawn where, sampled reproducibly from a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from egaku.world.vocab import (
    COLOR_BY_NAME,
    COLORS,
    HELDOUT_COLOR_SHAPE,
    HELDOUT_STYLE_SHAPE,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLE_BY_ARTIST,
    STYLES,
    contrasts,
)

STYLE_SHARE = 0.4  # share of scenes an artist draws, unless a caller asks for another


@dataclass(frozen=True)
class WorldObject:
    shape: str
    color: str
    position: str  # one of vocab.POSITIONS
    size: str  # "small" | "large"
    offset: tuple[int, int] = (0, 0)  # small jitter (dx, dy) in pixels, so objects are not pixel-aligned


@dataclass
class Scene:
    background: str
    objects: list[WorldObject]
    artist: str | None = None  # None = plain rendering
    # For counting scenes: the objects are copies of one (shape, color, size) and captions say "two ..."
    group: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def style(self) -> str:
        return STYLE_BY_ARTIST[self.artist].kind if self.artist else "plain"

    def is_heldout(self) -> bool:
        """Whether any object uses a combination that training never shows."""
        return any(
            (o.color, o.shape) in HELDOUT_COLOR_SHAPE or (self.style, o.shape) in HELDOUT_STYLE_SHAPE
            for o in self.objects
        )


def sample_scene(rng: random.Random, *, allow_heldout: bool = False, jitter: int = 2,
                 style_share: float = STYLE_SHARE) -> Scene:
    """A random scene of 1 to 3 objects, drawn in an artist's style with probability `style_share`;
    with allow_heldout=False no held-out combination appears."""
    while True:
        background = rng.choice(COLORS)
        artist = rng.choice(STYLES).artist if rng.random() < style_share else None
        n = rng.choice((1, 1, 2, 2, 3))
        positions = rng.sample(list(POSITIONS), n)
        group = n > 1 and rng.random() < 0.3
        candidates = [c for c in COLORS if contrasts(c, background)]
        objects = []
        first = None
        for pos in positions:
            if group and first is not None:
                shape, color, size = first
            else:
                shape, color, size = rng.choice(SHAPES), rng.choice(candidates).name, rng.choice(list(SIZES))
                first = (shape, color, size)
            off = (rng.randint(-jitter, jitter), rng.randint(-jitter, jitter))
            objects.append(WorldObject(shape, color, pos, size, off))
        scene = Scene(background.name, objects, artist, group)
        if allow_heldout or not scene.is_heldout():
            return scene


def background_rgb(scene: Scene) -> tuple[int, int, int]:
    return COLOR_BY_NAME[scene.background].rgb


def scene_from_dict(d: dict) -> Scene:
    """Inverse of dataclasses.asdict(scene), for scenes stored as JSON."""
    objects = [WorldObject(o["shape"], o["color"], o["position"], o["size"], tuple(o.get("offset", (0, 0)))) for o in d["objects"]]
    return Scene(d["background"], objects, d.get("artist"), d.get("group", False), d.get("meta", {}))
