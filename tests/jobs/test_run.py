"""Workers run jobs: images with their parameters, credits settled, events, fairness, batching, cancel."""

import io
import json

from jobkit import tiny, user_with_key
from PIL import Image

from egaku.engine import Engine
from egaku.jobs import JobSpec, JobStatus
from egaku.models.tiny import tiny_bundle


def _events_until_done(sub, timeout=60):
    events = []
    while True:
        event = sub.get(timeout=timeout)
        assert event is not None, f"no event within {timeout} s; got {[e.kind for e in events]}"
        events.append(event)
        if event.kind == "done":
            return events


def test_a_job_runs_and_its_images_carry_their_parameters(make_service, egaku_home):
    service = make_service()
    principal, _ = user_with_key(service, "alice", credits=10)
    service.start()
    view = service.submit(principal, tiny("a red circle", n=2, seed=1234, steps=3))
    done = service.wait(principal, view.id, timeout=60)
    assert done.status is JobStatus.SUCCEEDED and done.error is None
    assert [i.seed for i in done.images] == [1234, 1235]
    assert done.started_at and done.finished_at and done.progress is None and done.position is None
    for image in done.images:
        png = service.image_png(principal, image.id)
        assert (egaku_home / "images" / image.sha256[:2] / f"{image.sha256}.png").read_bytes() == png
        pil = Image.open(io.BytesIO(png))
        assert pil.size == (64, 64)
        params = pil.text["parameters"]
        assert params == image.infotext
        assert params.startswith("a red circle\n") and f"Seed: {image.seed}" in params and "Steps: 3" in params
    assert done.images[0].sha256 != done.images[1].sha256
    assert service.balance(principal) == 10 - done.cost  # settled
    assert service.store.ledger_check() == {"total": 0, "unbalanced": []}
    as_json = json.loads(json.dumps(done.to_dict()))
    assert as_json["status"] == "succeeded" and as_json["images"][0]["url"] == f"/api/v1/images/{done.images[0].id}"


def test_events_stream_progress_with_previews_then_done(make_service):
    service = make_service()
    principal, _ = user_with_key(service, "alice", credits=10)
    view = service.submit(principal, tiny(steps=8))
    with service.subscribe(principal, view.id) as sub:
        service.start()
        events = _events_until_done(sub)
    kinds = [e.kind for e in events]
    assert kinds[0] == "status" and events[0].data["status"] == "queued"
    assert "running" in [e.data["status"] for e in events if e.kind == "status"]
    progress = [e.data for e in events if e.kind == "progress"]
    assert [p["step"] for p in progress] == list(range(1, 9)) and {p["total"] for p in progress} == {8}
    previews = [p["preview_png"] for p in progress if p["preview_png"] is not None]
    assert previews and all(Image.open(io.BytesIO(p)).format == "PNG" for p in previews)
    assert events[-1].data["status"] == "succeeded" and len(events[-1].data["images"]) == 1


def test_fair_order_positions_and_execution(make_service):
    service = make_service(batching=False)
    alice, _ = user_with_key(service, "alice", credits=100)
    bob, _ = user_with_key(service, "bob", credits=100)
    a = [service.submit(alice, tiny()).id for _ in range(3)]
    b = service.submit(bob, tiny()).id
    positions = {v.id: v.position for v in service.list_jobs(alice) + service.list_jobs(bob)}
    assert positions == {a[0]: 0, b: 1, a[1]: 2, a[2]: 3}
    assert service.get_job(bob, b).position == 1
    service.start()
    finished = [service.wait(alice, i, timeout=60) for i in a] + [service.wait(bob, b, timeout=60)]
    started = sorted(finished, key=lambda v: v.started_at)
    assert [v.id for v in started] == [a[0], b, a[1], a[2]]


class CountingEngine(Engine):
    """The real engine, remembering how many requests each generate_many call ran together."""

    def __init__(self):
        super().__init__(device="cpu", dtype="fp32")
        self.batches: list[int] = []

    def generate_many(self, requests, progress=None, cancel=None):
        self.batches.append(len(requests))
        return super().generate_many(requests, progress=progress, cancel=cancel)


