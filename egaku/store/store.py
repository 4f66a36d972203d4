"""`Store`: the database and the blob files behind one object, built from a URL by `Store.open`.

    store = Store.open("sqlite:////tmp/egaku.db", home=Path("/tmp"))   # or postgresql://user@host/db
    user = store.add_user("alice"); store.grant(user.id, 100)
    key, plaintext = store.create_key(user.id, "laptop")              # plaintext "egk_..." shown once

Knows nothing of the engine or HTTP: jobs are rows with a JSON spec and an opaque batch key.
Rows come back detached (plain attribute access, no lazy loading).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import func, make_url, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from egaku.errors import InvalidRequestError
from egaku.paths import egaku_home
from egaku.store import ledger, queue, ratelimit
from egaku.store.blobs import BlobStore
from egaku.store.db import create_db_engine, migrate, normalize_url, writer
from egaku.store.errors import Conflict, LimitReached, NotFound, StoreUnavailable
from egaku.store.ids import new_id, utcnow
from egaku.store.schema import ACTIVE, ApiKey, Image, Job, JobState, ServerSecret, User, WebhookState

KEY_PREFIX = "egk_"
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
KEY_TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often per key


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


class Store:
    """Users, keys, credits, jobs and images in SQL; image bytes in content-addressed files."""

    def __init__(self, url: str, home: Path):
        self.url = url
        self.home = Path(home)
        self.engine = create_db_engine(url)
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write = sessionmaker(bind=writer(self.engine), expire_on_commit=False)
        self.images = BlobStore(self.home / "images", ".png")  # generated PNGs
        self.inputs = BlobStore(self.home / "inputs")  # uploaded init images and masks, as sent

    @classmethod
    def open(cls, url: str | None = None, home: Path | None = None) -> "Store":
        """Connect (default: sqlite file home/egaku.db) and migrate the schema to head."""
        from alembic.util.exc import CommandError
        from sqlalchemy.exc import OperationalError

        home = Path(home) if home is not None else egaku_home()
        store = cls(normalize_url(url, home), home)
        try:
            migrate(store.engine)
        except (OperationalError, CommandError) as e:
            store.close()
            shown = make_url(store.url).render_as_string(hide_password=True)
            reason = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
            raise StoreUnavailable(f"cannot open the database {shown}: {reason}") from None
        return store

    def close(self) -> None:
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as s:
            yield s

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        with self._write() as s, s.begin():
            yield s

    def shared_secret(self, name: str) -> bytes:
        """The 32-byte random secret stored under `name`, made on first use: the same for every
        process on this database, and across restarts."""
        with self.read() as s:
            row = s.get(ServerSecret, name)
        if row is None:
            try:
                with self.transaction() as s:
                    s.add(ServerSecret(name=name, value=secrets.token_hex(32), created_at=utcnow()))
            except IntegrityError:
                pass  # another process made it first: use theirs
            with self.read() as s:
                row = s.get(ServerSecret, name)
        return bytes.fromhex(row.value)

    # -- users and keys ------------------------------------------------------------------------------

    def add_user(self, name: str, *, is_admin: bool = False) -> User:
        if not isinstance(name, str) or not USER_NAME.match(name):
            raise InvalidRequestError(f"invalid user name {name!r}: letters, digits and . _ @ + - (64 at most)")
        try:
            with self.transaction() as s:
                user = User(id=new_id(), name=name, is_admin=is_admin, created_at=utcnow())
                s.add(user)
                s.flush()
                ledger.open_account(s, user.id)
        except IntegrityError:
            raise Conflict(f"a user named {name!r} already exists") from None
        return user

    def ensure_user(self, name: str, *, is_admin: bool = False) -> User:
        """The user `name`, created if missing (the no-auth "local" user)."""
        try:
            return self.user_by_name(name)
        except NotFound:
            try:
                return self.add_user(name, is_admin=is_admin)
            except Conflict:  # created by another process meanwhile
                return self.user_by_name(name)

    def user_by_name(self, name: str) -> User:
        with self.read() as s:
            user = s.execute(select(User).where(User.name == name)).scalar_one_or_none()
        if user is None:
            raise NotFound(f"no user named {name!r}")
        return user

    def user_by_id(self, user_id: str) -> User:
        with self.read() as s:
            user = s.get(User, user_id)
        if user is None:
            raise NotFound(f"no user {user_id}")
        return user

    def list_users(self) -> list[User]:
        with self.read() as s:
            return list(s.execute(select(User).order_by(User.name)).scalars())

    def create_key(self, user_id: str, label: str = "") -> tuple[ApiKey, str]:
        """A new API key for the user: (row, plaintext). Only the SHA-256 of the plaintext is stored."""
        secret = secrets.token_urlsafe(32)
        plaintext = KEY_PREFIX + secret
        with self.transaction() as s:
            if s.get(User, user_id) is None:
                raise NotFound(f"no user {user_id}")
            key = ApiKey(id=new_id(), user_id=user_id, key_hash=hash_key(plaintext), prefix=secret[:8],
                         label=str(label)[:200], created_at=utcnow())
            s.add(key)
        return key, plaintext

    def find_key(self, plaintext: str) -> tuple[ApiKey, User] | None:
        """The key row and its user for a plaintext key (revoked ones too), or None."""
        with self.read() as s:
            row = s.execute(select(ApiKey, User).join(User, User.id == ApiKey.user_id)
                            .where(ApiKey.key_hash == hash_key(plaintext))).first()
        if row is None:
            return None
        key, user = row
        now = utcnow()
        if key.revoked_at is None and (key.last_used_at is None or now - key.last_used_at > KEY_TOUCH_EVERY):
            with self.transaction() as s:
                s.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
            key.last_used_at = now
        return key, user

    def take_request_token(self, key_id: str, per_minute: int, now: float | None = None) -> float:
        """Take a token from the key's requests-per-minute bucket (`egaku.store.ratelimit`): 0.0 if
        the request may go on, else the seconds until a token is free (nothing taken). The key's row
        is locked for the update, so server processes sharing the database share the bucket."""
        if per_minute <= 0:
            return 0.0
        now = time.time() if now is None else now
        with self.transaction() as s:
            key = s.execute(select(ApiKey).where(ApiKey.id == key_id).with_for_update()).scalar_one_or_none()
            if key is None:
                raise NotFound(f"no API key {key_id}")
            key.rate_tokens, wait = ratelimit.take_token(key.rate_tokens, key.rate_at, now, per_minute)
            key.rate_at = now
        return wait

    def revoke_key(self, key_id: str) -> ApiKey:
        with self.transaction() as s:
            key = s.get(ApiKey, key_id)
            if key is None:
                raise NotFound(f"no API key {key_id}")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
        return key

    def list_keys(self, user_id: str | None = None) -> list[ApiKey]:
        with self.read() as s:
            query = select(ApiKey).order_by(ApiKey.id)
            if user_id is not None:
                query = query.where(ApiKey.user_id == user_id)
            return list(s.execute(query).scalars())

    # -- credits -------------------------------------------------------------------------------------

    def grant(self, user_id: str, amount: int, memo: str = "") -> int:
        """Grant (or, negative, take back) credits; returns the new balance."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
            raise InvalidRequestError(f"amount must be a non-zero whole number of credits, got {amount!r}")
        with self.transaction() as s:
            return ledger.grant(s, user_id, amount, memo)

    def balance(self, user_id: str) -> int:
        with self.read() as s:
            return ledger.balance(s, user_id)

    def ledger_check(self) -> dict:
        """{"total": sum of all entries (0), "unbalanced": [txn ids]} — the ledger's invariants."""
        with self.read() as s:
            return {"total": ledger.ledger_total(s), "unbalanced": ledger.unbalanced_transactions(s)}

    # -- jobs ----------------------------------------------------------------------------------------

    def create_job(self, *, user_id: str, api_key_id: str | None, spec: dict, cost: int, charge: bool,
                   n: int, batch_key: str | None, webhook_url: str | None, source: str,
                   max_user_active: int | None = None, max_key_active: int | None = None) -> Job:
        """Insert a queued job and hold its cost in ONE transaction (LimitReached, InsufficientCredits)."""
        with self.transaction() as s:
            ledger.user_account(s, user_id)  # lock the user first: limits and balance are checked under it
            active = [st.value for st in ACTIVE]
            if max_user_active is not None:
                count = s.execute(select(func.count()).select_from(Job).where(
                    Job.user_id == user_id, Job.status.in_(active))).scalar_one()
                if count >= max_user_active:
                    raise LimitReached(f"you have {count} jobs queued or running, the most allowed is "
                                       f"{max_user_active}", scope="user", limit=max_user_active)
            if max_key_active is not None and api_key_id is not None:
                count = s.execute(select(func.count()).select_from(Job).where(
                    Job.api_key_id == api_key_id, Job.status.in_(active))).scalar_one()
                if count >= max_key_active:
                    raise LimitReached(f"this API key has {count} jobs queued or running, the most allowed "
                                       f"is {max_key_active}", scope="key", limit=max_key_active)
            job = Job(id=new_id(), user_id=user_id, api_key_id=api_key_id, status=JobState.QUEUED.value,
                      spec=spec, prompt=str(spec.get("prompt", "")), source=source, n=n, batch_key=batch_key,
                      cost=cost, charged=charge, attempts=0, cancel_requested=False, webhook_url=webhook_url,
                      webhook_attempts=0, created_at=utcnow())
            s.add(job)
            s.flush()
            if charge:
                ledger.hold(s, user_id, job.id, cost)
        return job

    def get_job(self, job_id: str, user_id: str | None = None) -> Job:
        """The job; NotFound also when it belongs to another user than `user_id`."""
        with self.read() as s:
            job = s.get(Job, job_id) if isinstance(job_id, str) else None
        if job is None or (user_id is not None and job.user_id != user_id):
            raise NotFound(f"no job {job_id}")
        return job

    def list_jobs(self, user_id: str, *, limit: int = 50, before: str | None = None, q: str | None = None,
                  status: str | None = None) -> list[Job]:
        """The user's jobs, newest first; `before` is a job id cursor, `q` a prompt substring."""
        query = select(Job).where(Job.user_id == user_id).order_by(Job.id.desc()).limit(max(1, min(int(limit), 500)))
        if before:
            query = query.where(Job.id < before)
        if q:
            escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(Job.prompt.ilike(f"%{escaped}%", escape="\\"))
        if status:
            query = query.where(Job.status == status)
        with self.read() as s:
            return list(s.execute(query).scalars())

    def running_jobs(self, user_id: str | None = None) -> list[Job]:
        query = select(Job).where(Job.status == JobState.RUNNING.value).order_by(Job.id)
        if user_id is not None:
            query = query.where(Job.user_id == user_id)
        with self.read() as s:
            return list(s.execute(query).scalars())

    def queue_order(self) -> list[str]:
        """Ids of queued jobs in the order they will run (index = queue position)."""
        with self.read() as s:
            return [q.id for q in queue.fair_order(s)]

    def claim(self, worker_id: str, *, max_batch: int = 1, max_images: int = 16) -> list[Job]:
        with self.transaction() as s:
            return queue.claim(s, worker_id, max_batch=max_batch, max_images=max_images)

    def complete_job(self, job_id: str, worker_id: str, images: list[dict]) -> bool:
        """Success: image rows (blobs already written), settle, status succeeded — one transaction."""
        with self.transaction() as s:
            job = s.get(Job, job_id)
            if job is None or job.status != JobState.RUNNING.value or job.worker_id != worker_id:
                return False
            now = utcnow()
            for image in images:
                s.add(Image(id=new_id(), job_id=job_id, user_id=job.user_id, created_at=now, **image))
            s.flush()
            return queue.finish(s, job_id, JobState.SUCCEEDED, worker_id=worker_id)

    def finish_job(self, job_id: str, status: JobState, *, error: str | None = None,
                   worker_id: str | None = None, from_states: tuple[JobState, ...] = (JobState.RUNNING,)) -> bool:
        """Failed or cancelled (refunded); False if the job was no longer in `from_states`."""
        with self.transaction() as s:
            return queue.finish(s, job_id, status, error=error, worker_id=worker_id, from_states=from_states)

    def requeue(self, job_id: str, worker_id: str, *, refund_attempt: bool = False) -> bool:
        with self.transaction() as s:
            return queue.requeue(s, job_id, worker_id=worker_id, refund_attempt=refund_attempt)

    def request_cancel(self, job_id: str) -> None:
        with self.transaction() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.status == JobState.RUNNING.value)
                      .values(cancel_requested=True))

    def heartbeat(self, worker_id: str, progress: dict[str, tuple[int, int]]) -> list[str]:
        """Mark the jobs this worker is running alive, with their progress (step, total).

        Only the jobs named are touched, so a job its worker lost track of goes stale and is
        recovered. Returns those whose cancel was asked (by a request to another process).
        """
        if not progress:
            return []
        now, ids = utcnow(), list(progress)
        with self.transaction() as s:
            for job_id, (step, total) in progress.items():
                s.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id,
                                            Job.status == JobState.RUNNING.value)
                          .values(heartbeat_at=now, progress_step=step, progress_total=total))
            return list(s.execute(select(Job.id).where(Job.id.in_(ids), Job.worker_id == worker_id,
                                                       Job.cancel_requested.is_(True),
                                                       Job.status == JobState.RUNNING.value)).scalars())

    def recover(self, *, is_dead: Callable[[str | None], bool], stale_before: datetime,
                max_attempts: int) -> list[tuple[str, JobState]]:
        with self.transaction() as s:
            return queue.recover(s, is_dead=is_dead, stale_before=stale_before, max_attempts=max_attempts)

    def pending_webhooks(self) -> list[Job]:
        with self.read() as s:
            return list(s.execute(select(Job).where(Job.webhook_state == WebhookState.PENDING.value)).scalars())

    def set_webhook_state(self, job_id: str, state: WebhookState, attempts: int) -> None:
        with self.transaction() as s:
            s.execute(update(Job).where(Job.id == job_id).values(webhook_state=state.value, webhook_attempts=attempts))

    # -- images --------------------------------------------------------------------------------------

    def images_of(self, job_ids: list[str]) -> dict[str, list[Image]]:
        """Live (not deleted) images of the jobs, by job id, in creation order."""
        out: dict[str, list[Image]] = {j: [] for j in job_ids}
        if not job_ids:
            return out
        with self.read() as s:
            for image in s.execute(select(Image).where(Image.job_id.in_(job_ids), Image.deleted_at.is_(None))
                                   .order_by(Image.id)).scalars():
                out[image.job_id].append(image)
        return out

    def get_image(self, image_id: str, user_id: str | None = None) -> Image:
        with self.read() as s:
            image = s.get(Image, image_id) if isinstance(image_id, str) else None
        if image is None or image.deleted_at is not None or (user_id is not None and image.user_id != user_id):
            raise NotFound(f"no image {image_id}")
        return image

    def delete_image(self, image_id: str, user_id: str | None = None) -> None:
        """Mark the image deleted; its file goes when no live image shares its bytes."""
        with self.transaction() as s:
            image = s.get(Image, image_id) if isinstance(image_id, str) else None
            if image is None or image.deleted_at is not None or (user_id is not None and image.user_id != user_id):
                raise NotFound(f"no image {image_id}")
            image.deleted_at = utcnow()
            s.flush()
            shared = s.execute(select(func.count()).select_from(Image).where(
                Image.sha256 == image.sha256, Image.deleted_at.is_(None))).scalar_one()
        if not shared:
            self.images.delete(image.sha256)
