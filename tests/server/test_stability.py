"""Stability REST v1 over real HTTP, shaped as Stability's own examples send it."""

from __future__ import annotations

import base64
import io

import numpy as np
import requests
from liveserver import decode_png, png


def _t2i(live, body: dict, user: str = "alice", engine: str = "builtin", **kw) -> requests.Response:
    return live.post(f"/v1/generation/{engine}/text-to-image", user, json=body, **kw)


def test_engines_account_balance(live):
    engines = live.get("/v1/engines/list").json()
    assert engines[0]["id"] == "builtin" and engines[0]["type"] == "PICTURE"
    account = live.get("/v1/user/account").json()
    assert set(account) == {"id", "email", "profile_picture", "organizations"}
    balance = live.get("/v1/user/balance", "bob").json()
    assert balance == {"credits": 1000.0}


def test_text_to_image_json_artifacts(live):
    body = {"text_prompts": [{"text": "a yellow star", "weight": 1}, {"text": "blurry", "weight": -1},
                             {"text": "bright", "weight": 1.3}],
            "cfg_scale": 6, "samples": 2, "steps": 3, "seed": 1234, "sampler": "K_DPMPP_2M",
            "style_preset": "pixel-art"}
    r = _t2i(live, body)
    assert r.status_code == 200, r.text
    artifacts = r.json()["artifacts"]
    assert [a["seed"] for a in artifacts] == [1234, 1235]
    assert all(a["finishReason"] == "SUCCESS" for a in artifacts)
    im = decode_png(base64.b64decode(artifacts[0]["base64"]))
    assert im.size == (128, 128)  # the built-in engine's native size when none is given
    params = im.text["parameters"]
    assert params.startswith("a yellow star, (bright:1.3), pixel-art")
    assert "Negative prompt: blurry" in params and "Sampler: DPM++ 2M" in params and "CFG scale: 6" in params


def test_accept_png_returns_raw_png_with_headers(live):
    r = _t2i(live, {"text_prompts": [{"text": "a red heart"}], "steps": 2, "seed": 99, "width": 192, "height": 128},
             headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["Seed"] == "99" and r.headers["Finish-Reason"] == "SUCCESS"
    assert decode_png(r.content).size == (192, 128)
    r = _t2i(live, {"text_prompts": [{"text": "a red heart"}], "samples": 2}, headers={"Accept": "image/png"})
    assert r.status_code == 400 and r.json()["name"] == "invalid_samples"


def test_errors_use_stability_names(live):
    cases = [
        (_t2i(live, {"text_prompts": [{"text": "x"}], "height": 100}), 400, "invalid_height_or_width"),
        (_t2i(live, {"text_prompts": [{"text": "x"}], "samples": 11}), 400, "invalid_samples"),
        (_t2i(live, {"text_prompts": []}), 400, "invalid_prompts"),
        (_t2i(live, {"text_prompts": [{"text": "only negative", "weight": -1}]}), 400, "invalid_prompts"),
        (_t2i(live, {"text_prompts": [{"text": "x"}], "sampler": "K_NOPE"}), 400, "bad_request"),
        (_t2i(live, {"text_prompts": [{"text": "x"}]}, engine="stable-diffusion-v1-6"), 404, "not_found"),
        (_t2i(live, {"text_prompts": [{"text": "x"}]}, user=None), 401, "unauthorized"),
        (_t2i(live, {"text_prompts": [{"text": "x"}], "steps": 2}, user="carol"), 402, "insufficient_balance"),
    ]
    for r, status, name in cases:
        assert r.status_code == status, (name, r.text)
        body = r.json()
        assert set(body) == {"id", "name", "message"} and body["name"] == name, body


def _form(prompt: str, **fields) -> dict:
    return {"text_prompts[0][text]": prompt, "text_prompts[0][weight]": "1", **{k: str(v) for k, v in fields.items()}}


def test_image_to_image_multipart(live):
    r = live.post("/v1/generation/builtin/image-to-image",
                  files={"init_image": ("init.png", png((0, 0, 255), (128, 192)), "image/png")},
                  data=_form("a blue sky", init_image_mode="IMAGE_STRENGTH", image_strength=0.9, steps=4, seed=5,
                             cfg_scale=7))
    assert r.status_code == 200, r.text
    art = r.json()["artifacts"][0]
    im = decode_png(base64.b64decode(art["base64"]))
    assert im.size == (128, 192) and art["seed"] == 5  # the init image's size
    assert "Denoising strength: 0.1" in im.text["parameters"]  # strength = 1 - image_strength
    # keeping 90% of a blue image gives a blue-ish image
    r_, g_, b_ = np.asarray(im.convert("RGB"), dtype=float).reshape(-1, 3).mean(0)
    assert b_ > r_ + 40 and b_ > g_ + 40
    r = live.post("/v1/generation/builtin/image-to-image",
                  files={"init_image": ("init.png", b"not an image", "image/png")}, data=_form("x"))
    assert r.status_code == 400 and r.json()["name"] == "invalid_image"
    r = live.post("/v1/generation/builtin/image-to-image",
                  files={"init_image": ("init.png", png(size=(100, 128)), "image/png")}, data=_form("x"))
    assert r.status_code == 400 and r.json()["name"] == "invalid_height_or_width"


def test_masking_repaints_only_the_mask(live):
    from PIL import Image

    init = png((0, 200, 0), (128, 128))
    mask = Image.new("L", (128, 128), 255)
    mask.paste(0, (32, 32, 96, 96))  # MASK_IMAGE_BLACK: black = repaint the centre
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    r = live.post("/v1/generation/builtin/image-to-image/masking",
                  files={"init_image": ("init.png", init, "image/png"),
                         "mask_image": ("m.png", buf.getvalue(), "image/png")},
                  data=_form("a red circle", mask_source="MASK_IMAGE_BLACK", steps=3, seed=3))
    assert r.status_code == 200, r.text
    out = np.asarray(decode_png(base64.b64decode(r.json()["artifacts"][0]["base64"])).convert("RGB"), dtype=int)
    corner = out[:16, :16].reshape(-1, 3)
    assert np.abs(corner - [0, 200, 0]).max() <= 3  # far outside the mask: the init image
    assert np.abs(out[56:72, 56:72].reshape(-1, 3) - [0, 200, 0]).max() > 20  # inside: repainted
    r = live.post("/v1/generation/builtin/image-to-image/masking",
                  files={"init_image": ("init.png", init, "image/png")},
                  data=_form("x", mask_source="MASK_IMAGE_WHITE"))
    assert r.status_code == 400 and "mask_image" in r.json()["message"]
