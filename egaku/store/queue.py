"""The job queue in the database: fair order, claiming, finishing and crash recovery.

Fair order (also what queue positions show): the next job is the oldest queued job of the user
with the fewest running jobs; ties go to the user served least recently, then to the user whose
oldest job is older. Computing the whole order simulates that rule (a user who was just picked has
one more running job and was served last), which interleaves users round-robin: one user's 100
jobs cannot starve another's single image.

Claiming is a conditional UPDATE (queued -> running), so two workers, threads or processes, can
never run one job twice; a lost race just moves on to the next job.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from egaku.store import ledger
from egaku.store.ids import utcnow
from egaku.store.schema import TERMINAL, Hold, HoldState, Job, JobState, User, WebhookState


@dataclass(frozen=True)
class Queued:
    id: str
    user_id: str
    batch_key: str | None
    n: int


def fair_order(s: Session) -> list[Queued]:
    """Every queued job, in the order workers will take them."""
    rows = s.execute(select(Job.id, Job.user_id, Job.batch_key, Job.n)
                     .where(Job.status == JobState.QUEUED.value).order_by(Job.id)).all()
    if not rows:
        return []
    per_user: dict[str, deque[Queued]] = defaultdict(deque)
    for row in rows:
        per_user[row.user_id].append(Queued(row.id, row.user_id, row.batch_key, row.n))
    users = list(per_user)
    running = dict(s.execute(select(Job.user_id, func.count()).where(
        Job.status == JobState.RUNNING.value, Job.user_id.in_(users)).group_by(Job.user_id)).all())
    served = dict(s.execute(select(User.id, User.last_served_at).where(User.id.in_(users))).all())
    # heap key: (running jobs, when last served: never < a real time < simulated picks, oldest job id, user)
    heap = []
    for user_id, jobs in per_user.items():
        ts = served.get(user_id)
        rank = (0, 0.0) if ts is None else (1, ts.timestamp())
        heap.append((running.get(user_id, 0), rank, jobs[0].id, user_id))
    heapq.heapify(heap)
    order: list[Queued] = []
    tick = 0
    while heap:
        count, _, _, user_id = heapq.heappop(heap)
        jobs = per_user[user_id]
        order.append(jobs.popleft())
        if jobs:
            tick += 1
            heapq.heappush(heap, (count + 1, (2, float(tick)), jobs[0].id, user_id))
    return order


def _claim_one(s: Session, job_id: str, worker_id: str, now: datetime) -> bool:
    done = s.execute(update(Job).where(Job.id == job_id, Job.status == JobState.QUEUED.value).values(
        status=JobState.RUNNING.value, attempts=Job.attempts + 1, worker_id=worker_id, started_at=now,
        heartbeat_at=now, progress_step=None, progress_total=None, error=None))
    return done.rowcount == 1


def claim(s: Session, worker_id: str, *, max_batch: int = 1, max_images: int = 16) -> list[Job]:
    """Claim the next job in fair order, plus up to max_batch-1 queued jobs with its batch key.

    The batch takes compatible jobs in fair order while their images fit in `max_images`.
    Returns the claimed rows (lead first), now `running`; [] when nothing is queued.
    """
    now = utcnow()
    order = fair_order(s)
    lead = next((q for q in order if _claim_one(s, q.id, worker_id, now)), None)
    if lead is None:
        return []
    claimed, images = [lead.id], lead.n
    if lead.batch_key is not None:
        for q in order:
            if len(claimed) >= max_batch:
                break
            if q.id in claimed or q.batch_key != lead.batch_key or images + q.n > max_images:
                continue
            if _claim_one(s, q.id, worker_id, now):
                claimed.append(q.id)
                images += q.n
    users = {q.user_id for q in order if q.id in claimed}
    s.execute(update(User).where(User.id.in_(users)).values(last_served_at=now))
    rows = {j.id: j for j in s.execute(select(Job).where(Job.id.in_(claimed))).scalars()}
    return [rows[i] for i in claimed]


def finish(s: Session, job_id: str, status: JobState, *, error: str | None = None,
           from_states: tuple[JobState, ...] = (JobState.RUNNING,), worker_id: str | None = None) -> bool:
    """Move a job to a terminal `status` (only from `from_states`, and only if `worker_id` still runs it).

    Settles the hold on success, releases it otherwise, and marks a webhook due. False if the job
    was not in a state to move (cancelled meanwhile, or recovered by another process).
    """
    query = update(Job).where(Job.id == job_id, Job.status.in_([st.value for st in from_states]))
    if worker_id is not None:
        query = query.where(Job.worker_id == worker_id)
    done = s.execute(query.values(status=status.value, error=error, finished_at=utcnow(),
                                  progress_step=None, progress_total=None))
    if done.rowcount != 1:
        return False
    s.execute(update(Job).where(Job.id == job_id, Job.webhook_url.is_not(None))
              .values(webhook_state=WebhookState.PENDING.value))
    if status is JobState.SUCCEEDED:
        ledger.settle(s, job_id)
    else:
        ledger.release(s, job_id)
    return True


def requeue(s: Session, job_id: str, *, worker_id: str | None = None, refund_attempt: bool = False) -> bool:
    """running -> queued (a worker stopped or crashed); its hold stays active."""
    query = update(Job).where(Job.id == job_id, Job.status == JobState.RUNNING.value)
    if worker_id is not None:
        query = query.where(Job.worker_id == worker_id)
    values = dict(status=JobState.QUEUED.value, worker_id=None, progress_step=None, progress_total=None,
                  heartbeat_at=None)
    if refund_attempt:
        values["attempts"] = Job.attempts - 1
    return s.execute(query.values(**values)).rowcount == 1


def recover(s: Session, *, is_dead: Callable[[str | None], bool], stale_before: datetime,
            max_attempts: int) -> list[tuple[str, JobState]]:
    """Jobs whose worker died (dead process, or no heartbeat since `stale_before`) and stray holds.

    A dead job goes back to the queue while it has had fewer than `max_attempts` tries; else it
    fails (refunded). One whose cancel was asked is cancelled (refunded). Active holds of finished
    jobs are settled (succeeded) or released. Returns [(job_id, new status)].
    """
    changed: list[tuple[str, JobState]] = []
    for job in s.execute(select(Job).where(Job.status == JobState.RUNNING.value)).scalars().all():
        stale = job.heartbeat_at is None or job.heartbeat_at < stale_before
        if not (stale or is_dead(job.worker_id)):
            continue
        if job.cancel_requested:
            if finish(s, job.id, JobState.CANCELLED, worker_id=job.worker_id):
                changed.append((job.id, JobState.CANCELLED))
        elif job.attempts < max_attempts:
            if requeue(s, job.id, worker_id=job.worker_id):
                changed.append((job.id, JobState.QUEUED))
        else:
            message = f"the worker running this job stopped {job.attempts} times; credits refunded"
            if finish(s, job.id, JobState.FAILED, error=message, worker_id=job.worker_id):
                changed.append((job.id, JobState.FAILED))
    stray = s.execute(select(Hold.job_id, Job.status).join(Job, Job.id == Hold.job_id).where(
        Hold.state == HoldState.ACTIVE.value, Job.status.in_([st.value for st in TERMINAL]))).all()
    for job_id, status in stray:
        if status == JobState.SUCCEEDED.value:
            ledger.settle(s, job_id)
        else:
            ledger.release(s, job_id)
    return changed
