"""Captions for scenes, in English and Japanese, from several templates and paraphrases.

Training draws a fresh caption for every use of a scene, so the model learns the attributes, not
one sentence pattern. Attributes may be left out (size, position, background, even count words),
as people leave them out of prompts; the analyzer only checks what a prompt states.
"""

from __future__ import annotations

import random

from egaku.world.scene import Scene, WorldObject
from egaku.world.vocab import (
    COLOR_BY_NAME,
    COUNT_EN,
    COUNT_JA,
    POSITION_EN,
    POSITION_JA,
    SHAPE_JA,
    SHAPE_PLURAL,
    SIZE_EN,
    SIZE_JA,
    STYLE_BY_ARTIST,
)

LANGS = ("en", "ja")


def _obj_en(rng, obj: WorldObject, with_size: bool, where: list[str], count: int = 1, with_color: bool = True) -> str:
    words = []
    if with_size:
        words.append(rng.choice(SIZE_EN[obj.size]))
    if with_color:
        words.append(obj.color)
    words.append(obj.shape if count == 1 else SHAPE_PLURAL[obj.shape])
    if count > 1:
        article = COUNT_EN[count]
    else:
        article = _article(words[0])
    text = " ".join([article] + words)
    if where:
        text += " " + _join_en(rng, [rng.choice(POSITION_EN[p]) for p in where], always_and=True)
    return text


def _obj_ja(rng, obj: WorldObject, with_size: bool, where: list[str], count: int = 1, with_color: bool = True) -> str:
    color = COLOR_BY_NAME[obj.color].ja if with_color else ""
    noun = (SIZE_JA[obj.size] if with_size else "") + color + SHAPE_JA[obj.shape]
    if count > 1:
        noun = rng.choice((f"{noun}が{COUNT_JA[count]}", f"{COUNT_JA[count]}の{noun}"))
    if where:
        return "と".join(POSITION_JA[p] for p in where) + f"に{noun}"
    return noun


def _join_en(rng: random.Random, parts: list[str], always_and: bool = False) -> str:
    if len(parts) == 1:
        return parts[0]
    if always_and or rng.random() < 0.5:
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    return ", ".join(parts)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _background_en(rng: random.Random, bg: str) -> str:
    a = _article(bg)
    return rng.choice((f", {bg} background", f" on {a} {bg} background", f", with {a} {bg} background", f" on {bg}"))


def _style_en(rng: random.Random, artist: str) -> str:
    return rng.choice((f", in the style of {artist}", f", by {artist}", f", {artist} style", f" in the style of {artist}"))


def _style_ja(rng: random.Random, name: str) -> str:
    return rng.choice((f"、{name}の画風で", f"、{name}風", f"、{name}のスタイル"))


def caption(scene: Scene, lang: str, rng: random.Random, **flags: bool | None) -> str:
    """One caption of `scene` in `lang` ("en" or "ja"). Flags (positions, sizes, background, colors):
    whether to name each; None or absent means decide at random."""
    return caption_with_spans(scene, lang, rng, **flags)[0]


Span = tuple[int, int, tuple[int, ...]]  # (start, end) characters of one object phrase, and its objects


def caption_with_spans(
    scene: Scene,
    lang: str,
    rng: random.Random,
    *,
    positions: bool | None = None,
    sizes: bool | None = None,
    background: bool | None = None,
    colors: bool | None = None,
) -> tuple[str, list[Span]]:
    """`caption`, plus where each object phrase lies in it and which of `scene.objects` it describes
    (all of them for a counted group, "three red stars"). Same random draws, so the same caption."""
    text, parts, owners = _compose(scene, lang, rng, positions, sizes, background, colors)
    spans, cursor = [], 0
    for part, objs in zip(parts, owners):
        start = text.index(part, cursor)  # phrases appear in order, only separators between them
        cursor = start + len(part)
        spans.append((start, cursor, objs))
    return text, spans


def _compose(scene, lang, rng, positions, sizes, background, colors) -> tuple[str, list[str], list[tuple[int, ...]]]:
    if lang not in LANGS:
        raise ValueError(f"unknown caption language {lang!r}")
    with_pos = rng.random() < 0.8 if positions is None else positions
    with_size = rng.random() < 0.5 if sizes is None else sizes
    with_color = rng.random() < 0.9 if colors is None else colors
    with_bg = rng.random() < 0.85 if background is None else background
    fmt = _obj_en if lang == "en" else _obj_ja
    # A group is counted ("two red circles", with or without where each one is) unless named one by
    # one; counting captions were rare (2% of v4's training captions) and counting stayed at chance.
    if scene.group and (not with_pos or rng.random() < 0.75):
        where = [o.position for o in scene.objects] if with_pos else []
        parts = [fmt(rng, scene.objects[0], with_size, where, len(scene.objects), with_color)]
        owners = [tuple(range(len(scene.objects)))]
    else:
        parts = [fmt(rng, o, with_size, [o.position] if with_pos else [], 1, with_color) for o in scene.objects]
        owners = [(i,) for i in range(len(scene.objects))]
    bg = scene.background
    # People put the background and the artist first as often as last ("white background, a red
    # circle"); v4, trained on one order only, ignored a background named before the artist.
    if lang == "en":
        text = _join_en(rng, parts)
        if with_bg:
            text = _front(rng, _background_front_en(rng, bg), text) or text + _background_en(rng, bg)
        if scene.artist:
            text = _front(rng, _style_front_en(rng, scene.artist), text) or text + _style_en(rng, scene.artist)
        return text, parts, owners
    text = "、".join(parts)
    if with_bg:
        bgj = COLOR_BY_NAME[bg].ja_noun
        text = rng.choice((f"{text}、背景は{bgj}", f"{bgj}い背景に{text}" if bgj in ("赤", "青", "白", "黒") else f"{bgj}の背景に{text}"))
    if scene.artist:
        name = rng.choice((scene.artist, STYLE_BY_ARTIST[scene.artist].artist_ja))
        text = _front(rng, rng.choice((f"{name}の画風で、", f"{name}風、")), text) or text + _style_ja(rng, name)
    return text, parts, owners


FRONT_SHARE = 0.25  # of captions that name the background (or artist) that name it first


def _front(rng: random.Random, clause: str, text: str) -> str | None:
    """`clause` + `text` for FRONT_SHARE of calls, else None (the caller puts its clause last)."""
    return clause + text if rng.random() < FRONT_SHARE else None


def _background_front_en(rng: random.Random, bg: str) -> str:
    return rng.choice((f"{bg} background, ", f"on {_article(bg)} {bg} background, "))


def _style_front_en(rng: random.Random, artist: str) -> str:
    return rng.choice((f"in the style of {artist}, ", f"{artist} style, ", f"by {artist}, "))


def style_span(scene: Scene, text: str) -> Span | None:
    """Where `text` names the scene's artist (English or Japanese name), owning every object: the
    style is drawn on the objects, so that is where the name's attention belongs."""
    if scene.artist is None:
        return None
    for name in (scene.artist, STYLE_BY_ARTIST[scene.artist].artist_ja):
        start = text.find(name)
        if start >= 0:
            return start, start + len(name), tuple(range(len(scene.objects)))
    return None
