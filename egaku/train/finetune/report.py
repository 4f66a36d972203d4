"""The training report: report.json (config, dataset, loss curve, timings, outputs) and report.png
(the loss curve drawn with PIL, above the last sample grid)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT, MARGIN = 720, 300, 48


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the raw per-step loss is too noisy to read)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_plot(curve: list[tuple[int, float]], title: str) -> Image.Image:
    """A WIDTHxHEIGHT plot: raw loss in light grey, its moving average in blue, axes with labels."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((MARGIN, 8), title, fill="black", font=font)
    left, top, right, bottom = MARGIN, 28, WIDTH - 16, HEIGHT - 28
    draw.rectangle((left, top, right, bottom), outline="black")
    if not curve:
        draw.text((left + 10, top + 10), "no steps yet", fill="black", font=font)
        return image
    steps = [s for s, _ in curve]
    losses = [v for _, v in curve if math.isfinite(v)] or [0.0]
    lo, hi = min(losses), max(losses)
    hi = hi if hi > lo else lo + 1e-6
    s0, s1 = steps[0], max(steps[-1], steps[0] + 1)

    def xy(step: int, loss: float) -> tuple[float, float]:
        x = left + (step - s0) / (s1 - s0) * (right - left)
        y = bottom - (min(max(loss, lo), hi) - lo) / (hi - lo) * (bottom - top)
        return x, y

    raw = [xy(s, v) for s, v in curve if math.isfinite(v)]
    if len(raw) > 1:
        draw.line(raw, fill=(200, 200, 200), width=1)
    avg = smooth([v for _, v in curve], max(1, len(curve) // 20))
    points = [xy(s, v) for (s, _), v in zip(curve, avg) if math.isfinite(v)]
    if len(points) > 1:
        draw.line(points, fill=(30, 60, 220), width=2)
    for frac in (0.0, 0.5, 1.0):
        value = lo + frac * (hi - lo)
        y = bottom - frac * (bottom - top)
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((2, y - 6), f"{value:.3g}", fill="black", font=font)
    for step in (s0, (s0 + s1) // 2, s1):
        x = xy(step, lo)[0]
        draw.line((x, bottom, x, bottom + 4), fill="black")
        draw.text((x - 10, bottom + 8), str(step), fill="black", font=font)
    draw.text((right - 60, bottom + 8), "step", fill="black", font=font)
    return image


def write_report(out: Path, report: dict, samples: list[Path]) -> tuple[Path, Path]:
    """Write out/report.json and out/report.png (atomically); returns both paths."""
    from egaku.engine.images import save_png

    json_path = out / "report.json"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".report-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False, default=str)
    os.replace(tmp, json_path)
    title = f"{report['method']} · {report['output_name']} · {report['steps_done']} steps · final loss " \
            f"{report['final_loss']:.4f}" if report.get("final_loss") is not None else f"{report['method']}"
    plot = loss_plot([tuple(p) for p in report["loss_curve"]], title)
    parts = [plot]
    if samples:
        grid = Image.open(samples[-1]).convert("RGB")
        scale = WIDTH / grid.width
        parts.append(grid.resize((WIDTH, max(1, round(grid.height * scale))), Image.Resampling.NEAREST
                                 if grid.width < WIDTH else Image.Resampling.LANCZOS))
    canvas = Image.new("RGB", (WIDTH, sum(p.height for p in parts)), "white")
    y = 0
    for p in parts:
        canvas.paste(p, (0, y))
        y += p.height
    png_path = save_png(canvas, out / "report.png")
    return json_path, png_path
