"""What every wire format does with the Service: resolve model names, submit and wait, fetch PNGs.

All functions here but submit_and_wait block (database, waiting for a job): routes call them in the
thread pool.
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool

from egaku.errors import ModelNotFoundError
from egaku.jobs.types import JobSpec, JobStatus, JobView, Principal
from egaku.server.errors import ApiError

BUILTIN_ALIASES = ("builtin", "built-in", "egaku-builtin", "egaku")
_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]\s*$")  # A1111 titles: "name.safetensors [abcdef0123]"
_EXTENSIONS = re.compile(r"\.(safetensors|ckpt|pt|pth|bin)$", re.IGNORECASE)


def is_builtin(model: dict, index: int) -> bool:
    """The Service lists the built-in model first; it may also say so."""
    return bool(model.get("builtin")) or (index == 0 and model.get("builtin") is None)


def model_entries(service) -> list[tuple[str | None, dict]]:
    """(JobSpec model value, model dict) for every model; the built-in's value is None."""
    return [(None if is_builtin(m, i) else m["name"], m) for i, m in enumerate(service.models())]


def short_hash(model: dict) -> str | None:
    h = model.get("hash") or model.get("sha256")
    return h[:10] if h else None


def resolve_model(service, name: str | None) -> str | None:
    """The JobSpec `model` for a name a client sent: a library name, the built-in's name or alias,
    an A1111 title ("name.safetensors [hash]") or a short hash. None/"" = built-in.
    Raises ModelNotFoundError (404) for anything else."""
    if name is None or not str(name).strip():
        return None
    wanted = _EXTENSIONS.sub("", _TITLE_HASH.sub("", str(name).strip()))
    entries = model_entries(service)
    for value, m in entries:
        if wanted == m["name"] or wanted.lower() == str(m["name"]).lower():
            return value
    if wanted.lower() in BUILTIN_ALIASES:
        return None
    for value, m in entries:
        h = (m.get("hash") or m.get("sha256") or "").lower()
        if h and len(wanted) >= 8 and h.startswith(wanted.lower()):
            return value
    names = ", ".join(str(m["name"]) for _, m in entries)
    raise ModelNotFoundError(f"no model '{name}'; available: {names}")


def model_dict(service, value: str | None) -> dict:
    """The model dict of a JobSpec `model` value (None = built-in)."""
    for v, m in model_entries(service):
        if v == value:
            return m
    return {"name": value or "builtin"}


async def submit_and_wait(request, service, principal: Principal, spec: JobSpec, poll_s: float = 0.5) -> JobView:
    """Submit a job and wait until it ends (the synchronous wire formats: Stability, OpenAI, A1111).

    A client that hangs up first cancels its job, which refunds it: nobody pays for images that no
    one will receive (the native job API is the one to use for fire-and-forget jobs)."""
    view = await run_in_threadpool(service.submit, principal, spec)
    while True:
        view = await run_in_threadpool(service.wait, principal, view.id, poll_s)
        if JobStatus(view.status).terminal:
            return view
        if await request.is_disconnected():
            return await run_in_threadpool(service.cancel, principal, view.id)


def require_success(view: JobView) -> JobView:
    """The view if the job succeeded; a failed or cancelled job becomes an ApiError."""
    status = JobStatus(view.status)
    if status is JobStatus.SUCCEEDED:
        return view
    if status is JobStatus.CANCELLED:
        raise ApiError(409, "cancelled", f"job {view.id} was cancelled before it finished")
    raise ApiError(500, "generation_failed", f"job {view.id} failed: {view.error or 'unknown error'}")


def images_png(service, principal: Principal, view: JobView) -> list[tuple[object, bytes]]:
    """(ImageView, PNG bytes with the parameters chunk) for each image of a finished job."""
    return [(im, service.image_png(principal, im.id)) for im in view.images]
