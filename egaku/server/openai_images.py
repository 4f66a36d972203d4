"""OpenAI Images API (platform.openai.com/docs/api-reference/images): generations and edits, so the
official `openai` client works with `base_url` pointed here.

Translation: `model` is a library model name, or an OpenAI name (dall-e-2, dall-e-3, gpt-image-*)
meaning the caller's default model (the one A1111's options set; else the built-in); `size` "WxH"
(multiples of 8) or "auto"/omitted = the model's native size. Edits follow OpenAI's mask rule
(fully transparent pixels of `mask`, or of `image` when no mask is sent, are repainted).
`response_format=url` gives an absolute URL on this server, signed and expiring after an hour, that
serves the PNG without a key (OpenAI clients fetch those URLs without auth).
egaku extensions (optional body fields): negative_prompt, steps, seed, cfg_scale, sampler, and loras
([{"name","weight"}]; the openai client sends them with `extra_body=`, in edits' forms as `loras[][name]`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from egaku.errors import InvalidImageError
from egaku.jobs.types import JobSpec, Principal
from egaku.server.auth import bearer_scheme, get_principal, get_settings
from egaku.server.errors import ApiError
from egaku.server.jobs_glue import images_png, require_success, resolve_model, submit_and_wait
from egaku.server.limits import ServerSettings
from egaku.server.loras import form_loras, lora_pairs
from egaku.server.uploads import check_image, check_mask_size, check_prompt, encode_base64, mask_from_alpha, png_bytes
from egaku.server.views import LoraIn

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class ImageParams(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: str
    model: str | None = None
    n: int | None = Field(1, ge=1, le=10)
    size: str | None = Field(None, description='"WxH" (multiples of 8), e.g. "512x512"; "auto" = native size')
    response_format: Literal["url", "b64_json"] | None = "url"
    user: str | None = None
    # egaku extensions
    negative_prompt: str | None = None
    steps: int | None = Field(None, ge=1, le=150)
    seed: int | None = Field(None, ge=-1, le=4294967295)
    cfg_scale: float | None = Field(None, ge=0, le=30)
    sampler: str | None = None
    loras: list[LoraIn] | None = Field(None, description="library LoRAs to apply (see GET /api/v1/loras)")


class GenerationsBody(ImageParams):
    quality: str | None = None
    style: str | None = None


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


_ERRORS = {code: {"model": OpenAIError} for code in (400, 401, 402, 404, 413, 429)}
router = APIRouter(prefix="/v1/images", tags=["openai"], responses=_ERRORS)
User = Annotated[Principal, Depends(get_principal)]


# signed image URLs -------------------------------------------------------------------------------


def _sign(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()[:32]


def image_token(secret: bytes, image_id: str, user_id: str, ttl_s: int) -> str:
    payload = base64.urlsafe_b64encode(json.dumps([image_id, user_id, int(time.time()) + ttl_s]).encode())
    payload_s = payload.decode().rstrip("=")
    return f"{payload_s}.{_sign(secret, payload_s)}"


def read_token(secret: bytes, token: str) -> tuple[str, str]:
    """(image id, user id) of a valid, unexpired token; ApiError 404 otherwise (no hint why)."""
    payload, _, sig = token.removesuffix(".png").partition(".")
    try:
        if hmac.compare_digest(sig, _sign(secret, payload)):
            image_id, user_id, expires = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            if time.time() < expires:
                return str(image_id), str(user_id)
    except (ValueError, TypeError):
        pass
    raise ApiError(404, "not_found", "no such image, or its URL has expired")


@router.get("/files/{token}", summary="An image from a signed URL (no key needed; expires)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def image_file(token: str, request: Request):
    image_id, user_id = read_token(request.app.state.url_secret, token)
    owner = Principal(user_id=user_id, name="", is_admin=False, api_key_id=None)
    return Response(request.app.state.service.image_png(owner, image_id), media_type="image/png")


# generation ------------------------------------------------------------------------------------


def _size(size: str | None) -> tuple[int | None, int | None]:
    if size is None or size.strip().lower() in ("", "auto"):
        return None, None
    m = _SIZE.match(size.strip().lower())
    if not m:
        raise ApiError(400, "invalid_size", f"size must look like 512x512, got '{size}'", param="size")
    w, h = int(m.group(1)), int(m.group(2))
    if w % 8 or h % 8:
        raise ApiError(400, "invalid_size", f"size {w}x{h}: both sides must be multiples of 8", param="size")
    return w, h


def _model(request: Request, user: Principal, name: str | None) -> str | None:
    if name is None or name.startswith(("dall-e", "gpt-image")):
        return request.app.state.default_models.get(user.user_id)
    return resolve_model(request.app.state.service, name)


def _spec(request: Request, user: Principal, p: ImageParams, settings: ServerSettings, **extra) -> JobSpec:
    fields = {k: v for k, v in (("steps", p.steps), ("cfg_scale", p.cfg_scale), ("sampler", p.sampler))
              if v is not None}
    width, height = _size(p.size)
    return JobSpec(
        prompt=check_prompt(p.prompt, settings.max_prompt_chars),
        negative_prompt=check_prompt(p.negative_prompt, settings.max_prompt_chars, what="negative prompt"),
        model=_model(request, user, p.model), seed=-1 if p.seed is None else p.seed, n=p.n or 1,
        width=extra.pop("width", None) or width, height=extra.pop("height", None) or height,
        loras=lora_pairs(p.loras), source="openai", **fields, **extra,
    )


async def _run(request: Request, user: Principal, spec: JobSpec, response_format: str | None) -> dict:
    service, settings = request.app.state.service, request.app.state.settings
    view = require_success(await submit_and_wait(request, service, user, spec))
    data = []
    if response_format == "b64_json":
        for _, png in await run_in_threadpool(images_png, service, user, view):
            data.append({"b64_json": encode_base64(png), "revised_prompt": spec.prompt})
    else:
        base = str(request.base_url).rstrip("/")
        for im in view.images:
            token = image_token(request.app.state.url_secret, im.id, user.user_id, settings.url_ttl_s)
            data.append({"url": f"{base}/v1/images/files/{token}.png", "revised_prompt": spec.prompt})
    return {"created": int(time.time()), "data": data}


@router.post("/generations", summary="Create images from a prompt (waits for them)", response_model=ImagesResponse,
             response_model_exclude_none=True, dependencies=[Security(bearer_scheme)])
async def generations(body: GenerationsBody, request: Request, user: User,
                      settings: ServerSettings = Depends(get_settings)):
    spec = await run_in_threadpool(_spec, request, user, body, settings)
    return await _run(request, user, spec, body.response_format)


_EDIT_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image", "prompt"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "PNG; transparent pixels = edit if no mask"},
        "mask": {"type": "string", "format": "binary", "description": "PNG; fully transparent pixels = edit"},
        "prompt": {"type": "string"}, "model": {"type": "string"},
        "n": {"type": "integer", "minimum": 1, "maximum": 10}, "size": {"type": "string"},
        "response_format": {"type": "string", "enum": ["url", "b64_json"]},
        "negative_prompt": {"type": "string"}, "steps": {"type": "integer", "minimum": 1, "maximum": 150},
        "seed": {"type": "integer", "minimum": -1, "maximum": 4294967295},
        "loras": {"type": "string", "description": 'JSON [{"name","weight"}], or the fields loras[][name], '
                  "loras[][weight] (as the openai client's extra_body sends them)"},
    }}}}}}


@router.post("/edits", summary="Edit an image where it is transparent, or where a mask is (multipart; waits)",
             response_model=ImagesResponse, response_model_exclude_none=True, openapi_extra=_EDIT_FORM,
             dependencies=[Security(bearer_scheme)])
async def edits(request: Request, user: User, settings: ServerSettings = Depends(get_settings)):
    form = await request.form(max_files=8, max_fields=100)
    fields, files, lora_items = {}, {}, []
    for key, value in form.multi_items():
        if hasattr(value, "read"):
            files.setdefault(key.removesuffix("[]"), await value.read())
        elif key == "loras" or key.startswith("loras["):
            lora_items.append((key, value))
        else:
            fields[key] = value
    if lora_items:
        fields["loras"] = [{"name": n, "weight": w} for n, w in form_loras(lora_items, code="invalid_value")]
    try:
        params = ImageParams.model_validate(fields)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    if "image" not in files:
        raise ApiError(400, "missing_image", "image (a multipart PNG file) is required", param="image")
    limit = settings.max_upload_pixels

    def build() -> JobSpec:
        try:
            image = check_image(files["image"], limit, what="image")
            mask = mask_from_alpha(files.get("mask") or files["image"], limit,
                                   what="mask" if "mask" in files else "image")
        except InvalidImageError as e:
            raise ApiError(400, "invalid_image", str(e), param="mask" if "mask" in files else "image") from None
        check_mask_size(mask, image)
        w, h = image.size
        if params.size is None and (w % 8 or h % 8):
            raise ApiError(400, "invalid_size", f"image is {w}x{h}; give a size with multiples of 8", param="size")
        return _spec(request, user, params, settings, init_image=files["image"], mask=png_bytes(mask),
                     strength=1.0, width=None if params.size else w, height=None if params.size else h)

    spec = await run_in_threadpool(build)
    return await _run(request, user, spec, params.response_format)
