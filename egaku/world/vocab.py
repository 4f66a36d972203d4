"""The closed vocabulary of the shapes world: shapes, colors, positions, sizes and artist styles.

Every name has an English and a Japanese form; captions, the analyzer and the eval suite all read
these tables, so adding a color or a shape here is the whole change.
"""

from __future__ import annotations

from dataclasses import dataclass

CANVAS = 128  # image side in pixels
GRID = (21, 64, 107)  # pixel centres of the 3x3 position grid


@dataclass(frozen=True)
class Color:
    name: str
    ja: str  # adjective form used before a noun ("赤い")
    ja_noun: str  # noun form used for backgrounds ("赤")
    rgb: tuple[int, int, int]

    @property
    def accent(self) -> tuple[int, int, int]:
        """Second tone of patterned styles: darker for light colors, lighter for dark ones."""
        r, g, b = self.rgb
        if 0.299 * r + 0.587 * g + 0.114 * b > 80:
            return (int(r * 0.5), int(g * 0.5), int(b * 0.5))
        return tuple(int(v + (255 - v) * 0.55) for v in self.rgb)  # type: ignore[return-value]


COLORS: tuple[Color, ...] = (
    Color("red", "赤い", "赤", (220, 30, 30)),
    Color("orange", "オレンジ色の", "オレンジ", (250, 140, 0)),
    Color("yellow", "黄色い", "黄色", (245, 225, 30)),
    Color("green", "緑の", "緑", (30, 160, 50)),
    Color("cyan", "水色の", "水色", (40, 210, 230)),
    Color("blue", "青い", "青", (30, 60, 220)),
    Color("purple", "紫の", "紫", (140, 40, 190)),
    Color("pink", "ピンクの", "ピンク", (250, 140, 210)),
    Color("white", "白い", "白", (245, 245, 245)),
    Color("black", "黒い", "黒", (15, 15, 15)),
)
COLOR_BY_NAME = {c.name: c for c in COLORS}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross", "ring", "diamond")
SHAPE_JA = {
    "circle": "円",
    "square": "四角",
    "triangle": "三角",
    "star": "星",
    "heart": "ハート",
    "cross": "十字",
    "ring": "輪",
    "diamond": "ひし形",
}
SHAPE_PLURAL = {s: s + "s" for s in SHAPES} | {"cross": "crosses"}

# name -> (column, row) on the 3x3 grid
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "center": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
POSITION_JA = {
    "top left": "左上",
    "top": "上",
    "top right": "右上",
    "left": "左",
    "center": "中央",
    "right": "右",
    "bottom left": "左下",
    "bottom": "下",
    "bottom right": "右下",
}
# English phrases for each position: "in the top left", "on the left", ...
POSITION_EN = {
    "top left": ("in the top left", "at the top left", "in the upper left corner"),
    "top": ("at the top", "in the top middle"),
    "top right": ("in the top right", "at the top right", "in the upper right corner"),
    "left": ("on the left", "at the left"),
    "center": ("in the center", "in the middle"),
    "right": ("on the right", "at the right"),
    "bottom left": ("in the bottom left", "at the bottom left", "in the lower left corner"),
    "bottom": ("at the bottom", "in the bottom middle"),
    "bottom right": ("in the bottom right", "at the bottom right", "in the lower right corner"),
}

SIZES: dict[str, int] = {"small": 11, "large": 16}  # radius in pixels
SIZE_EN = {"small": ("small", "little"), "large": ("large", "big")}
SIZE_JA = {"small": "小さい", "large": "大きい"}

COUNT_EN = {1: "one", 2: "two", 3: "three"}
COUNT_JA = {1: "1つ", 2: "2つ", 3: "3つ"}


@dataclass(frozen=True)
class Style:
    """A fictional artist whose look the world can draw (and the opt-out work can erase)."""

    artist: str
    artist_ja: str
    kind: str  # rendering: stripes | dots | outline | inner


STYLES: tuple[Style, ...] = (
    Style("Mira Fenn", "ミラ・フェン", "stripes"),
    Style("Oskar Lund", "オスカー・ルンド", "dots"),
    Style("Kaito Arima", "有馬カイト", "outline"),
    Style("Lena Roth", "レナ・ロート", "inner"),
)
STYLE_BY_ARTIST = {s.artist: s for s in STYLES}
STYLE_KINDS = ("plain",) + tuple(s.kind for s in STYLES)

# Combinations never shown in training, so eval can measure compositional generalisation.
HELDOUT_COLOR_SHAPE = frozenset(
    {("green", "heart"), ("blue", "triangle"), ("yellow", "cross"), ("purple", "circle"), ("orange", "diamond")}
)
HELDOUT_STYLE_SHAPE = frozenset({("stripes", "star"), ("dots", "heart"), ("outline", "diamond"), ("inner", "square")})


def contrasts(obj: Color, background: Color) -> bool:
    """Whether `obj` (and its accent tone) stands out clearly enough on `background` to be drawn there."""
    import math

    return math.dist(obj.rgb, background.rgb) >= 90 and math.dist(obj.accent, background.rgb) >= 60


def grid_center(position: str) -> tuple[int, int]:
    col, row = POSITIONS[position]
    return GRID[col], GRID[row]
