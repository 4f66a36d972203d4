"""The tables (SQLAlchemy 2.0 typed ORM). Migrations in egaku/store/migrations create exactly these.

Money is integer credits in a double-entry ledger: every transaction is >= 2 `ledger_entries` with
the same `txn_id` summing to 0 across accounts (a user's, or the system accounts "grants", the
source of granted credits, and "revenue"). A job's price is *held* while it waits and runs; a
settled hold becomes ledger entries, a released one leaves none. Balance = entries - active holds.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Double, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit BIGSERIAL-like column.
BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both backends (SQLite stores naive text; we add UTC back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class JobState(StrEnum):
    """A job's status column (egaku.jobs.types.JobStatus has the same values)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
ACTIVE = (JobState.QUEUED, JobState.RUNNING)


class HoldState(StrEnum):
    ACTIVE = "active"
    SETTLED = "settled"  # moved to revenue as ledger entries
    RELEASED = "released"  # refunded: no entries


class AccountKind(StrEnum):
    USER = "user"
    GRANTS = "grants"  # system: where granted credits come from (goes negative)
    REVENUE = "revenue"  # system: where settled job costs go


class WebhookState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_served_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # fair queue tie-break


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex of the plaintext
    prefix: Mapped[str] = mapped_column(String(8))  # first 8 characters after "egk_", for display
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The key's requests-per-minute token bucket (`egaku.store.ratelimit`), here so that every server
    # process on the database shares it: tokens left, and when (Unix seconds) they were counted.
    rate_tokens: Mapped[float | None] = mapped_column(Double, nullable=True)
    rate_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)  # "user:<id>", "grants", "revenue"
    kind: Mapped[str] = mapped_column(String(16))  # AccountKind
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    txn_id: Mapped[str] = mapped_column(String(26), index=True)  # entries of one transaction sum to 0
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)  # credits; + into the account, - out of it
    kind: Mapped[str] = mapped_column(String(16))  # "grant" | "settle"
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    memo: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Hold(Base):
    __tablename__ = "holds"
    __table_args__ = (Index("ix_holds_user_state", "user_id", "state"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))  # HoldState
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_user_status", "user_id", "status"),
        Index("ix_jobs_user_id_id", "user_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)  # ULID: sorts by creation
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16))  # JobState
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the request, resolved (size, seed), no bytes
    prompt: Mapped[str] = mapped_column(Text, default="")  # copy of spec["prompt"] for history search
    source: Mapped[str] = mapped_column(String(16), default="native")
    n: Mapped[int] = mapped_column(Integer, default=1)  # images this job makes
    batch_key: Mapped[str | None] = mapped_column(String(400), nullable=True)  # equal keys share a forward pass
    cost: Mapped[int] = mapped_column(BigInteger, default=0)
    charged: Mapped[bool] = mapped_column(Boolean, default=True)  # False: no hold (no-auth local user)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_state: Mapped[str | None] = mapped_column(String(16), nullable=True)  # WebhookState
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(120), nullable=True)  # "host:pid:random" of the runner
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # blob: images/<sha[:2]>/<sha>.png
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    infotext: Mapped[str] = mapped_column(Text, default="")  # A1111 parameters, as in the PNG chunk
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ServerSecret(Base):
    """A random secret every server process on this database shares (the key that signs image URLs),
    so a URL made by one process is valid in another and after a restart."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))  # hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
