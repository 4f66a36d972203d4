"""kill -9 mid-run on SQLite: on restart every accepted job finishes; credits charged once (see crashkit)."""

from crashkit import kill_mid_run_then_restart


def test_kill_9_mid_run_then_restart_finishes_every_job(make_service, sqlite_url, egaku_home):
    kill_mid_run_then_restart(make_service, sqlite_url, egaku_home)
