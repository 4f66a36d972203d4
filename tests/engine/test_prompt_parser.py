"""A1111 prompt syntax: emphasis weights, BREAK, prompt editing, alternation, LoRA tags.

The expected values are AUTOMATIC1111's own doctests (modules/prompt_parser.py).
"""

import pytest

from egaku.engine.prompts import extract_lora_tags, get_prompt_schedule, parse_prompt_attention
from egaku.errors import EgakuError, InvalidRequestError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
        ("[dim]", [("dim", 1 / 1.1)]),
        ("((x))", [("x", 1.21)]),
        ("(x:-0.5) y", [("x", -0.5), (" y", 1.0)]),
        ("a\\\\b", [("a\\b", 1.0)]),
        ("stray) and ] :1.2) here", [("stray) and ] :1.2) here", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_attention_matches_a1111(text, expected):
    got = parse_prompt_attention(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_break_is_a_marker_between_fragments():
    assert parse_prompt_attention("a cat BREAK a dog") == [("a cat", 1.0), ("BREAK", -1.0), ("a dog", 1.0)]
    # Only the standalone uppercase word breaks.
    assert parse_prompt_attention("BREAKfast break") == [("BREAKfast break", 1.0)]
    # Inside brackets the marker keeps its weight -1 (A1111 would multiply it and lose the break).
    assert parse_prompt_attention("(a BREAK b)") == [("a", 1.1), ("BREAK", -1.0), ("b", 1.1)]


def test_malformed_weight_stays_text():
    assert parse_prompt_attention("(x:1.2.3)") == [("x:1.2.3)", pytest.approx(1.1))]


A1111_SCHEDULES = [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    # A1111 keeps "b " (the space before the first ':' belongs to `from`): 'a b  d', not 'a  b  d'.
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("a [{b|d{:.5] c", [(5, "a  c"), (10, "a {b|d{ c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(s, "a" if s % 2 else "(b:1.1)") for s in range(1, 11)]),
    ("[fe|]male", [(s, "female" if s % 2 else "male") for s in range(1, 11)]),
    ("[fe|||]male", [(s, "female" if s % 4 == 1 else "male") for s in range(1, 11)]),
]


@pytest.mark.parametrize("text, expected", A1111_SCHEDULES)
def test_schedule_matches_a1111(text, expected):
    assert get_prompt_schedule(text, 10) == expected


def test_schedule_swap_remove_and_fraction():
    assert get_prompt_schedule("a [cat:dog:0.5]", 10) == [(5, "a cat"), (10, "a dog")]
    assert get_prompt_schedule("a [cat::4] b", 10) == [(4, "a cat b"), (10, "a  b")]
    assert get_prompt_schedule("[x:0.25]", 8) == [(2, ""), (8, "x")]
    # A step past the end never switches; a decimal point always means a fraction (A1111 1.6+).
    assert get_prompt_schedule("[x:y:30]", 10) == [(10, "x")]
    assert get_prompt_schedule("[x:y:1.0]", 10) == [(10, "x")]


def test_schedule_keeps_emphasis_around_edits():
    assert get_prompt_schedule("(a [b:c:2]:1.2), [d]", 4) == [(2, "(a b:1.2), [d]"), (4, "(a c:1.2), [d]")]


def test_unparsable_prompt_is_used_unscheduled():
    # A1111's grammar has no place for a '|' outside alternation: the whole prompt stays as written.
    assert get_prompt_schedule("a | b [c:3]", 10) == [(10, "a | b [c:3]")]
    assert get_prompt_schedule("(" * 5000, 3) == [(3, "(" * 5000)]


def test_schedule_rejects_zero_steps():
    with pytest.raises(InvalidRequestError, match="steps must be at least 1"):
        get_prompt_schedule("a", 0)


def test_lora_tags_are_removed_and_returned():
    text, loras = extract_lora_tags("<lora:film grain:0.8> a cat, <lora:detail> <lyco:ly:-0.5>")
    assert text == " a cat,  "
    assert loras == [("film grain", 0.8), ("detail", 1.0), ("ly", -0.5)]
    assert extract_lora_tags("a <lora:x:0.5:0.2> b") == ("a  b", [("x", 0.5)])
    assert extract_lora_tags("a <lora:x:te=0.3>") == ("a ", [("x", 0.3)])
    assert extract_lora_tags("<hypernet:h:1> (x:1.2)") == ("<hypernet:h:1> (x:1.2)", [])


def test_bad_lora_weight_is_a_user_error():
    with pytest.raises(EgakuError, match=r"<lora:x:abc> has weight 'abc', which is not a number"):
        extract_lora_tags("a <lora:x:abc>")
    with pytest.raises(InvalidRequestError, match="has no name"):
        extract_lora_tags("<lora::1>")
