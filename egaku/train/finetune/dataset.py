"""Training images and captions: a folder of images of any size, bucketed by aspect ratio.

Captions, first found wins: `image.txt` beside `image.png` (the kohya / A1111 convention),
`captions.jsonl` (or `metadata.jsonl`) in the folder with `{"file": ..., "text": ...}` lines, the
prompt in a PNG's A1111 `parameters` chunk (images egaku made), then the default caption.
Aspect-ratio buckets (NovelAI's scheme, as kohya's sd-scripts): bucket sides are multiples of
`step` with about the model's native area; each image goes to the bucket nearest its aspect ratio,
is resized to cover it and center-cropped. A batch only holds images of one bucket.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from egaku.errors import EgakuError, InvalidRequestError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_ASPECT = 2.0  # the widest bucket is at most 2:1
MAX_IMAGE_PIXELS = 8192 * 8192


@dataclass
class Example:
    path: str
    caption: str
    size: tuple[int, int]  # original (width, height)
    bucket: tuple[int, int] = (0, 0)  # (width, height) it is trained at
    crop: tuple[int, int] = (0, 0)  # (top, left) of the crop in the resized image (SDXL's crop conditioning)


@dataclass
class Dataset:
    root: str
    examples: list[Example]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def buckets(self) -> dict[str, int]:
        return dict(sorted(Counter(f"{e.bucket[0]}x{e.bucket[1]}" for e in self.examples).items()))

    def tag_frequency(self) -> dict[str, int]:
        """Comma-separated caption tags and how often each occurs (kohya's ss_tag_frequency)."""
        counts: Counter = Counter()
        for e in self.examples:
            counts.update(t.strip() for t in e.caption.split(",") if t.strip())
        return dict(counts)


def make_buckets(side: int, step: int) -> list[tuple[int, int]]:
    """(width, height) buckets of about side*side pixels, sides multiples of `step`, ratio <= MAX_ASPECT."""
    area = side * side
    out = set()
    w = step
    while w <= side * 2:
        h = max(step, (area // w) // step * step)
        if max(w / h, h / w) <= MAX_ASPECT:
            out.add((w, h))
            out.add((h, w))
        w += step
    out.add((side, side))
    return sorted(out)


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log space) to the image's; the larger on ties."""
    ratio = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))


def _jsonl_captions(root: Path, report: Callable[[str], None]) -> dict[str, str]:
    captions: dict[str, str] = {}
    for name in ("captions.jsonl", "metadata.jsonl"):
        path = root / name
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                file, text = row.get("file") or row.get("file_name"), row.get("text", row.get("caption"))
                if not isinstance(file, str) or not isinstance(text, str):
                    raise ValueError("needs \"file\" and \"text\" strings")
            except (ValueError, AttributeError) as e:
                report(f"skipped {path.name} line {n}: {' '.join(str(e).split())[:80]}")
                continue
            captions.setdefault(Path(file).as_posix(), text)
    return captions


def _png_prompt(path: Path) -> str | None:
    from egaku.engine.metadata import parse_parameters, read_parameters

    try:
        text = read_parameters(path)
        return parse_parameters(text).get("Prompt") if text else None
    except (OSError, ValueError, EgakuError):
        return None


def scan_folder(root: str | Path, *, caption_ext: str = ".txt", default_caption: str = "",
                report: Callable[[str], None] = print) -> Dataset:
    """Every readable image under `root` with its caption; unreadable ones are reported (one line each)
    and skipped. An empty or missing folder is a one-line InvalidRequestError."""
    from egaku.engine.images import load_image

    root = Path(root).expanduser()
    if not root.exists():
        raise InvalidRequestError(f"training data folder {root} does not exist")
    if not root.is_dir():
        raise InvalidRequestError(f"training data {root} is not a folder")
    jsonl = _jsonl_captions(root, report)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    examples, skipped = [], []
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            image = load_image(path, max_pixels=MAX_IMAGE_PIXELS, name=rel)
        except EgakuError as e:
            skipped.append((rel, str(e)))
            report(f"skipped {rel}: {e}")
            continue
        caption_file = path.with_suffix(caption_ext)
        caption = None
        if caption_file.is_file():
            try:
                caption = caption_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                skipped.append((rel, f"its caption {caption_file.name} is not UTF-8 text"))
                report(f"skipped {rel}: its caption {caption_file.name} is not UTF-8 text")
                continue
        if caption is None:
            caption = jsonl.get(rel) or jsonl.get(path.name)
        if caption is None and path.suffix.lower() == ".png":
            caption = _png_prompt(path)
        examples.append(Example(rel, " ".join((caption if caption is not None else default_caption).split()), image.size))
    missing = [f for f in jsonl if not (root / f).is_file() and f not in {Path(e.path).name for e in examples}]
    for f in missing:
        skipped.append((f, "listed in captions.jsonl but missing"))
        report(f"skipped {f}: listed in captions.jsonl but missing")
    if not examples:
        why = f" ({len(skipped)} unreadable, skipped)" if skipped else ""
        raise InvalidRequestError(f"no training images in {root}{why}: add .png/.jpg/.webp images with captions")
    return Dataset(str(root), examples, skipped)


def assign_buckets(dataset: Dataset, side: int, step: int) -> None:
    """Choose each example's bucket and crop (resize to cover, center crop)."""
    buckets = make_buckets(side, step)
    for e in dataset.examples:
        bw, bh = nearest_bucket(e.size, buckets)
        scale = max(bw / e.size[0], bh / e.size[1])
        rw, rh = max(bw, round(e.size[0] * scale)), max(bh, round(e.size[1] * scale))
        e.bucket, e.crop = (bw, bh), ((rh - bh) // 2, (rw - bw) // 2)


def example_pixels(dataset: Dataset, e: Example) -> torch.Tensor:
    """(3, H, W) in [-1, 1]: the image resized to cover its bucket (Lanczos) and center-cropped."""
    from PIL import Image

    from egaku.engine.images import load_image

    image = load_image(Path(dataset.root) / e.path, max_pixels=MAX_IMAGE_PIXELS, name=e.path)
    bw, bh = e.bucket
    scale = max(bw / image.size[0], bh / image.size[1])
    rw, rh = max(bw, round(image.size[0] * scale)), max(bh, round(image.size[1] * scale))
    image = image.resize((rw, rh), Image.Resampling.LANCZOS)
    top, left = e.crop
    image = image.crop((left, top, left + bw, top + bh))
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()  # (3, H, W)
    return x / 127.5 - 1.0


class BatchOrder:
    """Batches of example indices, one bucket per batch, reshuffled each epoch from (seed, epoch).

    Its whole state is (epoch, position), so a resumed run draws exactly the batches it would have.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.epoch, self.position = 0, 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}-{epoch}")
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for i, e in enumerate(self.dataset.examples):
            by_bucket.setdefault(e.bucket, []).append(i)
        batches = []
        for bucket in sorted(by_bucket):
            idx = by_bucket[bucket]
            rng.shuffle(idx)
            batches += [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        rng.shuffle(batches)
        return batches

    @property
    def batches_per_epoch(self) -> int:
        return len(self._batches)

    def next(self) -> list[int]:
        if self.position >= len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches(self.epoch)
        batch = self._batches[self.position]
        self.position += 1
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._epoch_batches(self.epoch)
