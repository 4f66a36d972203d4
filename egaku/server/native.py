"""egaku's native job API under /api/v1 (the web studio's API): asynchronous jobs, history, images,
and a Server-Sent Events stream of progress with previews. Shapes: see the contract / OpenAPI spec."""

from __future__ import annotations

import base64
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from egaku.jobs.types import JobSpec, JobStatus, Principal
from egaku.jobs.validate import UNIT_PIXELS_STEPS
from egaku.server import loras as wire_loras
from egaku.server.auth import (
    api_key_scheme, bearer_scheme, get_principal, get_principal_or_query_key, get_service, get_settings,
)
from egaku.server.limits import ServerSettings
from egaku.server.uploads import check_image, check_prompt, decode_base64
from egaku.server.views import (
    AccountOut, CostOut, EmbeddingOut, ErrorOut, JobList, JobOut, JobRequest, LoraOut, ModelOut, PricingOut,
    job_json,
)

FORMULA = "credits = max(1, ceil(width * height * steps * n / (128 * 128 * 20)))"

_ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 402, 404, 413, 422, 429)}
router = APIRouter(prefix="/api/v1", tags=["native"], responses=_ERRORS,
                   dependencies=[Security(bearer_scheme), Security(api_key_scheme)])

User = Annotated[Principal, Depends(get_principal)]
Service = Annotated[object, Depends(get_service)]
Settings = Annotated[ServerSettings, Depends(get_settings)]


def spec_from_request(body: JobRequest, settings: ServerSettings, *, source: str = "native",
                      with_images: bool = True) -> JobSpec:
    """A JobSpec from a native request: prompts checked, base64 images decoded and size-checked."""
    init_image = mask = None
    if with_images and body.init_image is not None:
        init_image = decode_base64(body.init_image, what="init_image")
        check_image(init_image, settings.max_upload_pixels, what="init_image")
    if with_images and body.mask is not None:
        mask = decode_base64(body.mask, what="mask")
        check_image(mask, settings.max_upload_pixels, what="mask", mode="L")
    return JobSpec(
        prompt=check_prompt(body.prompt, settings.max_prompt_chars),
        negative_prompt=check_prompt(body.negative_prompt, settings.max_prompt_chars, what="negative prompt"),
        model=body.model or None, sampler=body.sampler, steps=body.steps, cfg_scale=body.cfg_scale,
        cfg_rescale=body.cfg_rescale, seed=body.seed, width=body.width, height=body.height, n=body.n, strength=body.strength,
        init_image=init_image, mask=mask, mask_blur=body.mask_blur, loras=wire_loras.lora_pairs(body.loras),
        webhook_url=body.webhook_url or None, source=source,
    )


@router.get("/account", summary="The caller's account and credit balance", response_model=AccountOut)
def account(user: User, service: Service):
    return service.account(user)


@router.get("/pricing", summary="The published credit formula", response_model=PricingOut)
def pricing():
    return {"formula": FORMULA, "unit_pixels_steps": UNIT_PIXELS_STEPS}


@router.post("/cost", summary="Credits a request would cost (nothing is run or held)", response_model=CostOut)
def cost(body: JobRequest, user: User, service: Service, settings: Settings):
    return {"credits": service.cost(spec_from_request(body, settings, with_images=False))}


@router.get("/models", summary="Models in the library, the built-in first", response_model=list[ModelOut])
def models(user: User, service: Service):
    return service.models()


@router.get("/loras", summary="LoRAs in the library (name, hash, trigger words)", response_model=list[LoraOut])
def loras(user: User):
    return wire_loras.loras()


@router.get("/embeddings", summary="Textual-inversion embeddings in the library", response_model=list[EmbeddingOut])
def embeddings(user: User):
    return wire_loras.embeddings()


@router.get("/samplers", summary="Sampler names (A1111 spelling)", response_model=list[str])
def samplers(user: User, service: Service):
    return service.samplers()


@router.post("/jobs", summary="Submit a generation job (returns at once with its id)", status_code=202,
             response_model=JobOut)
def submit(body: JobRequest, response: Response, user: User, service: Service, settings: Settings):
    view = service.submit(user, spec_from_request(body, settings))
    response.headers["Location"] = f"/api/v1/jobs/{view.id}"
    return job_json(view)


@router.get("/jobs", summary="The caller's jobs, newest first", response_model=JobList)
def list_jobs(user: User, service: Service,
              limit: Annotated[int, Query(ge=1, le=200)] = 50,
              before: Annotated[str | None, Query(description="a job id: list older jobs")] = None,
              q: Annotated[str | None, Query(max_length=2000, description="substring of the prompt")] = None,
              status: JobStatus | None = None):
    views = service.list_jobs(user, limit=limit, before=before or None, q=q or None, status=status)
    jobs = [job_json(v) for v in views]
    return {"jobs": jobs, "next": jobs[-1]["id"] if len(jobs) == limit else None}


@router.get("/jobs/{job_id}", summary="One job: status, queue position, progress, images", response_model=JobOut)
def get_job(job_id: str, user: User, service: Service):
    return job_json(service.get_job(user, job_id))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job (credits refunded)",
             response_model=JobOut)
def cancel(job_id: str, user: User, service: Service):
    return job_json(service.cancel(user, job_id))


def _sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _progress_data(data: dict) -> dict:
    png = data.get("preview_png")
    preview = f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}" if png else None
    return {"step": data.get("step"), "total": data.get("total"), "image_index": data.get("image_index", 0),
            "preview": preview}


@router.get("/jobs/{job_id}/events", summary="Server-Sent Events: status, progress (with previews), done",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "events `status` and `done` carry a JobView; `progress` carries "
                             '{"step","total","image_index","preview": data URL|null}; closes after `done`'}})
async def events(job_id: str, request: Request, user: Annotated[Principal, Depends(get_principal_or_query_key)],
                 service: Service):
    # The subscription starts with the job's current status (and `done` if it has already ended).
    sub = await run_in_threadpool(service.subscribe, user, job_id)  # NotFound -> 404 before streaming

    async def stream():
        try:
            while not await request.is_disconnected():
                event = await run_in_threadpool(sub.get, 1.0)
                if event is None:
                    yield ": keep-alive\n\n"
                    continue
                if event.kind == "progress":
                    yield _sse("progress", _progress_data(event.data))
                    continue
                yield _sse(event.kind, job_json(event.data))
                if event.kind == "done":
                    return
        finally:
            sub.close()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/images/{image_id}", summary="An image as PNG (with its A1111 parameters chunk)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def image(image_id: str, user: Annotated[Principal, Depends(get_principal_or_query_key)], service: Service):
    return Response(service.image_png(user, image_id), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=31536000, immutable"})


@router.delete("/images/{image_id}", summary="Delete one of the caller's images", status_code=204,
               response_class=Response)
def delete_image(image_id: str, user: User, service: Service):
    service.delete_image(user, image_id)
    return Response(status_code=204)
