"""Opening a store migrates an empty database to head: every table of the ORM, nothing missing or extra."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.config import Config
from sqlalchemy import inspect, select, text

from egaku.store import Store, StoreUnavailable
from egaku.store.db import MIGRATIONS, current_revision, normalize_url
from egaku.store.schema import Account, Base

TABLES = {"users", "api_keys", "accounts", "ledger_entries", "holds", "jobs", "images", "server_secrets",
          "alembic_version"}


def test_open_creates_every_table_at_head(store):
    assert set(inspect(store.engine).get_table_names()) == TABLES
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert current_revision(store.engine) == head == "0003"
    # the migration builds exactly what the ORM describes (types, nullability, indexes)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_system_accounts_exist_once_and_reopening_is_idempotent(store, db_url, egaku_home):
    again = Store.open(db_url, egaku_home)  # second open: already at head, nothing re-run
    try:
        with again.read() as s:
            names = sorted(a.name for a in s.execute(select(Account)).scalars())
        assert names == ["grants", "revenue"]
    finally:
        again.close()


def test_default_url_is_a_sqlite_file_in_home(egaku_home):
    assert normalize_url(None, egaku_home) == f"sqlite:///{egaku_home / 'egaku.db'}"
    store = Store.open(None, egaku_home)
    try:
        assert (egaku_home / "egaku.db").is_file()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()


def test_postgres_urls_use_psycopg3(egaku_home):
    assert normalize_url("postgresql://u@h/db", egaku_home) == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db", egaku_home) == "postgresql+psycopg://u@h/db"


def test_unreachable_or_newer_databases_give_one_line_errors(egaku_home):
    with pytest.raises(StoreUnavailable, match=r"cannot open the database postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/x"):
        Store.open("postgresql://u:secret@127.0.0.1:1/x", egaku_home)
    store = Store.open(None, egaku_home)
    with store.transaction() as s:  # as if a newer egaku had migrated this database
        s.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    store.close()
    with pytest.raises(StoreUnavailable, match="9999") as e:
        Store.open(None, egaku_home)
    assert "\n" not in str(e.value)
