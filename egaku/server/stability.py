"""Stability AI REST v1 (platform.stability.ai/docs/api-reference, v1): engines, account, balance and
text-to-image / image-to-image / masking, answered synchronously (submit, then wait for the job).

Translation to egaku: each library model is an engine id (the built-in too); text_prompts with
negative weights form the negative prompt and weights other than 1 become A1111 `(text:w)` emphasis;
seed 0 = random; Stability's sampler enum maps to A1111 names; style_preset appends a style phrase;
clip_guidance_preset is accepted and ignored (egaku has no CLIP guidance). Width/height omitted =
the engine's native size. IMAGE_STRENGTH's image_strength is how much of the init image to keep,
so egaku's strength = 1 - image_strength; STEP_SCHEDULE starts at step_schedule_start = strength.
egaku extension: `loras`, [{"name","weight"}] in JSON; in forms `loras[0][name]`, `loras[0][weight]`
(or one JSON string field `loras`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from egaku.errors import InvalidRequestError
from egaku.jobs.types import JobSpec, Principal
from egaku.server.auth import bearer_scheme, get_principal, get_service, get_settings
from egaku.server.errors import ApiError
from egaku.server.jobs_glue import images_png, model_entries, require_success, resolve_model, submit_and_wait
from egaku.server.limits import ServerSettings
from egaku.server.loras import form_loras, lora_pairs
from egaku.server.uploads import (
    check_image, check_mask_size, check_prompt, encode_base64, inverted_mask, mask_from_alpha, png_bytes,
)
from egaku.server.views import LoraIn


class StabilitySampler(StrEnum):
    DDIM = "DDIM"
    DDPM = "DDPM"
    K_DPMPP_2M = "K_DPMPP_2M"
    K_DPMPP_2S_ANCESTRAL = "K_DPMPP_2S_ANCESTRAL"
    K_DPM_2 = "K_DPM_2"
    K_DPM_2_ANCESTRAL = "K_DPM_2_ANCESTRAL"
    K_EULER = "K_EULER"
    K_EULER_ANCESTRAL = "K_EULER_ANCESTRAL"
    K_HEUN = "K_HEUN"
    K_LMS = "K_LMS"


# Stability sampler -> A1111 name.
SAMPLERS = {
    "DDIM": "DDIM", "DDPM": "DDPM", "K_DPMPP_2M": "DPM++ 2M", "K_DPMPP_2S_ANCESTRAL": "DPM++ 2S a",
    "K_DPM_2": "DPM2", "K_DPM_2_ANCESTRAL": "DPM2 a", "K_EULER": "Euler", "K_EULER_ANCESTRAL": "Euler a",
    "K_HEUN": "Heun", "K_LMS": "LMS",
}

STYLE_PHRASES = {
    "3d-model": "3d model, octane render, highly detailed, volumetric, dramatic lighting",
    "analog-film": "analog film photo, faded film, desaturated, grainy, vignette, vintage",
    "anime": "anime artwork, anime style, key visual, vibrant",
    "cinematic": "cinematic film still, shallow depth of field, vignette, moody, bokeh",
    "comic-book": "comic book style, graphic illustration, comic art, vibrant",
    "digital-art": "concept art, digital artwork, illustrative, painterly, matte painting",
    "enhance": "breathtaking, award-winning, professional, highly detailed",
    "fantasy-art": "ethereal fantasy concept art, magnificent, celestial, painterly, epic",
    "isometric": "isometric style, vibrant, crisp, detailed, intricate",
    "line-art": "line art drawing, sleek, modern, minimalist, graphic, vector graphics",
    "low-poly": "low-poly style, polygon mesh, jagged, blocky, wireframe edges",
    "modeling-compound": "play-doh style, sculpture, clay art, claymation",
    "neon-punk": "neonpunk style, cyberpunk, vaporwave, neon, vibrant, high contrast",
    "origami": "origami style, paper art, pleated paper, folded, cut and fold",
    "photographic": "cinematic photo, 35mm photograph, film, bokeh, professional, highly detailed",
    "pixel-art": "pixel-art, low-res, blocky, pixel art style, 8-bit graphics",
    "tile-texture": "texture, seamless tile pattern",
}
StylePreset = StrEnum("StylePreset", {k: k for k in STYLE_PHRASES})  # values as Stability spells them


class ClipGuidancePreset(StrEnum):
    NONE = "NONE"
    FAST_BLUE = "FAST_BLUE"
    FAST_GREEN = "FAST_GREEN"
    SIMPLE = "SIMPLE"
    SLOW = "SLOW"
    SLOWER = "SLOWER"
    SLOWEST = "SLOWEST"


class TextPrompt(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    text: str
    weight: float = Field(1.0, description="negative = part of the negative prompt; |w| != 1 = (text:w)")


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    text_prompts: list[TextPrompt] = Field(min_length=1, max_length=32)
    cfg_scale: float = Field(7.0, ge=0, le=35)
    clip_guidance_preset: ClipGuidancePreset = ClipGuidancePreset.NONE
    sampler: StabilitySampler | None = None
    samples: int = Field(1, ge=1, le=10)
    seed: int = Field(0, ge=0, le=4294967295, description="0 = random")
    steps: int = Field(30, ge=1, le=150)
    style_preset: StylePreset | None = None
    loras: list[LoraIn] | None = Field(None, description="egaku extension: library LoRAs to apply")


class TextToImageBody(GenerationParams):
    height: int | None = Field(None, ge=64, le=2048, multiple_of=64, description="default: the engine's size")
    width: int | None = Field(None, ge=64, le=2048, multiple_of=64)


class InitImageMode(StrEnum):
    IMAGE_STRENGTH = "IMAGE_STRENGTH"
    STEP_SCHEDULE = "STEP_SCHEDULE"


class ImageToImageForm(GenerationParams):
    init_image_mode: InitImageMode = InitImageMode.IMAGE_STRENGTH
    image_strength: float = Field(0.35, ge=0, le=1, description="how much of the init image to keep")
    step_schedule_start: float = Field(0.65, ge=0, le=1)
    step_schedule_end: float | None = Field(None, ge=0, le=1)


class MaskSource(StrEnum):
    MASK_IMAGE_WHITE = "MASK_IMAGE_WHITE"
    MASK_IMAGE_BLACK = "MASK_IMAGE_BLACK"
    INIT_IMAGE_ALPHA = "INIT_IMAGE_ALPHA"


class MaskingForm(GenerationParams):
    mask_source: MaskSource


class Engine(BaseModel):
    id: str
    name: str
    description: str
    type: str = "PICTURE"


class Account(BaseModel):
    id: str
    email: str
    profile_picture: str
    organizations: list[dict]


class Balance(BaseModel):
    credits: float


class Artifact(BaseModel):
    base64: str
    seed: int
    finishReason: str = "SUCCESS"


class Artifacts(BaseModel):
    artifacts: list[Artifact]


class StabilityError(BaseModel):
    id: str
    name: str
    message: str


_ERRORS = {code: {"model": StabilityError} for code in (400, 401, 402, 404, 413, 429)}
router = APIRouter(prefix="/v1", tags=["stability"], responses=_ERRORS, dependencies=[Security(bearer_scheme)])
User = Annotated[Principal, Depends(get_principal)]
EngineId = Annotated[str, Path(description="a model name from /v1/engines/list", examples=["builtin"])]
_PNG = {200: {"content": {"application/json": {}, "image/png": {}},
              "description": "JSON artifacts, or with `Accept: image/png` one raw PNG (headers Seed, Finish-Reason)"}}


@router.get("/engines/list", summary="Engines: every model in the library (the built-in too)",
            response_model=list[Engine])
def engines(user: User, service=Depends(get_service)):
    return [{"id": m["name"], "name": m["name"],
             "description": f"{m.get('family') or 'SD'} model, native size {m.get('default_size') or '?'} px"
             + (" (egaku built-in)" if value is None else ""), "type": "PICTURE"}
            for value, m in model_entries(service)]


@router.get("/user/account", summary="The caller's account", response_model=Account)
def user_account(user: User, service=Depends(get_service)):
    a = service.account(user)
    return {"id": a["id"], "email": "", "profile_picture": "", "organizations": []}


@router.get("/user/balance", summary="The caller's credit balance", response_model=Balance)
def user_balance(user: User, service=Depends(get_service)):
    return {"credits": float(service.balance(user))}


def prompts(params: GenerationParams, settings: ServerSettings) -> tuple[str, str]:
    """(prompt, negative prompt) from weighted text_prompts plus the style preset's phrase."""
    positive, negative = [], []
    for tp in params.text_prompts:
        text = tp.text.strip()
        if not text or tp.weight == 0:
            continue
        w = abs(tp.weight)
        (positive if tp.weight > 0 else negative).append(text if w == 1 else f"({text}:{w:g})")
    if not positive:
        raise ApiError(400, "invalid_prompts",
                       "text_prompts needs at least one non-empty prompt with a positive weight")
    if params.style_preset is not None:
        positive.append(STYLE_PHRASES[params.style_preset.value])
    try:
        return (check_prompt(", ".join(positive), settings.max_prompt_chars),
                check_prompt(", ".join(negative), settings.max_prompt_chars, what="negative prompt"))
    except InvalidRequestError as e:
        raise ApiError(400, "invalid_prompts", str(e)) from None


