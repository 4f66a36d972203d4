"""The queue in SQL: fair order across users, batch claims, limits and crash recovery."""

from datetime import timedelta

import pytest

from egaku.store import JobState, LimitReached
from egaku.store.ids import utcnow


def _job(store, user, batch_key=None, n=1, cost=1, key_id=None, **limits):
    return store.create_job(user_id=user.id, api_key_id=key_id, spec={"prompt": f"{user.name}"}, cost=cost,
                            charge=True, n=n, batch_key=batch_key, webhook_url=None, source="native", **limits)


@pytest.fixture
def users(store):
    out = []
    for name in ("alice", "bob", "carol"):
        user = store.add_user(name)
        store.grant(user.id, 1000)
        out.append(user)
    return out


def test_one_users_hundred_jobs_do_not_starve_others(store, users):
    alice, bob, carol = users
    a = [_job(store, alice).id for _ in range(6)]
    b = _job(store, bob).id
    c = [_job(store, carol).id for _ in range(2)]
    # round robin over users, each user's jobs oldest first
    assert store.queue_order() == [a[0], b, c[0], a[1], c[1], a[2], a[3], a[4], a[5]]

    claimed = store.claim("w")
    assert [j.id for j in claimed] == [a[0]]
    # alice now has a running job: bob and carol (none running) come first; bob was never served
    assert store.queue_order() == [b, c[0], a[1], c[1], a[2], a[3], a[4], a[5]]
    assert [j.id for j in store.claim("w")] == [b]
    assert [j.id for j in store.claim("w")] == [c[0]]
    # all three have one running: least recently served goes first (alice)
    assert store.queue_order()[0] == a[1]


def test_claim_takes_compatible_jobs_in_fair_order_up_to_the_limits(store, users):
    alice, bob, _ = users
    a1 = _job(store, alice, "k").id
    a2 = _job(store, alice, "other").id
    a3 = _job(store, alice, "k", n=3).id
    b1 = _job(store, bob, "k").id
    b2 = _job(store, bob, "k", n=2).id
    alone = _job(store, bob, None).id
    claimed = store.claim("w", max_batch=3, max_images=4)
    # lead, then compatible jobs in fair order: b1; a3 (3 images) would pass 4 images; b2 (2) fits
    assert [j.id for j in claimed] == [a1, b1, b2]
    assert all(j.status == "running" and j.attempts == 1 and j.worker_id == "w" for j in claimed)
    assert [j.id for j in store.claim("w", max_batch=4)] == [a2]  # a different key runs alone
    # both users run two jobs now; bob was served less recently than alice (a2)
    assert [j.id for j in store.claim("w", max_batch=4)] == [alone]  # no key: never batched
    assert [j.id for j in store.claim("w", max_batch=4)] == [a3]
    assert store.claim("w") == []


def test_active_job_limits_per_user_and_per_key(store, users):
    alice = users[0]
    key, _ = store.create_key(alice.id)
    _job(store, alice, key_id=key.id, max_key_active=2)
    _job(store, alice, key_id=key.id, max_key_active=2)
    with pytest.raises(LimitReached, match="this API key has 2 jobs") as e:
        _job(store, alice, key_id=key.id, max_key_active=2)
    assert e.value.scope == "key"
    with pytest.raises(LimitReached, match="you have 2 jobs") as e:
        _job(store, alice, max_user_active=2)
    assert e.value.scope == "user"
    finished = store.claim("w")[0]
    store.complete_job(finished.id, "w", [])
    _job(store, alice, key_id=key.id, max_key_active=2, max_user_active=2)  # room again
    assert store.balance(alice.id) == 1000 - 3


def test_recovery_requeues_fails_and_cancels_with_refunds(store, users):
    alice = users[0]
    hour_ago = utcnow() - timedelta(hours=1)
    spent = _job(store, alice, cost=10)
    assert [j.id for j in store.claim("dead")] == [spent.id]
    assert store.recover(is_dead=lambda w: w == "dead", stale_before=hour_ago, max_attempts=9) == [
        (spent.id, JobState.QUEUED)]
    retry, cancelled, alive = (_job(store, alice, cost=10) for _ in range(3))
    assert [j.id for j in store.claim("dead")] == [spent.id]  # its second try
    assert [j.id for j in store.claim("dead")] == [retry.id]
    assert [j.id for j in store.claim("dead")] == [cancelled.id]
    assert [j.id for j in store.claim("alive")] == [alive.id]
    store.request_cancel(cancelled.id)

    changed = dict(store.recover(is_dead=lambda w: w == "dead", stale_before=hour_ago, max_attempts=2))
    assert changed == {spent.id: JobState.FAILED, retry.id: JobState.QUEUED, cancelled.id: JobState.CANCELLED}
    jobs = {j.id: j for j in store.list_jobs(alice.id)}
    assert {i: j.status for i, j in jobs.items()} == {
        spent.id: "failed", retry.id: "queued", cancelled.id: "cancelled", alive.id: "running"}
    assert "stopped 2 times" in jobs[spent.id].error
    assert store.balance(alice.id) == 1000 - 20  # retry and alive still held; the others refunded
    assert store.ledger_check() == {"total": 0, "unbalanced": []}


def test_stale_heartbeat_counts_as_dead(store, users):
    job = _job(store, users[0])
    store.claim("far-away-worker")
    assert store.recover(is_dead=lambda w: False, stale_before=utcnow() - timedelta(minutes=1), max_attempts=3) == []
    assert store.recover(is_dead=lambda w: False, stale_before=utcnow() + timedelta(seconds=1),
                         max_attempts=3) == [(job.id, JobState.QUEUED)]
