"""Sortable ids (ULID: 48-bit milliseconds + 80 random bits, Crockford base32, 26 characters).

Ids made by one process increase strictly (within one millisecond the random part counts up), so
ordering by id is ordering by creation; the history's `before` cursor relies on that.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timezone

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_lock = threading.Lock()
_last = (0, 0)  # (ms, random) of the last id made here


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, r = divmod(value, 32)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_id() -> str:
    """A new ULID, greater than every id this process made before."""
    global _last
    with _lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _last
        if ms <= last_ms:
            ms, rand = last_ms, last_rand + 1
        else:
            rand = secrets.randbits(80)
        _last = (ms, rand)
    return _encode(ms, 10) + _encode(rand & ((1 << 80) - 1), 16)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a Z, e.g. 2025-01-31T12:00:00.123Z."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