def _spec(engine_id: str, params: GenerationParams, settings: ServerSettings, service, **extra) -> JobSpec:
    prompt, negative = prompts(params, settings)
    return JobSpec(
        prompt=prompt, negative_prompt=negative, model=resolve_model(service, engine_id),
        sampler=SAMPLERS[params.sampler.value] if params.sampler else "Euler a", steps=params.steps,
        cfg_scale=params.cfg_scale, seed=params.seed or -1, n=params.samples, loras=lora_pairs(params.loras),
        source="stability", **extra,
    )


def _wants_png(request: Request, samples: int) -> bool:
    accept = request.headers.get("accept", "")
    if "image/png" not in accept or "application/json" in accept:
        return False
    if samples > 1:
        raise ApiError(400, "invalid_samples", "Accept: image/png returns one image; ask for samples=1")
    return True


async def _run(request: Request, user: Principal, spec: JobSpec) -> Response:
    service = request.app.state.service
    wants_png = _wants_png(request, spec.n)
    view = require_success(await submit_and_wait(request, service, user, spec))
    results = await run_in_threadpool(images_png, service, user, view)
    if wants_png:
        image, png = results[0]
        return Response(png, media_type="image/png",
                        headers={"Seed": str(image.seed), "Finish-Reason": "SUCCESS"})
    artifacts = [{"base64": encode_base64(png), "seed": im.seed, "finishReason": "SUCCESS"} for im, png in results]
    return Response(Artifacts(artifacts=artifacts).model_dump_json(), media_type="application/json")


