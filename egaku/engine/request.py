"""What a caller asks the engine for, validated once here at the boundary."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from egaku.errors import InvalidRequestError

# Bounds on what one request may ask for. Pixels are bounded so one request cannot exhaust memory.
MAX_SIDE = 2048
MIN_SIDE = 64
MAX_PIXELS = 2048 * 2048
MAX_STEPS = 150
MAX_CFG = 30.0
MAX_BATCH_SIZE = 16
MAX_BATCH_COUNT = 100
MAX_CLIP_SKIP = 12
MAX_LORAS = 16
MAX_LORA_WEIGHT = 10.0


@dataclass
class GenerationRequest:
    """One txt2img / img2img / inpaint request, in the words A1111 users know.

    `init_image` and `mask` are PIL images (already safely decoded). With `init_image` the request is
    img2img (`strength` is A1111's denoising strength); adding `mask` makes it inpainting (white =
    repaint). `seed` -1 means random; image i of the batch uses seed + i.
    """

    prompt: str
    negative_prompt: str = ""
    model: str | None = None  # library name, file path or folder; None = built-in model
    sampler: str = "Euler a"
    steps: int = 20
    cfg_scale: float = 7.0
    # CFG rescale phi (Lin et al. 2023, §3.4): 0 = plain CFG; ~0.7 keeps high CFG from burning out,
    # above all on v-prediction and zero-terminal-SNR models
    cfg_rescale: float = 0.0
    seed: int = -1
    width: int | None = None  # None = the model's native size
    height: int | None = None
    batch_size: int = 1  # images per forward pass
    batch_count: int = 1  # how many batches, one after another
    clip_skip: int = 1
    init_image: Any | None = None  # PIL.Image.Image
    strength: float = 0.75
    mask: Any | None = None  # PIL.Image.Image, L mode, white = repaint
    mask_blur: int = 4
    # [(name, weight)]: library LoRAs (or paths) merged for this request, on top of <lora:name:w> prompt tags
    loras: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def validated(self) -> "GenerationRequest":
        """Return self if every field is in range, else raise InvalidRequestError (one line)."""
        if not isinstance(self.prompt, str):
            raise InvalidRequestError("prompt must be text")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, int) or v % 8 != 0:
                raise InvalidRequestError(f"{name} must be a multiple of 8, got {v}")
            if not MIN_SIDE <= v <= MAX_SIDE:
                raise InvalidRequestError(f"{name} must be between {MIN_SIDE} and {MAX_SIDE}, got {v}")
        if self.width and self.height and self.width * self.height > MAX_PIXELS:
            raise InvalidRequestError(
                f"{self.width}x{self.height} is over the limit of {MAX_PIXELS} pixels"
            )
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise InvalidRequestError(f"steps must be between 1 and {MAX_STEPS}, got {self.steps}")
        if not 0.0 <= float(self.cfg_scale) <= MAX_CFG:
            raise InvalidRequestError(f"cfg scale must be between 0 and {MAX_CFG}, got {self.cfg_scale}")
        if not 0.0 <= float(self.cfg_rescale) <= 1.0:
            raise InvalidRequestError(f"cfg rescale must be between 0 and 1, got {self.cfg_rescale}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise InvalidRequestError(f"batch size must be between 1 and {MAX_BATCH_SIZE}, got {self.batch_size}")
        if not 1 <= self.batch_count <= MAX_BATCH_COUNT:
            raise InvalidRequestError(f"batch count must be between 1 and {MAX_BATCH_COUNT}, got {self.batch_count}")
        if not 1 <= self.clip_skip <= MAX_CLIP_SKIP:
            raise InvalidRequestError(f"clip skip must be between 1 and {MAX_CLIP_SKIP}, got {self.clip_skip}")
        if not isinstance(self.seed, int) or not -1 <= self.seed < 2**32:
            raise InvalidRequestError(f"seed must be -1 (random) or between 0 and {2**32 - 1}, got {self.seed}")
        if not 0.0 <= float(self.strength) <= 1.0:
            raise InvalidRequestError(f"strength must be between 0 and 1, got {self.strength}")
        if self.mask is not None and self.init_image is None:
            raise InvalidRequestError("a mask needs an init image to inpaint")
        if self.mask is not None and self.mask.size != self.init_image.size:
            raise InvalidRequestError(
                f"mask is {self.mask.size[0]}x{self.mask.size[1]} but the init image is "
                f"{self.init_image.size[0]}x{self.init_image.size[1]}"
            )
        if not 0 <= self.mask_blur <= 64:
            raise InvalidRequestError(f"mask blur must be between 0 and 64, got {self.mask_blur}")
        self._validate_loras()
        return self

    def _validate_loras(self) -> None:
        if not isinstance(self.loras, (list, tuple)) or len(self.loras) > MAX_LORAS:
            raise InvalidRequestError(f"loras must be a list of at most {MAX_LORAS} (name, weight) pairs")
        for item in self.loras:
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str) and item[0].strip()):
                raise InvalidRequestError(f"each LoRA must be a (name, weight) pair, got {item!r}")
            weight = item[1]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not abs(weight) <= MAX_LORA_WEIGHT:
                raise InvalidRequestError(
                    f"LoRA {item[0]!r} has weight {weight!r}; weights must be numbers between "
                    f"-{MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}")

    def with_(self, **changes: Any) -> "GenerationRequest":
        return replace(self, **changes)
