"""Throwaway databases for tests: a fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards.

    with fresh_database("postgresql://postgres@127.0.0.1:5432/egaku_test", tmp_path) as url:
        store = Store.open(url, tmp_path)

The PostgreSQL variant creates schema `egaku_t_<random>` and returns a URL whose connections put it
first on the search_path (libpq `options=-csearch_path=...`), so tests never see each other's tables.
"""

from __future__ import annotations

import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

POSTGRES_ENV = "EGAKU_TEST_POSTGRES_URL"


@contextmanager
def fresh_database(base_url: str | None, folder: Path) -> Iterator[str]:
    """Yield a URL of an empty database: sqlite under `folder` when base_url is None or sqlite."""
    if not base_url or base_url.startswith("sqlite"):
        yield f"sqlite:///{Path(folder) / f'egaku-{secrets.token_hex(4)}.db'}"
        return
    import psycopg

    conninfo = base_url.replace("postgresql+psycopg://", "postgresql://", 1)
    schema = f"egaku_t_{secrets.token_hex(6)}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