@router.post("/generation/{engine_id}/text-to-image", summary="Text-to-image (waits for the images)",
             response_model=Artifacts, responses=_PNG)
async def text_to_image(engine_id: EngineId, body: TextToImageBody, request: Request, user: User,
                        settings: ServerSettings = Depends(get_settings)):
    spec = await run_in_threadpool(_spec, engine_id, body, settings, request.app.state.service,
                                   width=body.width, height=body.height)
    return await _run(request, user, spec)


def _form_schema(extra: dict, required: list[str]) -> dict:
    props = {
        "text_prompts[0][text]": {"type": "string"},
        "text_prompts[0][weight]": {"type": "number"},
        "cfg_scale": {"type": "number", "minimum": 0, "maximum": 35, "default": 7},
        "clip_guidance_preset": {"type": "string", "enum": [c.value for c in ClipGuidancePreset]},
        "sampler": {"type": "string", "enum": [s.value for s in StabilitySampler]},
        "samples": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
        "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295, "default": 0},
        "steps": {"type": "integer", "minimum": 1, "maximum": 150, "default": 30},
        "style_preset": {"type": "string", "enum": list(STYLE_PHRASES)},
        "init_image": {"type": "string", "format": "binary", "description": "PNG/JPEG/WebP, sides multiples of 64"},
        "loras": {"type": "string", "description": 'egaku extension: JSON [{"name","weight"}] (or the fields '
                  "loras[0][name], loras[0][weight], ...)"},
        **extra,
    }
    schema = {"type": "object", "properties": props, "required": ["init_image", "text_prompts[0][text]", *required]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def _read_form(request: Request, model: type[GenerationParams]):
    """(validated params, init image bytes, mask bytes|None) from Stability's multipart form."""
    form = await request.form(max_files=4, max_fields=200)
    fields: dict = {}
    files: dict[str, bytes] = {}
    prompts_by_index: dict[int, dict] = {}
    lora_items: list[tuple[str, str]] = []
    for key, value in form.multi_items():
        if hasattr(value, "read"):
            files[key] = await value.read()
            continue
        if key == "loras" or key.startswith("loras["):
            lora_items.append((key, value))
        elif key.startswith("text_prompts["):
            try:
                index, attr = key[len("text_prompts["):].rstrip("]").split("][")
                prompts_by_index.setdefault(int(index), {})[attr] = value
            except ValueError:
                raise ApiError(400, "invalid_prompts", f"unexpected form field '{key}'") from None
        else:
            fields[key] = value
    fields["text_prompts"] = [prompts_by_index[i] for i in sorted(prompts_by_index)]
    if lora_items:
        fields["loras"] = [{"name": n, "weight": w} for n, w in form_loras(lora_items)]
    try:
        params = model.model_validate(fields)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    if "init_image" not in files:
        raise ApiError(400, "bad_request", "init_image (a multipart file) is required")
    return params, files["init_image"], files.get("mask_image")


def _init_size(image) -> tuple[int, int]:
    w, h = image.size
    if w % 64 or h % 64:
        raise ApiError(400, "invalid_height_or_width", f"init_image is {w}x{h}; its sides must be multiples of 64")
    return w, h


@router.post("/generation/{engine_id}/image-to-image", summary="Image-to-image (multipart; waits)",
             response_model=Artifacts, responses=_PNG, openapi_extra=_form_schema({
                 "init_image_mode": {"type": "string", "enum": [m.value for m in InitImageMode]},
                 "image_strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.35},
                 "step_schedule_start": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.65},
                 "step_schedule_end": {"type": "number", "minimum": 0, "maximum": 1}}, []))
