"""egaku's native job API over real HTTP: jobs, events, images, history, cancel, auth and isolation."""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests
from liveserver import LiveServer, b64, decode_png, png_bomb

from egaku.server import create_app


def test_account_pricing_models_samplers(live):
    account = live.get("/api/v1/account").json()
    assert account["name"] == "alice" and account["auth"] is True and account["balance"] == 1000
    pricing = live.get("/api/v1/pricing").json()
    assert pricing["unit_pixels_steps"] == 128 * 128 * 20 and "ceil" in pricing["formula"]
    # 512x512 at 30 steps, one image: 24 credits (the contract's example)
    assert live.post("/api/v1/cost", json={"prompt": "x", "width": 512, "height": 512, "steps": 30}).json() == {
        "credits": 24}
    models = live.get("/api/v1/models").json()
    assert models[0]["name"] == "builtin" and models[0]["default_size"] == 128
    assert "DPM++ 2M Karras" in live.get("/api/v1/samplers").json()


def test_keys_in_every_header_form_and_401s(live):
    key = live.keys["bob"]
    basic = base64.b64encode(f"bob:{key}".encode()).decode()
    for headers in ({"X-API-Key": key}, {"Authorization": f"Basic {basic}"}, {"Authorization": key}):
        r = requests.get(live.url + "/api/v1/account", headers=headers, timeout=30)
        assert r.status_code == 200 and r.json()["name"] == "bob", headers
    for headers in ({}, {"Authorization": "Bearer egk_not-a-key"}, {"X-API-Key": "nope"}):
        r = requests.get(live.url + "/api/v1/account", headers=headers, timeout=30)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized" and "Traceback" not in r.text
    # ?key= is only for what browsers load without headers (images, event streams)
    assert requests.get(f"{live.url}/api/v1/account?key={key}", timeout=30).status_code == 401


def _events(live, job_id: str, user: str = "alice") -> list[tuple[str, dict]]:
    events = []
    with requests.get(f"{live.url}/api/v1/jobs/{job_id}/events", headers=live.headers(user), stream=True,
                      timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[len("data: "):])))
    return events


