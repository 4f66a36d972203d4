"""Safe image input (bombs, non-images, orientation) and atomic PNG output."""

import io
import struct
import time
import zlib

import pytest
from PIL import Image

from egaku.engine.images import load_image, save_png
from egaku.errors import InvalidImageError


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few dozen bytes whose header declares width x height (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(30000, 30000))
    assert path.stat().st_size < 200
    limit = Image.MAX_IMAGE_PIXELS
    start = time.perf_counter()
    with pytest.raises(InvalidImageError, match=r"^bomb.png declares too many pixels, over the limit of 16777216$"):
        load_image(path)
    assert time.perf_counter() - start < 1.0  # nothing was decoded
    assert Image.MAX_IMAGE_PIXELS == limit  # PIL's global setting is left alone


def test_bomb_below_pils_limit_is_refused_by_ours(recwarn):
    # 5000x5000 is under PIL's own limit (no PIL error) but over our default of 4096x4096.
    with pytest.raises(InvalidImageError, match="declares 5000x5000 pixels"):
        load_image(png_declaring(5000, 5000), name="upload")
    with pytest.raises(InvalidImageError, match="declares 64x64 pixels, over the limit of 1000"):
        load_image(_png_bytes(Image.new("RGB", (64, 64))), max_pixels=1000)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_non_image_truncated_and_missing(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InvalidImageError, match=r"^notes.txt is not an image \(cannot identify image file"):
        load_image(text)
    noise = Image.effect_noise((64, 64), 50).convert("RGB")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_png_bytes(noise)[:400])
    with pytest.raises(InvalidImageError, match=r"^cut.png is not an image \("):
        load_image(truncated)
    with pytest.raises(InvalidImageError, match="^gone.png does not exist$"):
        load_image(tmp_path / "gone.png")
    with pytest.raises(InvalidImageError, match="is a folder"):
        load_image(tmp_path)


def test_modes_alpha_and_bytes():
    rgba = Image.new("RGBA", (8, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    image = load_image(_png_bytes(rgba))
    assert (image.mode, image.size) == ("RGB", (8, 4))
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert image.getpixel((1, 0)) == (255, 255, 255)  # transparency flattened onto white, as A1111
    mask = load_image(_png_bytes(Image.new("RGB", (8, 4), (255, 255, 255))), mode="L")
    assert (mask.mode, mask.getpixel((3, 3))) == ("L", 255)
    deep = Image.new("I;16", (4, 4), 65535)
    assert load_image(_png_bytes(deep), mode="L").getpixel((0, 0)) == 255


def test_exif_orientation_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: a phone portrait
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "blue").save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue()).size == (20, 40)


def test_save_png_atomic_with_parameters(tmp_path):
    path = tmp_path / "sub" / "out.png"
    image = Image.new("RGB", (16, 8), (10, 20, 30))
    assert save_png(image, path, "a cube\nSteps: 4, Sampler: Euler, CFG scale: 7") == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]  # no temp file left
    with Image.open(path) as saved:
        assert saved.info["parameters"] == "a cube\nSteps: 4, Sampler: Euler, CFG scale: 7"
        assert saved.convert("RGB").tobytes() == image.tobytes()
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_save_keeps_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "outputs" / "out.png"
    save_png(Image.new("RGB", (8, 8), "red"), path)
    before = path.read_bytes()
    with pytest.raises(OSError, match="cannot write mode CMYK as PNG"):
        save_png(Image.new("CMYK", (8, 8)), path, "params")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["out.png"]
