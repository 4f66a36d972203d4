"""Bad input fails fast: one `error:` line, exit 1 (2 for usage errors), no traceback, no output file.

These all fail before a model is loaded (most before torch is imported), so the model named by
--model need not exist.
"""

import struct
import zlib

import pytest
from PIL import Image

from egaku.engine.images import save_png

GENERATE = ("generate", "a red cube", "-m", "nowhere", "--quiet")


def _bomb_png() -> bytes:
    """About a hundred bytes on disk, declaring 30000x30000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 99)) + chunk(b"IEND", b"")


@pytest.fixture
def images(tmp_path):
    Image.new("RGB", (64, 64), "gray").save(tmp_path / "init.png")
    Image.new("L", (64, 48), 255).save(tmp_path / "mask48.png")
    (tmp_path / "notimage.png").write_text("this is text, not pixels")
    (tmp_path / "bomb.png").write_bytes(_bomb_png())
    return tmp_path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("-W", "65"), ["width must be a multiple of 8, got 65"]),
        (("-W", "4096", "-H", "4096"), ["width must be between 64 and 2048, got 4096"]),
        (("--steps", "0"), ["steps must be between 1 and 150, got 0"]),
        (("--steps", "1000"), ["steps must be between 1 and 150, got 1000"]),
        (("--cfg", "31"), ["cfg scale must be between 0 and 30.0, got 31.0"]),
        (("--cfg", "-1"), ["cfg scale must be between 0 and 30.0"]),
        (("--init", "notimage.png"), ["init image notimage.png is not an image (cannot identify image file"]),
        (("--init", "missing.png"), ["init image missing.png does not exist"]),
        (("--init", "bomb.png"), ["init image bomb.png declares too many pixels"]),
        (("--init", "init.png", "--mask", "mask48.png"), ["mask is 64x48 but the init image is 64x64"]),
        (("--mask", "mask48.png"), ["a mask needs an init image"]),
        (("-o", "out.jpg"), ["output must be a .png file"]),
        (("-o", "out-{n}.png"), ["may only use {i} and {seed}"]),
        (("--from", "init.png"), ["init.png holds no generation parameters to replay"]),
    ],
)
def test_bad_generate_input(egaku, one_line_error, images, args, fragments):
    proc = egaku(*GENERATE, *args)
    one_line_error(proc, *fragments)
    assert proc.stdout == ""
    assert not list(images.glob("out*"))


def test_unknown_sampler_fails_before_loading_the_model(egaku, one_line_error, tmp_path):
    # The model does not exist either: the sampler is checked first, so the sampler is named.
    proc = egaku(*GENERATE, "--sampler", "Euler b")
    one_line_error(proc, "unknown sampler 'Euler b'", "Euler a")
    assert not list(tmp_path.glob("*.png"))


def test_prompt_needed_and_usage_errors(egaku, one_line_error):
    one_line_error(egaku("generate", "-m", "x"), "a prompt is needed")
    usage = egaku("generate", "a cube", "--steps", "many")
    assert usage.returncode == 2
    assert "invalid int value: 'many'" in usage.stderr and "Traceback" not in usage.stderr
    assert egaku("generate", "a cube", "--device", "tpu").returncode == 2
    assert egaku().returncode == 2  # no command: help on stderr


def test_info_prints_stored_parameters(egaku, one_line_error, tmp_path):
    text = 'a cat\nNegative prompt: dog\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 9, Size: 64x64, Model: "a, b"'
    save_png(Image.new("RGB", (64, 64)), tmp_path / "cat.png", text)
    proc = egaku("info", "cat.png")
    assert (proc.returncode, proc.stdout) == (0, text + "\n")
    parsed = egaku("info", "cat.png", "--json")
    assert parsed.returncode == 0
    import json

    fields = json.loads(parsed.stdout)
    assert fields["Prompt"] == "a cat" and fields["Seed"] == 9 and fields["Model"] == "a, b"
    assert (fields["Size-1"], fields["Size-2"]) == (64, 64)
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    one_line_error(egaku("info", "plain.png"), "plain.png holds no generation parameters")
    one_line_error(egaku("info", "missing.png"), "missing.png does not exist")


def test_samplers_table(egaku, capsys):
    import json

    from egaku.cli.main import main

    proc = egaku("samplers", "--json")
    assert proc.returncode == 0
    names = [s["name"] for s in json.loads(proc.stdout)]
    assert names[:2] == ["Euler", "Euler a"] and "DPM++ 2M Karras" in names
    assert main(["samplers"]) == 0  # the same code in-process: one torch import fewer
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "SCHEDULER", "DESCRIPTION"]
    assert any(line.startswith("DPM++ 2M Karras ") for line in table)
