"""kill -9 mid-run on PostgreSQL (when EGAKU_TEST_POSTGRES_URL is set); see crashkit."""

import os

import pytest
from crashkit import kill_mid_run_then_restart

from egaku.store.testing import POSTGRES_ENV, fresh_database


@pytest.fixture
def pg_url(tmp_path):
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"{POSTGRES_ENV} is not set")
    with fresh_database(os.environ[POSTGRES_ENV], tmp_path) as url:
        yield url  # dropped after the services (set up later) are closed


def test_kill_9_mid_run_then_restart_finishes_every_job(pg_url, make_service, egaku_home):
    kill_mid_run_then_restart(make_service, pg_url, egaku_home)
