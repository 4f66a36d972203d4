"""The eval suite: fixed, bilingual, checks what prompts ask for; `evaluate` scores any engine model."""

import pytest

from egaku.eval.run import EvalSettings, evaluate, format_table, score
from egaku.eval.suite import CATEGORIES, build_suite
from egaku.world.analyze import analyze
from egaku.world.render import render
from egaku.world.scene import Scene, WorldObject
from egaku.world.vocab import (
    COLOR_BY_NAME, COLORS, HELDOUT_COLOR_SHAPE, HELDOUT_STYLE_SHAPE, STYLE_BY_ARTIST, contrasts,
)


def test_suite_is_fixed_bilingual_and_covers_every_category():
    suite = build_suite()
    assert suite == build_suite()
    assert {p.category for p in suite} == set(CATEGORIES)
    en = [p for p in suite if p.lang == "en"]
    ja = [p for p in suite if p.lang == "ja"]
    assert [(p.objects, p.background, p.artist) for p in en] == [(p.objects, p.background, p.artist) for p in ja]
    assert all(any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in p.text) for p in ja)


def test_heldout_prompts_use_only_heldout_combinations():
    for p in build_suite():
        pairs = {(o.color, o.shape) for o in p.objects}
        style_pairs = {(STYLE_BY_ARTIST[p.artist].kind, o.shape) for o in p.objects} if p.artist else set()
        uses_heldout = bool(pairs & HELDOUT_COLOR_SHAPE or style_pairs & HELDOUT_STYLE_SHAPE)
        assert uses_heldout == p.heldout, p


def test_check_accepts_a_render_of_the_prompt_and_rejects_a_wrong_one():
    positions = iter(["left", "top right", "bottom", "center", "bottom left", "top"])
    checked = 0
    for p in build_suite():
        objs = []
        for spec in p.objects:
            for _ in range(spec.count):
                objs.append(WorldObject(spec.shape, spec.color or "white", spec.position or next(positions), "large"))
        if len({o.position for o in objs}) < len(objs) or any(o.color == p.background for o in objs):
            continue
        right = Scene(p.background, objs, p.artist)
        assert p.check(analyze(render(right))), p.text
        assert all(p.attributes(analyze(render(right))).values()), p.text
        wrong = Scene(p.background, objs[1:], p.artist)  # one object missing
        assert not p.check(analyze(render(wrong))), p.text
        other = next(c.name for c in COLORS if c.name != p.background
                     and all(contrasts(COLOR_BY_NAME[o.color], c) for o in objs))
        attrs = p.attributes(analyze(render(Scene(other, objs, p.artist))))  # only the background wrong
        assert not attrs["background"] and all(v for k, v in attrs.items() if k != "background"), (p.text, attrs)
        checked += 1
        positions = iter(["left", "top right", "bottom", "center", "bottom left", "top"])
        if checked >= 12:
            break
    assert checked >= 12


def test_score_splits_seen_heldout_and_languages():
    suite = build_suite(per_category=1, heldout_per_category=1)
    rows = [(p, p.lang == "en") for p in suite]
    report = score(rows)
    assert report["overall_en"] == 1.0 and report["overall_ja"] == 0.0
    assert report["overall"] == 0.5
    assert set(report["categories"]) == set(CATEGORIES)


def test_evaluate_runs_end_to_end_on_a_tiny_model():
    from egaku.engine import Engine
    from egaku.models.tiny import tiny_bundle

    engine = Engine(device="cpu", dtype="fp32")
    engine.add_bundle("tiny", tiny_bundle("sd1"))
    report = evaluate(EvalSettings(model="tiny", steps=2, limit=4), engine)
    assert report["n_images"] == 4
    for key in ("overall_seen", "overall_en", "overall_ja"):
        assert 0.0 <= report[key] <= 1.0
    assert report["overall_seen"] == 0.0  # random weights draw nothing the prompts ask for
    assert {"background", "shape"} <= set(report["attributes"])
    assert all(0.0 <= v <= 1.0 for v in report["attributes"].values())
    assert "attributes (partial credit, %)" in format_table(report)


def test_one_category_draws_the_same_images_as_the_whole_suite():
    from egaku.engine import Engine, GenerationRequest
    from egaku.errors import InvalidRequestError
    from egaku.models.tiny import tiny_bundle

    engine = Engine(device="cpu", dtype="fp32")
    engine.add_bundle("tiny", tiny_bundle("sd1"))
    index, prompt = next((i, p) for i, p in enumerate(build_suite()) if p.category == "counting")
    alone = evaluate(EvalSettings(model="tiny", steps=2, limit=1, categories=("counting",)), engine, keep_images=True)
    assert alone["_rows"][0][0] == prompt and list(alone["categories"]) == ["counting"]
    # the image prompt `index` gets in the whole suite: seed + index, the suite's settings
    whole = engine.generate(GenerationRequest(prompt.text, model="tiny", sampler="DPM++ 2M", steps=2, cfg_scale=5.0,
                                              seed=1000 + index)).images[0]
    assert alone["_images"][0].tobytes() == whole.tobytes()
    with pytest.raises(InvalidRequestError, match="unknown eval category 'shading'"):
        evaluate(EvalSettings(model="tiny", categories=("shading",)), engine)