def test_submit_stream_and_fetch_the_image(live):
    before = live.get("/api/v1/account").json()["balance"]
    r = live.post("/api/v1/jobs", json={"prompt": "a red circle in the center, blue background", "steps": 4,
                                        "seed": 7, "sampler": "DPM++ 2M", "cfg_rescale": 0.7})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["cost"] == 1
    assert job["params"]["width"] == 128 and job["params"]["init_image"] is False and job["params"]["cfg_rescale"] == 0.7

    events = _events(live, job["id"])
    kinds = [k for k, _ in events]
    assert kinds[0] == "status" and kinds[-1] == "done"
    steps = [d["step"] for k, d in events if k == "progress"]
    assert steps == sorted(steps) and steps[-1] == 4 and all(d["total"] == 4 for k, d in events if k == "progress")
    previews = [d["preview"] for k, d in events if k == "progress" and d["preview"]]
    assert previews and previews[-1].startswith("data:image/png;base64,")
    done = events[-1][1]
    assert done["status"] == "succeeded" and len(done["images"]) == 1

    image = done["images"][0]
    r = live.get(image["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    im = decode_png(r.content)
    assert im.size == (128, 128) and "Seed: 7" in im.text["parameters"] and "DPM++ 2M" in im.text["parameters"]
    assert "CFG Rescale phi: 0.7" in im.text["parameters"]
    # an <img> tag can use ?key=
    assert requests.get(f"{live.url}{image['url']}?key={live.keys['alice']}", timeout=30).content == r.content
    assert live.get("/api/v1/account").json()["balance"] == before - 1

    history = live.get("/api/v1/jobs?q=red+circle&limit=5").json()
    assert [j["id"] for j in history["jobs"]] == [job["id"]]
    assert live.get("/api/v1/jobs?q=no-such-prompt").json()["jobs"] == []


def test_users_see_only_their_own_jobs_and_images(live):
    job = live.post("/api/v1/jobs", json={"prompt": "a green star", "steps": 2}).json()
    done = live.wait_job(job["id"])
    image_url = done["images"][0]["url"]
    for method, path in (("get", f"/api/v1/jobs/{job['id']}"), ("post", f"/api/v1/jobs/{job['id']}/cancel"),
                         ("get", f"/api/v1/jobs/{job['id']}/events"), ("get", image_url),
                         ("delete", image_url)):
        r = requests.request(method, live.url + path, headers=live.headers("bob"), timeout=30)
        assert r.status_code == 404, (method, path, r.status_code)
        assert r.json()["error"]["code"] == "not_found"
    assert job["id"] not in [j["id"] for j in live.get("/api/v1/jobs", "bob").json()["jobs"]]
    # the owner deletes it; then it is gone
    assert requests.delete(live.url + image_url, headers=live.headers("alice"), timeout=30).status_code == 204
    assert live.get(image_url).status_code == 404


def test_cancel_a_running_job_refunds_it(live):
    before = live.get("/api/v1/account", "bob").json()["balance"]
    job = live.post("/api/v1/jobs", "bob", json={"prompt": "a slow square", "steps": 150}).json()
    deadline = time.monotonic() + 60
    while live.get(f"/api/v1/jobs/{job['id']}", "bob").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = live.post(f"/api/v1/jobs/{job['id']}/cancel", "bob")
    assert r.status_code == 200
    assert live.wait_job(job["id"], "bob")["status"] == "cancelled"
    assert live.get("/api/v1/account", "bob").json()["balance"] == before


@pytest.mark.parametrize("body,status,code", [
    ({"prompt": "x" * 4001}, 400, "invalid_request"),  # the service's limit, checked at the edge
    ({"prompt": "x", "init_image": "not base64 !!"}, 400, "invalid_image"),
    ({"prompt": "x", "init_image": b64(b"GIF89a but not really an image")}, 400, "invalid_image"),
    ({"prompt": "x", "init_image": b64(png_bomb())}, 400, "invalid_image"),
    ({"prompt": "x", "sampler": "Euler z"}, 400, "invalid_request"),
    ({"prompt": "x", "model": "no-such-model"}, 404, "model_not_found"),
    ({"prompt": "x", "width": 100}, 400, "invalid_request"),
    ({"prompt": "x", "cfg_rescale": 2}, 400, "invalid_request"),
    ({"prompt": "x", "n": 11}, 400, "invalid_request"),
    ({"prompt": "x", "steps": "many"}, 422, "validation_error"),
    ({"prompt": "x", "surprise": 1}, 422, "validation_error"),
    ({"prompt": "x", "webhook_url": "file:///etc/passwd"}, 400, "invalid_request"),
])
def test_bad_requests_get_clear_json_errors(live, body, status, code):
    before = live.get("/api/v1/account").json()["balance"]
    r = live.post("/api/v1/jobs", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and "\n" not in error["message"]
    assert live.get("/api/v1/account").json()["balance"] == before


def test_no_credits_is_402_and_oversize_body_is_413(live):
    r = live.post("/api/v1/jobs", "carol", json={"prompt": "a circle", "steps": 2})
    assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_credits"
    assert "costs 1" in r.json()["error"]["message"]
    assert live.get("/api/v1/jobs", "carol").json()["jobs"] == []  # nothing was queued
    big = json.dumps({"prompt": "x", "init_image": "A" * (21 * 1024 * 1024)})
    r = live.post("/api/v1/jobs", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    # and a chunked body (no Content-Length) is cut off at the limit too
    r = live.post("/api/v1/jobs", data=(b"A" * (1024 * 1024) for _ in range(21)),
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_studio_is_served_at_root_and_api_routes_win(live, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>egaku studio</title>")
    (tmp_path / "app.js").write_text("console.log('hi')")
    server = LiveServer(create_app(live.service, studio_dir=tmp_path, manage_service=False))
    url = server.start()
    try:
        assert "egaku studio" in requests.get(url + "/", timeout=30).text
        assert requests.get(url + "/app.js", timeout=30).status_code == 200
        r = requests.get(url + "/api/v1/account", headers=live.headers("alice"), timeout=30)
        assert r.json()["name"] == "alice"
        r = requests.get(url + "/api/v1/nothing-here", timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    finally:
        server.stop()


def test_http_and_service_share_one_prompt_limit(live):
    long_prompt = "a red square " * 300  # 3,900 characters: under the service's 4,000
    r = live.post("/api/v1/jobs", json={"prompt": long_prompt, "steps": 1})
    assert r.status_code == 202, r.text
    assert live.wait_job(r.json()["id"])["status"] == "succeeded"
    r = live.post("/api/v1/jobs", json={"prompt": "x" * 4001})
    assert r.json()["error"]["message"] == "prompt is 4001 characters, over the limit of 4000"
