"""Credits: double-entry invariants, holds, and concurrent submits that can never overdraw."""

import threading

import pytest
from sqlalchemy import func, select

from egaku.store import InsufficientCredits, JobState
from egaku.store.schema import Account, Hold, LedgerEntry


def _job(store, user_id, cost, **kw):
    return store.create_job(user_id=user_id, api_key_id=None, spec={"prompt": "x"}, cost=cost, charge=True, n=1,
                            batch_key=None, webhook_url=None, source="native", **kw)


def _account_sums(store):
    with store.read() as s:
        return dict(s.execute(select(Account.name, func.sum(LedgerEntry.amount))
                              .join(LedgerEntry, LedgerEntry.account_id == Account.id).group_by(Account.name)).all())


def test_grant_hold_settle_release_keep_the_books_balanced(store):
    alice = store.add_user("alice")
    assert store.balance(alice.id) == 0
    assert store.grant(alice.id, 100, "welcome") == 100
    kept = _job(store, alice.id, 30)
    refunded = _job(store, alice.id, 20)
    assert store.balance(alice.id) == 50  # both held

    assert len(store.claim("w") + store.claim("w")) == 2
    assert store.complete_job(kept.id, "w", []) is True  # settled: 30 to revenue
    assert store.finish_job(refunded.id, JobState.FAILED, error="boom", worker_id="w") is True  # released
    assert store.balance(alice.id) == 70
    assert _account_sums(store) == {"grants": -100, f"user:{alice.id}": 70, "revenue": 30}
    assert store.ledger_check() == {"total": 0, "unbalanced": []}
    # a hold closes once: finishing again neither charges nor refunds twice
    assert store.finish_job(kept.id, JobState.FAILED, worker_id="w") is False
    assert store.balance(alice.id) == 70
    with store.read() as s:
        states = dict(s.execute(select(Hold.job_id, Hold.state)).all())
    assert states == {kept.id: "settled", refunded.id: "released"}


def test_a_job_that_would_overdraw_is_refused_and_not_stored(store):
    bob = store.add_user("bob")
    store.grant(bob.id, 5)
    with pytest.raises(InsufficientCredits, match="costs 6 credits but the balance is 5") as e:
        _job(store, bob.id, 6)
    assert (e.value.cost, e.value.balance) == (6, 5)
    assert store.list_jobs(bob.id) == []  # the job row rolled back with the refused hold
    _job(store, bob.id, 5)
    assert store.balance(bob.id) == 0


def test_taking_back_more_than_the_balance_is_refused(store):
    carol = store.add_user("carol")
    store.grant(carol.id, 10)
    assert store.grant(carol.id, -4, "correction") == 6
    with pytest.raises(InsufficientCredits):
        store.grant(carol.id, -7)
    assert store.balance(carol.id) == 6
    assert store.ledger_check()["total"] == 0


def test_twenty_concurrent_submits_on_a_balance_for_five(store):
    user = store.add_user("racer")
    store.grant(user.id, 5 * 7)
    accepted, refused, errors = [], [], []
    barrier = threading.Barrier(20)

    def submit():
        barrier.wait()
        try:
            accepted.append(_job(store, user.id, 7).id)
        except InsufficientCredits:
            refused.append(1)
        except Exception as e:  # any other error (a lock timeout) fails the test below
            errors.append(repr(e))

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(accepted) == 5 and len(refused) == 15
    assert store.balance(user.id) == 0
    assert len(store.list_jobs(user.id)) == 5

    # settle them concurrently too: no credit lost or made
    store.claim("w", max_batch=1)
    while store.claim("w", max_batch=1):
        pass
    threads = [threading.Thread(target=store.complete_job, args=(j, "w", [])) for j in accepted]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.balance(user.id) == 0
    assert _account_sums(store) == {"grants": -35, f"user:{user.id}": 0, "revenue": 35}
    assert store.ledger_check() == {"total": 0, "unbalanced": []}
