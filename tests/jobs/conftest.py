"""Job service fixtures: a CPU engine with the tiny SD1 model registered as "tiny", services that stop after."""

import os

import pytest

from egaku.jobs import Service, ServiceSettings
from egaku.store.testing import POSTGRES_ENV, fresh_database


@pytest.fixture(scope="session")
def engine():
    from egaku.engine import Engine
    from egaku.models.tiny import tiny_bundle

    engine = Engine(device="cpu", dtype="fp32")
    engine.add_bundle("tiny", tiny_bundle("sd1"))
    return engine


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    base = None
    if request.param == "postgres":
        base = os.environ.get(POSTGRES_ENV)
        if not base:
            pytest.skip(f"{POSTGRES_ENV} is not set")
    with fresh_database(base, tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    with fresh_database(None, tmp_path) as url:
        yield url


@pytest.fixture
def make_service(engine, egaku_home, sqlite_url):
    """make_service(**Service.create kwargs) -> Service (sqlite unless db_url=...); closed after the test."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("db_url", sqlite_url)
        kwargs.setdefault("engine", engine)
        kwargs.setdefault("home", egaku_home)
        kwargs.setdefault("settings", ServiceSettings(poll_s=0.2, heartbeat_s=0.5))
        service = Service.create(**kwargs)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()

