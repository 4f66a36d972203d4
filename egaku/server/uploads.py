"""Checks shared by every wire format: prompts, base64 and uploaded images, masks.

Uploaded images are decoded once here with `load_image` (which refuses decompression bombs from the
declared size, before decoding a pixel); the original bytes are what the job carries. Masks that a
wire format expresses differently (OpenAI: transparent = edit; Stability: black or alpha) are
converted here to egaku's convention, a greyscale PNG where white = repaint.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

from egaku.engine.images import load_image
from egaku.errors import InvalidImageError, InvalidRequestError

_STANDARD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URLSAFE = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


def check_prompt(text: str | None, limit: int, *, what: str = "prompt") -> str:
    """The prompt, if it is under `limit` characters and holds no NUL; else InvalidRequestError."""
    text = text or ""
    if len(text) > limit:
        raise InvalidRequestError(f"{what} is {len(text)} characters, over the limit of {limit}")
    if "\x00" in text:
        raise InvalidRequestError(f"{what} contains a NUL character")
    return text


def decode_base64(data: str, *, what: str = "image") -> bytes:
    """Bytes of a base64 string (plain or a `data:...;base64,` URL); InvalidImageError if not base64."""
    if not isinstance(data, str) or not data.strip():
        raise InvalidImageError(f"{what} is empty")
    text = _DATA_URL.sub("", data.strip(), count=1)
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)  # some clients drop the padding
    try:
        if _STANDARD.fullmatch(text):
            return base64.b64decode(text, validate=True)
        if _URLSAFE.fullmatch(text):
            return base64.urlsafe_b64decode(text)
    except (binascii.Error, ValueError):
        pass
    raise InvalidImageError(f"{what} is not valid base64")


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_image(data: bytes, max_pixels: int, *, what: str = "image", mode: str = "RGB"):
    """The decoded PIL image of `data` (InvalidImageError if it is not an image or is a bomb)."""
    if not data:
        raise InvalidImageError(f"{what} is empty")
    return load_image(data, mode=mode, max_pixels=max_pixels, name=what)


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def mask_from_alpha(data: bytes, max_pixels: int, *, what: str = "mask"):
    """White-where-transparent mask (PIL "L") from an image's alpha channel (OpenAI edit semantics).

    OpenAI: "fully transparent areas (alpha zero) indicate where the image should be edited".
    Raises InvalidImageError if the image has no transparency at all.
    """
    from PIL import Image

    rgba = check_image(data, max_pixels, what=what, mode="RGBA")
    with Image.open(io.BytesIO(data)) as raw:
        has_alpha = raw.mode in ("RGBA", "LA", "PA") or "transparency" in raw.info
    if not has_alpha:
        raise InvalidImageError(f"{what} has no transparency (alpha channel) to mark the area to edit")
    alpha = rgba.getchannel("A")  # (H, W), 0 = transparent
    return alpha.point(lambda a: 255 if a == 0 else 0, mode="L")


def inverted_mask(data: bytes, max_pixels: int, *, what: str = "mask"):
    """A mask where black = repaint turned into white = repaint (PIL "L")."""
    from PIL import ImageOps

    return ImageOps.invert(check_image(data, max_pixels, what=what, mode="L"))


def check_mask_size(mask, image, *, what: str = "mask") -> None:
    if mask.size != image.size:
        raise InvalidImageError(
            f"{what} is {mask.size[0]}x{mask.size[1]} but the image is {image.size[0]}x{image.size[1]}"
        )
