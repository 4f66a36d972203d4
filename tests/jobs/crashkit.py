"""kill -9 mid-run, then restart: the scenario test_crash*.py run on SQLite and on PostgreSQL.

A real child process runs the workers; the test kills it with SIGKILL while a job is in the
middle of its denoising loop, then opens a Service on the same database and home.
"""

import os
import signal
import subprocess
import sys
import time

from jobkit import tiny, user_with_key

from egaku.jobs import ServiceSettings

CHILD = """
import sys, time
from egaku.engine import Engine
from egaku.jobs import Service, ServiceSettings
from egaku.models.tiny import tiny_bundle

engine = Engine(device="cpu", dtype="fp32")
engine.add_bundle("tiny", tiny_bundle("sd1"))  # the same weights as the test's (seeded)
service = Service.create(db_url=sys.argv[1], engine=engine, batching=False,
                         settings=ServiceSettings(heartbeat_s=0.2, poll_s=0.2))
service.start()
time.sleep(600)
"""


def kill_mid_run_then_restart(make_service, db_url, egaku_home):
    service = make_service(db_url=db_url, batching=False)
    alice, _ = user_with_key(service, "alice", credits=100)
    long_job = service.submit(alice, tiny("a long one", steps=60, seed=7))
    waiting = service.submit(alice, tiny("next in line", steps=2))
    env = dict(os.environ, EGAKU_HOME=str(egaku_home), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, db_url], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # the child imports torch and diffusers first: slow on a busy CI machine
        while True:  # until the child is inside the denoising loop of the long job
            job = service.store.get_job(long_job.id)
            if job.status == "running" and (job.progress_step or 0) >= 2:
                break
            assert child.poll() is None, child.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the child never got to run the job"
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    crashed = service.store.get_job(long_job.id)
    assert crashed.status == "running" and crashed.attempts == 1 and crashed.progress_step < 60  # as left
    assert service.balance(alice) == 100 - long_job.cost - waiting.cost  # both still held

    restarted = make_service(db_url=db_url, batching=False, settings=ServiceSettings(poll_s=0.2))
    restarted.start()  # the dead child's job is re-queued at once (its pid is gone)
    finished = [restarted.wait(alice, v.id, timeout=60) for v in (long_job, waiting)]
    assert [v.status for v in finished] == ["succeeded", "succeeded"]
    assert finished[0].images[0].seed == 7
    assert restarted.store.get_job(long_job.id).attempts == 2
    assert restarted.balance(alice) == 100 - long_job.cost - waiting.cost  # charged once each
    assert restarted.store.ledger_check() == {"total": 0, "unbalanced": []}
