"""Small helpers shared by the command modules. Nothing heavy is imported here (fast `--help`)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any


def one_line(error: BaseException) -> str:
    """An error's message on one line (CLI errors are one line, never a traceback)."""
    return " ".join(str(error).split()) or type(error).__name__


def note(message: str, *, quiet: bool = False) -> None:
    """A status message for people: stderr, so stdout stays clean for scripts."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def print_json(value: Any) -> None:
    """Print dataclasses, dicts and lists as indented JSON (paths and enums as strings)."""
    print(json.dumps(_jsonable(value), indent=2, ensure_ascii=False))


def print_table(rows: list[list[str]], header: list[str]) -> None:
    """A plain left-aligned text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def quiet_libraries() -> None:
    """Silence transformers/diffusers chatter (e.g. the torchvision notice) before importing them.

    Only the CLI process's environment is touched, and only where the user set nothing.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
