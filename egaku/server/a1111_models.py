"""Request and response bodies of AUTOMATIC1111's API (modules/api/models.py in stable-diffusion-webui),
the fields egaku uses; everything else A1111 clients send (hires fix, scripts, ControlNet's
alwayson_scripts, ...) is accepted and ignored."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Processing(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    prompt: str = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int = Field(-1, ge=-1, le=4294967295)
    subseed: int | None = -1
    subseed_strength: float | None = 0.0
    sampler_name: str | None = None
    sampler_index: str | None = Field(None, description="deprecated A1111 spelling of sampler_name")
    scheduler: str | None = Field(None, description='"Automatic", or "Karras" to pick a Karras sampler')
    batch_size: int = Field(1, ge=1, le=16)
    n_iter: int = Field(1, ge=1, le=100)
    steps: int = Field(20, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0, le=30)
    width: int | None = Field(None, ge=64, le=2048, description="default: the model's native size")
    height: int | None = Field(None, ge=64, le=2048)
    restore_faces: bool | None = None
    tiling: bool | None = None
    eta: float | None = None
    override_settings: dict[str, Any] | None = Field(None, description="sd_model_checkpoint picks the model")
    override_settings_restore_afterwards: bool | None = True
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] | None = None


class Txt2ImgRequest(_Processing):
    enable_hr: bool | None = False
    denoising_strength: float | None = None


class Img2ImgRequest(_Processing):
    init_images: list[str] = Field(min_length=1, max_length=1, description="base64 images (one)")
    resize_mode: int | None = 0
    denoising_strength: float = Field(0.75, ge=0, le=1)
    mask: str | None = Field(None, description="base64 mask, white = repaint")
    mask_blur: int | None = Field(None, ge=0, le=64)
    mask_blur_x: int | None = None
    mask_blur_y: int | None = None
    inpainting_fill: int | None = 0
    inpaint_full_res: bool | int | None = True
    inpaint_full_res_padding: int | None = 0
    inpainting_mask_invert: int | None = Field(0, ge=0, le=1, description="1 = black repaints")
    initial_noise_multiplier: float | None = None
    include_init_images: bool | None = False


class GenerationResponse(BaseModel):
    images: list[str] = Field(description="base64 PNGs, with their parameters chunk")
    parameters: dict[str, Any]
    info: str = Field(description="JSON string: seed, all_seeds, infotexts, ...")


class SdModel(BaseModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class Lora(BaseModel):
    """An entry of GET /sdapi/v1/loras (A1111's built-in Lora extension)."""

    name: str = Field(description="use as <lora:name:weight> in a prompt")
    alias: str
    path: str = Field(description="the file, relative to the server's models folder")
    metadata: dict[str, Any] = Field(description="the safetensors header (kohya's ss_* training metadata)")


class EmbeddingItem(BaseModel):
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: int = Field(description="vector width (768 for SD 1.x)")
    vectors: int


class Embeddings(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class Sampler(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class Scheduler(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False


class ProgressState(BaseModel):
    model_config = ConfigDict(extra="allow")

    skipped: bool = False
    interrupted: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class Progress(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None


class A1111Error(BaseModel):
    error: str
    detail: str
    body: str
    errors: str
