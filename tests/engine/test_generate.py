"""txt2img through the engine with tiny random-weight models: samplers, seeds, batches, prompts, callbacks."""

import threading

import numpy as np
import pytest
import torch

from egaku.engine import Engine, GenerationCancelled, GenerationRequest, list_samplers
from egaku.engine.denoise import rescale_guidance
from egaku.engine.metadata import parse_parameters, request_kwargs_from_parameters
from egaku.errors import InvalidRequestError
from egaku.models.tiny import tiny_bundle

STOCHASTIC = ["Euler a", "DPM++ 2M SDE", "DPM++ SDE Karras", "DDPM", "DPM++ 2S a"]


@pytest.fixture(scope="module")
def engine():
    engine = Engine(device="cpu", dtype="fp32")
    engine.add_bundle("sd1", tiny_bundle("sd1"))
    engine.add_bundle("sd2-v", tiny_bundle("sd2", v_prediction=True))
    engine.add_bundle("sdxl", tiny_bundle("sdxl"))
    return engine


def request(**kw) -> GenerationRequest:
    kw = {"prompt": "a red circle on a blue square", "model": "sd1", "steps": 3, "seed": 42, "sampler": "Euler", **kw}
    return GenerationRequest(**kw)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("sampler", [s.name for s in list_samplers()])
def test_every_sampler_makes_an_image(engine, sampler):
    result = engine.generate(request(sampler=sampler, steps=2))
    a = pixels(result.images[0])
    assert a.shape == (64, 64, 3)
    assert a.std() > 1.0  # not a constant image
    assert f"Sampler: {sampler}," in result.infotexts[0]


def test_unknown_sampler(engine):
    with pytest.raises(InvalidRequestError, match="unknown sampler 'Eulr'; choose one of: Euler, Euler a"):
        engine.generate(request(sampler="Eulr"))


def test_alias_is_resolved_to_the_a1111_name(engine):
    result = engine.generate(request(sampler="k_euler_a"))
    assert result.request.sampler == "Euler a"
    assert "Sampler: Euler a," in result.infotexts[0]


def test_same_seed_same_pixels_and_different_seeds_differ(engine):
    a = engine.generate(request(sampler="Euler a")).images[0]
    b = engine.generate(request(sampler="Euler a")).images[0]
    c = engine.generate(request(sampler="Euler a", seed=43)).images[0]
    assert a.tobytes() == b.tobytes()
    assert np.abs(pixels(a) - pixels(c)).mean() > 1.0


@pytest.mark.parametrize("sampler", ["Euler", *STOCHASTIC])
def test_image_i_of_a_batch_equals_seed_plus_i_alone(engine, sampler):
    batch = engine.generate(request(sampler=sampler, batch_size=3, seed=7))
    assert batch.seeds == [7, 8, 9]
    for i in range(3):
        alone = engine.generate(request(sampler=sampler, seed=7 + i)).images[0]
        # the UNet runs a batch of 6 vs 2: float sums may differ in the last bit, never more than 1/255
        assert np.abs(pixels(batch.images[i]) - pixels(alone)).max() <= 1, (sampler, i)


def test_batch_count_continues_the_seeds(engine):
    result = engine.generate(request(batch_size=2, batch_count=2, seed=100))
    assert result.seeds == [100, 101, 102, 103]
    assert [f"Seed: {s}," in t for s, t in zip(result.seeds, result.infotexts)] == [True] * 4
    alone = engine.generate(request(seed=102)).images[0]
    assert np.abs(pixels(result.images[2]) - pixels(alone)).max() <= 1


def test_random_seed_is_reported(engine):
    result = engine.generate(request(seed=-1))
    seed = result.request.seed
    assert 0 <= seed < 2**32 and result.seeds == [seed]
    again = engine.generate(request(seed=seed)).images[0]
    assert again.tobytes() == result.images[0].tobytes()


def test_defaults_come_from_the_model(engine):
    result = engine.generate(request())
    assert (result.request.width, result.request.height) == (64, 64)
    assert result.model_name == "tiny-sd1"
    assert "Size: 64x64" in result.infotexts[0]
    assert set(result.timings) == {"load", "prompt", "denoise", "decode", "total"}


def test_non_square_size(engine):
    image = engine.generate(request(width=96, height=64)).images[0]
    assert image.size == (96, 64)


def test_negative_prompt_and_clip_skip_change_the_image(engine):
    base = pixels(engine.generate(request()).images[0])
    negative = pixels(engine.generate(request(negative_prompt="green triangles")).images[0])
    skipped = pixels(engine.generate(request(clip_skip=2)).images[0])
    assert np.abs(base - negative).mean() > 0.5
    assert np.abs(base - skipped).mean() > 0.5


