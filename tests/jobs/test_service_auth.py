"""Keys, no-auth mode, and per-user isolation: users see, cancel and download only their own jobs and images."""

import pytest
from jobkit import tiny, user_with_key

from egaku.jobs import NotFound, Unauthorized


def test_authenticate_accepts_only_live_keys(make_service):
    service = make_service()
    info, key = service.create_key(service.add_user("alice", admin=True)["name"], "laptop")
    assert info["prefix"] == key[:12] and key not in str(info)
    principal = service.authenticate(key)
    assert (principal.name, principal.is_admin, principal.api_key_id) == ("alice", True, info["id"])
    for bad in (None, "", "egk_not-a-key", "sk-something", key + "x"):
        with pytest.raises(Unauthorized):
            service.authenticate(bad)
    service.revoke_key(info["id"])
    with pytest.raises(Unauthorized, match="revoked"):
        service.authenticate(key)
    listed = service.list_keys("alice")
    assert [k["id"] for k in listed] == [info["id"]] and listed[0]["revoked_at"] is not None
    assert key not in str(listed)


def test_no_auth_mode_has_one_local_user_who_is_never_charged(make_service):
    service = make_service(auth=False)
    principal = service.authenticate(None)
    assert principal == service.authenticate("anything at all")
    assert (principal.name, principal.api_key_id) == ("local", None)
    assert service.account(principal) == {"id": principal.user_id, "name": "local", "is_admin": True,
                                          "balance": 0, "auth": False}
    service.start()
    view = service.submit(principal, tiny(n=2))
    assert view.cost == 1  # computed and reported ...
    done = service.wait(principal, view.id, timeout=60)
    assert done.status == "succeeded" and len(done.images) == 2
    assert service.balance(principal) == 0  # ... never charged
    assert service.store.ledger_check() == {"total": 0, "unbalanced": []}


def test_users_see_only_their_own_jobs_and_images(make_service):
    service = make_service()
    alice, _ = user_with_key(service, "alice", credits=10)
    bob, _ = user_with_key(service, "bob", credits=10)
    service.start()
    job = service.wait(alice, service.submit(alice, tiny()).id, timeout=60)
    queued_for_later = service.submit(alice, tiny("a blue square"))
    image_id = job.images[0].id
    assert service.image_png(alice, image_id).startswith(b"\x89PNG")

    for call in (lambda: service.get_job(bob, job.id), lambda: service.cancel(bob, queued_for_later.id),
                 lambda: service.wait(bob, job.id, timeout=1), lambda: service.subscribe(bob, job.id),
                 lambda: service.get_image(bob, image_id), lambda: service.image_png(bob, image_id),
                 lambda: service.delete_image(bob, image_id)):
        with pytest.raises(NotFound):
            call()
    assert service.list_jobs(bob) == []
    assert {v.id for v in service.list_jobs(alice)} == {job.id, queued_for_later.id}
    assert service.get_image(alice, image_id).sha256 == job.images[0].sha256  # bob's delete did nothing

    service.delete_image(alice, image_id)
    with pytest.raises(NotFound):
        service.image_png(alice, image_id)
    assert service.get_job(alice, job.id).images == []


def test_admin_operations(make_service):
    service = make_service()
    user = service.add_user("carol")
    assert (user["name"], user["is_admin"], user["balance"]) == ("carol", False, 0)
    assert service.grant_credits("carol", 50, "welcome") == 50
    assert service.grant_credits("carol", -20) == 30
    with pytest.raises(NotFound):
        service.grant_credits("nobody", 5)
    with pytest.raises(NotFound):
        service.create_key("nobody")
    assert [u["name"] for u in service.list_users()] == ["carol"]
    names = [m["name"] for m in service.models()]
    assert names[0] == "builtin" and "tiny" in names
    assert "Euler a" in service.samplers() and "DPM++ 2M Karras" in service.samplers()
