"""AUTOMATIC1111 stable-diffusion-webui API (/sdapi/v1, modules/api/api.py), so A1111 tools (Open WebUI,
SillyTavern, Krita / Photoshop plugins, the `webuiapi` client) work unchanged.

Differences that matter: each user has their own "loaded" checkpoint (POST /options
sd_model_checkpoint), kept in memory; /interrupt and /skip cancel the caller's running jobs only;
/progress reports the caller's own running job. width/height omitted = the model's native size.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Security
from fastapi.security import HTTPBasic
from starlette.concurrency import run_in_threadpool

from egaku.jobs.types import JobSpec, JobStatus, Principal
from egaku.server.a1111_models import (
    A1111Error, Embeddings, GenerationResponse, Img2ImgRequest, Lora, Progress, Sampler, Scheduler, SdModel,
    Txt2ImgRequest,
)
from egaku.server.auth import bearer_scheme, get_principal, get_service, get_settings
from egaku.server.errors import ApiError
from egaku.server.jobs_glue import model_dict, model_entries, resolve_model, short_hash, submit_and_wait
from egaku.server.limits import ServerSettings
from egaku.server.loras import a1111_embeddings, a1111_loras
from egaku.server.uploads import (
    check_image, check_mask_size, check_prompt, decode_base64, encode_base64, inverted_mask, png_bytes,
)

basic_scheme = HTTPBasic(auto_error=False, description="A1111 --api-auth style: the password is an egaku API key")
_ERRORS = {code: {"model": A1111Error} for code in (400, 401, 402, 404, 413, 422, 429)}
router = APIRouter(prefix="/sdapi/v1", tags=["a1111"], responses=_ERRORS,
                   dependencies=[Security(bearer_scheme), Security(basic_scheme)])
User = Annotated[Principal, Depends(get_principal)]


def title(model: dict) -> str:
    """A1111 checkpoint title: 'name [shorthash]'."""
    h = short_hash(model)
    return f"{model['name']} [{h}]" if h else str(model["name"])


def _default_model(request: Request, user: Principal) -> str | None:
    return request.app.state.default_models.get(user.user_id)


def _sampler(service, body) -> str:
    name = body.sampler_name or body.sampler_index or "Euler a"
    scheduler = (body.scheduler or "").strip().lower()
    if scheduler == "karras" and not name.lower().endswith("karras"):
        if f"{name} Karras" in service.samplers():
            name = f"{name} Karras"
    return name


def _spec(request: Request, user: Principal, body, settings: ServerSettings, **extra) -> JobSpec:
    service = request.app.state.service
    override = (body.override_settings or {}).get("sd_model_checkpoint")
    model = resolve_model(service, override) if override else _default_model(request, user)
    n = body.batch_size * body.n_iter
    if n > settings.max_samples:
        raise ApiError(400, "too_many_images", f"batch_size x n_iter is {n}, over the limit of {settings.max_samples}")
    return JobSpec(
        prompt=check_prompt(body.prompt, settings.max_prompt_chars),
        negative_prompt=check_prompt(body.negative_prompt, settings.max_prompt_chars, what="negative prompt"),
        model=model, sampler=_sampler(service, body), steps=body.steps, cfg_scale=body.cfg_scale, seed=body.seed,
        width=extra.pop("width", body.width), height=extra.pop("height", body.height), n=n, source="a1111",
        **extra,
    )


def _info(spec: JobSpec, view, model: dict, denoising: float | None) -> str:
    """A1111's `info`: a JSON string (webuiapi parses it) with the seeds and infotexts."""
    images = view.images
    seeds = [im.seed for im in images]
    first = images[0] if images else None
    return json.dumps({
        "prompt": spec.prompt, "all_prompts": [spec.prompt] * len(images),
        "negative_prompt": spec.negative_prompt, "all_negative_prompts": [spec.negative_prompt] * len(images),
        "seed": seeds[0] if seeds else spec.seed, "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * len(seeds),
        "subseed_strength": 0, "width": first.width if first else spec.width,
        "height": first.height if first else spec.height,
        "sampler_name": (view.spec or {}).get("sampler", spec.sampler),
        "cfg_scale": spec.cfg_scale, "steps": spec.steps, "batch_size": spec.n, "restore_faces": False,
        "face_restoration_model": None, "sd_model_name": model.get("name"), "sd_model_hash": short_hash(model),
        "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": denoising, "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [im.infotext for im in images], "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1, "is_using_inpainting_conditioning": False, "version": "egaku",
        "interrupted": JobStatus(view.status) is JobStatus.CANCELLED,
    })


