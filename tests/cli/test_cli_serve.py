"""`egaku serve` as a real subprocess, and the admin commands (users, keys, credits) that feed it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(egaku_home, *args: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, EGAKU_HOME=str(egaku_home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "egaku.cli.main", "serve", "--port", str(port), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            requests.get(url + "/api/v1/pricing", timeout=2)
            return proc, url
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "egaku serve did not come up"
            time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.terminate()  # SIGTERM: uvicorn shuts down gracefully
    out, err = proc.communicate(timeout=60)
    return out, err


def test_admin_commands_then_serve(egaku, egaku_home, one_line_error):
    assert egaku("users", "add", "alice").returncode == 0
    created = egaku("keys", "create", "alice", "--label", "laptop")
    assert created.returncode == 0
    key = created.stdout.strip()
    assert key.startswith("egk_") and "shown this once" in created.stderr
    granted = egaku("credits", "grant", "alice", "25", "--memo", "welcome")
    assert "balance 25" in granted.stdout
    assert egaku("credits", "balance", "alice").stdout.strip() == "25"
    listed = egaku("keys", "list", "alice")
    assert "laptop" in listed.stdout and "active" in listed.stdout and key not in listed.stdout  # never shown again
    assert "alice" in egaku("users", "list").stdout
    one_line_error(egaku("keys", "create", "nobody"), "no user named 'nobody'")
    one_line_error(egaku("users", "add", "alice"), "already exists")

    proc, url = _serve(egaku_home, "--workers", "0")
    try:
        auth = {"Authorization": f"Bearer {key}"}
        account = requests.get(url + "/api/v1/account", headers=auth, timeout=30).json()
        assert account["name"] == "alice" and account["balance"] == 25 and account["auth"] is True
        assert requests.get(url + "/api/v1/account", timeout=30).status_code == 401
        # revoking the key (from another process, on the same database) locks it out at once
        key_id = egaku("keys", "list", "alice", "--json").stdout.split('"id": "')[1].split('"')[0]
        assert egaku("keys", "revoke", key_id).returncode == 0
        assert requests.get(url + "/api/v1/account", headers=auth, timeout=30).status_code == 401
    finally:
        out, err = _stop(proc)
    assert f"egaku serving on {url}" in out and "Traceback" not in err


def test_no_auth_mode_and_its_warning(egaku_home):
    proc, url = _serve(egaku_home, "--no-auth", "--workers", "0")
    try:
        account = requests.get(url + "/api/v1/account", timeout=30).json()
        assert account["auth"] is False and account["name"] == "local"
        # the port is taken now: a second server on all interfaces warns, then fails to bind
        port = url.rsplit(":", 1)[1]
        env = dict(os.environ, EGAKU_HOME=str(egaku_home), OMP_NUM_THREADS="1")
        second = subprocess.run([sys.executable, "-m", "egaku.cli.main", "serve", "--no-auth", "--workers", "0",
                                 "--host", "0.0.0.0", "--port", port], env=env, capture_output=True, text=True,
                                timeout=300)
        assert "warning: --no-auth on 0.0.0.0" in second.stderr and second.returncode != 0
    finally:
        _stop(proc)
