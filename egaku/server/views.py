"""Pydantic models of egaku's native JSON (the OpenAPI spec documents them) and JobView -> JSON."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from egaku.jobs.types import JobStatus, JobView

class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case error code, e.g. insufficient_credits")
    message: str = Field(description="one line a person can read")


class ErrorOut(BaseModel):
    """Every native error: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


class LoraIn(BaseModel):
    """One LoRA merged for a request (as a `<lora:name:weight>` prompt tag would)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="a LoRA of the library (see GET /api/v1/loras)")
    weight: float = Field(1.0, description="strength, between -10 and 10 (A1111's usual range is 0..1)")


class JobRequest(BaseModel):
    """A generation request in egaku's words (A1111 sampler names, strength = denoising strength)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(description="A1111 prompt syntax: (word:1.2), [a:b:0.5], [a|b]")
    negative_prompt: str = ""
    model: str | None = Field(None, description="library model name; null = the built-in model")
    sampler: str = Field("Euler a", description="see GET /api/v1/samplers")
    steps: int = 20
    cfg_scale: float = 7.0
    cfg_rescale: float = Field(0.0, description="CFG rescale phi, 0..1 (0 = off; ~0.7 for v-prediction models)")
    seed: int = Field(-1, description="-1 = random; image i uses seed + i")
    width: int | None = Field(None, description="multiple of 8; null = the model's native size")
    height: int | None = None
    n: int = Field(1, description="number of images")
    strength: float = Field(0.75, description="img2img / inpaint denoising strength, 0..1")
    init_image: str | None = Field(None, description="base64 PNG/JPEG/WebP (or a data: URL): img2img")
    mask: str | None = Field(None, description="base64 mask, white = repaint (needs init_image)")
    mask_blur: int = 4
    loras: list[LoraIn] = Field([], description="library LoRAs to apply (at most 16), on top of <lora:name:w> "
                                "prompt tags; recorded as tags in the image's infotext")
    webhook_url: str | None = Field(None, description="http(s) URL called with the JobView when done")


class ImageOut(BaseModel):
    id: str
    url: str = Field(description="GET it for the PNG (with its A1111 parameters chunk)")
    seed: int
    width: int
    height: int
    infotext: str = Field(description="A1111 parameters text")


class JobOut(BaseModel):
    """A job's state: position 0 = next to run (only while queued); progress while running."""

    id: str
    status: JobStatus
    position: int | None = None
    progress: dict[str, Any] | None = Field(None, description='{"step", "total"} while running')
    cost: int = Field(description="credits held (settled on success, refunded on failure/cancel)")
    error: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    params: dict[str, Any] = Field(description="the request as run; init_image/mask as booleans")
    images: list[ImageOut] = []


class JobList(BaseModel):
    jobs: list[JobOut]
    next: str | None = Field(None, description="pass as `before` for the next (older) page")


class AccountOut(BaseModel):
    id: str
    name: str
    is_admin: bool
    balance: int = Field(description="credits: posted balance minus active holds")
    auth: bool = Field(description="false in --no-auth (local single-user) mode")


class PricingOut(BaseModel):
    formula: str
    unit_pixels_steps: int = Field(description="width*height*steps*n per credit")


class CostOut(BaseModel):
    credits: int


class ModelOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    family: str | None = None
    default_size: int | None = None
    hash: str | None = None


class LoraOut(BaseModel):
    name: str = Field(description="use as {\"name\": ...} in `loras`, or as <lora:name:weight> in a prompt")
    hash: str = Field(description="AutoV2 short hash (first 10 hex digits of the SHA-256), as Civitai shows")
    sha256: str
    family: str = Field(description="the model family it was made for: sd1, sd2, sdxl or unknown")
    trigger_words: list[str] = Field(description="words to prompt with (from its training metadata)")
    rank: int | None = None
    alpha: float | None = None


class EmbeddingOut(BaseModel):
    name: str = Field(description="write the name in a prompt or negative prompt to use it")
    hash: str
    sha256: str
    family: str
    vectors: int | None = Field(None, description="vectors (tokens) it takes up")
    trigger_words: list[str]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (bytes, bytearray)):
        return True  # image bytes never leave as JSON; their presence does
    return value


def image_url(image_id: str) -> str:
    return f"/api/v1/images/{image_id}"


def job_json(view: JobView | dict) -> dict:
    """Native JobView JSON (contract): spec -> params, images with their URLs."""
    v = _plain(view)
    params = dict(v.get("spec") or v.get("params") or {})
    for key in ("init_image", "mask"):
        params[key] = bool(params.get(key))
    images = [
        {"id": im["id"], "url": image_url(im["id"]), "seed": im["seed"], "width": im["width"],
         "height": im["height"], "infotext": im.get("infotext", "")}
        for im in v.get("images") or []
    ]
    return {
        "id": v["id"], "status": v["status"], "position": v.get("position"), "progress": v.get("progress"),
        "cost": v.get("cost", 0), "error": v.get("error"), "created_at": v.get("created_at"),
        "started_at": v.get("started_at"), "finished_at": v.get("finished_at"), "params": params,
        "images": images,
    }

