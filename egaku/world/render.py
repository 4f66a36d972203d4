"""Draw scenes of the shapes world as 128x128 RGB images.

Objects are composited from anti-aliased coverage masks (drawn 4x supersampled, box-filtered). The
analyzer matches images against the very same masks, so rendering and analysis cannot drift apart.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from egaku.world.scene import Scene, WorldObject
from egaku.world.vocab import CANVAS, COLOR_BY_NAME, SIZES, grid_center

SS = 4  # supersampling factor
HALF = 24  # templates are (2*HALF) x (2*HALF) pixels around the object centre
OUTLINE_PX = 3  # line width of the outline style
# The textures are coarse on purpose: the VAE's latent cell is 8x8 pixels (SD's downsampling), and
# v6's finer ones (4-pixel stripe bands, 3-pixel dots every 7 pixels) came back from the VAE as flat
# colour (benchmarks/vae_readback.py: stripes 3/28, dots 0/26), so no UNet could draw them. v7's
# dots, 5 pixels across, one per latent cell, still came back flat after the VAE was refined for
# them (0/26); dots 10 pixels across, one per 2x2 cells, come back 17/29 from v7's VAE untouched.
STRIPE_PERIOD = 16  # stripes style: diagonal period in pixels (8-pixel bands)
DOT_PERIOD = 16  # dots style: dot grid period, one dot per 2x2 latent cells
DOT_RADIUS2 = 25  # dots style: squared dot radius in pixels (dots 10 pixels across)


def _polygon(shape: str, r: float) -> list[tuple[float, float]] | None:
    """Vertices (x, y) around (0, 0) for polygonal shapes; y grows downwards."""
    if shape == "square":
        a = r * 0.82
        return [(-a, -a), (a, -a), (a, a), (-a, a)]
    if shape == "triangle":
        s = r * 1.12
        return [(s * math.cos(math.radians(a)), s * math.sin(math.radians(a)) + r * 0.15) for a in (-90, 30, 150)]
    if shape == "diamond":
        return [(0, -r), (r * 0.72, 0), (0, r), (-r * 0.72, 0)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = math.radians(-90 + 36 * i)
            pts.append((rad * math.cos(a), rad * math.sin(a) + r * 0.08))
        return pts
    if shape == "cross":
        w = r * 0.36
        return [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
    if shape == "heart":
        pts = []
        for i in range(64):
            t = 2 * math.pi * i / 64
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((x * r / 16.5, (y + 2) * r / 16.5))
        return pts
    return None


def _draw(draw: ImageDraw.ImageDraw, shape: str, r: float, c: float, fill: int) -> None:
    if shape in ("circle", "ring"):
        draw.ellipse((c - r, c - r, c + r, c + r), fill=fill)
        if shape == "ring":
            ri = r * 0.55
            draw.ellipse((c - ri, c - ri, c + ri, c + ri), fill=0)
        return
    draw.polygon([(c + x, c + y) for x, y in _polygon(shape, r)], fill=fill)


def _coverage(big: Image.Image) -> np.ndarray:
    small = big.resize((2 * HALF, 2 * HALF), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


@lru_cache(maxsize=None)
def masks(shape: str, size: str) -> dict[str, np.ndarray]:
    """Coverage masks (2*HALF, 2*HALF) in [0, 1]: 'fill' (the silhouette), 'outline' (a band of
    OUTLINE_PX inside every edge) and 'inner' (the shape at half size, for the inner style)."""
    r = SIZES[size] * SS
    c = HALF * SS
    big = Image.new("L", (2 * HALF * SS, 2 * HALF * SS), 0)
    _draw(ImageDraw.Draw(big), shape, r, c, 255)
    fill = _coverage(big)
    # outline: the silhouette minus its erosion by OUTLINE_PX (a MinFilter at 4x)
    eroded = big.filter(__import__("PIL.ImageFilter", fromlist=["MinFilter"]).MinFilter(2 * OUTLINE_PX * SS + 1))
    outline = np.clip(fill - _coverage(eroded), 0.0, 1.0)
    inner_big = Image.new("L", big.size, 0)
    _draw(ImageDraw.Draw(inner_big), shape, r * 0.5, c, 255)
    inner = _coverage(inner_big)
    return {"fill": fill, "outline": outline, "inner": inner}


def pattern(kind: str, x0: int, y0: int) -> np.ndarray | None:
    """Accent pattern (2*HALF, 2*HALF) in image coordinates starting at (x0, y0), or None."""
    ys, xs = np.mgrid[y0 : y0 + 2 * HALF, x0 : x0 + 2 * HALF]
    if kind == "stripes":
        return (((xs + ys) // (STRIPE_PERIOD // 2)) % 2).astype(np.float32)
    if kind == "dots":
        dx = (xs % DOT_PERIOD) - DOT_PERIOD // 2
        dy = (ys % DOT_PERIOD) - DOT_PERIOD // 2
        return ((dx * dx + dy * dy) <= DOT_RADIUS2).astype(np.float32)
    return None


def object_layers(shape: str, size: str, kind: str, x0: int, y0: int) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, accent fraction) of one object drawn in style `kind` with its template at (x0, y0)."""
    m = masks(shape, size)
    if kind == "outline":
        return m["outline"], np.zeros_like(m["fill"])
    if kind == "inner":
        # the inner copy is drawn on top, also where the silhouette has a hole (the ring)
        cov = np.maximum(m["fill"], m["inner"])
        return cov, np.divide(m["inner"], cov, out=np.zeros_like(cov), where=cov > 0)
    pat = pattern(kind, x0, y0)
    return m["fill"], (pat if pat is not None else np.zeros_like(m["fill"]))


