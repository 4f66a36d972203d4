"""Every test runs offline, with EGAKU_HOME in a temporary folder."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def egaku_home(tmp_path, monkeypatch):
    home = tmp_path / "egaku_home"
    home.mkdir()
    monkeypatch.setenv("EGAKU_HOME", str(home))
    return home
