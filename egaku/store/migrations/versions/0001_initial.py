"""Initial schema: users, api keys, accounts and the double-entry ledger, holds, jobs, images.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("last_served_at", nullable=True),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("user_id", sa.String(26), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(8), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        _ts("created_at"),
        _ts("last_used_at", nullable=True),
        _ts("revoked_at", nullable=True),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    accounts = op.create_table(
        "accounts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(80), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(26), sa.ForeignKey("users.id"), nullable=True, unique=True),
        _ts("created_at"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("user_id", sa.String(26), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("api_key_id", sa.String(26), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("batch_key", sa.String(400), nullable=True),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("charged", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("progress_step", sa.Integer(), nullable=True),
        sa.Column("progress_total", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook_state", sa.String(16), nullable=True),
        sa.Column("webhook_attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(120), nullable=True),
        _ts("created_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        _ts("heartbeat_at", nullable=True),
    )
    op.create_index("ix_jobs_api_key_id", "jobs", ["api_key_id"])
    op.create_index("ix_jobs_status_id", "jobs", ["status", "id"])
    op.create_index("ix_jobs_user_status", "jobs", ["user_id", "status"])
    op.create_index("ix_jobs_user_id_id", "jobs", ["user_id", "id"])
    op.create_table(
        "ledger_entries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("txn_id", sa.String(26), nullable=False),
        sa.Column("account_id", BigId, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(26), sa.ForeignKey("jobs.id"), nullable=True),
        sa.Column("memo", sa.Text(), nullable=False),
        _ts("created_at"),
    )
    op.create_index("ix_ledger_entries_txn_id", "ledger_entries", ["txn_id"])
    op.create_index("ix_ledger_entries_account_id", "ledger_entries", ["account_id"])
    op.create_index("ix_ledger_entries_job_id", "ledger_entries", ["job_id"])
    op.create_table(
        "holds",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(26), sa.ForeignKey("jobs.id"), nullable=False, unique=True),
        sa.Column("user_id", sa.String(26), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_index("ix_holds_user_state", "holds", ["user_id", "state"])
    op.create_table(
        "images",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("job_id", sa.String(26), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("user_id", sa.String(26), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("infotext", sa.Text(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("deleted_at", nullable=True),
    )
    op.create_index("ix_images_job_id", "images", ["job_id"])
    op.create_index("ix_images_user_id", "images", ["user_id"])
    op.create_index("ix_images_sha256", "images", ["sha256"])
    # the two system accounts every ledger transaction draws on
    now = datetime.now(timezone.utc)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # as UTCDateTime stores it
    op.bulk_insert(accounts, [
        {"name": "grants", "kind": "grants", "user_id": None, "created_at": now},
        {"name": "revenue", "kind": "revenue", "user_id": None, "created_at": now},
    ])


def downgrade() -> None:
    for table in ("images", "holds", "ledger_entries", "jobs", "accounts", "api_keys", "users"):
        op.drop_table(table)
