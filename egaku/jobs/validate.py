"""Submit-time checks: a JobSpec in, the spec as stored (size and seed resolved), its cost and batch key.

As much as can be known before a worker runs the job is checked here, so a bad request gets a
clear 400/404 at once instead of a failed job: field types and ranges (GenerationRequest.validated),
the sampler name, the model name (built-in, registered on the engine, or in the library; never a
path), the LoRAs (the `loras` field and the prompt's `<lora:name:w>` tags: library names, never
paths; weights within the engine's bounds), the init image and mask (decoded with load_image's
decompression-bomb check), the webhook URL.

Cost (published): credits = max(1, ceil(width * height * steps * n / (128 * 128 * 20))).
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from egaku.errors import InvalidRequestError, ModelNotFoundError
from egaku.jobs.settings import ServiceSettings
from egaku.jobs.types import SOURCES, JobSpec
from egaku.jobs.webhooks import is_public

UNIT_PIXELS_STEPS = 128 * 128 * 20  # one built-in 128x128 image at 20 steps = 1 credit
BUILTIN = "builtin"


def cost_of(width: int, height: int, steps: int, n: int) -> int:
    """credits = max(1, ceil(width * height * steps * n / 327680)), in integers."""
    return max(1, -(-(int(width) * int(height) * int(steps) * int(n)) // UNIT_PIXELS_STEPS))


@dataclass
class Checked:
    spec: dict  # as stored on the job: JSON, no bytes; "_init_image" / "_mask" hold blob hashes
    init_image: bytes | None
    mask: bytes | None
    cost: int
    batch_key: str | None  # json of Engine.batch_key, None = runs alone


@lru_cache(maxsize=1)
def builtin_size() -> int:
    """Native size of the built-in model, from its configs (no weights loaded)."""
    from egaku.models.library import inspect_model
    from egaku.models.loader import builtin_path

    return int(inspect_model(builtin_path())["default_size"])


@lru_cache(maxsize=1)
def builtin_info() -> dict:
    """{"family", "default_size", "hash" (AutoV2)} of the built-in model."""
    from egaku.models.hashing import autov2, sha256_path
    from egaku.models.library import inspect_model
    from egaku.models.loader import builtin_path

    path = builtin_path()
    return {"family": inspect_model(path)["family"], "default_size": builtin_size(),
            "hash": autov2(sha256_path(path, use_cache=False))}


def registered_models(engine) -> dict[str, object]:
    """Models added to the engine with add_bundle (cache keys that are names, not resolved paths)."""
    if engine is None:
        return {}
    out = {}
    for key in engine.cache.keys():
        if key != BUILTIN and "/" not in key and "\\" not in key:
            bundle = engine.cache.get(key)
            if bundle is not None:
                out[key] = bundle
    return out


def model_size(engine, model: str | None) -> int:
    """Native size of a model a job may name; ModelNotFoundError for anything else (paths included)."""
    if model is None or model == BUILTIN:
        return builtin_size()
    registered = registered_models(engine)
    if model in registered:
        return int(registered[model].default_size)
    from egaku.models.hashing import read_index

    entry = read_index()["models"].get(model)
    if entry is None:
        known = [BUILTIN, *registered, *read_index()["models"]]
        raise ModelNotFoundError(f"no model named {model!r} (have: {', '.join(known[:8])})")
    return int(entry["default_size"])


def library_lora(name: str) -> str:
    """The library name of a LoRA a job may name (exact, else case-insensitive, as the engine resolves
    it); ModelNotFoundError for anything else, file paths included."""
    from egaku.models.library_extras import ModelKind, known_names

    names = known_names(ModelKind.LORA)
    if name in names:
        return name
    hit = next((n for n in sorted(names) if n.lower() == name.lower()), None)
    if hit is None:
        have = ", ".join(sorted(names, key=str.lower)[:8]) or "none; add one with `egaku models add FILE`"
        raise ModelNotFoundError(f"no LoRA named {name[:100]!r} in the library (have: {have})")
    return hit


def _lora_weight(name: str, weight) -> float:
    from egaku.engine.request import MAX_LORA_WEIGHT

    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or abs(weight) > MAX_LORA_WEIGHT:
        raise InvalidRequestError(f"LoRA {name[:100]!r} has weight {weight!r}; weights must be numbers between "
                                  f"-{MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}")
    return float(weight)


def check_loras(loras, prompt: str) -> list[dict]:
    """The job's LoRAs as stored, [{"name", "weight"}] with library names; the prompt's tags checked too.

    `loras` holds (name, weight) pairs or {"name", "weight"} dicts (weight defaults to 1).
    """
    from egaku.engine.prompts import extract_lora_tags
    from egaku.engine.request import MAX_LORAS

    if loras is None:
        loras = []
    if not isinstance(loras, (list, tuple)):
        raise InvalidRequestError("loras must be a list of {name, weight} pairs")
    if len(loras) > MAX_LORAS:
        raise InvalidRequestError(f"at most {MAX_LORAS} LoRAs per job, got {len(loras)}")
    out = []
    for item in loras:
        if isinstance(item, dict):
            name, weight = item.get("name"), item.get("weight", 1.0)
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            name, weight = item
        else:
            raise InvalidRequestError(f"each LoRA must be a (name, weight) pair, got {str(item)[:80]!r}")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidRequestError(f"a LoRA name must be text of 1 to 200 characters, got {str(name)[:80]!r}")
        weight = _lora_weight(name, weight)
        out.append({"name": library_lora(name.strip()), "weight": weight})
    for name, weight in extract_lora_tags(prompt)[1]:  # the engine would read a path in a tag: never here
        _lora_weight(name, weight)
        library_lora(name)
    return out


def _int(name: str, value, *, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be a whole number, got {value!r}")
    return value


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InvalidRequestError(f"{name} must be a number, got {value!r}")
    return float(value)


def _port_ok(parts) -> bool:
    try:
        parts.port  # raises for a port that is not a number in 0..65535
        return True
    except ValueError:
        return False


def check_webhook(url: str | None, private_ok: bool = False) -> str | None:
    """An http(s) URL; unless `private_ok`, not one whose host is plainly local (localhost, a private
    IP). Names are resolved and checked again at delivery (egaku.jobs.webhooks)."""
    if url is None or url == "":
        return None
    parts = urlsplit(url) if isinstance(url, str) else None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000
            or not _port_ok(parts)):
        raise InvalidRequestError(f"webhook_url must be an http(s) URL, got {str(url)[:80]!r}")
    host = parts.hostname.rstrip(".")
    if not private_ok:
        try:
            local = not is_public(host)
        except ValueError:  # a name, not an address
            local = host == "localhost" or host.endswith(".localhost")
        if local:
            raise InvalidRequestError(f"webhook_url points at a private address ({host}); this server does not "
                                      "send webhooks there (egaku serve --allow-private-webhooks)")
    return url


def check_spec(spec: JobSpec, *, engine, settings: ServiceSettings) -> Checked:
    """Validate and resolve `spec`; raises InvalidRequestError, InvalidImageError or ModelNotFoundError."""
    from egaku.engine.images import load_image
    from egaku.engine.request import GenerationRequest
    from egaku.engine.samplers import check_steps

    # 1. types and text limits
    for name in ("prompt", "negative_prompt"):
        text = getattr(spec, name)
        if not isinstance(text, str):
            raise InvalidRequestError(f"{name} must be text")
        if len(text) > settings.max_prompt_chars:
            raise InvalidRequestError(f"{name} is {len(text)} characters, over the limit of {settings.max_prompt_chars}")
    steps, seed, n = _int("steps", spec.steps), _int("seed", spec.seed), _int("n", spec.n)
    width, height = _int("width", spec.width, allow_none=True), _int("height", spec.height, allow_none=True)
    mask_blur = _int("mask_blur", spec.mask_blur)
    cfg_scale, strength = _number("cfg_scale", spec.cfg_scale), _number("strength", spec.strength)
    cfg_rescale = _number("cfg_rescale", spec.cfg_rescale)
    if not 1 <= n <= settings.max_n:
        raise InvalidRequestError(f"n (images per job) must be between 1 and {settings.max_n}, got {n}")
    if spec.source not in SOURCES:
        raise InvalidRequestError(f"source must be one of {', '.join(SOURCES)}, got {spec.source!r}")
    if not isinstance(spec.sampler, str):
        raise InvalidRequestError("sampler must be text")
    model = spec.model if spec.model not in ("", BUILTIN) else None
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("model must be a name")
    webhook_url = check_webhook(spec.webhook_url, settings.webhook_private_ok)
    loras = check_loras(spec.loras, spec.prompt)

    # 2. sampler, model and size (the model's native size where none was asked)
    sampler = check_steps(spec.sampler, steps).name
    native = model_size(engine, model)
    width, height = width or native, height or native
    if seed == -1:
        seed = secrets.randbelow(2**32)

    # 3. input images: decoded with the bomb check; the engine's own validation on the whole request
    init = mask = None
    if spec.init_image is not None:
        init = load_image(bytes(spec.init_image), mode="RGB", max_pixels=settings.max_input_pixels, name="init image")
    if spec.mask is not None:
        mask = load_image(bytes(spec.mask), mode="L", max_pixels=settings.max_input_pixels, name="mask")
    request = GenerationRequest(
        prompt=spec.prompt, negative_prompt=spec.negative_prompt, model=model, sampler=sampler, steps=steps,
        cfg_scale=cfg_scale, cfg_rescale=cfg_rescale, seed=seed, width=width, height=height, batch_size=n,
        init_image=init,
        strength=strength, mask=mask, mask_blur=mask_blur, loras=[(d["name"], d["weight"]) for d in loras],
    ).validated()

    # 4. batch key: jobs with equal keys may share one forward pass
    key = engine.batch_key(request) if engine is not None and hasattr(engine, "batch_key") else None
    stored = dict(
        prompt=spec.prompt, negative_prompt=spec.negative_prompt, model=model, sampler=sampler, steps=steps,
        cfg_scale=cfg_scale, cfg_rescale=cfg_rescale, seed=seed, width=width, height=height, n=n, strength=strength,
        init_image=spec.init_image is not None, mask=spec.mask is not None, mask_blur=mask_blur, loras=loras,
        webhook_url=webhook_url, source=spec.source,
    )
    return Checked(
        spec=stored,
        init_image=bytes(spec.init_image) if spec.init_image is not None else None,
        mask=bytes(spec.mask) if spec.mask is not None else None,
        cost=cost_of(width, height, steps, n),
        batch_key=json.dumps(list(key)) if key is not None else None,
    )


def public_spec(stored: dict) -> dict:
    """The stored spec as clients see it (internal keys, which start with "_", left out)."""
    return {k: v for k, v in stored.items() if not k.startswith("_")}