async def image_to_image(engine_id: EngineId, request: Request, user: User,
                         settings: ServerSettings = Depends(get_settings)):
    params, init, _ = await _read_form(request, ImageToImageForm)
    image = await run_in_threadpool(check_image, init, settings.max_upload_pixels, what="init_image")
    w, h = _init_size(image)
    strength = (round(1.0 - params.image_strength, 6) if params.init_image_mode is InitImageMode.IMAGE_STRENGTH
                else params.step_schedule_start)
    spec = await run_in_threadpool(_spec, engine_id, params, settings, request.app.state.service,
                                   width=w, height=h, init_image=init, strength=strength)
    return await _run(request, user, spec)


@router.post("/generation/{engine_id}/image-to-image/masking", summary="Inpainting (multipart; waits)",
             response_model=Artifacts, responses=_PNG, openapi_extra=_form_schema({
                 "mask_source": {"type": "string", "enum": [m.value for m in MaskSource]},
                 "mask_image": {"type": "string", "format": "binary",
                                "description": "needed unless mask_source is INIT_IMAGE_ALPHA"}}, ["mask_source"]))
async def masking(engine_id: EngineId, request: Request, user: User, settings: ServerSettings = Depends(get_settings)):
    params, init, mask_data = await _read_form(request, MaskingForm)
    limit = settings.max_upload_pixels

    def build() -> JobSpec:
        image = check_image(init, limit, what="init_image")
        w, h = _init_size(image)
        if params.mask_source is MaskSource.INIT_IMAGE_ALPHA:
            mask = mask_from_alpha(init, limit, what="init_image")
        elif mask_data is None:
            raise ApiError(400, "bad_request", f"mask_image is required with mask_source={params.mask_source.value}")
        elif params.mask_source is MaskSource.MASK_IMAGE_BLACK:
            mask = inverted_mask(mask_data, limit, what="mask_image")
        else:
            mask = check_image(mask_data, limit, what="mask_image", mode="L")
        check_mask_size(mask, image, what="mask_image")
        return _spec(engine_id, params, settings, request.app.state.service, width=w, height=h,
                     init_image=init, mask=png_bytes(mask), strength=1.0)

    return await _run(request, user, await run_in_threadpool(build))

