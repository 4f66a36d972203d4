"""LoRAs and embeddings through the engine on tiny models: weights 0 and 1, several at once, prompt
tags and the `loras` field, the base model bit-identical afterwards, batching, errors, embeddings."""

import numpy as np
import pytest
import torch

from egaku.engine import Engine, GenerationRequest
from egaku.errors import InvalidRequestError, ModelLoadError, ModelNotFoundError
from egaku.models.embeddings import Embedding, write_embedding
from egaku.models.lora import LoraLayer, kohya_name, write_kohya
from egaku.models.tiny import tiny_bundle

TARGETS = ("to_q", "to_k", "to_v", "q_proj", "v_proj")


@pytest.fixture(scope="module")
def engine():
    engine = Engine(device="cpu", dtype="fp32")
    engine.add_bundle("sd1", tiny_bundle("sd1"))
    engine.add_bundle("sdxl", tiny_bundle("sdxl"))
    return engine


def write_random_lora(bundle, path, *, seed: int, attrs=("unet", "text_encoder"), rank=4, alpha=2.0, scale=0.4):
    """A kohya-layout LoRA with random weights on the attention projections of `attrs`."""
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for attr in attrs:
        for name, m in getattr(bundle, attr).named_modules():
            if isinstance(m, torch.nn.Linear) and name.endswith(TARGETS):
                layers[kohya_name(bundle, attr, name)] = LoraLayer(
                    torch.randn(rank, m.in_features, generator=g) * scale, torch.randn(m.out_features, rank, generator=g) * scale, alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_kohya(path, layers, {"ss_tag_frequency": '{"data": {"zqx style": 3}}'})


@pytest.fixture
def loras(engine, egaku_home):
    """Three LoRAs in the library folder: a and b (UNet + text encoder), te (text encoder only), for sd1."""
    bundle = engine.load("sd1")
    folder = egaku_home / "models" / "loras"
    write_random_lora(bundle, folder / "a.safetensors", seed=1)
    write_random_lora(bundle, folder / "b.safetensors", seed=2)
    write_random_lora(bundle, folder / "te.safetensors", seed=3, attrs=("text_encoder",))
    write_random_lora(engine.load("sdxl"), folder / "xl.safetensors", seed=4)
    return folder


def image(engine, **kw) -> np.ndarray:
    kw = {"prompt": "a red circle", "model": "sd1", "steps": 2, "seed": 3, "sampler": "Euler", **kw}
    return np.asarray(engine.generate(GenerationRequest(**kw)).images[0], dtype=np.int16)


def test_weight_zero_is_the_base_model_and_weight_one_changes_it(engine, loras):
    base = image(engine)
    assert np.array_equal(image(engine, prompt="a red circle <lora:a:0>"), base)
    assert np.array_equal(image(engine, loras=[("a", 0.0)]), base)
    with_lora = image(engine, loras=[("a", 1.0)])
    assert np.abs(with_lora - base).max() > 10
    # the tag and the field are the same thing
    assert np.array_equal(image(engine, prompt="a red circle <lora:a:1>"), with_lora)


def test_base_weights_are_bit_identical_after_a_lora_request(engine, loras):
    bundle = engine.load("sd1")
    before = {k: v.clone() for m in (bundle.unet, bundle.text_encoder) for k, v in m.state_dict().items()}
    image(engine, loras=[("a", 0.8), ("b", -0.5)])
    after = {k: v for m in (bundle.unet, bundle.text_encoder) for k, v in m.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_several_loras_at_once(engine, loras):
    a, b = image(engine, loras=[("a", 1.0)]), image(engine, loras=[("b", 1.0)])
    both = image(engine, prompt="a red circle <lora:b:1>", loras=[("a", 1.0)])
    assert np.abs(both - a).max() > 10 and np.abs(both - b).max() > 10
    # deltas add: a at 0.5 twice is a at 1 (0.5 * d + 0.5 * d == d exactly in float32)
    assert np.array_equal(image(engine, loras=[("a", 0.5), ("a", 0.5)]), a)


def test_text_encoder_lora_and_the_prompt_cache(engine, loras):
    base = image(engine)
    changed = image(engine, loras=[("te", 1.0)])  # same prompt text: the cached encoding must not be reused
    assert np.abs(changed - base).max() > 10
    assert np.array_equal(image(engine), base)  # and the base encoding is back after the request


def test_requests_with_different_loras_never_share_a_batch(engine, loras):
    plain = GenerationRequest("a red circle", model="sd1", steps=2, seed=3, sampler="Euler")
    tagged = plain.with_(prompt="a red circle <lora:a:1>")
    field = plain.with_(loras=[("a", 1.0)])
    assert Engine.batch_key(plain) != Engine.batch_key(tagged)
    assert Engine.batch_key(tagged) == Engine.batch_key(field)
    results = engine.generate_many([plain, field, plain.with_(seed=4, loras=[("b", 1.0)])])
    alone = [engine.generate(r) for r in (plain, field, plain.with_(seed=4, loras=[("b", 1.0)]))]
    for r, a in zip(results, alone):
        assert np.array_equal(np.asarray(r.images[0]), np.asarray(a.images[0]))


def test_infotext_names_the_lora_hashes(engine, loras):
    from egaku.models.lora import addnet_hash_file

    result = engine.generate(GenerationRequest("a red circle <lora:a:0.7>", model="sd1", steps=2, seed=3))
    assert result.infotexts[0].startswith("a red circle <lora:a:0.7>\n")  # the prompt as written, as A1111
    assert f'Lora hashes: "a: {addnet_hash_file(loras / "a.safetensors")[:12]}"' in result.infotexts[0]


def test_lora_errors(engine, loras):
    bundle = engine.load("sd1")
    before = {k: v.clone() for k, v in bundle.unet.state_dict().items()}
    with pytest.raises(ModelNotFoundError, match="no lora named 'nope'"):
        image(engine, prompt="x <lora:nope:1>")
    with pytest.raises(ModelLoadError, match="does not fit model"):
        image(engine, loras=[("a", 1.0), ("xl", 1.0)])  # an SDXL LoRA on an SD 1.x model
    assert all(torch.equal(before[k], v) for k, v in bundle.unet.state_dict().items())
    with pytest.raises(InvalidRequestError, match="weights must be"):
        image(engine, loras=[("a", 50.0)])
    with pytest.raises(InvalidRequestError, match="not a number"):
        image(engine, prompt="x <lora:a:strong>")
    with pytest.raises(InvalidRequestError, match="pair"):
        image(engine, loras=["a"])


def test_sdxl_lora(engine, loras):
    base = image(engine, model="sdxl")
    assert np.abs(image(engine, model="sdxl", loras=[("xl", 1.0)]) - base).max() > 10
    assert np.array_equal(image(engine, model="sdxl"), base)


def _rows(encoder, tokenizer, words: str) -> torch.Tensor:
    ids = tokenizer(words, add_special_tokens=False).input_ids
    return encoder.get_input_embeddings().weight[ids].detach().clone()  # (N, D)


def test_embedding_by_name_in_the_prompt(engine, egaku_home):
    bundle = engine.load("sd1")
    folder = egaku_home / "models" / "embeddings"
    # an embedding whose two vectors are the token vectors of "blue star": the word must act as those two words
    write_embedding(folder / "MyThing.safetensors", Embedding("MyThing", {"clip_l": _rows(bundle.text_encoder, bundle.tokenizer, "blue star")}))
    write_embedding(folder / "wide.safetensors", Embedding("wide", {"clip_l": torch.randn(1, 768)}))  # an SD 1.5-size one
    assert np.array_equal(image(engine, prompt="a mything, white background"), image(engine, prompt="a blue star, white background"))
    assert np.array_equal(image(engine, negative_prompt="(MyThing:1.2)"), image(engine, negative_prompt="(blue star:1.2)"))
    # made for another text encoder width: skipped, the word stays plain text (as A1111)
    result = engine.generate(GenerationRequest("a wide circle", model="sd1", steps=2, seed=3, sampler="Euler"))
    assert "TI hashes" not in result.infotexts[0]
    with_ti = engine.generate(GenerationRequest("a MyThing", model="sd1", steps=2, seed=3, sampler="Euler"))
    assert "TI hashes: \"MyThing: " in with_ti.infotexts[0]


def test_sdxl_embedding_has_vectors_for_both_encoders(engine, egaku_home):
    bundle = engine.load("sdxl")
    vectors = {"clip_l": _rows(bundle.text_encoder, bundle.tokenizer, "green"),
               "clip_g": _rows(bundle.text_encoder_2, bundle.tokenizer_2, "green")}
    write_embedding(egaku_home / "models" / "embeddings" / "xlgreen.safetensors", Embedding("xlgreen", vectors))
    assert np.array_equal(image(engine, model="sdxl", prompt="a xlgreen heart"), image(engine, model="sdxl", prompt="a green heart"))
