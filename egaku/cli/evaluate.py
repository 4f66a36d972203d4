"""`egaku eval`: the shapes-world fidelity benchmark, on any model the engine loads.

    egaku eval                           # the built-in model; a table per category
    egaku eval --model PATH --json       # one JSON object: overall_seen, overall_heldout, ...
    egaku eval --category counting       # one category, with the same prompts and seeds as the whole run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from egaku.cli.common import note, print_json
from egaku.eval.suite import CATEGORIES


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score a model on the shapes-world prompt suite")
    p.add_argument("-m", "--model", metavar="NAME|PATH", help="model to score (default: built-in)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", default="DPM++ 2M")
    p.add_argument("--cfg", dest="cfg_scale", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1000, help="image i uses seed + i")
    p.add_argument("--per-category", type=int, default=8, help="seen prompts per category and language")
    p.add_argument("--heldout-per-category", type=int, default=4)
    p.add_argument("--limit", type=int, help="only the first N prompts (a quick check)")
    p.add_argument("--category", dest="categories", action="append", default=[], choices=CATEGORIES,
                   metavar="NAME", help=f"only this category (repeatable): {', '.join(CATEGORIES)}")
    p.add_argument("--grid", type=Path, metavar="PNG", help="also save all images as one grid")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from egaku.engine import Engine
    from egaku.eval.run import EvalSettings, evaluate, format_table

    settings = EvalSettings(
        model=args.model,
        steps=args.steps,
        sampler=args.sampler,
        cfg_scale=args.cfg_scale,
        seed=args.seed,
        per_category=args.per_category,
        heldout_per_category=args.heldout_per_category,
        limit=args.limit,
        categories=tuple(args.categories),
    )
    bar = tqdm(total=None, unit="img", file=sys.stderr, disable=not sys.stderr.isatty())

    def progress(done, total, prompt, ok):
        bar.total = total
        bar.update(1)

    report = evaluate(settings, Engine(device=args.device), progress, keep_images=bool(args.grid))
    bar.close()
    if args.grid:
        from egaku.train.samples import save_grid

        save_grid(report.pop("_images"), args.grid)
        report.pop("_rows")
        note(f"grid written to {args.grid}")
    if args.json:
        print_json(report)
    else:
        print(format_table(report))
        print(f"({report['n_images']} images, {report['seconds']} s; model {report['model']})")
    return 0
