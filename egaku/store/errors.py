"""Errors the store raises; each message is one line (the service and server show it as is)."""

from __future__ import annotations

from egaku.errors import EgakuError, InvalidRequestError


class NotFound(EgakuError):
    """No such user, key, job or image, or it belongs to someone else (never say which)."""


class InsufficientCredits(EgakuError):
    """The balance does not cover what a job costs (HTTP 402)."""

    def __init__(self, message: str, *, cost: int = 0, balance: int = 0):
        super().__init__(message)
        self.cost = cost
        self.balance = balance


class LimitReached(EgakuError):
    """Too many active (queued + running) jobs for a user (`scope` "user") or an API key ("key")."""

    def __init__(self, message: str, *, scope: str, limit: int):
        super().__init__(message)
        self.scope = scope
        self.limit = limit


class Conflict(InvalidRequestError):
    """A unique name is already taken (user name); a bad request (HTTP 400/409)."""


class StoreUnavailable(EgakuError):
    """The database cannot be opened or migrated (unreachable server, unknown newer schema)."""
