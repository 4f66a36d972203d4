"""`egaku generate`: txt2img, img2img (--init) and inpainting (--init + --mask) from the command line.

    egaku generate "a red cube on a table" -m mymodel --steps 20 --seed 7 -o cube.png
    egaku generate "a red cube" --batch-count 4 -o "cubes/{i}-{seed}.png"
    egaku generate "a blue cube" --init cube.png --mask cube-mask.png --strength 0.8
    egaku generate --from cube.png --sampler "DPM++ 2M Karras"   # replay with one change
    egaku generate "a castle" --lora my-style:0.8 --lora other:0.3  # as <lora:my-style:0.8> ... in the prompt

Everything the user typed is checked (request ranges, sampler name, images, output name) before a
model is loaded, so a typo fails in a second, not after a minute of loading.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from egaku.errors import InvalidImageError, InvalidRequestError, ModelNotFoundError

# GenerationRequest fields a flag (or --from) can set; a flag left out is None here.
REQUEST_FLAGS = (
    "prompt", "negative_prompt", "model", "sampler", "steps", "cfg_scale", "cfg_rescale", "seed", "width", "height",
    "batch_size", "batch_count", "clip_skip", "strength", "mask_blur",
)
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _device(value: str) -> str:
    if not _DEVICE.match(value.strip().lower()):
        raise argparse.ArgumentTypeError(f"'{value}' is not one of auto, cpu, cuda, cuda:N, mps")
    return value.strip().lower()


def _lora(value: str) -> tuple[str, float]:
    """NAME[:WEIGHT] -> (name, weight); the weight defaults to 1, as in a `<lora:name>` tag."""
    name, sep, weight = value.strip().rpartition(":")
    if not sep:
        return value.strip(), 1.0
    try:
        return name, float(weight)
    except ValueError:
        if "/" in weight or "\\" in weight:  # a path with a drive letter, no weight
            return value.strip(), 1.0
        raise argparse.ArgumentTypeError(f"'{value}': the weight after ':' must be a number") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate images from a prompt (txt2img, img2img, inpainting)",
        description="Generate images. Flags left out take GenerationRequest defaults, or the values "
        "stored in --from IMAGE (seed included).",
    )
    p.add_argument("prompt", nargs="?", help="what to draw (A1111 syntax: (word:1.2), [a:b:0.5], [a|b])")
    p.add_argument("-n", "--negative", dest="negative_prompt", metavar="TEXT", help="negative prompt")
    p.add_argument("-m", "--model", metavar="NAME|PATH", help="library name, file or folder (default: built-in)")
    p.add_argument("--sampler", metavar="NAME", help="sampler, as A1111 names it (see `egaku samplers`)")
    p.add_argument("--steps", type=int, metavar="N", help="sampling steps (default 20)")
    p.add_argument("--cfg", dest="cfg_scale", type=float, metavar="X", help="CFG scale (default 7)")
    p.add_argument("--cfg-rescale", dest="cfg_rescale", type=float, metavar="PHI",
                   help="CFG rescale, 0..1 (default 0 = off; 0.7 is usual for v-prediction models)")
    p.add_argument("--seed", type=int, metavar="N", help="seed; -1 = random (default); image i uses seed+i")
    p.add_argument("-W", "--width", type=int, metavar="N", help="width, a multiple of 8 (default: model's)")
    p.add_argument("-H", "--height", type=int, metavar="N", help="height, a multiple of 8")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per forward pass (default 1)")
    p.add_argument("--batch-count", "--n-iter", dest="batch_count", type=int, metavar="N",
                   help="batches, one after another (default 1)")
    p.add_argument("--clip-skip", type=int, metavar="N", help="skip the last N-1 CLIP layers (default 1)")
    p.add_argument("--lora", dest="loras", type=_lora, action="append", metavar="NAME[:WEIGHT]",
                   help="apply a LoRA (library name or file; weight default 1); repeat for several. "
                   "Same as <lora:NAME:WEIGHT> in the prompt, and written so in the image's parameters")
    p.add_argument("--init", type=Path, metavar="IMAGE", help="init image: img2img")
    p.add_argument("--strength", type=float, metavar="X", help="denoising strength for img2img (default 0.75)")
    p.add_argument("--mask", type=Path, metavar="IMAGE", help="inpainting mask, white = repaint (needs --init)")
    p.add_argument("--mask-blur", type=int, metavar="N", help="mask blur in pixels (default 4)")
    p.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    p.add_argument("--attention-slicing", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--vae-tiling", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--cpu-offload", action="store_true", help="keep only the running model on the GPU")
    p.add_argument("-o", "--output", default="out.png", metavar="PATH",
                   help="PNG to write (default out.png); several images: out-0001.png, ... or a "
                   "pattern with {i} (1-based) and/or {seed}")
    p.add_argument("--from", dest="from_image", type=Path, metavar="IMAGE",
                   help="replay the parameters stored in IMAGE; flags given override them")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status messages")
    p.set_defaults(run=run)


# 1. what to generate -------------------------------------------------------------------------


def request_fields(args: argparse.Namespace) -> dict[str, Any]:
    """GenerationRequest fields: those stored in --from IMAGE, overridden by the flags given."""
    fields: dict[str, Any] = {}
    if args.from_image is not None:
        from egaku.engine.metadata import parse_parameters, read_parameters, request_kwargs_from_parameters

        text = read_parameters(args.from_image)
        if text is None:
            raise InvalidImageError(f"{args.from_image.name} holds no generation parameters to replay")
        fields.update(request_kwargs_from_parameters(parse_parameters(text)))
    fields.update({k: getattr(args, k) for k in REQUEST_FLAGS if getattr(args, k) is not None})
    if getattr(args, "loras", None):
        fields["loras"] = list(args.loras)
    if "prompt" not in fields:
        raise InvalidRequestError("a prompt is needed (or --from IMAGE to replay one)")
    return fields


def build_request(args: argparse.Namespace):
    """The validated GenerationRequest, with init image and mask decoded safely."""
    from egaku.engine.images import load_image
    from egaku.engine.request import GenerationRequest

    fields = request_fields(args)
    if args.init is not None:
        init = fields["init_image"] = load_image(args.init, mode="RGB", name=f"init image {args.init.name}")
        if fields.get("width") is None and fields.get("height") is None:
            fields["width"], fields["height"] = fit_size(*init.size)
    if args.mask is not None:
        fields["mask"] = load_image(args.mask, mode="L", name=f"mask {args.mask.name}")
    return GenerationRequest(**fields).validated()


def fit_size(width: int, height: int) -> tuple[int, int]:
    """img2img without -W/-H keeps the init image's shape: scaled down to fit the request limits,
    each side a multiple of 8 (the VAE's factor)."""
    from egaku.engine.request import MAX_PIXELS, MAX_SIDE, MIN_SIDE

    scale = min(1.0, MAX_SIDE / max(width, height), (MAX_PIXELS / (width * height)) ** 0.5)
    return tuple(max(MIN_SIDE, int(side * scale) // 8 * 8) for side in (width, height))


# 2. where it goes ----------------------------------------------------------------------------


def check_output(pattern: str) -> None:
    """Refuse an output name we could not write, before any work is done."""
    if Path(pattern).suffix.lower() != ".png":
        raise InvalidRequestError(f"output must be a .png file, got '{pattern}'")
    try:
        pattern.format(i=1, seed=0)
    except (KeyError, IndexError, ValueError) as e:
        raise InvalidRequestError(f"output pattern '{pattern}' may only use {{i}} and {{seed}} ({e})") from None
    if Path(pattern).is_dir():
        raise InvalidRequestError(f"output '{pattern}' is a folder; give a file name ending in .png")


def output_paths(pattern: str, seeds: list[int]) -> list[Path]:
    """One path per image: the name as given for one image, else {i}/{seed} or name-0001.png."""
    if len(seeds) == 1 and "{" not in pattern:
        return [Path(pattern)]
    if "{i" in pattern or "{seed" in pattern:
        paths = [Path(pattern.format(i=n, seed=s)) for n, s in enumerate(seeds, start=1)]
        if len(set(paths)) == len(paths):
            return paths
    base = Path(pattern.format(i=0, seed=0) if "{" in pattern else pattern)
    return [base.with_name(f"{base.stem}-{n:04d}{base.suffix}") for n in range(1, len(seeds) + 1)]


# 3. progress ---------------------------------------------------------------------------------


class ProgressBar:
    """One tqdm bar on stderr over every denoising step of the job (all batches), with ETA."""

    def __init__(self, batch_count: int, steps: int, quiet: bool):
        from tqdm import tqdm

        self.batch_count = batch_count
        self.bar = tqdm(total=batch_count * steps, desc="sampling", unit="step", file=sys.stderr,
                        disable=quiet, dynamic_ncols=True, leave=False)

    def __call__(self, event) -> None:
        # img2img runs fewer steps than asked (steps x strength): the engine's total is the truth.
        total = self.batch_count * event.total
        if self.bar.total != total:
            self.bar.total = total
        done = min(event.batch_index * event.total + event.step, total)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        if done == total:
            self.bar.refresh()  # show the final count even within tqdm's redraw interval

    def close(self) -> None:
        self.bar.close()


# 4. the command ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from egaku.cli.common import note, one_line, quiet_libraries
    from egaku.engine.images import save_png

    check_output(args.output)
    request = build_request(args)
    quiet_libraries()
    from egaku.engine import Engine
    from egaku.engine.samplers import get_sampler

    get_sampler(request.sampler)  # unknown sampler: fail before loading a model
    from egaku.models.library_extras import ModelKind, resolve_extra

    for name, _ in request.loras:  # unknown LoRA: the same
        resolve_extra(ModelKind.LORA, name)
    engine = Engine(
        device=args.device,
        dtype=args.dtype,
        attention_slicing=args.attention_slicing,
        vae_tiling=args.vae_tiling,
        cpu_offload=args.cpu_offload,
    )
    note(f"loading model {request.model or '(built-in)'} ...", quiet=args.quiet)
    try:
        engine.load(request.model)
    except ModelNotFoundError as e:
        if args.model is None and args.from_image is not None and request.model:
            raise ModelNotFoundError(f"{one_line(e)} (the model stored in {args.from_image.name}; "
                                     "pass --model to use another)") from None
        raise
    bar = ProgressBar(request.batch_count, request.steps, args.quiet)
    try:
        result = engine.generate(request, progress=bar)
    finally:
        bar.close()
    paths = output_paths(args.output, result.seeds)
    for image, seed, infotext, path in zip(result.images, result.seeds, result.infotexts, paths):
        save_png(image, path, infotext)
        print(f"{path}  seed {seed}", flush=True)
    return 0
