"""Submit: validation before anything is stored, the published cost, credits, quotas and rate limits."""

import io
import struct
import threading
import time
import zlib

import pytest
from jobkit import tiny, user_with_key
from PIL import Image

from egaku.errors import InvalidImageError, InvalidRequestError, ModelNotFoundError
from egaku.jobs import (
    InsufficientCredits, JobSpec, QuotaExceeded, RateLimited, ServiceSettings, cost_of,
)


def _png(size=(64, 64), color="red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png(side=10_000) -> bytes:
    """A tiny PNG whose header declares side x side pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_published_cost_formula(make_service):
    assert cost_of(128, 128, 20, 1) == 1  # the built-in model's native image
    assert cost_of(512, 512, 30, 1) == 24  # SD 1.5
    assert cost_of(1024, 1024, 30, 4) == 384
    assert cost_of(64, 64, 2, 1) == 1  # never below 1
    service = make_service()
    assert service.cost(JobSpec("x")) == 1  # built-in: width/height resolve to 128
    assert service.cost(JobSpec("x", width=512, height=512, steps=30)) == 24
    assert service.cost(tiny(steps=150, n=4, width=256, height=256)) == cost_of(256, 256, 150, 4) == 120


@pytest.mark.parametrize("spec, error, match", [
    (tiny(sampler="K_MAGIC"), InvalidRequestError, "unknown sampler"),
    (tiny(width=100), InvalidRequestError, "multiple of 8"),
    (tiny(width=4096, height=4096), InvalidRequestError, "between 64 and 2048"),
    (tiny(steps=0), InvalidRequestError, "steps"),
    (tiny(steps="20"), InvalidRequestError, "steps must be a whole number"),
    (tiny(cfg_scale=99), InvalidRequestError, "cfg scale"),
    (tiny(cfg_rescale=-0.1), InvalidRequestError, "cfg rescale must be between 0 and 1"),
    (tiny(n=11), InvalidRequestError, "n \\(images per job\\)"),
    (tiny(seed=2**40), InvalidRequestError, "seed"),
    (JobSpec("x" * 4001), InvalidRequestError, "over the limit of 4000"),
    (JobSpec("x", model="no-such-model"), ModelNotFoundError, "no model named"),
    (JobSpec("x", model="/etc/passwd"), ModelNotFoundError, "no model named"),
    (tiny(webhook_url="file:///etc/passwd"), InvalidRequestError, "http\\(s\\) URL"),
    (tiny(webhook_url="ftp://example.com/x"), InvalidRequestError, "http\\(s\\) URL"),
    (tiny(init_image=b"not an image"), InvalidImageError, "init image is not an image"),
    (tiny(init_image=_bomb_png()), InvalidImageError, "declares 10000x10000"),
    (tiny(init_image=_png(), mask=_png((32, 32))), InvalidRequestError, "mask is 32x32"),
    (tiny(mask=_png()), InvalidRequestError, "a mask needs an init image"),
    (tiny(source="carrier-pigeon"), InvalidRequestError, "source"),
])
def test_bad_requests_are_refused_before_anything_is_stored(make_service, spec, error, match):
    service = make_service()
    principal, _ = user_with_key(service, "alice", credits=100)
    with pytest.raises(error, match=match):
        service.submit(principal, spec)
    assert service.list_jobs(principal) == [] and service.balance(principal) == 100


def test_submit_resolves_size_and_seed_and_holds_the_cost(make_service):
    service = make_service()
    principal, _ = user_with_key(service, "alice", credits=10)
    view = service.submit(principal, tiny(steps=150, n=3))
    assert (view.status, view.position, view.cost) == ("queued", 0, cost_of(64, 64, 150, 3))
    assert (view.spec["width"], view.spec["height"]) == (64, 64)  # the tiny model's native size
    assert 0 <= view.spec["seed"] < 2**32 and view.spec["sampler"] == "Euler a"
    assert view.spec["init_image"] is False and view.spec["mask"] is False
    assert service.balance(principal) == 10 - view.cost
    img2img = service.submit(principal, tiny(init_image=_png(), mask=_png(color="white"), strength=0.5))
    assert img2img.spec["init_image"] is True and img2img.spec["mask"] is True
    assert not any(isinstance(v, bytes) for v in img2img.spec.values())


def test_a_job_that_would_overdraw_gets_402_and_no_job(make_service):
    service = make_service()
    principal, _ = user_with_key(service, "alice", credits=1)
    expensive = tiny(width=512, height=512, steps=30)
    with pytest.raises(InsufficientCredits, match="costs 24 credits but the balance is 1"):
        service.submit(principal, expensive)
    assert service.list_jobs(principal) == []


def test_quota_per_user_and_limits_per_key(make_service):
    service = make_service(settings=ServiceSettings(max_user_jobs=3, max_key_active=2, key_rpm=1000))
    principal, _ = user_with_key(service, "alice", credits=100)
    other_key = service.authenticate(service.create_key("alice", "second")[1])
    service.submit(principal, tiny())
    service.submit(principal, tiny())
    with pytest.raises(RateLimited, match="this API key has 2 jobs") as e:
        service.submit(principal, tiny())
    assert not isinstance(e.value, QuotaExceeded) and e.value.retry_after >= 1
    service.submit(other_key, tiny())  # the user's quota (3) allows one more from another key
    with pytest.raises(QuotaExceeded, match="you have 3 jobs") as e:
        service.submit(other_key, tiny())
    assert e.value.retry_after >= 1
    assert service.balance(principal) == 100 - 3


def test_requests_per_minute_per_key(make_service):
    service = make_service(settings=ServiceSettings(key_rpm=3))
    principal, _ = user_with_key(service, "alice", credits=100)
    for _ in range(3):
        service.submit(principal, tiny())
    with pytest.raises(RateLimited, match="at most 3 a minute") as e:
        service.submit(principal, tiny())
    assert 1 <= e.value.retry_after <= 20  # one token comes back every 20 s
    other, _ = user_with_key(service, "bob", credits=100)
    service.submit(other, tiny())  # buckets are per key


def test_server_processes_on_one_database_share_a_keys_rate(db_url, make_service):
    """Two services on one database (two server processes) draw on one bucket per key, so they do
    not allow twice the rate; the bucket refills with time."""
    first = make_service(db_url=db_url, settings=ServiceSettings(key_rpm=3))
    second = make_service(db_url=db_url, settings=ServiceSettings(key_rpm=3))
    principal, _ = user_with_key(first, "alice", credits=100)
    first.submit(principal, tiny())
    second.submit(principal, tiny())
    first.submit(principal, tiny())
    with pytest.raises(RateLimited, match="at most 3 a minute"):
        second.submit(principal, tiny())
    store = first.store
    assert store.take_request_token(principal.api_key_id, 3, now=time.time() + 21) == 0.0  # one token back in 20 s


def test_concurrent_submits_never_overdraw(db_url, make_service):  # db_url first: dropped last
    service = make_service(db_url=db_url, settings=ServiceSettings(key_rpm=1000))
    principal, _ = user_with_key(service, "alice", credits=5)
    results, barrier = [], threading.Barrier(20)

    def submit():
        barrier.wait()
        try:
            results.append(service.submit(principal, tiny()).id)
        except InsufficientCredits:
            results.append("402")

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("402") == 15 and len(set(results) - {"402"}) == 5
    assert service.balance(principal) == 0
    assert len(service.list_jobs(principal)) == 5
    assert service.store.ledger_check() == {"total": 0, "unbalanced": []}