async def _generate(request: Request, user: Principal, body, spec: JobSpec, denoising: float | None) -> dict:
    service = request.app.state.service

    view = await submit_and_wait(request, service, user, spec)
    if JobStatus(view.status) is JobStatus.FAILED:
        raise ApiError(500, "generation_failed", f"job {view.id} failed: {view.error or 'unknown error'}")

    def pngs():  # an interrupted (cancelled) job answers with what it made, as A1111 does
        return [encode_base64(service.image_png(user, im.id)) for im in view.images] if body.send_images else []

    images = await run_in_threadpool(pngs)
    parameters = body.model_dump()
    for key in ("init_images", "mask"):
        if key in parameters:
            parameters[key] = None
    model = await run_in_threadpool(model_dict, service, spec.model)
    return {"images": images, "parameters": parameters, "info": _info(spec, view, model, denoising)}


@router.post("/txt2img", summary="Text-to-image, A1111 style (waits for the images)", response_model=GenerationResponse)
async def txt2img(body: Txt2ImgRequest, request: Request, user: User, settings: ServerSettings = Depends(get_settings)):
    spec = await run_in_threadpool(_spec, request, user, body, settings)
    return await _generate(request, user, body, spec, None)


@router.post("/img2img", summary="Image-to-image and inpainting, A1111 style (waits)",
             response_model=GenerationResponse)
async def img2img(body: Img2ImgRequest, request: Request, user: User, settings: ServerSettings = Depends(get_settings)):
    limit = settings.max_upload_pixels

    def build() -> JobSpec:
        init = decode_base64(body.init_images[0], what="init_images[0]")
        image = check_image(init, limit, what="init_images[0]")
        mask = None
        if body.mask:
            data = decode_base64(body.mask, what="mask")
            mask_image = (inverted_mask(data, limit) if body.inpainting_mask_invert
                          else check_image(data, limit, what="mask", mode="L"))
            check_mask_size(mask_image, image)
            mask = png_bytes(mask_image) if body.inpainting_mask_invert else data
        extra: dict[str, Any] = {"init_image": init, "mask": mask, "strength": body.denoising_strength}
        if body.mask_blur is not None:
            extra["mask_blur"] = body.mask_blur
        w, h = image.size
        if body.width is None and body.height is None and not (w % 8 or h % 8):
            extra.update(width=w, height=h)  # no size asked: keep the init image's
        return _spec(request, user, body, settings, **extra)

    spec = await run_in_threadpool(build)
    return await _generate(request, user, body, spec, body.denoising_strength)


@router.get("/sd-models", summary="Checkpoints: every model in the library", response_model=list[SdModel])
def sd_models(user: User, service=Depends(get_service)):
    return [{"title": title(m), "model_name": m["name"], "hash": short_hash(m),
             "sha256": m["hash"] if len(m.get("hash") or "") == 64 else None,
             "filename": str(m.get("path") or m["name"]), "config": None} for _, m in model_entries(service)]


@router.post("/refresh-checkpoints", summary="No-op: the library is read on every request")
def refresh_checkpoints(user: User) -> None:
    return None


@router.get("/loras", summary="LoRAs in the library (use them as <lora:name:weight> prompt tags)",
            response_model=list[Lora])
