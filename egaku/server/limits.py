"""What the HTTP layer accepts: one settings object, and an ASGI middleware that refuses big bodies.

The body limit is enforced before any route runs: a declared Content-Length over the limit gets 413
at once; a chunked body is read up to the limit and refused (413) as soon as it passes it, so a
client cannot make the server buffer more than `max_body_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass

from egaku.server.errors import error_response, family_of


@dataclass
class ServerSettings:
    """Limits and knobs of the HTTP layer (the Service has its own ServiceSettings)."""

    max_body_bytes: int = 20 * 1024 * 1024  # whole request body (uploads are base64 or multipart)
    max_upload_pixels: int = 4096 * 4096  # declared size of an uploaded image (decompression bombs)
    max_prompt_chars: int | None = None  # prompt and negative prompt, each (None = the service's limit)
    max_samples: int = 10  # images per request (Stability `samples`, OpenAI `n`, A1111 batch x iter)
    thread_tokens: int = 128  # worker threads for blocking calls (requests waiting for their job)
    url_ttl_s: int = 3600  # lifetime of the signed image URLs given to OpenAI clients


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 (in the route family's error format) for bodies over `max_bytes`."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await self._refuse(scope, receive, send, 400, "bad_request", "invalid Content-Length")
        if declared is not None:
            if declared > self.max_bytes:
                return await self._too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        # No length given (chunked): read it all here, up to the limit, then replay it to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._too_large(scope, receive, send, more=message.get("more_body", False))
            chunks.append(body)
            more = message.get("more_body", False)
        whole = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send, more: bool = True):
        # Read (and drop) what the client is still sending, up to a cap, so it sees our answer
        # instead of a connection reset; past the cap the connection is simply closed after it.
        drained = 0
        while more and drained < 4 * self.max_bytes:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        mb = self.max_bytes / (1024 * 1024)
        return await self._refuse(scope, receive, send, 413, "payload_too_large",
                                  f"request body is over the limit of {mb:g} MB")

    async def _refuse(self, scope, receive, send, status, code, message):
        response = error_response(family_of(scope.get("path", "")), status, code, message)
        await response(scope, receive, send)
