"""OpenAI Images over real HTTP, with the official `openai` Python client pointed at egaku."""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
import requests
from liveserver import LiveServer, decode_png

from egaku.server import create_app


def client(live, user: str = "alice", key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key or live.keys[user], max_retries=0, timeout=120)


def test_generate_b64_and_url(live):
    result = client(live).images.generate(prompt="a purple triangle", n=2, size="128x128",
                                          response_format="b64_json", extra_body={"steps": 3, "seed": 11})
    assert len(result.data) == 2 and result.created > 0
    images = [decode_png(base64.b64decode(d.b64_json)) for d in result.data]
    assert [im.size for im in images] == [(128, 128)] * 2
    assert "Seed: 11" in images[0].text["parameters"] and "Seed: 12" in images[1].text["parameters"]
    assert result.data[0].revised_prompt == "a purple triangle"

    result = client(live).images.generate(prompt="a purple triangle", model="dall-e-3",
                                          extra_body={"steps": 2})  # default response_format: url
    url = result.data[0].url
    assert url.startswith(live.url + "/v1/images/files/")
    r = requests.get(url, timeout=30)  # OpenAI clients fetch these without a key
    assert r.status_code == 200 and decode_png(r.content).size == (128, 128)
    assert requests.get(url.replace(".png", "0.png"), timeout=30).status_code == 404  # tampered: refused
    # another server process on the same database (or this one restarted) honours the link
    other = LiveServer(create_app(live.service, manage_service=False))
    other_url = other.start()
    try:
        r2 = requests.get(url.replace(live.url, other_url), timeout=30)
        assert r2.status_code == 200 and r2.content == r.content
    finally:
        other.stop()


def test_edit_repaints_transparent_pixels(live):
    from PIL import Image

    image = Image.new("RGB", (128, 128), (250, 250, 0))
    mask = Image.new("RGBA", (128, 128), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 64, 128, 128))  # bottom half transparent = edit it
    files = []
    for im in (image, mask):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        files.append(buf.getvalue())
    result = client(live).images.edit(image=("image.png", files[0], "image/png"),
                                      mask=("mask.png", files[1], "image/png"), prompt="a black floor", n=1,
                                      response_format="b64_json", extra_body={"steps": 3, "seed": 2})
    out = np.asarray(decode_png(base64.b64decode(result.data[0].b64_json)).convert("RGB"), dtype=int)
    assert out.shape == (128, 128, 3)
    assert np.abs(out[:32] - [250, 250, 0]).max() <= 3  # opaque part of the mask: kept
    assert np.abs(out[96:] - [250, 250, 0]).max() > 20  # transparent part: repainted
    # no mask and no transparency in the image: nothing says what to edit
    with pytest.raises(openai.BadRequestError) as e:
        client(live).images.edit(image=("image.png", files[0], "image/png"), prompt="x")
    assert "transparency" in str(e.value)


def test_errors_in_openai_shape(live):
    with pytest.raises(openai.AuthenticationError) as e:
        client(live, key="egk_wrong").images.generate(prompt="x")
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as e:
        client(live).images.generate(prompt="x", size="100x100")
    assert e.value.body["param"] == "size" and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        client(live).images.generate(prompt="x", n=11)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        client(live).images.generate(prompt="x", model="no-such-model")
    with pytest.raises(openai.APIStatusError) as e:
        client(live, "carol").images.generate(prompt="x", extra_body={"steps": 2})
    assert e.value.status_code == 402 and e.value.body["type"] == "insufficient_quota"
