"""LoRAs in every wire format over real HTTP: the `loras` field (native, Stability JSON and multipart,
OpenAI with the official client's extra_body), the library listings (native and A1111), and errors."""

from __future__ import annotations

import base64
import json

import numpy as np
import openai
import pytest
import torch
from liveserver import decode_png, png
from lorakit import builtin_lora

from egaku.engine import GenerationRequest
from egaku.models.hashing import autov2, sha256_path

PROMPT = "a red circle in the center, blue background"


@pytest.fixture
def lora(egaku_home, live):
    """A LoRA for the built-in model, dropped into this test's library folder, and an embedding."""
    from egaku.models.embeddings import Embedding, write_embedding

    path = builtin_lora(egaku_home, "zqx", seed=1)
    width = live.service.engine.load(None).text_encoder.get_input_embeddings().weight.shape[1]
    write_embedding(egaku_home / "models" / "embeddings" / "mything.safetensors",
                    Embedding("mything", {"clip_l": torch.randn(2, width)}, step=40))
    return path


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(decode_png(data).convert("RGB"), dtype=np.int16)


def run_native(live, **body) -> tuple[dict, bytes]:
    r = live.post("/api/v1/jobs", json={"prompt": PROMPT, "steps": 3, "seed": 21, "sampler": "Euler", **body})
    assert r.status_code == 202, r.text
    job = live.wait_job(r.json()["id"])
    assert job["status"] == "succeeded", job
    return job, live.get(job["images"][0]["url"]).content


def test_native_job_with_a_lora(live, lora):
    job, data = run_native(live, loras=[{"name": "zqx", "weight": 0.8}])
    assert job["params"]["loras"] == [{"name": "zqx", "weight": 0.8}]
    assert job["params"]["prompt"] == PROMPT  # the prompt as sent; the tag is in the infotext only
    infotext = job["images"][0]["infotext"]
    assert infotext.startswith(PROMPT + " <lora:zqx:0.8>\n") and "Lora hashes: " in infotext
    assert decode_png(data).text["parameters"] == infotext
    _, plain = run_native(live)
    assert np.abs(pixels(data) - pixels(plain)).max() > 10  # the LoRA changes the image
    # the same image the engine draws itself for this request
    direct = live.service.engine.generate(GenerationRequest(PROMPT, steps=3, seed=21, sampler="Euler",
                                                            loras=[("zqx", 0.8)])).images[0]
    assert np.array_equal(pixels(data), np.asarray(direct.convert("RGB"), dtype=np.int16))
    # a prompt tag is the same thing
    _, tagged = run_native(live, prompt=PROMPT + " <lora:zqx:0.8>")
    assert np.array_equal(pixels(tagged), pixels(data))
    assert live.post("/api/v1/cost", json={"prompt": "x", "loras": [{"name": "zqx"}]}).json() == {"credits": 1}


