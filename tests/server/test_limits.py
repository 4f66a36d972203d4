"""Credits, quotas and rate limits over HTTP: 402 before any work, parallel requests never overdraw,
429 with Retry-After. The server here has no workers, so accepted jobs stay queued (and held)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from liveserver import start_live

from egaku.jobs.settings import ServiceSettings


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    settings = ServiceSettings(key_rpm=5, max_user_jobs=4)
    live, server = start_live(tmp_path_factory.mktemp("limits"), settings=settings, workers=0,
                              credits={"dave": 100, "erin": 3, "frank": 100})
    yield live
    server.stop()


def test_parallel_requests_never_overdraw(limited):
    service = limited.service
    keys = [service.create_key("erin", label=f"k{i}")[1] for i in range(10)]  # one key each: no rate limit

    def submit(key):
        return requests.post(limited.url + "/api/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                             json={"prompt": "a circle", "steps": 20}, timeout=60)

    with ThreadPoolExecutor(10) as pool:
        codes = sorted(r.status_code for r in pool.map(submit, keys))
    assert codes == [202] * 3 + [402] * 7  # 3 credits, 1 credit a job
    assert limited.get("/api/v1/account", "erin").json()["balance"] == 0
    assert len(limited.get("/api/v1/jobs", "erin").json()["jobs"]) == 3


def test_rate_limit_is_429_with_retry_after(limited):
    body = {"prompt": "a square", "steps": 2}
    codes = [limited.post("/api/v1/jobs", "dave", json=body).status_code for _ in range(4)]
    assert codes == [202] * 4
    r = limited.post("/v1/generation/builtin/text-to-image", "dave",  # 5th request of the minute: allowed,
                     json={"text_prompts": [{"text": "x"}], "steps": 2})  # but over dave's quota of 4 jobs
    assert r.status_code == 429 and r.json()["name"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    r = limited.post("/api/v1/jobs", "dave", json=body)  # 6th in a minute: over 5 a minute
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    r = limited.post("/v1/images/generations", "dave", json={"prompt": "x"})
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_exceeded" and r.headers["Retry-After"]


def test_quota_counts_queued_jobs_and_frees_on_cancel(limited):
    ids = [limited.post("/api/v1/jobs", "frank", json={"prompt": "q", "steps": 2}).json()["id"] for _ in range(4)]
    r = limited.post("/api/v1/jobs", "frank", json={"prompt": "q", "steps": 2})
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
    positions = [j["position"] for j in limited.get("/api/v1/jobs", "frank").json()["jobs"]]
    assert len(positions) == 4 and all(isinstance(p, int) for p in positions) and len(set(positions)) == 4
    cancelled = limited.post(f"/api/v1/jobs/{ids[0]}/cancel", "frank").json()
    assert cancelled["status"] == "cancelled" and cancelled["position"] is None
    # a fresh key (this one has used its 5 requests of the minute): the quota has room again
    key = limited.service.create_key("frank")[1]
    r = requests.post(limited.url + "/api/v1/jobs", headers={"X-API-Key": key}, json={"prompt": "q", "steps": 2},
                      timeout=60)
    assert r.status_code == 202, r.text
