"""A1111 generation parameters ("infotext"): written, parsed and read back from image files.

The format is AUTOMATIC1111's, so A1111's PNG Info tab, ComfyUI loaders and Civitai read what we
write and we read what they write::

    a cat on a mat
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x512, Model hash: abcdef1234, ...

The prompt may span several lines; the last line holds `Key: value` pairs joined by ", ", where a
value containing ',', ':' or a newline is JSON-quoted (A1111's `infotext_utils.quote`). PNGs keep
the text in a `parameters` tEXt/iTXt chunk; JPEG and WebP in the EXIF UserComment tag.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from egaku.engine.request import GenerationRequest
from egaku.errors import InvalidImageError, InvalidRequestError

# One `Key: value` pair of the last line, as A1111's infotext_utils.re_param_code.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")

# Keys whose values are numbers; parse_parameters returns them as int / float, the rest as text.
_INT_KEYS = ("Steps", "Seed", "Clip skip", "Mask blur", "Size-1", "Size-2", "Batch size", "Batch pos")
_FLOAT_KEYS = ("CFG scale", "Denoising strength")

# A1111 writes the scheduler apart from the sampler since v1.9 ("DPM++ 2M" + "Karras");
# egaku's sampler names keep A1111's older combined form ("DPM++ 2M Karras").
_SCHEDULE_SUFFIXES = {"karras": "Karras", "exponential": "Exponential"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"egaku {version('egaku')}"
    except PackageNotFoundError:
        return "egaku"


def quote(value: Any) -> str:
    """A1111's quote: JSON-quote a value only when it holds ',', ':' or a newline."""
    text = str(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """A1111's unquote: undo `quote`, leaving text that is not a valid JSON string as it is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def _number(value: float) -> str:
    """7.0 -> '7', 7.5 -> '7.5', as A1111 shows sliders with whole values."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def format_parameters(
    request: GenerationRequest,
    *,
    seed: int,
    model_name: str,
    model_hash: str,
    extra: dict | None = None,
) -> str:
    """The A1111 infotext of one image of `request`, generated with `seed`.

    The prompt line carries the request's `loras` as `<lora:name:weight>` tags (prompt_with_loras).
    Fields follow A1111's `create_infotext` order; a field is left out when it does not apply
    (no negative prompt, txt2img without denoising strength, clip skip 1, no mask) or is None.
    `extra` adds fields (e.g. "Lora hashes") before "Version", as A1111's extra_generation_params.
    """
    width, height = request.width, request.height
    img2img = request.init_image is not None
    fields: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": request.sampler,
        "CFG scale": _number(request.cfg_scale),
        "CFG Rescale phi": _number(request.cfg_rescale) if request.cfg_rescale else None,
        "Seed": seed,
        "Size": f"{width}x{height}" if width and height else None,
        "Model hash": model_hash or None,
        "Model": model_name or None,
        "Denoising strength": _number(request.strength) if img2img else None,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "Mask blur": request.mask_blur if request.mask is not None else None,
    }
    fields.update(extra or {})
    fields["Version"] = _version()
    line = ", ".join(f"{k}: {quote(v)}" for k, v in fields.items() if v is not None and v != "")
    negative = f"\nNegative prompt: {request.negative_prompt}" if request.negative_prompt else ""
    return f"{prompt_with_loras(request.prompt, request.loras)}{negative}\n{line}".strip()


def prompt_with_loras(prompt: str, loras) -> str:
    """The prompt with a request's `loras` field appended as A1111 `<lora:name:weight>` tags, so the
    infotext alone replays the image (A1111 writes LoRAs in the prompt; the engine applies the prompt's
    tags before the field's, so the order survives)."""
    tags = " ".join(f"<lora:{name}:{_number(weight)}>" for name, weight in loras or [])
    return f"{prompt} {tags}" if prompt and tags else prompt or tags