def test_unknown_lora_is_404_in_every_format(live, lora):
    bad = [{"name": "nope", "weight": 1}]
    r = live.post("/api/v1/jobs", json={"prompt": "x", "loras": bad})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert "no LoRA named 'nope'" in r.json()["error"]["message"] and "zqx" in r.json()["error"]["message"]
    assert live.post("/api/v1/cost", json={"prompt": "x", "loras": bad}).status_code == 404
    for name in ("/etc/passwd", str(lora)):  # a file path is never read, even that of a library file
        r = live.post("/api/v1/jobs", json={"prompt": "x", "loras": [{"name": name}]})
        assert r.status_code == 404, r.text
    r = live.post("/api/v1/jobs", json={"prompt": f"x <lora:{lora}:1>"})
    assert r.status_code == 404, r.text

    r = live.post("/v1/generation/builtin/text-to-image", json={"text_prompts": [{"text": "x"}], "loras": bad})
    assert r.status_code == 404 and r.json()["name"] == "not_found" and "nope" in r.json()["message"]
    r = live.post("/v1/generation/builtin/image-to-image", files={"init_image": ("i.png", png(), "image/png")},
                  data={"text_prompts[0][text]": "x", "loras[0][name]": "nope"})
    assert r.status_code == 404 and r.json()["name"] == "not_found"

    with pytest.raises(openai.NotFoundError) as e:
        client(live).images.generate(prompt="x", extra_body={"loras": bad})
    assert e.value.body["code"] == "model_not_found" and "nope" in e.value.body["message"]

    r = live.post("/sdapi/v1/txt2img", json={"prompt": "x <lora:nope:0.5>", "steps": 2})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_weights_out_of_range_are_400(live, lora):
    for weight in (50, -10.5):
        r = live.post("/api/v1/jobs", json={"prompt": "x", "loras": [{"name": "zqx", "weight": weight}]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
        assert "between -10 and 10" in r.json()["error"]["message"]
    r = live.post("/api/v1/jobs", json={"prompt": "x", "loras": [{"name": "zqx"}] * 17})
    assert r.status_code == 400 and "at most 16" in r.json()["error"]["message"]
    r = live.post("/api/v1/jobs", json={"prompt": "x <lora:zqx:99>"})
    assert r.status_code == 400
    r = live.post("/v1/generation/builtin/text-to-image",
                  json={"text_prompts": [{"text": "x"}], "loras": [{"name": "zqx", "weight": 11}]})
    assert r.status_code == 400 and r.json()["name"] == "bad_request"
    r = live.post("/v1/generation/builtin/image-to-image", files={"init_image": ("i.png", png(), "image/png")},
                  data={"text_prompts[0][text]": "x", "loras[0][name]": "zqx", "loras[0][weight]": "strong"})
    assert r.status_code == 400 and "number" in r.json()["message"]
    with pytest.raises(openai.BadRequestError):
        client(live).images.generate(prompt="x", extra_body={"loras": [{"name": "zqx", "weight": 12}]})
    assert live.get("/api/v1/account").json()["balance"] > 0  # nothing was held for refused requests


def test_listings(live, lora):
    sha = sha256_path(lora)
    [entry] = live.get("/api/v1/loras").json()
    assert entry["name"] == "zqx" and entry["hash"] == autov2(sha) == sha[:10] and entry["sha256"] == sha
    assert entry["trigger_words"] == ["zqx style"] and entry["rank"] == 4
    [emb] = live.get("/api/v1/embeddings").json()
    assert (emb["name"], emb["vectors"], emb["trigger_words"]) == ("mything", 2, ["mything"])

    [a1111] = live.get("/sdapi/v1/loras").json()
    assert (a1111["name"], a1111["alias"], a1111["path"]) == ("zqx", "zqx", "loras/zqx.safetensors")
    assert a1111["metadata"]["ss_tag_frequency"] == {"data": {"zqx style": 3}}  # JSON values decoded, as A1111
    embeddings = live.get("/sdapi/v1/embeddings").json()
    assert embeddings["skipped"] == {}
    assert embeddings["loaded"]["mything"]["vectors"] == 2 and embeddings["loaded"]["mything"]["step"] == 40
    assert live.post("/sdapi/v1/refresh-loras").status_code == 200
    assert live.get("/sdapi/v1/loras", user=None).status_code == 401


def client(live, user: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=live.keys[user], max_retries=0, timeout=120)


def test_openai_client_extra_body_loras(live, lora):
    result = client(live).images.generate(
        prompt=PROMPT, size="128x128", response_format="b64_json",
        extra_body={"steps": 3, "seed": 21, "sampler": "Euler", "loras": [{"name": "zqx", "weight": 0.8}]})
    data = base64.b64decode(result.data[0].b64_json)
    assert "<lora:zqx:0.8>" in decode_png(data).text["parameters"]
    _, native = run_native(live, loras=[{"name": "zqx", "weight": 0.8}])
    assert np.array_equal(pixels(data), pixels(native))
    # edits are multipart: the client sends extra_body's list as loras[][name], loras[][weight]
    result = client(live).images.edit(
        image=("image.png", png((250, 250, 0), mode="RGBA"), "image/png"),
        mask=("mask.png", png((0, 0, 0, 0), mode="RGBA"), "image/png"), prompt="a floor", response_format="b64_json",
        extra_body={"steps": 2, "seed": 2, "loras": [{"name": "zqx", "weight": 0.5}, {"name": "zqx", "weight": 0.25}]})
    params = decode_png(base64.b64decode(result.data[0].b64_json)).text["parameters"]
    assert params.startswith("a floor <lora:zqx:0.5> <lora:zqx:0.25>\n")


def test_stability_json_and_multipart_loras(live, lora):
    r = live.post("/v1/generation/builtin/text-to-image", headers={"Accept": "image/png"},
                  json={"text_prompts": [{"text": "a green square"}], "steps": 2, "seed": 4,
                        "loras": [{"name": "zqx", "weight": 0.7}]})
    assert r.status_code == 200, r.text
    assert decode_png(r.content).text["parameters"].startswith("a green square <lora:zqx:0.7>\n")
    for data in ({"loras[0][name]": "zqx", "loras[0][weight]": "0.4"},
                 {"loras": json.dumps([{"name": "zqx", "weight": 0.4}])}):
        r = live.post("/v1/generation/builtin/image-to-image", headers={"Accept": "image/png"},
                      files={"init_image": ("i.png", png((0, 0, 255)), "image/png")},
                      data={"text_prompts[0][text]": "a green square", "steps": "2", "seed": "4", **data})
        assert r.status_code == 200, r.text
        assert decode_png(r.content).text["parameters"].startswith("a green square <lora:zqx:0.4>\n")
