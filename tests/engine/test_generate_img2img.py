"""img2img and inpainting through the engine with tiny random-weight models.

The tiny VAE has random weights, so it does not reproduce an image: "close to the init image" is
measured against the strength-0 output (the init image after one VAE round trip).
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from egaku.engine import Engine, GenerationRequest
from egaku.errors import InvalidRequestError
from egaku.models.tiny import tiny_bundle


@pytest.fixture(scope="module")
def engine():
    engine = Engine(device="cpu", dtype="fp32")
    engine.add_bundle("sd1", tiny_bundle("sd1"))
    engine.add_bundle("sd1-inpaint", tiny_bundle("sd1", inpaint=True))
    engine.add_bundle("sdxl-inpaint", tiny_bundle("sdxl", inpaint=True))
    return engine


@pytest.fixture(scope="module")
def init_image():
    image = Image.new("RGB", (64, 64), (30, 60, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, 40, 40), fill=(220, 40, 40))
    draw.rectangle((36, 30, 60, 60), fill=(240, 220, 30))
    return image


@pytest.fixture(scope="module")
def mask():
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)  # repaint the left half
    return mask


def request(**kw) -> GenerationRequest:
    kw = {"prompt": "a red circle", "model": "sd1", "steps": 4, "seed": 3, "sampler": "Euler", **kw}
    return GenerationRequest(**kw)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_strength_decides_how_far_the_image_moves(engine, init_image):
    start = pixels(engine.generate(request(init_image=init_image, strength=0.0)).images[0])
    low = pixels(engine.generate(request(init_image=init_image, strength=0.25)).images[0])
    high = pixels(engine.generate(request(init_image=init_image, strength=0.9)).images[0])
    txt2img = pixels(engine.generate(request()).images[0])
    assert np.abs(start - txt2img).mean() > 5  # strength 0 keeps the init image, not noise
    assert np.abs(low - start).mean() < np.abs(high - start).mean()
    assert np.abs(low - start).mean() > 0  # it did move


def test_img2img_runs_strength_times_steps(engine, init_image):
    events = []
    result = engine.generate(request(init_image=init_image, strength=0.5, steps=6), progress=events.append)
    assert [e.step for e in events] == [1, 2, 3] and events[-1].total == 3
    assert "Denoising strength: 0.5" in result.infotexts[0]


def test_init_image_is_resized_to_the_request(engine, init_image):
    result = engine.generate(request(init_image=init_image.resize((100, 80)), width=64, height=64, strength=0.5))
    assert result.images[0].size == (64, 64)


def test_img2img_batch_reproduces(engine, init_image):
    batch = engine.generate(request(init_image=init_image, strength=0.6, batch_size=2, sampler="Euler a"))
    alone = engine.generate(request(init_image=init_image, strength=0.6, seed=4, sampler="Euler a")).images[0]
    assert np.abs(pixels(batch.images[1]) - pixels(alone)).max() <= 1


@pytest.mark.parametrize("model", ["sd1", "sd1-inpaint", "sdxl-inpaint"])
@pytest.mark.parametrize("strength", [1.0, 0.75])
def test_inpainting_keeps_the_unmasked_pixels(engine, init_image, mask, model, strength):
    result = engine.generate(request(model=model, init_image=init_image, mask=mask, strength=strength, mask_blur=4))
    out, original = pixels(result.images[0]), pixels(init_image)
    # right of the mask plus the blur's reach: exactly the init image (A1111's overlay)
    assert np.array_equal(out[:, 48:], original[:, 48:])
    # deep inside the mask: repainted
    assert np.abs(out[:, :16] - original[:, :16]).mean() > 5
    assert "Mask blur: 4" in result.infotexts[0]


def test_inpainting_without_blur_keeps_everything_outside(engine, init_image, mask):
    result = engine.generate(request(init_image=init_image, mask=mask, mask_blur=0, strength=1.0))
    out, original = pixels(result.images[0]), pixels(init_image)
    assert np.array_equal(out[:, 32:], original[:, 32:])
    assert not np.array_equal(out[:, :32], original[:, :32])


@pytest.mark.parametrize("model", ["sd1", "sd1-inpaint"])
def test_white_mask_repaints_like_txt2img(engine, init_image, model):
    """Masking everything at strength 1 is txt2img: same noise, nothing kept (for 9 channels: A1111's
    txt2img conditioning of an inpainting model is the same mask of ones and grey image)."""
    white = Image.new("L", (64, 64), 255)
    inpainted = engine.generate(request(model=model, init_image=init_image, mask=white, mask_blur=0, strength=1.0))
    txt2img = engine.generate(request(model=model))
    assert inpainted.images[0].tobytes() == txt2img.images[0].tobytes()


def test_four_channel_inpainting_blends_in_latent_space(engine, init_image, mask):
    """The kept half follows the init image at every step (diffusers' 4-channel blending), so the
    repainted half sees it: it differs from txt2img with the same seed, which starts from the same noise."""
    inpainted = pixels(engine.generate(request(init_image=init_image, mask=mask, mask_blur=0, strength=1.0)).images[0])
    txt2img = pixels(engine.generate(request()).images[0])
    assert np.abs(inpainted[:, :16] - txt2img[:, :16]).mean() > 1.0


def test_mask_without_init_image(engine, mask):
    with pytest.raises(InvalidRequestError, match="a mask needs an init image"):
        engine.generate(request(mask=mask))