def test_compatible_jobs_share_one_forward_pass(make_service):
    engine = CountingEngine()
    engine.add_bundle("tiny", tiny_bundle("sd1"))
    service = make_service(engine=engine, max_batch=4)
    alice, _ = user_with_key(service, "alice", credits=100)
    bob, _ = user_with_key(service, "bob", credits=100)
    first = service.submit(alice, tiny("a red circle", steps=3, seed=1))
    second = service.submit(bob, tiny("a blue square", steps=3, seed=2, cfg_scale=5, cfg_rescale=0.5))
    other = service.submit(alice, tiny("a green star", steps=4, seed=3))  # other steps: another pass
    service.start()
    views = [service.wait(p, v.id, timeout=60) for p, v in ((alice, first), (bob, second), (alice, other))]
    assert all(v.status == "succeeded" for v in views)
    assert engine.batches == [2]  # first + second together; `other` ran alone through generate()
    assert views[0].started_at == views[1].started_at != views[2].started_at
    assert [v.images[0].seed for v in views] == [1, 2, 3]
    assert "CFG scale: 5, CFG Rescale phi: 0.5," in views[1].images[0].infotext  # each job keeps its own settings
    assert "CFG Rescale" not in views[0].images[0].infotext


def test_cancel_queued_refunds_at_once(make_service):
    service = make_service()
    principal, _ = user_with_key(service, "alice", credits=10)
    view = service.submit(principal, tiny(steps=50))
    assert service.balance(principal) < 10
    cancelled = service.cancel(principal, view.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert service.balance(principal) == 10
    assert service.cancel(principal, view.id).status == "cancelled"  # twice is harmless
    assert service.store.ledger_check()["total"] == 0


def test_cancel_running_stops_the_engine_and_refunds(make_service):
    service = make_service()
    principal, _ = user_with_key(service, "alice", credits=10)
    view = service.submit(principal, tiny(steps=150))
    with service.subscribe(principal, view.id) as sub:
        service.start()
        while (event := sub.get(timeout=60)).kind != "progress":
            assert event.kind == "status"
        assert service.get_job(principal, view.id).status == "running"
        assert service.current_progress(principal)["job_id"] == view.id
        cancelled = service.cancel(principal, view.id)
        last = _events_until_done(sub, timeout=10)
    assert cancelled.status == "cancelled" and cancelled.images == []
    assert last[-1].data["status"] == "cancelled"
    steps = [e.data["step"] for e in last if e.kind == "progress"]
    assert not steps or max(steps) < 150
    assert service.balance(principal) == 10
    assert service.current_progress(principal) is None


def test_engine_errors_fail_the_job_with_one_line_and_refund(make_service):
    engine = Engine(device="cpu", dtype="fp32")
    engine.add_bundle("soon-gone", tiny_bundle("sd1"))
    service = make_service(engine=engine)
    principal, _ = user_with_key(service, "alice", credits=10)
    view = service.submit(principal, JobSpec("a red circle", model="soon-gone", steps=2))
    engine.cache.evict("soon-gone")  # the model disappears before a worker runs the job
    service.start()
    failed = service.wait(principal, view.id, timeout=60)
    assert failed.status == "failed" and "soon-gone" in failed.error and "\n" not in failed.error
    assert service.balance(principal) == 10


def test_stop_puts_running_jobs_back_and_a_restart_finishes_them(make_service, sqlite_url):
    service = make_service(db_url=sqlite_url)
    principal, _ = user_with_key(service, "alice", credits=10)
    view = service.submit(principal, tiny(steps=60))
    with service.subscribe(principal, view.id) as sub:
        service.start()
        while sub.get(timeout=60).kind != "progress":
            pass
        service.stop()
    assert service.get_job(principal, view.id).status == "queued"
    again = make_service(db_url=sqlite_url)
    again.start()
    done = again.wait(principal, view.id, timeout=60)
    assert done.status == "succeeded"
    assert again.store.get_job(view.id).attempts == 1  # the interrupted try did not count
    assert again.balance(principal) == 10 - done.cost
