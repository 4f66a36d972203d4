"""Alembic migrations of the egaku store, run to head in code by egaku.store.db.migrate (no alembic.ini)."""
