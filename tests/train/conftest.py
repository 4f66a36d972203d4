"""Fixtures of the fine-tuning tests: a tiny captioned dataset and tiny base models on disk."""

import numpy as np
import pytest
from PIL import Image

COLORS = [(220, 30, 30), (30, 60, 220), (30, 160, 50), (245, 225, 30)]
SIZES = [(64, 64), (96, 64), (64, 128), (80, 80)]  # any size and aspect ratio: bucketed


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Four captioned images of a square on a plain background, of different sizes, and one broken file."""
    folder = tmp_path_factory.mktemp("data")
    for i, (color, (w, h)) in enumerate(zip(COLORS, SIZES)):
        a = np.zeros((h, w, 3), np.uint8)
        a[:] = color
        a[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255 - np.array(color)
        Image.fromarray(a).save(folder / f"im{i}.png")
        (folder / f"im{i}.txt").write_text(f"a zqx square, plain background {i}\n")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A function family -> a tiny random model exported as one .safetensors (loads like any checkpoint)."""
    from egaku.models.export import export_single_file
    from egaku.models.tiny import tiny_bundle

    folder = tmp_path_factory.mktemp("models")
    made = {}

    def get(family: str = "sd1"):
        if family not in made:
            made[family] = export_single_file(tiny_bundle(family), folder / f"tiny-{family}.safetensors")
        return made[family]

    return get


@pytest.fixture
def small(tiny_data):
    """build_config(method, **settings) with small, fast settings for tiny models on tiny_data."""
    from egaku.train.finetune import build_config

    def make(method: str, **kw):
        base = dict(data=str(tiny_data), rank=4, sample_steps=2, sample_prompts=["a zqx square"], eval_examples=2,
                    save_dtype="fp32", checkpoint_every=1000)
        return build_config(method, overrides=base | kw)

    return make
