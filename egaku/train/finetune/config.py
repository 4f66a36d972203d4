"""One config for every fine-tuning method: defaults per method < a config file < command-line flags.

The resolved config (every field filled in) is written next to the outputs as config.json and into
the report, so a run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from egaku.errors import InvalidRequestError


class Method(StrEnum):
    LORA = "lora"  # low-rank adapters on the UNet's attention (Hu et al. 2021), optionally the text encoder
    DREAMBOOTH = "dreambooth"  # subject-driven with prior preservation (Ruiz et al. 2023), full UNet or LoRA
    EMBEDDING = "embedding"  # textual inversion (Gal et al. 2022): only new token vectors train
    FINETUNE = "finetune"  # the whole UNet (and optionally the text encoder)


# What a method starts from when neither a config file nor a flag says otherwise.
METHOD_DEFAULTS: dict[Method, dict] = {
    Method.LORA: dict(steps=500, lr=1e-4, weight_decay=0.01),
    Method.DREAMBOOTH: dict(steps=400, lr=2e-6, weight_decay=0.01),  # full; LoRA mode uses 1e-4
    Method.EMBEDDING: dict(steps=1000, lr=5e-3, weight_decay=0.0),
    Method.FINETUNE: dict(steps=1000, lr=1e-5, weight_decay=0.01),
}
CHOICES = {
    "lr_scheduler": ("constant", "linear", "cosine"),
    "mixed_precision": ("auto", "no", "bf16", "fp16"),
    "lora_targets": ("attention", "transformer", "conv"),
    "dreambooth_mode": ("full", "lora"),
    "save_dtype": ("fp32", "fp16", "bf16"),
    "embedding_format": ("safetensors", "pt"),
}


@dataclass
class FinetuneConfig:
    method: str = Method.LORA.value
    base: str | None = None  # model to start from: library name or path (default: the built-in model)
    data: str | None = None  # folder of images + captions (.txt beside each, or captions.jsonl)
    from_world: str | None = None  # or: generate the data from the shapes world, e.g. "green heart"
    world_images: int = 40  # images generated for from_world (at most 50)
    output_name: str = ""  # file name of the result; default: the output folder's name
    trigger_words: list[str] = field(default_factory=list)  # written into the LoRA's metadata
    steps: int | None = None  # optimizer steps (method default)
    max_minutes: float = 0.0  # stop earlier after this much training time (0 = no limit); outputs are written
    batch_size: int = 1  # images per micro-batch (one aspect bucket each)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float | None = None  # learning rate (method default)
    text_encoder_lr: float | None = None  # learning rate of the text encoder(s) (default: lr)
    lr_scheduler: str = "constant"  # after warmup: constant | linear | cosine decay to 0
    warmup_steps: int = 0  # linear learning-rate warmup steps
    weight_decay: float | None = None  # AdamW (method default; 0 for embeddings)
    max_grad_norm: float = 1.0  # gradient clipping (0 = none)
    resolution: int = 0  # side of the bucket area (0 = the model's native size)
    bucket_step: int = 0  # bucket sides are multiples of this (0 = 64, or 8 for models of 256 px and less)
    caption_ext: str = ".txt"  # caption file beside each image
    default_caption: str = ""  # for images without a caption
    caption_dropout: float = 0.0  # probability of training on the empty caption
    seed: int = 0  # LoRA init, batch order, noise and timesteps
    mixed_precision: str = "auto"  # auto = bf16 on CUDA, none elsewhere (bf16 autocast is slow on CPUs)
    gradient_checkpointing: bool = False  # recompute activations: less memory, ~30% slower
    device: str = "auto"  # auto | cpu | cuda | mps
    min_snr_gamma: float = 0.0  # 0 = plain MSE; else Min-SNR-gamma loss weights (Hang et al. 2023)
    noise_offset: float = 0.0  # extra per-channel noise (darker/brighter images); 0 = off
    # LoRA, and DreamBooth in lora mode
    rank: int = 8  # LoRA rank (kohya network_dim)
    alpha: float = 0.0  # 0 = rank (scale 1)
    lora_targets: str = "attention"  # attention: to_q/k/v/out; transformer: + proj_in/out, feed-forward; conv: + ResNet convs
    lora_dropout: float = 0.0  # dropout inside the LoRA layers
    train_text_encoder: bool = False  # LoRA on the text encoder(s) too; finetune: train them too
    # DreamBooth
    dreambooth_mode: str = "full"  # full UNet or lora
    instance_prompt: str = ""  # caption of every instance image, e.g. "a photo of sks dog" (default: its caption)
    # prior preservation (DreamBooth, LoRA, finetune): a second batch of regularization images each step
    class_prompt: str = ""  # prior preservation with base-model images of this prompt ("" = none)
    class_data: str | None = None  # or: a folder of regularization images with captions (kohya's reg_data_dir)
    num_class_images: int = 50  # class images to draw for prior preservation
    prior_loss_weight: float = 1.0  # weight of the class images' loss
    class_steps: int = 20  # sampler steps for the class images
    # textual inversion
    token: str = ""  # the new word (default: output_name)
    init_word: str = "*"  # its vectors start from this word's embedding
    num_vectors: int = 1  # vectors (tokens) the new word is made of
    # outputs
    samples: bool = True  # draw sample grids (every sample_every steps and at the end)
    sample_every: int = 0  # a sample grid every N steps (0 = at the end only)
    sample_prompts: list[str] = field(default_factory=list)  # default: the first captions
    sample_steps: int = 20  # sampler steps of the sample images
    sample_cfg_scale: float = 7.0  # CFG scale of the sample (and class) images
    sample_sampler: str = "DPM++ 2M"  # sampler of the sample (and class) images
    checkpoint_every: int = 100  # steps between resumable checkpoints
    eval_examples: int = 4  # images whose fixed-noise loss is measured before and after training (0 = none)
    save_dtype: str = "fp16"  # LoRA and full-model outputs
    embedding_format: str = "safetensors"  # or A1111's .pt

    # -- resolution --------------------------------------------------------------------------------

    def resolved(self) -> "FinetuneConfig":
        """A copy with the method's defaults filled in, validated (one-line errors)."""
        try:
            method = Method(self.method)
        except ValueError:
            raise InvalidRequestError(f"unknown method {self.method!r} (use {', '.join(m.value for m in Method)})") from None
        defaults = dict(METHOD_DEFAULTS[method])
        if method is Method.DREAMBOOTH and self.dreambooth_mode == "lora":
            defaults["lr"] = 1e-4
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        if self.text_encoder_lr is None:
            changes["text_encoder_lr"] = changes.get("lr", self.lr)
        cfg = dataclasses.replace(self, **changes)
        cfg._validate()
        return cfg

    def _validate(self) -> None:
        def bad(message: str):
            raise InvalidRequestError(message)

        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                bad(f"{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        positive_ints = ("steps", "batch_size", "grad_accum", "rank", "num_vectors", "sample_steps", "checkpoint_every",
                         "class_steps", "world_images")
        for name in positive_ints:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(f"{name.replace('_', '-')} must be a whole number of at least 1, got {getattr(self, name)!r}")
        for name in ("lr", "text_encoder_lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                bad(f"{name.replace('_', '-')} must be a positive number, got {v!r}")
        for name in ("caption_dropout", "lora_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(f"{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.num_vectors > 75:
            bad("num-vectors must be at most 75 (one CLIP chunk)")
        if self.world_images > 50:
            bad("world-images must be at most 50")
        if self.resolution and self.resolution % 8:
            bad(f"resolution must be a multiple of 8, got {self.resolution}")
        if self.bucket_step and self.bucket_step % 8:
            bad(f"bucket-step must be a multiple of 8, got {self.bucket_step}")
        if self.class_prompt and self.class_data:
            bad("give one source of regularization images: class-prompt or class-data, not both")
        if (self.class_prompt or self.class_data) and self.method == Method.EMBEDDING:
            bad("prior preservation (class-prompt, class-data) does not apply to embeddings: they change no other prompt")
        if (self.data is None) == (self.from_world is None):
            bad("give exactly one source of images: a data folder or --from-world CONCEPT")
        for name in ("warmup_steps", "eval_examples", "sample_every", "max_minutes", "min_snr_gamma", "noise_offset", "prior_loss_weight",
                     "alpha", "max_grad_norm", "weight_decay"):
            if getattr(self, name) < 0:
                bad(f"{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
# Which fields each method uses beyond the common ones (the CLI shows only those).
PRIOR = ("class_prompt", "class_data", "num_class_images", "prior_loss_weight", "class_steps")
METHOD_FIELDS = {
    Method.LORA: ("rank", "alpha", "lora_targets", "lora_dropout", "train_text_encoder", "save_dtype") + PRIOR,
    Method.DREAMBOOTH: ("dreambooth_mode", "instance_prompt", "rank", "alpha", "lora_targets", "lora_dropout",
                        "train_text_encoder", "save_dtype") + PRIOR,
    Method.EMBEDDING: ("token", "init_word", "num_vectors", "embedding_format"),
    Method.FINETUNE: ("train_text_encoder", "save_dtype") + PRIOR,
}
SPECIFIC = {name for names in METHOD_FIELDS.values() for name in names}


def field_help() -> dict[str, str]:
    """Each field's comment in this class's source: the help text of its command-line flag."""
    import inspect
    import re

    source = inspect.getsource(FinetuneConfig)
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^    (\w+): [^=\n]+=[^#\n]*#(.*)$", source, re.M)}


def read_config_file(path: str | Path) -> dict:
    """Settings from a JSON or TOML file (keys are field names; '-' may stand for '_')."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"cannot read config file {path} ({type(e).__name__})") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as e:
        raise InvalidRequestError(f"config file {path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} "
                                  f"({' '.join(str(e).split())[:120]})") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"config file {path} must hold a table of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _coerce(name: str, value, where: str):
    """Check a setting's type against the field's default (ints may stand for floats)."""
    f = FIELDS[name]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if value is None or default is None and not isinstance(value, bool):
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, list):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if isinstance(value, str):
            return [value]
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, str):
        return value
    raise InvalidRequestError(f"setting {name!r} in {where} has the wrong type: {value!r}")


def build_config(method: str, file_settings: dict | None = None, overrides: dict | None = None,
                 where: str = "the config file") -> FinetuneConfig:
    """FinetuneConfig for `method`: its defaults, then `file_settings`, then non-None `overrides`; resolved."""
    values: dict = {"method": method}
    for source, settings in ((where, file_settings or {}), ("the command line", overrides or {})):
        unknown = sorted(set(settings) - set(FIELDS))
        if unknown:
            raise InvalidRequestError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in {source}")
        for k, v in settings.items():
            if v is not None and not (source == "the command line" and k == "method"):
                values[k] = _coerce(k, v, source)
    if file_settings and file_settings.get("method") not in (None, method):
        raise InvalidRequestError(f"{where} is for method {file_settings['method']!r}, not {method!r}")
    return FinetuneConfig(**values).resolved()