def _window(x0: int, y0: int, hw: tuple[int, int]):
    """Where a template placed at (x0, y0) meets an (h, w) canvas: ((ya, yb, xa, xb) on the canvas,
    the matching template slices), or None when it falls outside."""
    h, w = hw
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + 2 * HALF, w), min(y0 + 2 * HALF, h)
    if xa >= xb or ya >= yb:
        return None
    return (ya, yb, xa, xb), (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))


def composite(canvas: np.ndarray, cov: np.ndarray, accent: np.ndarray, rgb, accent_rgb, x0: int, y0: int) -> None:
    """Blend one object into canvas (H, W, 3) float32 in place, clipping at the borders."""
    window = _window(x0, y0, canvas.shape[:2])
    if window is None:
        return
    (ya, yb, xa, xb), sl = window
    color = (1 - accent[sl])[..., None] * np.asarray(rgb, np.float32) + accent[sl][..., None] * np.asarray(
        accent_rgb, np.float32
    )  # (h, w, 3)
    a = cov[sl][..., None]
    region = canvas[ya:yb, xa:xb]
    region[:] = region * (1 - a) + color * a


def object_origin(obj: WorldObject) -> tuple[int, int]:
    cx, cy = grid_center(obj.position)
    return cx + obj.offset[0] - HALF, cy + obj.offset[1] - HALF


def render(scene: Scene) -> np.ndarray:
    """The scene as a (128, 128, 3) uint8 array."""
    bg = COLOR_BY_NAME[scene.background].rgb
    canvas = np.empty((CANVAS, CANVAS, 3), np.float32)
    canvas[:] = bg
    for obj in scene.objects:
        col = COLOR_BY_NAME[obj.color]
        x0, y0 = object_origin(obj)
        cov, acc = object_layers(obj.shape, obj.size, scene.style, x0, y0)
        composite(canvas, cov, acc, col.rgb, col.accent, x0, y0)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def object_mask(scene: Scene) -> np.ndarray:
    """(128, 128) float32 in [0, 1]: how much of each pixel the scene's objects paint (as `render`)."""
    return object_masks(scene).max(axis=0, initial=0.0)


def object_masks(scene: Scene) -> np.ndarray:
    """(n_objects, 128, 128) float32 in [0, 1]: each object's own coverage, in `scene.objects` order."""
    out = np.zeros((len(scene.objects), CANVAS, CANVAS), np.float32)
    for mask, obj in zip(out, scene.objects):
        x0, y0 = object_origin(obj)
        fill, _ = object_layers(obj.shape, obj.size, scene.style, x0, y0)
        window = _window(x0, y0, mask.shape)
        if window is not None:
            (ya, yb, xa, xb), sl = window
            mask[ya:yb, xa:xb] = fill[sl]
    return out


def render_image(scene: Scene) -> Image.Image:
    return Image.fromarray(render(scene))
