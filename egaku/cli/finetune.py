"""`egaku train lora|dreambooth|embedding|finetune`: fine-tune a model on your own images.

    egaku train lora my_images/ --out runs/my-style --steps 500 --rank 8
    egaku train dreambooth dog_photos/ --instance-prompt "a photo of sks dog" --class-prompt "a photo of a dog"
    egaku train embedding style_images/ --token mystyle --num-vectors 4
    egaku train finetune my_images/ --base sd15 --steps 2000 --config finetune.toml
    egaku train lora --from-world "green heart" --out runs/green-heart       # generated shapes-world data

Every setting of egaku.train.finetune.FinetuneConfig is a flag (the field's name with dashes) and a
key of the --config JSON/TOML file; flags win over the file, the file over the method's defaults.
Running the same command again resumes the run in --out.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from egaku.cli.common import note, quiet_libraries

DESCRIPTIONS = {
    "lora": "LoRA adapters on the UNet's attention (and optionally the text encoder), saved for A1111/ComfyUI",
    "dreambooth": "DreamBooth with prior preservation: the full UNet, or a LoRA with --dreambooth-mode lora",
    "embedding": "textual inversion: a new word whose vectors alone train (A1111 embedding file)",
    "finetune": "full fine-tune of the UNet (and the text encoder with --train-text-encoder)",
}
POSITIONAL = {"method", "data"}


def _flag_type(f: dataclasses.Field):
    default = f.default if f.default is not dataclasses.MISSING else None
    if f.name in ("steps",):
        return int
    if f.name in ("lr", "text_encoder_lr", "weight_decay"):
        return float
    return type(default) if default is not None else str


def register_methods(sub) -> None:
    """Add one subcommand per method to `egaku train`'s subparsers."""
    from egaku.train.finetune.config import CHOICES, FIELDS, METHOD_FIELDS, SPECIFIC, Method, field_help

    help_text = field_help()
    for method in Method:
        p = sub.add_parser(method.value, help=DESCRIPTIONS[method.value], description=DESCRIPTIONS[method.value])
        p.add_argument("data", nargs="?", type=Path, metavar="DATA",
                       help="folder of images with captions (image.txt beside image.png, or captions.jsonl)")
        p.add_argument("--out", type=Path, default=Path("runs") / method.value,
                       help=f"run folder: result, checkpoints, samples, report (default: runs/{method.value})")
        p.add_argument("--config", type=Path, metavar="FILE", help="JSON or TOML file of settings")
        p.add_argument("--add", action="store_true", help="add the result to the model library when done")
        own, fields = set(METHOD_FIELDS[method]), []
        for name, f in FIELDS.items():
            if name in POSITIONAL or (name in SPECIFIC and name not in own):
                continue
            fields.append(name)
            flag = "--" + name.replace("_", "-")
            text = help_text.get(name, "")
            if isinstance(f.default, bool):
                p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
            elif f.default is dataclasses.MISSING and f.default_factory is list:
                p.add_argument(flag, dest=name, action="append", metavar="TEXT", help=text + " (repeatable)")
            else:
                p.add_argument(flag, dest=name, type=_flag_type(f), choices=CHOICES.get(name), default=None,
                               metavar=None if name in CHOICES else name.split("_")[-1].upper(), help=text)
        p.set_defaults(run=run_method, method=method.value, fields=fields)


def run_method(args: argparse.Namespace) -> int:
    quiet_libraries()
    from egaku.train.finetune import build_config, read_config_file, train

    overrides = {name: getattr(args, name) for name in args.fields}
    overrides["data"] = str(args.data) if args.data else None
    file_settings = read_config_file(args.config) if args.config else None
    cfg = build_config(args.method, file_settings, overrides, where=str(args.config))
    source = f"--from-world {cfg.from_world!r}" if cfg.from_world else cfg.data
    note(f"{args.method}: training on {source} in {args.out} for {cfg.steps} steps (run again to resume)")
    result = train(cfg, args.out, report=note)
    state = "done" if result.complete else f"stopped at step {result.steps_done} of {cfg.steps} (run again to continue)"
    fixed = result.report.get("fixed_loss") or {}
    if fixed.get("before") is not None:
        note(f"fixed-noise loss {fixed['before']:.4f} -> {fixed['after']:.4f}")
    note(f"{state}: {result.output}")
    note(f"report: {args.out / 'report.json'} and {args.out / 'report.png'}")
    if args.add:
        from egaku.models import library

        added = library.add(result.output, name=cfg.output_name if args.method != "embedding" else None)
        note(f"added to the library as {added.name}")
    elif args.method in ("lora", "embedding") or cfg.dreambooth_mode == "lora" and args.method == "dreambooth":
        word = result.output.stem if args.method == "embedding" else f"<lora:{result.output.stem}:0.8>"
        note(f"use it: egaku models add {result.output}, then put {word} in a prompt")
    print(result.output)
    return 0
