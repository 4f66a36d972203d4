"""`egaku eval`: generate the suite with any model the engine loads, analyze, and score.

    egaku eval                      # the built-in model
    egaku eval --model PATH --json  # any model; one JSON object on stdout
    egaku eval --category counting  # one category: the same prompts and seeds as in the whole suite
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from egaku.errors import InvalidRequestError
from egaku.eval.suite import CATEGORIES, EvalPrompt, build_suite
from egaku.world.analyze import analyze


@dataclass
class EvalSettings:
    model: str | None = None
    steps: int = 20
    sampler: str = "DPM++ 2M"
    cfg_scale: float = 5.0
    seed: int = 1000
    per_category: int = 8
    heldout_per_category: int = 4
    limit: int | None = None  # only the first N prompts (quick checks)
    categories: tuple[str, ...] = ()  # only these categories (empty: all); prompts keep their seeds


def _mean(xs: list[bool]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def evaluate(settings: EvalSettings, engine=None, progress=None, keep_images: bool = False) -> dict:
    """Run the suite; returns the score report (fractions in 0..1)."""
    from egaku.engine import Engine, GenerationRequest

    unknown = set(settings.categories) - set(CATEGORIES)
    if unknown:
        raise InvalidRequestError(f"unknown eval category {sorted(unknown)[0]!r}: one of {', '.join(CATEGORIES)}")
    engine = engine or Engine()
    # Prompt i of the whole suite always uses seed + i, so a category run alone draws the same images.
    suite = list(enumerate(build_suite(settings.per_category, settings.heldout_per_category)))
    if settings.categories:
        suite = [(i, p) for i, p in suite if p.category in settings.categories]
    if settings.limit:
        suite = suite[: settings.limit]
    started = time.time()
    rows: list[tuple[EvalPrompt, bool]] = []
    attributes: list[dict[str, bool]] = []
    images = []
    for done, (i, prompt) in enumerate(suite, 1):
        request = GenerationRequest(
            prompt.text,
            model=settings.model,
            sampler=settings.sampler,
            steps=settings.steps,
            cfg_scale=settings.cfg_scale,
            seed=settings.seed + i,
        )
        image = engine.generate(request).images[0]
        analysis = analyze(image)
        ok = prompt.check(analysis)
        rows.append((prompt, ok))
        attributes.append(prompt.attributes(analysis))
        if keep_images:
            images.append(image)
        if progress:
            progress(done, len(suite), prompt, ok)
    report = score(rows)
    report["attributes"] = attribute_rates(attributes)
    report.update(
        model=settings.model or "builtin",
        steps=settings.steps,
        sampler=settings.sampler,
        cfg_scale=settings.cfg_scale,
        seed=settings.seed,
        n_images=len(rows),
        seconds=round(time.time() - started, 1),
    )
    if keep_images:
        report["_images"] = images
        report["_rows"] = rows
    return report


def score(rows: list[tuple[EvalPrompt, bool]]) -> dict:
    """Per-category and overall success rates, split by seen/held-out and by language."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for p, ok in rows:
        for key in ("all", "seen" if not p.heldout else "heldout", p.lang):
            groups[key].append(ok)
            groups[f"{p.category}/{key}"].append(ok)
    report = {
        "overall": _mean(groups["all"]),
        "overall_seen": _mean(groups["seen"]),
        "overall_heldout": _mean(groups["heldout"]),
        "overall_en": _mean(groups["en"]),
        "overall_ja": _mean(groups["ja"]),
        "categories": {},
    }
    for c in CATEGORIES:
        if groups[f"{c}/all"]:
            report["categories"][c] = {
                k: _mean(groups[f"{c}/{k}"]) for k in ("all", "seen", "heldout", "en", "ja")
            } | {"n": len(groups[f"{c}/all"])}
    return report


def attribute_rates(attributes: list[dict[str, bool]]) -> dict[str, float]:
    """Per attribute kind, the fraction of prompts naming it whose image gets it right."""
    seen: dict[str, list[bool]] = defaultdict(list)
    for row in attributes:
        for name, ok in row.items():
            seen[name].append(ok)
    return {name: _mean(oks) for name, oks in seen.items()}


def format_table(report: dict) -> str:
    def pct(v):
        return "  -  " if v is None else f"{100 * v:5.1f}"

    lines = [f"{'category':<18} {'all':>5} {'seen':>5} {'held':>5} {'en':>5} {'ja':>5} {'n':>4}"]
    for c, r in report["categories"].items():
        lines.append(f"{c:<18} {pct(r['all'])} {pct(r['seen'])} {pct(r['heldout'])} {pct(r['en'])} {pct(r['ja'])} {r['n']:>4}")
    lines.append(
        f"{'overall':<18} {pct(report['overall'])} {pct(report['overall_seen'])} {pct(report['overall_heldout'])} "
        f"{pct(report['overall_en'])} {pct(report['overall_ja'])} {report.get('n_images', ''):>4}"
    )
    if report.get("attributes"):
        parts = ", ".join(f"{name} {pct(v).strip()}" for name, v in report["attributes"].items())
        lines.append(f"attributes (partial credit, %): {parts}")
    return "\n".join(lines)
