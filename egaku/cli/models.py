"""`egaku models`: the local model library in $EGAKU_HOME/models (egaku.models.library).

    egaku models add ~/Downloads/v1-5-pruned-emaonly.safetensors --name sd15
    egaku models list
    egaku models info sd15 --json
    egaku models export sd15 sd15-copy.safetensors
    egaku models remove sd15
"""

from __future__ import annotations

import argparse
from pathlib import Path

from egaku.cli.common import human_bytes, print_json, print_table, quiet_libraries


def register(subparsers) -> None:
    group = subparsers.add_parser("models", help="manage the local model library")
    actions = group.add_subparsers(title="actions", dest="action", metavar="ACTION")
    group.set_defaults(run=None, parser=group)

    p = actions.add_parser("list", help="list the models in the library")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_list)

    p = actions.add_parser("add", help="add a checkpoint file or diffusers folder to the library")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--name", metavar="N", help="library name (default: the file's stem)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_add)

    p = actions.add_parser("remove", help="remove a model from the library")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(run=run_remove)

    p = actions.add_parser("info", help="what a model is: family, format, hashes, size")
    p.add_argument("model", metavar="NAME_OR_PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_info)

    p = actions.add_parser("export", help="write a model as one .safetensors file (A1111/ComfyUI layout)")
    p.add_argument("model", metavar="NAME_OR_PATH")
    p.add_argument("out", type=Path, metavar="OUT.safetensors")
    p.set_defaults(run=run_export)


def _library():
    quiet_libraries()
    from egaku.models import library

    return library


def _describe(info) -> list[str]:
    kind = f"{info.family}{' inpaint' if info.inpaint else ''}"
    return [
        f"name:            {info.name}",
        f"path:            {info.path}",
        f"format:          {info.format}",
        f"family:          {kind}",
        f"prediction type: {info.prediction_type}",
        f"default size:    {info.default_size}",
        f"size:            {human_bytes(info.size_bytes)}",
        f"sha256:          {info.sha256}",
        f"hash (AutoV2):   {info.autov2}",
    ]


def run_list(args: argparse.Namespace) -> int:
    models = _library().list_models()
    if args.json:
        print_json(models)
        return 0
    if not models:
        print("no models yet; add one with: egaku models add PATH [--name NAME]")
        return 0
    rows = [[m.name, f"{m.family}{' inpaint' if m.inpaint else ''}", str(m.format), m.autov2,
             human_bytes(m.size_bytes)] for m in models]
    print_table(rows, ["NAME", "FAMILY", "FORMAT", "HASH", "SIZE"])
    return 0


def run_add(args: argparse.Namespace) -> int:
    info = _library().add(args.path, name=args.name)
    if args.json:
        print_json(info)
    else:
        print(f"added {info.name} ({info.family}{' inpaint' if info.inpaint else ''}, {info.autov2})")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    _library().remove(args.name)
    print(f"removed {args.name}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    info = _library().info(args.model)
    if args.json:
        print_json(info)
    else:
        print("\n".join(_describe(info)))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from egaku.errors import InvalidRequestError

    if args.out.suffix.lower() != ".safetensors":
        raise InvalidRequestError(f"export writes a .safetensors file, got '{args.out}'")
    info = _library().export(args.model, args.out)
    print(f"wrote {args.out} ({info.family}, {info.autov2})")
    return 0
