"""Who is calling: FastAPI dependencies that turn request headers into a `Principal`.

Accepted, in order: `Authorization: Bearer <key>` (egaku, OpenAI and Stability clients),
`Authorization: <key>` (older Stability examples), `Authorization: Basic base64(user:key)` (A1111
clients with --api-auth; the password is the key), `X-API-Key: <key>`. Routes a browser loads
without headers (an <img> or EventSource) also take `?key=`. No key at all is passed on as None:
in --no-auth mode the service answers with the local user, otherwise with Unauthorized (401).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Query, Request
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.concurrency import run_in_threadpool

from egaku.jobs.types import Principal

# Declared only so the OpenAPI spec documents the schemes; parsing is done below.
bearer_scheme = HTTPBearer(auto_error=False, description="an egaku API key: `Authorization: Bearer egk_...`")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="an egaku API key")


def key_from_headers(request: Request) -> str | None:
    """The API key carried by the request's headers, or None."""
    header = request.headers.get("authorization", "").strip()
    if header:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return value
        if scheme.lower() == "basic" and value:
            try:
                user_pass = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, ValueError, UnicodeDecodeError):
                return header  # not Basic after all: let the service refuse it as a wrong key
            return user_pass.partition(":")[2] or user_pass
        if not value:
            return scheme  # a bare key
        return header
    return request.headers.get("x-api-key", "").strip() or None


def _service(request: Request):
    return request.app.state.service


async def get_principal(request: Request) -> Principal:
    """Dependency: the authenticated caller (raises Unauthorized -> 401)."""
    key = key_from_headers(request)
    return await run_in_threadpool(_service(request).authenticate, key)


async def get_principal_or_query_key(
    request: Request,
    key: Annotated[str | None, Query(description="API key, for an <img> or EventSource (no headers)")] = None,
) -> Principal:
    """Dependency for routes browsers load without headers: also accepts `?key=`."""
    return await run_in_threadpool(_service(request).authenticate, key_from_headers(request) or key or None)


def get_service(request: Request):
    """Dependency: the Service behind this app."""
    return _service(request)


def get_settings(request: Request):
    """Dependency: the app's ServerSettings."""
    return request.app.state.settings
