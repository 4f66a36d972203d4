"""Several compatible requests in one forward pass (Engine.generate_many): the server's batching."""

import threading

import numpy as np
import pytest
from PIL import Image

from egaku.engine import Engine, GenerationCancelled, GenerationRequest
from egaku.errors import InvalidRequestError
from egaku.models.tiny import tiny_bundle


@pytest.fixture(scope="module")
def engine():
    engine = Engine(device="cpu", dtype="fp32")
    engine.add_bundle("sd1", tiny_bundle("sd1"))
    engine.add_bundle("sdxl", tiny_bundle("sdxl"))
    return engine


def request(**kw) -> GenerationRequest:
    kw = {"prompt": "a red circle on a blue square", "model": "sd1", "steps": 3, "seed": 42, "sampler": "Euler a", **kw}
    return GenerationRequest(**kw)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# Different prompts (one past 75 tokens, so chunk counts differ), negatives, seeds, CFG scales and
# rescales, batch sizes.
MIXED = [
    dict(prompt="a red circle", seed=1, cfg_scale=7.0),
    dict(prompt="a blue star, " * 30, negative_prompt="green", seed=2, cfg_scale=3.0, batch_size=2),
    dict(prompt="a (yellow:1.4) heart", seed=3, cfg_scale=9.5, cfg_rescale=0.7),
]


@pytest.mark.parametrize("model", ["sd1", "sdxl"])
def test_batched_requests_match_each_request_run_alone(engine, model):
    requests = [request(model=model, **kw) for kw in MIXED]
    assert len({engine.batch_key(r) for r in requests}) == 1
    calls = []
    batched = engine.generate_many(requests, progress=[lambda e, i=i: calls.append(i) for i in range(3)])
    for req, got in zip(requests, batched):
        alone = engine.generate(req)
        assert got.seeds == alone.seeds
        assert got.infotexts == alone.infotexts
        for a, b in zip(got.images, alone.images):
            assert np.abs(pixels(a) - pixels(b)).max() <= 1  # same image; the batch sums in another order
    assert sorted(set(calls)) == [0, 1, 2] and len(calls) == 9  # each request hears every step


def test_requests_that_cannot_share_a_pass_still_all_run(engine):
    mask = Image.new("L", (64, 64), 255)
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    requests = [request(steps=2), request(steps=3), request(init_image=init, mask=mask, strength=0.5)]
    assert engine.batch_key(requests[0]) != engine.batch_key(requests[1])
    assert engine.batch_key(requests[2]) is None
    results = engine.generate_many(requests)
    assert [len(r.images) for r in results] == [1, 1, 1]
    assert results[1].images[0].tobytes() == engine.generate(requests[1]).images[0].tobytes()


def test_one_bad_request_fails_alone(engine):
    results = engine.generate_many([request(seed=-5), request(seed=7)])
    assert isinstance(results[0], InvalidRequestError)
    assert "seed must be -1" in str(results[0])
    assert results[1].seeds == [7]


def test_cancelling_one_request_of_a_batch(engine):
    cancel = threading.Event()

    def stop_at_step_2(event):
        if event.step == 2:
            cancel.set()

    results = engine.generate_many(
        [request(seed=1, steps=4), request(seed=2, steps=4)], progress=[stop_at_step_2, None], cancel=[cancel, None]
    )
    assert isinstance(results[0], GenerationCancelled)
    alone = engine.generate(request(seed=2, steps=4))
    assert np.abs(pixels(results[1].images[0]) - pixels(alone.images[0])).max() <= 1


def test_cancelling_every_request(engine):
    events = [threading.Event(), threading.Event()]
    for e in events:
        e.set()
    results = engine.generate_many([request(seed=1), request(seed=2)], cancel=events)
    assert all(isinstance(r, GenerationCancelled) for r in results)


def test_compatible_requests_share_each_unet_call(engine):
    unet = engine.load("sd1").unet
    batch_sizes = []
    hook = unet.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    try:
        engine.generate_many([request(prompt="a red circle", seed=1), request(prompt="a blue star", seed=2, cfg_scale=4)])
    finally:
        hook.remove()
    assert batch_sizes == [4, 4, 4]  # 3 steps, each: 2 requests x (cond + uncond)
