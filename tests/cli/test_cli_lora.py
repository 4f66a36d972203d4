"""`egaku generate --lora NAME[:WEIGHT]` on the built-in model: applied, written in the PNG, replayed."""

import numpy as np
import pytest
import torch
from lorakit import builtin_lora
from PIL import Image

from egaku.cli.generate import _lora


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)  # (H, W, 3)


def test_lora_flag_values():
    assert _lora("style") == ("style", 1.0)
    assert _lora("style:0.8") == ("style", 0.8)
    assert _lora("my:style:-0.5") == ("my:style", -0.5)
    assert _lora("C:\\loras\\style.safetensors") == ("C:\\loras\\style.safetensors", 1.0)
    with pytest.raises(Exception, match="must be a number"):
        _lora("style:strong")


@pytest.fixture
def single_thread():
    """Identical pixels need the same thread count for the run and its replay."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_generate_with_lora_then_replay(egaku_here, egaku_home, tmp_path, single_thread, one_line_error):
    builtin_lora(egaku_home, "zqx", seed=1)
    common = ("--steps", "3", "--seed", "9", "--sampler", "Euler", "-q")
    assert egaku_here("generate", "a red circle", *common, "-o", "plain.png").returncode == 0
    proc = egaku_here("generate", "a red circle", *common, "--lora", "zqx:0.8", "--lora", "zqx:0.1", "-o", "lora.png")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "lora.png") as im:
        stored = im.info["parameters"]
    assert stored.startswith("a red circle <lora:zqx:0.8> <lora:zqx:0.1>\n") and "Lora hashes: " in stored
    assert np.abs(pixels(tmp_path / "lora.png") - pixels(tmp_path / "plain.png")).max() > 10

    # the PNG alone reproduces the image (the tags are in its prompt line)
    assert egaku_here("generate", "--from", "lora.png", "-q", "-o", "replay.png").returncode == 0
    assert np.array_equal(pixels(tmp_path / "replay.png"), pixels(tmp_path / "lora.png"))

    # an unknown LoRA fails at once, in one line, before any model is loaded
    one_line_error(egaku_here("generate", "x", "--lora", "nope:0.5", "-o", "x.png"), "no lora named 'nope'")
    assert not (tmp_path / "x.png").exists()
    one_line_error(egaku_here("generate", "x", "--lora", "zqx:11", "-o", "x.png"), "between -10 and 10")
