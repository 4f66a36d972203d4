"""API keys are shown once and stored only as a SHA-256; revoked keys stay findable but marked."""

import hashlib

import pytest
from sqlalchemy import text

from egaku.store import Conflict, NotFound, Store


def _all_text(store) -> str:
    """Every value of every table, as text: what someone who copies the database would see."""
    out = []
    with store.read() as s:
        for table in ("users", "api_keys", "accounts", "ledger_entries", "holds", "jobs", "images"):
            for row in s.execute(text(f"SELECT * FROM {table}")):
                out.extend(str(v) for v in row)
    return "\n".join(out)


def test_key_plaintext_is_never_stored(store):
    user = store.add_user("alice")
    key, plaintext = store.create_key(user.id, "laptop")
    assert plaintext.startswith("egk_") and len(plaintext) > 40
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert key.prefix == plaintext[4:12]
    dump = _all_text(store)
    assert plaintext not in dump and plaintext[4:] not in dump
    assert key.key_hash in dump

    found_key, found_user = store.find_key(plaintext)
    assert (found_key.id, found_user.name) == (key.id, "alice")
    assert found_key.last_used_at is not None
    assert store.find_key(plaintext + "x") is None
    other, other_plain = store.create_key(user.id)
    assert other_plain != plaintext and other.key_hash != key.key_hash


def test_revoked_key_is_marked(store):
    user = store.add_user("bob")
    key, plaintext = store.create_key(user.id)
    store.revoke_key(key.id)
    found, _ = store.find_key(plaintext)
    assert found.revoked_at is not None
    with pytest.raises(NotFound):
        store.revoke_key("no-such-key")


def test_user_names_are_unique_and_checked(store):
    store.add_user("carol", is_admin=True)
    with pytest.raises(Conflict, match="already exists"):
        store.add_user("carol")
    with pytest.raises(Exception, match="invalid user name"):
        store.add_user("bad name/with slash")
    assert store.ensure_user("carol").is_admin is True
    assert [u.name for u in store.list_users()] == ["carol"]
    with pytest.raises(NotFound):
        store.create_key("no-such-user")


def test_shared_secret_is_made_once_and_shared_by_every_process(store, db_url, egaku_home):
    first = store.shared_secret("image_urls")
    assert len(first) == 32 and store.shared_secret("image_urls") == first
    assert store.shared_secret("other") != first
    again = Store.open(db_url, egaku_home)  # another process, or a restart
    try:
        assert again.shared_secret("image_urls") == first
    finally:
        again.close()