def parse_parameters(text: str) -> dict:
    """Parse an infotext like A1111's `parse_generation_parameters`.

    Returns A1111's keys: "Prompt", "Negative prompt", each `Key` of the last line, and for a
    `WxH` value (Size) "Size-1" (width) and "Size-2" (height). Known numeric keys become int/float;
    a missing "Clip skip" is 1, as A1111 reads it. The last line counts as parameters only when it
    holds at least three pairs; otherwise it is part of the prompt.
    """
    *lines, last = text.strip().split("\n")
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    result: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _RE_PARAM.findall(last):
        value = unquote(value.strip())
        size = _RE_SIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    result.setdefault("Clip skip", "1")
    for key in _INT_KEYS + _FLOAT_KEYS:
        if key in result:
            try:
                result[key] = int(result[key]) if key in _INT_KEYS else float(result[key])
            except ValueError:
                pass  # left as text; request_kwargs_from_parameters reports it
    return result


def request_kwargs_from_parameters(params: dict) -> dict:
    """GenerationRequest keyword arguments from parse_parameters' dict (only fields present).

    Raises InvalidRequestError when a numeric field holds text that is not a number.
    """
    kwargs: dict[str, Any] = {}
    if "Prompt" in params:
        kwargs["prompt"] = params["Prompt"]
    if "Negative prompt" in params:
        kwargs["negative_prompt"] = params["Negative prompt"]
    if params.get("Sampler"):
        sampler = str(params["Sampler"])
        schedule = _SCHEDULE_SUFFIXES.get(str(params.get("Schedule type", "")).lower())
        if schedule and not sampler.endswith(schedule):
            sampler = f"{sampler} {schedule}"
        kwargs["sampler"] = sampler
    if params.get("Model"):
        kwargs["model"] = str(params["Model"])
    fields = {
        "Steps": ("steps", int),
        "CFG scale": ("cfg_scale", float),
        "CFG Rescale phi": ("cfg_rescale", float),
        "Seed": ("seed", int),
        "Size-1": ("width", int),
        "Size-2": ("height", int),
        "Clip skip": ("clip_skip", int),
        "Denoising strength": ("strength", float),
        "Mask blur": ("mask_blur", int),
    }
    for key, (name, kind) in fields.items():
        if key not in params:
            continue
        try:
            kwargs[name] = kind(params[key])
        except (TypeError, ValueError):
            raise InvalidRequestError(f"stored parameter {key!r} is not a number: {params[key]!r}") from None
    return kwargs


def _decode_user_comment(raw: bytes | str) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix, then text (A1111 writes UNICODE, UTF-16)."""
    if isinstance(raw, str):
        return raw or None
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        # piexif (A1111) writes big-endian; some writers little-endian: ASCII text shows which.
        big = body[:2].startswith(b"\0") if len(body) >= 2 else True
        text = body.decode("utf-16-be" if big else "utf-16-le", errors="replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8):
        text = body.decode("utf-8", errors="replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    text = text.rstrip("\0")
    return text or None


def read_parameters(path: str | Path) -> str | None:
    """The A1111 infotext stored in an image file, or None when it holds none.

    PNG: the `parameters` tEXt/zTXt/iTXt chunk. JPEG/WebP: EXIF UserComment. Pixels are never
    decoded (text after the image data is read only for images within load_image's pixel limit).
    Raises InvalidImageError for a missing file or one that is not an image.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    from egaku.engine.images import DEFAULT_MAX_PIXELS

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                text = im.info.get("parameters")
                if text is None and im.format == "PNG" and im.width * im.height <= DEFAULT_MAX_PIXELS:
                    text = im.text.get("parameters")  # chunks after IDAT
                if text is None:
                    comment = im.getexif().get_ifd(0x8769).get(0x9286)  # Exif IFD, UserComment
                    text = _decode_user_comment(comment) if comment else None
    except FileNotFoundError:
        raise InvalidImageError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise InvalidImageError(f"{path} is a folder, not an image") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"{path.name} is not a readable image ({e})") from None
    return text if isinstance(text, str) and text.strip() else None
