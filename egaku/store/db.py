"""Database engines: SQLite (default, a file under $EGAKU_HOME) or PostgreSQL by URL; migrations to head.

SQLite is set up for several threads writing one file: WAL (readers never block the writer),
foreign keys on, a 30 s busy timeout, and write transactions opened with `BEGIN IMMEDIATE` so
writers take the database lock before they read and serialise instead of failing with "database is
locked" halfway through (SQLAlchemy's pysqlite recipe: the driver's own BEGIN is turned off and
the `begin` event emits ours). Read-only sessions use a plain deferred BEGIN and run alongside.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from egaku.errors import InvalidRequestError

BUSY_TIMEOUT_S = 30
MIGRATIONS = Path(__file__).parent / "migrations"


def normalize_url(url: str | None, home: Path) -> str:
    """`None` -> sqlite file home/egaku.db; `postgresql://` and `postgres://` -> the psycopg 3 driver."""
    if not url:
        return f"sqlite:///{home / 'egaku.db'}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith(("sqlite://", "postgresql+psycopg://")):
        return url
    raise InvalidRequestError(f"unsupported database URL {url.split(':', 1)[0]!r}: use sqlite:///path or postgresql://...")


def create_db_engine(url: str) -> Engine:
    """An Engine for `url` (already normalised). Writers use `.execution_options(sqlite_begin="IMMEDIATE")`."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S},
            pool_size=8,
            max_overflow=24,
            pool_timeout=60,
        )
        _sqlite_events(engine)
        return engine
    return create_engine(url, pool_size=8, max_overflow=24, pool_timeout=60, pool_pre_ping=True)


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see `_on_begin`)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def writer(engine: Engine) -> Engine:
    """The same engine (and pool) whose transactions take the write lock at BEGIN on SQLite."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def migrate(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations in egaku/store/migrations up to `revision`, in code (no alembic.ini)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with writer(engine).connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
