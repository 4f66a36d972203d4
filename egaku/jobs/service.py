"""`Service`: the one object the HTTP server and the admin CLI talk to.

    service = Service.create(db_url=None, auth=True, workers=1)   # sqlite $EGAKU_HOME/egaku.db, migrated
    service.start()                                                # recover crashed jobs, start workers
    principal = service.authenticate("egk_...")
    view = service.submit(principal, JobSpec("a red circle", steps=20))   # persisted + credits held
    view = service.wait(principal, view.id)

Submit = validate, rate limit, then ONE transaction that checks quotas and the balance, inserts the
job and holds its cost; only then is the job acknowledged and a worker woken.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

from egaku.errors import InvalidRequestError
from egaku.jobs.admin import AdminMixin
from egaku.jobs.events import EventBus, Subscription
from egaku.jobs.settings import ServiceSettings
from egaku.jobs.types import (
    Event, ImageView, JobSpec, JobStatus, JobView, Principal, QuotaExceeded, RateLimited, Unauthorized,
)
from egaku.jobs.validate import BUILTIN, builtin_info, check_spec, cost_of, registered_models
from egaku.jobs.views import image_view, job_view
from egaku.jobs.webhooks import WebhookSender
from egaku.jobs.worker import RunState, Worker
from egaku.paths import egaku_home
from egaku.store import Store, ratelimit
from egaku.store.errors import LimitReached
from egaku.store.ids import iso, new_id, utcnow
from egaku.store.schema import Job, JobState, WebhookState
from egaku.store.store import KEY_PREFIX

log = logging.getLogger(__name__)
LOCAL_USER = "local"


class Service(AdminMixin):
    def __init__(self, store: Store, *, engine=None, auth: bool = True, workers: int = 1, batching: bool = True,
                 max_batch: int = 4, settings: ServiceSettings | None = None):
        self.store = store
        self.settings = settings or ServiceSettings()
        self._engine = engine
        self._engine_lock = threading.Lock()
        self._auth = bool(auth)
        self.workers = max(0, int(workers))
        self.max_batch = max(1, int(max_batch)) if batching else 1
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        self.bus = EventBus()
        self.webhooks = WebhookSender(self.store.set_webhook_state, tries=self.settings.webhook_tries,
                                      backoff_s=self.settings.webhook_backoff_s,
                                      timeout_s=self.settings.webhook_timeout_s,
                                      private_ok=self.settings.webhook_private_ok)
        self._running: dict[str, RunState] = {}
        self._running_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._local: Principal | None = None
        if not self._auth:
            user = self.store.ensure_user(LOCAL_USER, is_admin=True)
            self._local = Principal(user.id, user.name, True, None)

    @classmethod
    def create(cls, *, db_url: str | None = None, home: Path | None = None, engine=None, auth: bool = True,
               workers: int = 1, batching: bool = True, max_batch: int = 4,
               settings: ServiceSettings | None = None) -> "Service":
        """Open the store (sqlite home/egaku.db unless `db_url`), migrate to head; workers start in start()."""
        home = Path(home) if home is not None else egaku_home()
        return cls(Store.open(db_url, home), engine=engine, auth=auth, workers=workers, batching=batching,
                   max_batch=max_batch, settings=settings)

    @property
    def auth(self) -> bool:
        return self._auth

    @property
    def engine(self):
        """The engine (built on first use, so admin commands never import torch)."""
        with self._engine_lock:
            if self._engine is None:
                from egaku.engine import Engine

                self._engine = Engine()
            return self._engine

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover what a crash left (jobs, holds, webhooks), then start the worker threads."""
        if self._threads:
            return
        self._stopping.clear()
        self.webhooks.resume()
        self.recover(stale_after_s=self.settings.stale_after_s)
        for job in self.store.pending_webhooks():
            if JobStatus(job.status).terminal and job.webhook_url:
                self.webhooks.send(job.id, job.webhook_url, self._view(job).to_dict())
        if self.workers:
            self.engine  # built now, before the first job is waiting for it
        self._threads = [Worker(self, i) for i in range(self.workers)]
        self._threads.append(threading.Thread(target=self._maintain, name="egaku-heartbeat", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stop the workers; running jobs are interrupted and go back to the queue for the next start."""
        self._stopping.set()
        with self._running_lock:
            for st in self._running.values():
                st.cancel.set()
        self._wake.set()
        if wait:
            for thread in self._threads:
                thread.join(timeout=60)
            self.webhooks.stop()
        self._threads = []

    def close(self) -> None:
        self.stop()
        self.store.close()

    def recover(self, *, stale_after_s: float) -> list[tuple[str, JobState]]:
        """Jobs whose worker process died (or has sent no heartbeat for stale_after_s): re-queued or failed."""
        changed = self.store.recover(is_dead=self._is_dead, stale_before=utcnow() - timedelta(seconds=stale_after_s),
                                     max_attempts=self.settings.max_attempts)
        for job_id, status in changed:
            log.warning("recovered job %s: %s", job_id, status.value)
            if status in (JobState.FAILED, JobState.CANCELLED):
                self._finished(job_id)
        if changed:
            self._wake.set()
        return changed

    def _is_dead(self, worker_id: str | None) -> bool:
        """Whether the process that claimed a job is gone (only knowable on this host)."""
        host, _, rest = (worker_id or "").partition(":")
        pid, _, _ = rest.partition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return False
        if int(pid) == os.getpid():  # this process: alive (another Service in it is judged by heartbeat)
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        try:  # a killed child not yet reaped is a zombie: as good as dead
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
        except (OSError, IndexError):
            return False

    def _maintain(self) -> None:
        """Heartbeat for running jobs (with progress); cancel requests from other processes; stale jobs."""
        last_recover = time.monotonic()
        while not self._stopping.wait(self.settings.heartbeat_s):
            try:
                with self._running_lock:
                    progress = {i: (st.step, st.total) for i, st in self._running.items()}
                for job_id in self.store.heartbeat(self.worker_id, progress):
                    with self._running_lock:
                        st = self._running.get(job_id)
                    if st is not None:
                        st.user_cancelled = True
                        st.cancel.set()
                if time.monotonic() - last_recover > self.settings.stale_after_s / 2:
                    last_recover = time.monotonic()
                    self.recover(stale_after_s=self.settings.stale_after_s)
            except Exception:
                log.exception("heartbeat")

    # -- auth ----------------------------------------------------------------------------------------

    def authenticate(self, api_key: str | None) -> Principal:
        if not self._auth:
            return self._local
        if not api_key or not isinstance(api_key, str):
            raise Unauthorized("missing API key")
        found = self.store.find_key(api_key.strip()) if api_key.startswith(KEY_PREFIX) else None
        if found is None:
            raise Unauthorized("invalid API key")
        key, user = found
        if key.revoked_at is not None:
            raise Unauthorized("this API key has been revoked")
        return Principal(user.id, user.name, user.is_admin, key.id)

    # -- generation ----------------------------------------------------------------------------------

    def cost(self, spec: JobSpec) -> int:
        """credits = max(1, ceil(width * height * steps * n / (128 * 128 * 20))); sizes resolved as submit does."""
        return check_spec(spec, engine=self.engine, settings=self.settings).cost

    def submit(self, principal: Principal, spec: JobSpec) -> JobView:
        if self._auth and principal.api_key_id is not None:
            wait_s = self.store.take_request_token(principal.api_key_id, self.settings.key_rpm)
            if wait_s:
                raise RateLimited(f"too many requests: at most {self.settings.key_rpm} a minute per API key",
                                  retry_after=ratelimit.retry_after(wait_s))
        checked = check_spec(spec, engine=self.engine, settings=self.settings)
        stored = dict(checked.spec)
        if checked.init_image is not None:  # inputs are files before the job exists: a crash loses nothing
            stored["_init_image"] = self.store.inputs.put(checked.init_image)
        if checked.mask is not None:
            stored["_mask"] = self.store.inputs.put(checked.mask)
        try:
            job = self.store.create_job(
                user_id=principal.user_id, api_key_id=principal.api_key_id, spec=stored, cost=checked.cost,
                charge=self._auth, n=stored["n"], batch_key=checked.batch_key, webhook_url=stored["webhook_url"],
                source=stored["source"], max_user_active=self.settings.max_user_jobs,
                max_key_active=self.settings.max_key_active if self._auth else None)
        except LimitReached as e:
            kind = QuotaExceeded if e.scope == "user" else RateLimited
            raise kind(str(e), retry_after=self.settings.busy_retry_after_s) from None
        self._wake.set()
        return self._view(job)

    def get_job(self, principal: Principal, job_id: str) -> JobView:
        return self._view(self.store.get_job(job_id, principal.user_id))

    def list_jobs(self, principal: Principal, *, limit: int = 50, before: str | None = None, q: str | None = None,
                  status: JobStatus | None = None) -> list[JobView]:
        """The caller's jobs, newest first; `before` = a job id (cursor), `q` = prompt substring."""
        try:
            status_value = JobStatus(status).value if status else None
            limit = int(limit)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"status must be one of {', '.join(s.value for s in JobStatus)} and "
                                      f"limit a whole number") from None
        jobs = self.store.list_jobs(principal.user_id, limit=limit, before=before, q=q, status=status_value)
        order = self.store.queue_order() if any(j.status == JobState.QUEUED.value for j in jobs) else []
        images = self.store.images_of([j.id for j in jobs if j.status == JobState.SUCCEEDED.value])
        return [self._view(j, order=order, images=images.get(j.id, [])) for j in jobs]

    def cancel(self, principal: Principal, job_id: str) -> JobView:
        """Queued: cancelled and refunded at once. Running: the engine stops at its next step (refunded)."""
        job = self.store.get_job(job_id, principal.user_id)
        if job.status == JobState.QUEUED.value:
            if self.store.finish_job(job_id, JobState.CANCELLED, from_states=(JobState.QUEUED,)):
                self._finished(job_id)
                return self.get_job(principal, job_id)
            job = self.store.get_job(job_id, principal.user_id)  # claimed meanwhile
        if job.status == JobState.RUNNING.value:
            self.store.request_cancel(job_id)
            with self._running_lock:
                st = self._running.get(job_id)
            if st is not None:
                st.user_cancelled = True
                st.cancel.set()
            return self.wait(principal, job_id, timeout=self.settings.cancel_wait_s)
        return self._view(job)

    def wait(self, principal: Principal, job_id: str, timeout: float | None = None) -> JobView:
        """Block until the job is finished (or `timeout` s pass); returns its view either way."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.bus.subscribe(job_id) as sub:
            while True:
                view = self.get_job(principal, job_id)
                left = None if deadline is None else deadline - time.monotonic()
                if view.status.terminal or (left is not None and left <= 0):
                    return view
                sub.get(timeout=min(1.0, left) if left is not None else 1.0)  # poll too: other processes

    def subscribe(self, principal: Principal, job_id: str) -> Subscription:
        """Events of one of the caller's jobs; the first is its current status (and done if it has ended)."""
        self.store.get_job(job_id, principal.user_id)
        sub = self.bus.subscribe(job_id)
        view = self.get_job(principal, job_id)
        sub.put(Event(job_id, "status", view.to_dict()))
        if view.status.terminal:
            sub.put(Event(job_id, "done", view.to_dict()))
        return sub

    def current_progress(self, principal: Principal) -> dict | None:
        """The caller's running job (for A1111's /sdapi/v1/progress), or None when nothing runs."""
        with self._running_lock:
            local = next((st for st in self._running.values() if st.job.user_id == principal.user_id), None)
        if local is not None:
            job_id, step, total, preview = local.job.id, local.step, local.total, local.preview_png
        else:
            running = self.store.running_jobs(principal.user_id)
            if not running:
                return None
            job = running[0]
            job_id, step, total, preview = job.id, job.progress_step or 0, job.progress_total or 0, None
        job = self.store.get_job(job_id)
        return {"job_id": job_id, "step": step, "total": total, "fraction": step / total if total else 0.0,
                "preview_png": preview, "started_at": iso(job.started_at), "spec": job_view(
                    job, position=None, progress=None, images=[]).spec}

    # -- images --------------------------------------------------------------------------------------

    def image_png(self, principal: Principal, image_id: str) -> bytes:
        """The PNG as generated, with its A1111 parameters chunk."""
        return self.store.images.get(self.store.get_image(image_id, principal.user_id).sha256)

    def get_image(self, principal: Principal, image_id: str) -> ImageView:
        return image_view(self.store.get_image(image_id, principal.user_id))

    def delete_image(self, principal: Principal, image_id: str) -> None:
        self.store.delete_image(image_id, principal.user_id)

    # -- accounts ------------------------------------------------------------------------------------

    def balance(self, principal: Principal) -> int:
        return self.store.balance(principal.user_id)

    def account(self, principal: Principal) -> dict:
        return {"id": principal.user_id, "name": principal.name, "is_admin": principal.is_admin,
                "balance": self.balance(principal), "auth": self._auth}

    def models(self) -> list[dict]:
        """[{"name","family","default_size","hash"}]: built-in first, then engine-registered, then the library."""
        from egaku.models.library import list_models

        builtin = builtin_info()
        out = [{"name": BUILTIN, "family": builtin["family"], "default_size": builtin["default_size"],
                "hash": builtin["hash"]}]
        for name, bundle in registered_models(self._engine).items():
            out.append({"name": name, "family": str(bundle.family.value), "default_size": int(bundle.default_size),
                        "hash": bundle.short_hash})
        for info in list_models():
            out.append({"name": info.name, "family": info.family, "default_size": info.default_size,
                        "hash": info.autov2})
        return out

    def samplers(self) -> list[str]:
        from egaku.engine.samplers import list_samplers

        return [s.name for s in list_samplers()]

    # -- views and events ----------------------------------------------------------------------------

    def _view(self, job: Job, *, order: list[str] | None = None, images: list | None = None) -> JobView:
        position = progress = None
        if job.status == JobState.QUEUED.value:
            order = self.store.queue_order() if order is None else order
            position = order.index(job.id) if job.id in order else None
        elif job.status == JobState.RUNNING.value:
            with self._running_lock:
                st = self._running.get(job.id)
            if st is not None:
                progress = {"step": st.step, "total": st.total}
            else:
                progress = {"step": job.progress_step or 0, "total": job.progress_total or int(job.spec.get("steps", 0))}
        if images is None and job.status == JobState.SUCCEEDED.value:
            images = self.store.images_of([job.id])[job.id]
        return job_view(job, position=position, progress=progress, images=images or [])

    def _publish_status(self, job_id: str) -> None:
        if self.bus.listeners(job_id):
            self.bus.publish(Event(job_id, "status", self._view(self.store.get_job(job_id)).to_dict()))

    def _finished(self, job_id: str) -> None:
        """A job reached a terminal state: status and done events, and its webhook."""
        job = self.store.get_job(job_id)
        data = self._view(job).to_dict()
        self.bus.publish(Event(job_id, "status", data))
        self.bus.publish(Event(job_id, "done", data))
        if job.webhook_url and job.webhook_state == WebhookState.PENDING.value:
            self.webhooks.send(job_id, job.webhook_url, data)


__all__ = ["LOCAL_USER", "Service", "ServiceSettings", "cost_of"]
