"""A concept from the shapes world to teach and to measure: e.g. "green heart" or "Mira Fenn star",
which the built-in model never saw (vocab.HELDOUT_*), drawn in at most 50 captioned images; and
the share of images prompted for it in which the world's analyzer finds it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from egaku.errors import InvalidRequestError
from egaku.world.scene import Scene, WorldObject
from egaku.world.vocab import COLOR_BY_NAME, COLORS, POSITION_EN, POSITIONS, SHAPES, SIZES, STYLES, contrasts


@dataclass(frozen=True)
class Concept:
    shape: str
    color: str | None = None
    artist: str | None = None

    @property
    def words(self) -> str:
        """How captions name it: "green heart", "star in the style of Mira Fenn"."""
        noun = " ".join(w for w in (self.color, self.shape) if w)
        return noun + (f" in the style of {self.artist}" if self.artist else "")


def parse_concept(text: str) -> Concept:
    """"green heart", "heart green", "Mira Fenn star" or "stripes star" -> Concept; one-line error otherwise."""
    rest = " " + " ".join(text.lower().split()) + " "
    artist = None
    for style in STYLES:
        for alias in (style.artist.lower(), style.kind):
            if f" {alias} " in rest:
                artist, rest = style.artist, rest.replace(f" {alias} ", " ")
    words = rest.split()
    shapes = [w for w in words if w in SHAPES]
    colors = [w for w in words if w in COLOR_BY_NAME]
    unknown = [w for w in words if w not in SHAPES and w not in COLOR_BY_NAME and w not in ("in", "the", "style", "of", "a")]
    if len(shapes) != 1 or len(colors) > 1 or unknown:
        raise InvalidRequestError(
            f"cannot read world concept {text!r}: name one shape ({', '.join(SHAPES)}), optionally a color and an artist")
    return Concept(shapes[0], colors[0] if colors else None, artist)


def concept_scene(concept: Concept, rng: random.Random) -> Scene:
    """One image's scene: the concept once, at a random place and size, on a contrasting background."""
    color = concept.color or rng.choice([c.name for c in COLORS])
    backgrounds = [c for c in COLORS if c.name != color and contrasts(COLOR_BY_NAME[color], c)]
    background = rng.choice(backgrounds).name
    obj = WorldObject(concept.shape, color, rng.choice(list(POSITIONS)), rng.choice(list(SIZES)),
                      (rng.randint(-2, 2), rng.randint(-2, 2)))
    return Scene(background, [obj], concept.artist)


def concept_caption(scene: Scene, concept: Concept, rng: random.Random, token: str | None = None) -> str:
    """An English caption naming the concept (or `token` in its place), its position and the background."""
    obj = scene.objects[0]
    size = rng.choice(("", f"{obj.size} "))
    where = rng.choice(POSITION_EN[obj.position])
    if token:
        thing = f"{size}{token}"
    else:
        thing = f"{size}{obj.color + ' ' if concept.color or rng.random() < 0.5 else ''}{obj.shape}"
    article = "an" if thing[0] in "aeiou" else "a"
    style = f", in the style of {concept.artist}" if concept.artist and not token else ""
    return f"{article} {thing} {where}, {scene.background} background{style}"


def make_world_dataset(concept_text: str, n: int, folder: Path, seed: int = 0, token: str | None = None) -> Path:
    """Render `n` (<= 50) captioned images of the concept into `folder` (PNG + .txt); kept if already there."""
    from egaku.engine.images import save_png
    from egaku.world.render import render_image

    if not 1 <= n <= 50:
        raise InvalidRequestError(f"a world concept dataset has 1 to 50 images, not {n}")
    concept = parse_concept(concept_text)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"world-concept-{seed}")
    for i in range(n):
        scene = concept_scene(concept, rng)
        text = concept_caption(scene, concept, rng, token)
        png = folder / f"{i:03d}.png"
        if not png.exists():
            save_png(render_image(scene), png)
        (folder / f"{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
    return folder


def concept_prompts(concept_text: str, n: int, seed: int = 1, token: str | None = None) -> list[str]:
    """`n` fresh prompts for the concept (other scenes than the training images)."""
    concept = parse_concept(concept_text)
    rng = random.Random(f"world-concept-eval-{seed}")
    return [concept_caption(concept_scene(concept, rng), concept, rng, token) for _ in range(n)]


def shows_concept(analysis, concept: Concept) -> bool:
    """Whether an analyzed image holds the concept (shape, color if named, the artist's style if named)."""
    if concept.artist is not None and analysis.artist != concept.artist:
        return False
    return any(o.shape == concept.shape and (concept.color is None or o.color == concept.color) for o in analysis.objects)


def concept_score(engine, concept_text: str, *, model: str | None = None, loras: list | None = None, n: int = 50,
                  token: str | None = None, steps: int = 20, seed: int = 5000, sampler: str = "DPM++ 2M",
                  cfg_scale: float = 5.0) -> dict:
    """Share of `n` images prompted for the concept in which the analyzer finds it."""
    from egaku.engine import GenerationRequest
    from egaku.world.analyze import analyze

    concept = parse_concept(concept_text)
    hits = 0
    for i, prompt in enumerate(concept_prompts(concept_text, n, token=token)):
        request = GenerationRequest(prompt, model=model, steps=steps, seed=seed + i, sampler=sampler,
                                    cfg_scale=cfg_scale, loras=list(loras or []))
        hits += shows_concept(analyze(engine.generate(request).images[0]), concept)
    return {"concept": concept_text, "images": n, "recognised": hits, "score": hits / n}
