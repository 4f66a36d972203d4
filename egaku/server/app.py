"""The FastAPI app: `create_app(service)` wires the four wire formats, errors, limits and the studio.

    from egaku.jobs.service import Service
    from egaku.server import create_app
    app = create_app(Service.create())          # uvicorn.run(app, host="127.0.0.1", port=7860)

No globals: everything a route needs hangs off `app.state` (service, settings, per-user A1111 model
choice, the key that signs OpenAI image URLs). The lifespan starts the service's workers (after
recovering jobs a crash left behind) and stops them on shutdown.
"""

from __future__ import annotations

import dataclasses
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from egaku.server import a1111, native, openai_images, stability
from egaku.server.errors import install_error_handlers
from egaku.server.limits import BodyLimitMiddleware, ServerSettings

STUDIO_DIR = Path(__file__).parent / "studio" / "static"
_DEFAULT = object()

DESCRIPTION = """egaku's image generation service. Four wire formats:

* **native** (`/api/v1`): asynchronous jobs (202 + id), status with queue position, history, cancel,
  Server-Sent Events of progress with previews, images.
* **Stability REST v1** (`/v1/engines`, `/v1/user`, `/v1/generation`): each library model is an engine.
* **OpenAI Images** (`/v1/images/generations`, `/v1/images/edits`).
* **AUTOMATIC1111** (`/sdapi/v1`).

Auth: `Authorization: Bearer <key>` (or `X-API-Key`, or Basic auth with the key as password).
Every generation costs `max(1, ceil(width*height*steps*n / (128*128*20)))` credits, held when the
job is accepted and refunded if it fails or is cancelled; a request that would overdraw gets 402.
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("egaku")
    except PackageNotFoundError:
        return "0"


def create_app(service, *, settings: ServerSettings | None = None, studio_dir=_DEFAULT,
               manage_service: bool = True) -> FastAPI:
    """The HTTP app around `service` (egaku.jobs.service.Service).

    `studio_dir`: folder of the web studio's static files, mounted at `/` when it holds index.html
    (default: the one shipped in egaku/server/studio/static; None = no studio). `manage_service`:
    the app's lifespan calls service.start() and service.stop().
    """
    settings = settings or ServerSettings()
    if settings.max_prompt_chars is None:  # one prompt limit for both layers, checked first here
        settings = dataclasses.replace(settings, max_prompt_chars=service.settings.max_prompt_chars)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, settings.thread_tokens)  # requests wait in threads
        if manage_service:
            await run_in_threadpool(service.start)
        try:
            yield
        finally:
            if manage_service:
                await run_in_threadpool(service.stop)

    app = FastAPI(title="egaku", version=_version(), description=DESCRIPTION, lifespan=lifespan)
    app.state.service = service
    app.state.settings = settings
    app.state.default_models = {}  # user id -> model (A1111 sd_model_checkpoint); None = built-in
    app.state.url_secret = service.store.shared_secret("image_urls")  # signs OpenAI image URLs
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    for module in (native, stability, openai_images, a1111):
        app.include_router(module.router)

    folder = STUDIO_DIR if studio_dir is _DEFAULT else studio_dir
    if folder is not None and (Path(folder) / "index.html").is_file():
        # Mounted last: every API route above is matched first.
        app.mount("/", StaticFiles(directory=folder, html=True), name="studio")
    return app
