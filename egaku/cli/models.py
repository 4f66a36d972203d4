"""`egaku models`: the local model library in $EGAKU_HOME/models (egaku.models.library):
checkpoints, and LoRAs and textual-inversion embeddings (egaku.models.library_extras).

    egaku models add ~/Downloads/v1-5-pruned-emaonly.safetensors --name sd15
    egaku models add ~/Downloads/pixel-art.safetensors          # a LoRA: goes to models/loras
    egaku models list                                            # checkpoints, then LoRAs and embeddings
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

    p = actions.add_parser("add", help="add a checkpoint, diffusers folder, LoRA or embedding to the library")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--name", metavar="N", help="library name (default: the file's stem)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_add)

    p = actions.add_parser("remove", help="remove a model, LoRA or embedding from the library")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--kind", choices=("checkpoint", "lora", "embedding"), help="which, when names are shared")
    p.set_defaults(run=run_remove)

    p = actions.add_parser("info", help="what a model, LoRA or embedding is: family, format, hashes, size")
    p.add_argument("model", metavar="NAME_OR_PATH")
    p.add_argument("--kind", choices=("checkpoint", "lora", "embedding"), help="which, when names are shared")
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


def _describe_extra(info) -> list[str]:
    lines = [f"name:            {info.name}", f"kind:            {info.kind}", f"path:            {info.path}",
             f"family:          {info.family}"]
    if info.kind == "lora":
        lines += [f"rank / alpha:    {info.rank} / {info.alpha if info.alpha is not None else 'mixed'}",
                  f"layers:          {info.layers}", f"A1111 hash:      {info.addnet_hash[:12]}"]
    else:
        lines.append(f"vectors:         {info.vectors}")
    lines += [f"trigger words:   {', '.join(info.trigger_words) or '-'}", f"size:            {human_bytes(info.size_bytes)}",
              f"sha256:          {info.sha256}", f"hash (AutoV2):   {info.autov2}"]
    return lines


def run_list(args: argparse.Namespace) -> int:
    library = _library()
    from egaku.models.library_extras import ModelKind, list_extras

    models = library.list_models()
    loras, embeddings = list_extras(ModelKind.LORA), list_extras(ModelKind.EMBEDDING)
    if args.json:
        print_json([{**m.to_dict(), "kind": "checkpoint"} for m in models] + [e.to_dict() for e in loras + embeddings])
        return 0
    if not models and not loras and not embeddings:
        print("no models yet; add one with: egaku models add PATH [--name NAME]")
        return 0
    if models:
        rows = [[m.name, f"{m.family}{' inpaint' if m.inpaint else ''}", str(m.format), m.autov2,
                 human_bytes(m.size_bytes)] for m in models]
        print_table(rows, ["NAME", "FAMILY", "FORMAT", "HASH", "SIZE"])
    for title, items in (("LoRAs", loras), ("embeddings", embeddings)):
        if not items:
            continue
        print(f"\n{title} (use {'<lora:NAME:0.8>' if title == 'LoRAs' else 'NAME'} in a prompt):")
        rows = [[e.name, e.family, e.autov2, str(e.rank if e.kind == "lora" else e.vectors),
                 human_bytes(e.size_bytes), ", ".join(e.trigger_words) or "-"] for e in items]
        print_table(rows, ["NAME", "FAMILY", "HASH", "RANK" if title == "LoRAs" else "VECTORS", "SIZE", "TRIGGER WORDS"])
    return 0


def run_add(args: argparse.Namespace) -> int:
    info = _library().add(args.path, name=args.name)
    if args.json:
        print_json(info)
    elif getattr(info, "kind", "checkpoint") != "checkpoint":
        words = f", trigger words: {', '.join(info.trigger_words)}" if info.trigger_words else ""
        print(f"added {info.kind} {info.name} ({info.family}, {info.autov2}{words})")
    else:
        print(f"added {info.name} ({info.family}{' inpaint' if info.inpaint else ''}, {info.autov2})")
    return 0


def _kind_of(name: str, kind: str | None) -> str:
    """checkpoint, lora or embedding: as given, else the one kind that has `name` (default checkpoint)."""
    from egaku.errors import InvalidRequestError, ModelNotFoundError
    from egaku.models.hashing import read_index
    from egaku.models.library_extras import ModelKind, known_names

    if kind:
        return kind
    found = ["checkpoint"] if name in read_index()["models"] else []
    found += [k.value for k in (ModelKind.LORA, ModelKind.EMBEDDING) if name in known_names(k)]
    if len(found) > 1:
        raise InvalidRequestError(f"{name!r} names a {' and a '.join(found)}; say which with --kind")
    if not found and not Path(name).expanduser().exists() and not read_index()["models"]:
        raise ModelNotFoundError(f"no model, LoRA or embedding named {name!r} in the library")
    return found[0] if found else "checkpoint"  # a path, or the checkpoint library's own "not found"


def run_remove(args: argparse.Namespace) -> int:
    library = _library()
    kind = _kind_of(args.name, args.kind)
    if kind == "checkpoint":
        library.remove(args.name)
    else:
        from egaku.models.library_extras import remove_extra

        remove_extra(kind, args.name)
    print(f"removed {args.name}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    library = _library()
    kind = _kind_of(args.model, args.kind)
    if kind == "checkpoint" and Path(args.model).is_file():
        from egaku.models.library_extras import detect_kind

        kind = detect_kind(args.model).value
    if kind == "checkpoint":
        info = library.info(args.model)
        lines = _describe(info)
    else:
        from egaku.models.library_extras import extra_info

        info = extra_info(kind, args.model)
        lines = _describe_extra(info)
    if args.json:
        print_json(info)
    else:
        print("\n".join(lines))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from egaku.errors import InvalidRequestError

    if args.out.suffix.lower() != ".safetensors":
        raise InvalidRequestError(f"export writes a .safetensors file, got '{args.out}'")
    info = _library().export(args.model, args.out)
    print(f"wrote {args.out} ({info.family}, {info.autov2})")
    return 0
