"""The shared server of a test module: alice and bob with credits, carol with none."""

from __future__ import annotations

import pytest
from liveserver import start_live


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The shared server of a test module: alice and bob (1000 credits each), carol (0)."""
    live, server = start_live(tmp_path_factory.mktemp("server"), credits={"alice": 1000, "bob": 1000, "carol": 0})
    yield live
    server.stop()
