"""AUTOMATIC1111's API over real HTTP, with the `webuiapi` client (as A1111 tools use it)."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlparse

import numpy as np
import requests
import webuiapi
from PIL import Image


def api(live, user: str = "alice") -> webuiapi.WebUIApi:
    u = urlparse(live.url)
    client = webuiapi.WebUIApi(host=u.hostname, port=u.port, steps=3)
    client.set_auth(user, live.keys[user])  # A1111 --api-auth: Basic auth, the key as password
    return client


def test_txt2img_with_webuiapi(live):
    result = api(live).txt2img(prompt="a cyan hexagon", negative_prompt="red", seed=21, width=128, height=192,
                               batch_size=2, sampler_name="DPM++ 2M", scheduler="Karras", cfg_scale=5)
    assert [im.size for im in result.images] == [(128, 192)] * 2
    assert result.info["all_seeds"] == [21, 22] and result.info["sampler_name"] == "DPM++ 2M Karras"
    assert "Negative prompt: red" in result.info["infotexts"][0]
    assert result.parameters["prompt"] == "a cyan hexagon"
    assert result.images[0].info["parameters"].startswith("a cyan hexagon")


def test_img2img_inpaint_with_webuiapi(live):
    init = Image.new("RGB", (128, 128), (200, 0, 200))
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (64, 0, 128, 128))  # white = repaint the right half
    result = api(live).img2img(images=[init], mask_image=mask, prompt="a white wall", denoising_strength=1.0,
                               mask_blur=0, seed=4, width=128, height=128)
    out = np.asarray(result.image.convert("RGB"), dtype=int)
    assert np.abs(out[:, :48] - [200, 0, 200]).max() <= 3  # left half kept
    assert np.abs(out[:, 80:] - [200, 0, 200]).max() > 20  # right half repainted
    assert result.info["denoising_strength"] == 1.0 and result.parameters["init_images"] is None


def test_models_samplers_options_per_user(live):
    client = api(live)
    models = client.get_sd_models()
    assert models[0]["model_name"] == "builtin" and models[0]["title"].startswith("builtin [")
    assert {"name": "Euler a", "aliases": [], "options": {}} in client.get_samplers()
    assert client.util_get_current_model() == models[0]["title"]
    client.set_options({"sd_model_checkpoint": models[0]["title"]})
    r = requests.post(f"{live.url}/sdapi/v1/options", json={"sd_model_checkpoint": "nope.safetensors [0123456789]"},
                      auth=("alice", live.keys["alice"]), timeout=30)
    assert r.status_code == 404 and r.json()["error"] == "NotFound" and "nope" in r.json()["detail"]


def test_progress_and_interrupt(live):
    client = api(live, "bob")
    assert client.get_progress()["state"]["job_count"] == 0
    done = {}
    thread = threading.Thread(target=lambda: done.update(r=client.txt2img(prompt="slow", steps=150, width=128,
                                                                         height=128)))
    thread.start()
    deadline = time.monotonic() + 60
    while True:
        progress = client.get_progress()
        if progress["state"]["sampling_step"] >= 2:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert progress["state"]["job_count"] == 1 and progress["state"]["sampling_steps"] == 150
    assert 0 < progress["progress"] < 1
    assert api(live, "alice").get_progress()["state"]["job_count"] == 0  # alice sees only her own
    client.interrupt()
    thread.join(60)
    assert done["r"].images == [] and done["r"].info["interrupted"] is True
    assert requests.get(f"{live.url}/sdapi/v1/progress", timeout=30).status_code == 401


def test_a1111_errors(live):
    auth = ("alice", live.keys["alice"])
    r = requests.post(f"{live.url}/sdapi/v1/txt2img", json={"prompt": "x", "steps": "lots"}, auth=auth, timeout=30)
    assert r.status_code == 422 and set(r.json()) == {"error", "detail", "body", "errors"}
    r = requests.post(f"{live.url}/sdapi/v1/img2img", json={"init_images": ["%%%"]}, auth=auth, timeout=30)
    assert r.status_code == 400 and "base64" in r.json()["detail"]
    r = requests.post(f"{live.url}/sdapi/v1/txt2img", json={"prompt": "x", "sampler_name": "Euler z"}, auth=auth,
                      timeout=30)
    assert r.status_code == 400 and "unknown sampler" in r.json()["detail"]
    r = requests.post(f"{live.url}/sdapi/v1/txt2img", json={"prompt": "x", "batch_size": 4, "n_iter": 3},
                      auth=auth, timeout=30)
    assert r.status_code == 400


def test_a_client_that_hangs_up_cancels_its_job_and_pays_nothing(live):
    balance = lambda: live.get("/api/v1/account", "bob").json()["balance"]  # noqa: E731
    before = balance()
    try:
        requests.post(f"{live.url}/sdapi/v1/txt2img", json={"prompt": "a hung-up square", "steps": 150},
                      auth=("bob", live.keys["bob"]), timeout=1.5)
        raise AssertionError("a 150-step job answered within 1.5 s")
    except requests.exceptions.ReadTimeout:
        pass  # the client gives up and closes the connection
    job = live.get("/api/v1/jobs?q=hung-up", "bob").json()["jobs"][0]
    assert live.wait_job(job["id"], "bob")["status"] == "cancelled"
    assert balance() == before
