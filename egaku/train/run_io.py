"""Small pieces every training phase shares: atomic checkpoints, the JSON-lines log with a console
echo, progress bars, and random-state round trips through `torch.save(weights_only=True)`."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def save_checkpoint(obj: dict, path: Path) -> None:
    """torch.save through a temporary file, so a crash never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def log_line(out: Path, **fields) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(fields) + "\n")
    from tqdm import tqdm

    tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()))


def progress_bar(phase: str, total: int | None, initial: int):
    """A progress bar with ETA on a terminal (tqdm turns itself off when stderr is not one)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=phase, unit="step", disable=None, dynamic_ncols=True)


def rng_to_list(st):
    """random.Random state -> lists (what weights_only loading accepts)."""
    return [st[0], list(st[1]), st[2]]


def rng_from_list(st):
    """The inverse of rng_to_list."""
    return (st[0], tuple(st[1]), st[2])
