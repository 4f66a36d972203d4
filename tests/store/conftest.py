"""Store tests run on SQLite always and on PostgreSQL when EGAKU_TEST_POSTGRES_URL is set (a fresh schema each)."""

import os

import pytest

from egaku.store import Store
from egaku.store.testing import POSTGRES_ENV, fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "postgres":
        base = os.environ.get(POSTGRES_ENV)
        if not base:
            pytest.skip(f"{POSTGRES_ENV} is not set")
    else:
        base = None
    with fresh_database(base, tmp_path) as url:
        yield url


@pytest.fixture
def store(db_url, egaku_home):
    store = Store.open(db_url, egaku_home)
    yield store
    store.close()
