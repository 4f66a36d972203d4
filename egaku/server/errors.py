"""HTTP errors: one exception type for wire-specific refusals, and handlers that answer every error
in the body format of the wire family the request spoke.

Families, chosen by path: Stability REST v1 (`/v1/...` except images) answers `{"id","name","message"}`;
OpenAI Images (`/v1/images/...`) `{"error": {"message","type","param","code"}}`; AUTOMATIC1111
(`/sdapi/...`) `{"error","detail","body","errors"}` as A1111's own api middleware does; everything
else (egaku's native API) `{"error": {"code","message"}}`. No handler ever sends a traceback.
"""

from __future__ import annotations

import logging
import uuid
from enum import StrEnum

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from egaku.errors import EgakuError, InvalidImageError, InvalidRequestError, ModelLoadError, ModelNotFoundError
from egaku.jobs.types import (
    Forbidden,
    InsufficientCredits,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)

log = logging.getLogger("egaku.server")


class Family(StrEnum):
    NATIVE = "native"
    STABILITY = "stability"
    OPENAI = "openai"
    A1111 = "a1111"


def family_of(path: str) -> Family:
    """Which wire format a path belongs to (its errors are answered in that format)."""
    if path.startswith("/v1/images"):
        return Family.OPENAI
    if path.startswith("/v1/"):
        return Family.STABILITY
    if path.startswith("/sdapi/"):
        return Family.A1111
    return Family.NATIVE


class ApiError(Exception):
    """A refusal with its own status and snake_case code (Stability's `name`, OpenAI's `code`)."""

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.retry_after = status, code, message, param, retry_after


# EgakuError subclass -> (status, native code, Stability name); most specific first.
_EGAKU_MAP: tuple[tuple[type[BaseException], int, str, str], ...] = (
    (Unauthorized, 401, "unauthorized", "unauthorized"),
    (Forbidden, 403, "forbidden", "permission_denied"),
    (InsufficientCredits, 402, "insufficient_credits", "insufficient_balance"),
    (QuotaExceeded, 429, "quota_exceeded", "rate_limited"),
    (RateLimited, 429, "rate_limited", "rate_limited"),
    (NotFound, 404, "not_found", "not_found"),
    (ModelNotFoundError, 404, "model_not_found", "not_found"),
    (InvalidImageError, 400, "invalid_image", "invalid_image"),
    (InvalidRequestError, 400, "invalid_request", "bad_request"),
    (ModelLoadError, 500, "model_load_error", "server_error"),
)
# Starlette HTTP status -> code, for routing errors (unknown path, wrong method).
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}
_OPENAI_TYPES = {401: "invalid_request_error", 402: "insufficient_quota", 403: "invalid_request_error",
                 404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_exceeded"}


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def error_response(family: Family, status: int, code: str, message: str, *, param: str | None = None,
                   retry_after: int | None = None, native_code: str | None = None) -> JSONResponse:
    """The JSON error body of `family`, with Retry-After when the client should come back later."""
    if family is Family.STABILITY:
        body: dict = {"id": uuid.uuid4().hex, "name": code, "message": message}
    elif family is Family.OPENAI:
        kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        body = {"error": {"message": message, "type": kind, "param": param, "code": native_code or code}}
    elif family is Family.A1111:
        body = {"error": _a1111_name(status), "detail": message, "body": "", "errors": message}
    else:
        body = {"error": {"code": native_code or code, "message": message}}
    headers = {"Retry-After": str(max(1, int(retry_after)))} if retry_after is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


def _a1111_name(status: int) -> str:
    return {400: "BadRequest", 401: "Unauthorized", 402: "PaymentRequired", 403: "Forbidden",
            404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge", 422: "ValidationError",
            429: "TooManyRequests"}.get(status, "HTTPException" if status < 500 else "InternalServerError")


def _validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    """First pydantic error as one line ('body.steps: Input should be a valid integer') and its field."""
    errors = error.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = loc[0] if loc else None
    where = ".".join(loc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return one_line(f"{where + ': ' if where else ''}{first.get('msg', 'invalid value')}{more}"), field


# Stability names a validation error after the field it concerns.
_STABILITY_FIELD_NAMES = {"height": "invalid_height_or_width", "width": "invalid_height_or_width",
                          "samples": "invalid_samples", "text_prompts": "invalid_prompts"}


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers for our exceptions, FastAPI's validation errors, routing errors and bugs."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error_response(family_of(request.url.path), e.status, e.code, e.message,
                              param=e.param, retry_after=e.retry_after)

    @app.exception_handler(EgakuError)
    async def _egaku_error(request: Request, e: EgakuError):
        family = family_of(request.url.path)
        status, code, stability_name = 400, "bad_request", "bad_request"
        for cls, s, c, n in _EGAKU_MAP:
            if isinstance(e, cls):
                status, code, stability_name = s, c, n
                break
        retry = getattr(e, "retry_after", None) if status == 429 else None
        if status >= 500:
            log.error("%s: %s", type(e).__name__, one_line(e))
        name = stability_name if family is Family.STABILITY else code
        if family is Family.OPENAI and status == 401:
            name = "invalid_api_key"
        return error_response(family, status, name, one_line(e), retry_after=retry)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        family = family_of(request.url.path)
        message, field = _validation_message(e)
        if family is Family.STABILITY:
            return error_response(family, 400, _STABILITY_FIELD_NAMES.get(field or "", "bad_request"), message)
        if family is Family.OPENAI:
            return error_response(family, 400, "invalid_value", message, param=field)
        return error_response(family, 422, "validation_error", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        code = _HTTP_CODES.get(e.status_code, "http_error")
        message = e.detail if isinstance(e.detail, str) else code.replace("_", " ")
        if e.status_code == 404 and message == "Not Found":
            message = f"no such route: {request.method} {request.url.path}"
        response = error_response(family_of(request.url.path), e.status_code, code, one_line(Exception(message)))
        response.headers.update(getattr(e, "headers", None) or {})  # e.g. WWW-Authenticate
        return response

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(family_of(request.url.path), 500, "server_error",
                              f"unexpected {type(e).__name__}: {one_line(e)}")