def loras(user: User):
    return a1111_loras()


@router.post("/refresh-loras", summary="No-op: the LoRA folder is read on every request")
def refresh_loras(user: User) -> None:
    return None


@router.get("/embeddings", summary="Textual-inversion embeddings in the library", response_model=Embeddings)
def embeddings(user: User):
    return a1111_embeddings()


@router.post("/refresh-embeddings", summary="No-op: the embeddings folder is read on every request")
def refresh_embeddings(user: User) -> None:
    return None


@router.get("/samplers", summary="Sampler names", response_model=list[Sampler])
def samplers(user: User, service=Depends(get_service)):
    return [{"name": s, "aliases": [], "options": {}} for s in service.samplers()]


@router.get("/schedulers", summary="Schedulers (egaku folds Karras into the sampler name)",
            response_model=list[Scheduler])
def schedulers(user: User):
    return [{"name": "automatic", "label": "Automatic"}, {"name": "karras", "label": "Karras", "default_rho": 7.0}]


@router.get("/upscalers", summary="Upscalers (none)", response_model=list[dict])
def upscalers(user: User):
    return []


@router.get("/sd-vae", summary="Separate VAEs (none: each model's own)", response_model=list[dict])
def sd_vae(user: User):
    return []


@router.get("/scripts", summary="Scripts (none)", response_model=dict[str, list[str]])
def scripts(user: User):
    return {"txt2img": [], "img2img": []}


@router.get("/progress", summary="Progress of the caller's running job", response_model=Progress)
def progress(user: User, service=Depends(get_service), skip_current_image: bool = False):
    p = service.current_progress(user) or {}
    step, total = int(p.get("step") or 0), int(p.get("total") or 0)
    fraction = step / total if total else 0.0
    eta = 0.0
    if fraction > 0 and p.get("started_at"):
        elapsed = max(0.0, (datetime.now(timezone.utc) - datetime.fromisoformat(p["started_at"])).total_seconds())
        eta = elapsed / fraction - elapsed
    png = None if skip_current_image else p.get("preview_png")
    return {"progress": round(fraction, 4), "eta_relative": round(eta, 3),
            "state": {"job": str(p.get("job_id") or ""), "job_count": 1 if p else 0,
                      "sampling_step": step, "sampling_steps": total},
            "current_image": encode_base64(png) if png else None, "textinfo": None}


def _cancel_running(user: Principal, service) -> None:
    for view in service.list_jobs(user, limit=50, status=JobStatus.RUNNING):
        service.cancel(user, view.id)


@router.post("/interrupt", summary="Cancel the caller's running job(s)")
def interrupt(user: User, service=Depends(get_service)) -> None:
    _cancel_running(user, service)


@router.post("/skip", summary="Cancel the caller's running job(s) (egaku has no per-image skip)")
def skip(user: User, service=Depends(get_service)) -> None:
    _cancel_running(user, service)


@router.get("/options", summary="Options; sd_model_checkpoint is the caller's current model",
            response_model=dict[str, Any])
def get_options(request: Request, user: User, service=Depends(get_service)):
    model = model_dict(service, _default_model(request, user))
    return {"sd_model_checkpoint": title(model), "sd_checkpoint_hash": model.get("hash"),
            "samples_format": "png", "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1,
            "eta_noise_seed_delta": 0, "enable_pnginfo": True}


@router.post("/options", summary="Set options: sd_model_checkpoint switches the caller's model")
def set_options(request: Request, user: User, options: Annotated[dict[str, Any], Body()],
                service=Depends(get_service)) -> None:
    name = options.get("sd_model_checkpoint")
    if name is not None:
        if not isinstance(name, str):
            raise ApiError(400, "bad_request", "sd_model_checkpoint must be a model title or name")
        request.app.state.default_models[user.user_id] = resolve_model(service, name)
