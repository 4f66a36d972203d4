"""egaku's command-line tool.

    egaku generate "a red cube on a wooden table" --steps 20 --seed 1 -o cube.png
    egaku generate --from cube.png --steps 30 -o cube30.png     # replay, overriding one field
    egaku info cube.png --json
    egaku samplers
    egaku prompt "a (red:1.3) cube [on|under] a table" --steps 20
    egaku models add ~/Downloads/model.safetensors --name mymodel

Each command group is one module in egaku/cli with `register(subparsers)`, which adds its parser
and sets `run=function(args) -> int`. A new group (train, eval, serve) adds its module name to
COMMAND_MODULES. Command modules import torch and diffusers inside their functions only, so
`egaku --help` starts at once.

Errors: an EgakuError prints `error: <message>` on stderr and exits 1; argparse usage errors exit
2; Ctrl-C exits 130. No traceback reaches the user (EGAKU_DEBUG=1 shows one for unexpected errors).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from egaku.cli.common import one_line
from egaku.errors import EgakuError

COMMAND_MODULES = (
    "egaku.cli.generate",
    "egaku.cli.info",
    "egaku.cli.models",
    "egaku.cli.train",
    "egaku.cli.evaluate",
    "egaku.cli.serve",
    "egaku.cli.admin",
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("egaku")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egaku",
        description="egaku: open, self-hostable Stable Diffusion.",
        epilog="Data (models, database, images) lives in $EGAKU_HOME, default ~/.egaku.",
    )
    parser.add_argument("--version", action="version", version=f"egaku {_version()}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        # `egaku` or `egaku models` alone: show what there is to run.
        (getattr(args, "parser", None) or parser).print_help(sys.stderr)
        return 2
    return int(args.run(args) or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `egaku` console script; returns the exit status."""
    debug = os.environ.get("EGAKU_DEBUG", "") not in ("", "0")
    try:
        return _run(argv)
    except EgakuError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nerror: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `egaku models list | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or one_line(e)}{where}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug, not a user error: still one line unless debugging
        if debug:
            raise
        print(
            f"error: unexpected {type(e).__name__}: {one_line(e)} (set EGAKU_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
