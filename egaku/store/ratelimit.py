"""Requests-per-minute limits: one token bucket per API key, kept on the key's row so that every
server process on the database shares it (`Store.take_request_token`).

A key holds up to `per_minute` tokens, refilled at per_minute/60 a second; a request takes one.
"""

from __future__ import annotations

import math


def take_token(tokens: float | None, at: float | None, now: float, per_minute: int) -> tuple[float, float]:
    """(tokens left, seconds to wait) after trying to take a token from a bucket that held `tokens`
    at time `at` (None: a new, full bucket). A wait of 0.0 means the token was taken; otherwise
    nothing was."""
    capacity, rate = float(per_minute), per_minute / 60.0
    tokens = capacity if tokens is None or at is None else min(capacity, tokens + max(0.0, now - at) * rate)
    if tokens >= 1.0:
        return tokens - 1.0, 0.0
    return tokens, (1.0 - tokens) / rate


def retry_after(wait_s: float) -> int:
    """A Retry-After header's whole seconds for a wait."""
    return max(1, math.ceil(wait_s))
