"""Safe image input and atomic PNG output.

Input images come from users (CLI files, uploads), so `load_image` checks the size an image
declares in its header before decoding a pixel: a small file that declares 30000x30000 pixels (a
"decompression bomb") is refused instead of exhausting memory. PIL's own global limit
(Image.MAX_IMAGE_PIXELS) is left as it is; ours is a per-call argument.

Output PNGs carry A1111's `parameters` text chunk and are written atomically: a temporary file in
the same folder, then os.replace, so a crash or Ctrl-C never leaves a half-written image.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

from egaku.errors import InvalidImageError

DEFAULT_MAX_PIXELS = 4096 * 4096


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def load_image(
    path_or_bytes: str | os.PathLike | bytes,
    *,
    mode: str = "RGB",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
):
    """Decode an image file (or its bytes) into a PIL image of `mode` ("RGB" images, "L" masks).

    The declared size is checked against `max_pixels` before decoding; EXIF orientation is applied
    (as phones store portraits rotated); transparency is flattened onto white for RGB, as A1111
    does for init images. `name` is how messages call the image (default: the file name).
    Raises InvalidImageError for a missing file, a non-image, a truncated file or a bomb.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(path_or_bytes))
        name = name or "image"
    else:
        source = Path(path_or_bytes)
        name = name or source.name
        if not source.exists():
            raise InvalidImageError(f"{name} does not exist")
        if source.is_dir():
            raise InvalidImageError(f"{name} is a folder, not an image")
    try:
        with warnings.catch_warnings():
            # PIL warns above its own global limit and raises at twice it; our check comes first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise InvalidImageError(
                        f"{name} declares {w}x{h} pixels, over the limit of {max_pixels}"
                    )
                im.load()
                image = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError:
        # PIL refuses above twice its own limit (~179M pixels) while opening, before we can look.
        raise InvalidImageError(f"{name} declares too many pixels, over the limit of {max_pixels}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise InvalidImageError(f"{name} is not an image ({_one_line(e)})") from None
    return _convert(image, mode)


def _convert(image, mode: str):
    """Convert to `mode`; images with alpha are composited onto white when alpha is dropped."""
    from PIL import Image

    if image.mode == mode:
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode in ("RGB", "L") and image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16/32-bit greyscale: scale to 8 bits rather than let PIL clip at 255.
        import numpy as np

        a = np.asarray(image, dtype=np.float64)  # (H, W)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(a.max()), 1.0)
        image = Image.fromarray((a / peak * 255.0).clip(0, 255).astype(np.uint8), "L")
    return image.convert(mode)


def save_png(image, path: str | os.PathLike, parameters: str | None = None) -> Path:
    """Write `image` as a PNG at `path`, atomically, with A1111's `parameters` text chunk.

    Writes a temporary file in the destination folder and renames it over `path` (os.replace is
    atomic on one filesystem), so readers see either the old file or the whole new one. The folder
    is created if needed. Non-latin-1 text goes into an iTXt chunk (PIL picks it), as A1111 does.
    Returns the path written.
    """
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = None
    if parameters:
        info = PngInfo()
        info.add_text("parameters", parameters)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an image is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

