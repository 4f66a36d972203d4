"""Turn an image of the shapes world back into objects: shape, color, position, size, count, style.

Deterministic and network-free: find the background, split the foreground into objects, then match
each object against the renderer's own templates (every shape, size, color candidate and style) by
pixel error. The style is decided for the whole image (an artist draws every object), then each
object's best template under that style gives its attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage

from egaku.world.render import HALF, composite, masks, object_layers
from egaku.world.vocab import (
    COLORS,
    GRID,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLE_KINDS,
    STYLES,
)

FG_THRESHOLD = 45.0  # RGB distance from the background that counts as foreground
MIN_AREA = 30  # smaller blobs are noise, not objects

_MAIN = np.asarray([c.rgb for c in COLORS], np.float32)  # (10, 3)
_ACCENT = np.asarray([c.accent for c in COLORS], np.float32)  # (10, 3)


@dataclass(frozen=True)
class FoundObject:
    shape: str
    color: str
    position: str
    size: str
    center: tuple[float, float]
    error: float  # mean absolute pixel error of the best template (0..255); high = unsure


@dataclass
class Analysis:
    background: str
    style: str  # "plain" or an artist style kind
    objects: list[FoundObject] = field(default_factory=list)

    @property
    def artist(self) -> str | None:
        return next((s.artist for s in STYLES if s.kind == self.style), None)

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        return sum((shape is None or o.shape == shape) and (color is None or o.color == color) for o in self.objects)


def _nearest_position(x: float, y: float) -> str:
    col = int(np.argmin([abs(x - g) for g in GRID]))
    row = int(np.argmin([abs(y - g) for g in GRID]))
    return next(name for name, cr in POSITIONS.items() if cr == (col, row))


def _color_candidates(pixels: np.ndarray, bg_index: int, k: int = 2) -> list[int]:
    """Palette indices voted for by the pixels (accent tones vote for their own color)."""
    d_main = np.linalg.norm(pixels[:, None, :] - _MAIN[None], axis=-1)  # (N, 10)
    d_acc = np.linalg.norm(pixels[:, None, :] - _ACCENT[None], axis=-1)  # (N, 10)
    d = np.minimum(d_main, d_acc + 8.0)  # prefer a main color on ties
    d[:, bg_index] = np.inf
    votes = np.bincount(np.argmin(d, axis=1), minlength=len(COLORS))
    order = [int(i) for i in np.argsort(-votes) if votes[i] > 0 and i != bg_index]
    return order[:k] or [0 if bg_index else 1]


@dataclass
class _Blob:
    cx: float  # centroid of the object's pixels
    cy: float
    bx: float  # centre of its bounding box
    by: float
    support: np.ndarray  # (H, W, 1) float mask of where the object may be compared
    colors: list[int]


@lru_cache(maxsize=None)
def _template_box_center(shape: str, size: str) -> tuple[float, float]:
    ys, xs = np.nonzero(masks(shape, size)["fill"] > 0.5)
    return (xs.min() + xs.max()) / 2.0, (ys.min() + ys.max()) / 2.0


def _errors(img: np.ndarray, bg_rgb: np.ndarray, blob: _Blob, kind: str):
    """Best (error, shape, size, color index, origin) for this blob drawn in `kind`."""
    best = (np.inf, "", "", 0, (0, 0))
    for shape in SHAPES:
        for size in SIZES:
            # align the template's bounding box with the blob's
            tbx, tby = _template_box_center(shape, size)
            x0, y0 = int(round(blob.bx - tbx)), int(round(blob.by - tby))
            crop = _crop(img, x0, y0, bg_rgb)
            weight = _crop(blob.support, x0, y0, np.zeros(1, np.float32))[..., 0]
            wsum = weight.sum()
            if wsum == 0:  # the template lands off the object entirely
                continue
            cov, acc = object_layers(shape, size, kind, x0, y0)
            for ci in blob.colors:
                canvas = np.empty((2 * HALF, 2 * HALF, 3), np.float32)
                canvas[:] = bg_rgb
                composite(canvas, cov, acc, COLORS[ci].rgb, COLORS[ci].accent, 0, 0)
                err = float((np.abs(crop - canvas).mean(-1) * weight).sum() / wsum)
                if err < best[0]:
                    best = (err, shape, size, ci, (x0, y0))
    return best


def _crop(img: np.ndarray, x0: int, y0: int, fill: np.ndarray) -> np.ndarray:
    out = np.empty((2 * HALF, 2 * HALF, 3), np.float32)
    out[:] = fill
    h, w = img.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + 2 * HALF, w), min(y0 + 2 * HALF, h)
    if xa < xb and ya < yb:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = img[ya:yb, xa:xb]
    return out


def analyze(image) -> Analysis:
    """Analyze an RGB image (PIL image or (H, W, 3) uint8 array) of the 128x128 shapes world."""
    img = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float32)
    if img.shape[:2] != (128, 128):
        from PIL import Image

        img = np.asarray(Image.fromarray(img.astype(np.uint8)).resize((128, 128), Image.Resampling.BILINEAR), np.float32)
    # 1. background: the palette color most pixels are nearest to; its observed mean is the bg tone
    nearest = np.argmin(np.linalg.norm(img[:, :, None, :] - _MAIN[None, None], axis=-1), axis=-1)  # (H, W)
    bg_index = int(np.bincount(nearest.ravel(), minlength=len(COLORS)).argmax())
    bg_rgb = img[nearest == bg_index].mean(0)
    # 2. foreground objects: pixels far from the background, joined into blobs
    fg = np.linalg.norm(img - bg_rgb, axis=-1) > FG_THRESHOLD  # (H, W)
    fg = ndimage.binary_opening(fg, iterations=1)
    labels, n = ndimage.label(ndimage.binary_dilation(fg, iterations=2))
    blobs = []
    for i in range(1, n + 1):
        region = (labels == i) & fg
        area = int(region.sum())
        if area < MIN_AREA:
            continue
        ys, xs = np.nonzero(region)
        cx, cy = float(xs.mean()), float(ys.mean())
        # the template origin: the bounding-box centre is a better anchor than the centroid
        bx, by = (xs.min() + xs.max()) / 2.0, (ys.min() + ys.max()) / 2.0
        support = ndimage.binary_dilation(labels == i, iterations=2)[..., None].astype(np.float32)
        blobs.append(_Blob(cx, cy, bx, by, support, _color_candidates(img[region], bg_index)))
    analysis = Analysis(background=COLORS[bg_index].name, style="plain")
    if not blobs:
        return analysis
    # 3. style for the whole image, then each object's best template under it
    per_kind = {kind: [_errors(img, bg_rgb, b, kind) for b in blobs] for kind in STYLE_KINDS}
    style = min(per_kind, key=lambda k: sum(e[0] for e in per_kind[k]))
    analysis.style = style
    for blob, (err, shape, size, ci, (x0, y0)) in zip(blobs, per_kind[style]):
        if not shape:
            continue
        pos = _nearest_position(x0 + HALF, y0 + HALF)
        analysis.objects.append(FoundObject(shape, COLORS[ci].name, pos, size, (blob.cx, blob.cy), err))
    return analysis
