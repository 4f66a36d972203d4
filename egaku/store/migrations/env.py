"""Alembic environment, configured in code: egaku.store.db.migrate passes an open connection.

`render_as_batch` lets future revisions ALTER tables on SQLite (copy-and-move). On PostgreSQL an
advisory lock serialises two processes migrating the same database at once.
"""

from alembic import context
from sqlalchemy import text

from egaku.store.schema import Base

MIGRATION_LOCK = 0x65_67_61_6B  # "egak": pg_advisory_xact_lock key

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.run_migrations()