def test_cfg_one_skips_the_negative(engine):
    # with cfg 1 the negative prompt has no effect (no unconditional pass)
    a = engine.generate(request(cfg_scale=1.0)).images[0]
    b = engine.generate(request(cfg_scale=1.0, negative_prompt="green triangles")).images[0]
    assert a.tobytes() == b.tobytes()


def test_cfg_rescale_changes_the_image_and_is_recorded(engine):
    plain = engine.generate(request(cfg_scale=12.0))
    off = engine.generate(request(cfg_scale=12.0, cfg_rescale=0.0))
    rescaled = engine.generate(request(cfg_scale=12.0, cfg_rescale=0.7))
    assert off.images[0].tobytes() == plain.images[0].tobytes()  # 0 is plain CFG, bit for bit
    assert np.abs(pixels(rescaled.images[0]) - pixels(plain.images[0])).mean() > 0.5
    assert "CFG Rescale phi: 0.7," in rescaled.infotexts[0] and "CFG Rescale" not in plain.infotexts[0]
    assert request_kwargs_from_parameters(parse_parameters(rescaled.infotexts[0]))["cfg_rescale"] == 0.7
    with pytest.raises(InvalidRequestError, match="cfg rescale must be between 0 and 1"):
        engine.generate(request(cfg_rescale=1.5))


def test_rescale_guidance_matches_the_conditional_std_per_image():
    gen = torch.Generator().manual_seed(0)
    cond = torch.randn(2, 4, 8, 8, generator=gen)
    guided = 3.0 * torch.randn(2, 4, 8, 8, generator=gen) + 1.0
    phi = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    out = rescale_guidance(guided, cond, phi)
    torch.testing.assert_close(out[0].std(), cond[0].std())
    torch.testing.assert_close(out[1], guided[1])
    half = rescale_guidance(guided, cond, torch.full((2, 1, 1, 1), 0.5))
    torch.testing.assert_close(half[1], 0.5 * guided[1] + 0.5 * guided[1] * cond[1].std() / guided[1].std())


def test_long_prompt_against_short_negative(engine):
    long_prompt = ", ".join(["a red circle on a blue square"] * 15)  # > 75 tokens: two chunks
    image = engine.generate(request(prompt=long_prompt, negative_prompt="blur")).images[0]
    assert pixels(image).std() > 1.0


def test_prompt_editing_switches_the_prompt_part_way(engine):
    red = pixels(engine.generate(request(prompt="a red circle")).images[0])
    green = pixels(engine.generate(request(prompt="a green circle")).images[0])
    edited = pixels(engine.generate(request(prompt="a [red:green:1] circle")).images[0])  # green from step 1 of 0..2
    assert np.abs(red - edited).mean() > 0.1
    assert np.abs(green - edited).mean() > 0.1


@pytest.mark.parametrize("model", ["sd2-v", "sdxl"])
def test_sd2_v_prediction_and_sdxl(engine, model):
    result = engine.generate(request(model=model, sampler="DPM++ 2M Karras", batch_size=2))
    assert [img.size for img in result.images] == [(64, 64), (64, 64)]
    assert all(pixels(img).std() > 1.0 for img in result.images)
    assert result.images[0].tobytes() != result.images[1].tobytes()


def test_progress_once_per_step(engine):
    events = []
    engine.generate(request(steps=4, batch_count=2), progress=events.append)
    assert [(e.step, e.total, e.batch_index, e.image_index) for e in events] == [
        (s, 4, b, b) for b in range(2) for s in range(1, 5)
    ]
    previews = [e.preview for e in events if e.preview is not None]
    assert len(previews) == 2 and previews[0].size == (8, 8)  # every 4th step, one latent pixel per 8x8


def test_progress_counts_sampler_steps_for_second_order_samplers(engine):
    events = []
    engine.generate(request(sampler="Heun", steps=3), progress=events.append)
    assert [(e.step, e.total) for e in events] == [(1, 3), (2, 3), (3, 3)]


def test_cancel(engine):
    cancel = threading.Event()
    events = []

    def on_progress(event):
        events.append(event.step)
        if event.step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled, match="generation cancelled"):
        engine.generate(request(steps=4), progress=on_progress, cancel=cancel)
    assert events == [1, 2]


def test_cpu_offload_gives_the_same_image(engine):
    offloaded = Engine(device="cpu", dtype="fp32", cpu_offload=True)
    offloaded.add_bundle("sd1", tiny_bundle("sd1"))  # same seed: same weights as the engine's sd1
    assert offloaded.load("sd1").extra["_cpu_offload"] is True
    a = offloaded.generate(request(sampler="Euler a")).images[0]
    b = engine.generate(request(sampler="Euler a")).images[0]
    assert a.tobytes() == b.tobytes()


def test_unknown_model(tmp_path):
    engine = Engine(device="cpu", dtype="fp32")
    from egaku.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        engine.generate(request(model=str(tmp_path / "missing.safetensors")))
