"""LoRAs given in a request's `loras` field survive in the infotext (as A1111 `<lora:name:w>` tags in the
prompt line), so the PNG's parameters alone reproduce the image bit for bit."""

import numpy as np
import pytest
from lorakit import builtin_lora

from egaku.engine import Engine, GenerationRequest
from egaku.engine.images import save_png
from egaku.engine.metadata import (
    format_parameters, parse_parameters, prompt_with_loras, read_parameters, request_kwargs_from_parameters,
)


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu", dtype="fp32")


@pytest.fixture
def loras(egaku_home):
    builtin_lora(egaku_home, "zqx", seed=1)
    builtin_lora(egaku_home, "other", seed=2)


def replay(result, tmp_path) -> GenerationRequest:
    path = save_png(result.images[0], tmp_path / "out.png", result.infotexts[0])
    return GenerationRequest(**request_kwargs_from_parameters(parse_parameters(read_parameters(path))))


def test_prompt_with_loras():
    assert prompt_with_loras("a cat", [("style", 0.8), ("b", 1.0)]) == "a cat <lora:style:0.8> <lora:b:1>"
    assert prompt_with_loras("", [("style", -0.25)]) == "<lora:style:-0.25>"
    assert prompt_with_loras("a cat", []) == "a cat"


def test_field_loras_replay_from_the_png(engine, loras, tmp_path):
    request = GenerationRequest("a red circle", steps=3, seed=11, sampler="Euler", loras=[("zqx", 0.75)])
    result = engine.generate(request)
    base = engine.generate(request.with_(loras=[]))
    pixels = np.asarray(result.images[0], dtype=np.int16)
    assert np.abs(pixels - np.asarray(base.images[0], dtype=np.int16)).max() > 10  # the LoRA changed the image
    assert result.infotexts[0].startswith("a red circle <lora:zqx:0.75>\n")
    assert "Lora hashes: " in result.infotexts[0]

    again = replay(result, tmp_path)
    assert again.prompt == "a red circle <lora:zqx:0.75>" and again.loras == []
    replayed = engine.generate(again)
    assert np.array_equal(np.asarray(replayed.images[0]), np.asarray(result.images[0]))
    assert replayed.infotexts[0] == result.infotexts[0]  # a replay of a replay is the same image again


def test_tags_and_field_together_keep_their_order(engine, loras, tmp_path):
    # the same modules get two deltas: the replay must sum them in the same order to match bit for bit
    request = GenerationRequest("a blue square <lora:other:0.5>", steps=3, seed=5, sampler="Euler",
                                loras=[("zqx", 0.6)])
    result = engine.generate(request)
    assert result.infotexts[0].startswith("a blue square <lora:other:0.5> <lora:zqx:0.6>\n")
    replayed = engine.generate(replay(result, tmp_path))
    assert np.array_equal(np.asarray(replayed.images[0]), np.asarray(result.images[0]))


def test_infotext_without_loras_is_unchanged():
    request = GenerationRequest("a cat", steps=2, seed=1, sampler="Euler", width=64, height=64)
    text = format_parameters(request, seed=1, model_name="m", model_hash="abc")
    assert text.splitlines()[0] == "a cat"
