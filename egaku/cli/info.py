"""Commands that describe things: `egaku info IMAGE`, `egaku samplers`, `egaku prompt TEXT`.

    egaku info out.png            # the A1111 infotext stored in the image, as A1111's PNG Info shows it
    egaku info out.png --json     # parsed: {"Prompt": ..., "Steps": 20, "Size-1": 512, ...}
    egaku samplers --json
    egaku prompt "a (red:1.3) cube, [sphere:cone:0.5]" --steps 20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from egaku.cli.common import print_json, print_table
from egaku.errors import EgakuError


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="show the generation parameters stored in an image")
    p.add_argument("image", type=Path, metavar="IMAGE", help="PNG (or JPEG/WebP) written by egaku, A1111, ...")
    p.add_argument("--json", action="store_true", help="parsed fields as JSON")
    p.set_defaults(run=run_info)

    p = subparsers.add_parser("samplers", help="list the samplers, as A1111 names them")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_samplers)

    p = subparsers.add_parser("prompt", help="show how a prompt is parsed: weights, schedule, tokens")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--steps", type=int, default=20, metavar="N", help="steps, for [from:to:when] (default 20)")
    p.add_argument("-m", "--model", metavar="NAME|PATH", help="use this model's tokenizer (default: SD's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_prompt)


def run_info(args: argparse.Namespace) -> int:
    from egaku.engine.metadata import parse_parameters, read_parameters

    text = read_parameters(args.image)
    if text is None:
        raise EgakuError(f"{args.image.name} holds no generation parameters")
    if args.json:
        print_json(parse_parameters(text))
    else:
        print(text)
    return 0


def run_samplers(args: argparse.Namespace) -> int:
    from egaku.engine.samplers import list_samplers

    samplers = list_samplers()
    if args.json:
        print_json([{"name": s.name, "scheduler": s.scheduler, "aliases": list(s.aliases),
                     "description": s.description} for s in samplers])
    else:
        print_table([[s.name, s.scheduler, s.description] for s in samplers],
                    ["NAME", "SCHEDULER", "DESCRIPTION"])
    return 0


def run_prompt(args: argparse.Namespace) -> int:
    from egaku.cli.common import quiet_libraries
    from egaku.errors import InvalidRequestError

    if not 1 <= args.steps <= 1000:
        raise InvalidRequestError(f"steps must be between 1 and 1000, got {args.steps}")
    quiet_libraries()
    if args.model:
        from egaku.models import load_model

        tokenizer = load_model(args.model).tokenizer
    else:
        from egaku.models.tiny import load_sd_tokenizer

        tokenizer = load_sd_tokenizer()
    from egaku.engine.prompts import describe_prompt

    described = describe_prompt(args.text, args.steps, tokenizer)
    if args.json:
        print_json(described)
    else:
        _print_described(described)
    return 0


def _print_described(described) -> None:
    """Readable form of describe_prompt's dict: each stretch of steps, its chunks and weights."""
    if not isinstance(described, dict) or "schedule" not in described:
        print(json.dumps(described, ensure_ascii=False, indent=2, default=str))
        return
    limit = described.get("max_tokens_per_chunk", 75)
    start = 1
    for entry in described["schedule"]:
        end = entry["until_step"]
        span = f"step {start}" if start == end else f"steps {start}-{end}"
        print(f"{span}: {entry['prompt']}")
        for n, chunk in enumerate(entry["chunks"], start=1):
            tokens = " ".join(t if w == 1.0 else f"{t}({w:g})" for t, w in zip(chunk["tokens"], chunk["weights"]))
            print(f"  chunk {n} ({chunk['count']}/{limit} tokens): {tokens}")
        start = end + 1
    for lora in described.get("loras", []):
        print(f"lora: {lora['name']} (weight {lora['weight']:g})")
