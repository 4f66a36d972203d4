"""Each API key's requests-per-minute token bucket moves into the database, shared by every server
process (it was in each process's memory, so N processes allowed N times the rate).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("rate_tokens", sa.Double(), nullable=True))
        batch.add_column(sa.Column("rate_at", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("rate_at")
        batch.drop_column("rate_tokens")
