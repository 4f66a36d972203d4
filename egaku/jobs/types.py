"""What crosses the boundary between the job service and its clients (the HTTP server, the admin CLI).

The names and fields are the contract the server is written against; `JobView.to_dict` is the
native API's JSON for a job (also the body of webhooks and of `status` / `done` events).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

from egaku.errors import EgakuError, InvalidImageError, InvalidRequestError, ModelNotFoundError
from egaku.store.errors import InsufficientCredits, NotFound


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


SOURCES = ("native", "stability", "openai", "a1111", "studio")


@dataclass
class JobSpec:
    """What a client asks for, already in engine words (each wire format translates into this)."""

    prompt: str
    negative_prompt: str = ""
    model: str | None = None  # library name or a name registered on the engine; None = built-in
    sampler: str = "Euler a"  # any name egaku.engine.samplers accepts (A1111 names)
    steps: int = 20
    cfg_scale: float = 7.0
    cfg_rescale: float = 0.0  # CFG rescale phi, 0..1 (0 = off)
    seed: int = -1  # -1 = random, drawn at submit so the job shows it
    width: int | None = None  # None = the model's native size (resolved at submit, so cost is exact)
    height: int | None = None
    n: int = 1  # images (the engine's batch_size)
    strength: float = 0.75  # img2img / inpaint denoising strength
    init_image: bytes | None = None  # PNG/JPEG/WebP bytes, already size-checked by the server
    mask: bytes | None = None  # white = repaint
    mask_blur: int = 4
    # [(name, weight)]: library LoRAs merged for this job, on top of the prompt's <lora:name:w> tags
    loras: list[tuple[str, float]] = field(default_factory=list)
    webhook_url: str | None = None
    source: str = "native"  # "native" | "stability" | "openai" | "a1111" | "studio"


@dataclass
class ImageView:
    id: str
    job_id: str
    seed: int
    width: int
    height: int
    sha256: str
    created_at: str  # ISO 8601 UTC
    infotext: str  # A1111 parameters, as in the PNG

    def to_dict(self) -> dict:
        return {"id": self.id, "url": f"/api/v1/images/{self.id}", "seed": self.seed, "width": self.width,
                "height": self.height, "sha256": self.sha256, "created_at": self.created_at,
                "infotext": self.infotext}


@dataclass
class JobView:
    id: str
    status: JobStatus
    spec: dict  # JobSpec as JSON (size and seed resolved); init_image / mask are booleans
    cost: int  # credits (charged on success; refunded on failure or cancel; 0 charged in no-auth mode)
    position: int | None  # place in the fair queue, 0 = next to run; None unless queued
    progress: dict | None  # {"step", "total"} while running
    error: str | None  # one line, when failed
    created_at: str  # ISO 8601 UTC
    started_at: str | None
    finished_at: str | None
    images: list[ImageView] = field(default_factory=list)
    user_id: str = ""

    def to_dict(self) -> dict:
        """The native API's JobView JSON (`params` is the spec)."""
        return {"id": self.id, "status": self.status.value, "position": self.position, "progress": self.progress,
                "cost": self.cost, "error": self.error, "created_at": self.created_at,
                "started_at": self.started_at, "finished_at": self.finished_at, "params": dict(self.spec),
                "images": [image.to_dict() for image in self.images], "user_id": self.user_id}


@dataclass
class Principal:
    """Who is calling: the user behind an API key (api_key_id None in no-auth mode)."""

    user_id: str
    name: str
    is_admin: bool
    api_key_id: str | None


@dataclass
class Event:
    """A job's event: "status" and "done" carry JobView.to_dict(); "progress" carries
    {"step", "total", "image_index", "preview_png": bytes | None}."""

    job_id: str
    kind: str  # "status" | "progress" | "done"
    data: dict

    def to_dict(self) -> dict:
        return asdict(self)


class Unauthorized(EgakuError):
    """No API key, or an unknown or revoked one (HTTP 401)."""


class Forbidden(EgakuError):
    """A valid key that may not do this (HTTP 403)."""


class RateLimited(EgakuError):
    """Too many requests or concurrent jobs for a key (HTTP 429 with Retry-After)."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class QuotaExceeded(RateLimited):
    """The user has as many jobs queued or running as the quota allows (HTTP 429)."""


__all__ = [
    "Event", "Forbidden", "ImageView", "InsufficientCredits", "InvalidImageError", "InvalidRequestError",
    "JobSpec", "JobStatus", "JobView", "ModelNotFoundError", "NotFound", "Principal", "QuotaExceeded",
    "RateLimited", "SOURCES", "Unauthorized",
]
