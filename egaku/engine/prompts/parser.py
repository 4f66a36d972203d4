"""Attention weights and extra-network tags in a prompt, with AUTOMATIC1111's syntax.

`parse_prompt_attention` follows the semantics of A1111's `modules/prompt_parser.py` (emphasis
mode "Original"): `(x)` multiplies x's weight by 1.1, `[x]` divides it by 1.1, `(x:1.3)` multiplies
it by 1.3; brackets nest by multiplication; `\\(`, `\\)`, `\\[`, `\\]`, `\\\\` are literal characters;
brackets left open at the end still apply; runs of equal weight merge; a standalone uppercase
`BREAK` becomes a chunk-break marker. `extract_lora_tags` reads A1111's extra-network syntax
`<lora:name:weight>`.
"""

from __future__ import annotations

import re

from egaku.errors import InvalidRequestError

BREAK = "BREAK"
BREAK_WEIGHT = -1.0  # the marker's weight, as A1111 writes it: ("BREAK", -1)

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# One token of the emphasis syntax per match; the order of the alternatives matters.
_ATTENTION_TOKEN = re.compile(
    r"""
    (?P<escaped>\\[()\[\]\\])      # \( \) \[ \] \\ : the character itself
  | (?P<backslash>\\)              # any other backslash is dropped, as in A1111
  | (?P<open>[(\[])
  | :(?P<weight>[+-]?[.\d]+)\)     # (text:1.3) closes with an explicit weight
  | (?P<close>[)\]])
  | (?P<text>[^\\()\[\]:]+|:)
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)

# A1111's extra-network tag: <type:arg:arg...>. LyCORIS files use the same loader as LoRA.
_LORA_TAG = re.compile(r"<(?:lora|lyco):([^>]+)>")


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split `text` into (fragment, weight) pairs with A1111's emphasis rules.

    >>> parse_prompt_attention('an (important) word')
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> parse_prompt_attention('a BREAK b')
    [('a', 1.0), ('BREAK', -1.0), ('b', 1.0)]

    Two deliberate differences from A1111: a BREAK inside brackets still breaks the chunk (A1111
    multiplies the marker's weight and then tokenizes the word "BREAK"), and a malformed weight
    like `(x:1.2.3)` is kept as text instead of raising.
    """
    # Each entry: [text, weight, is_break]; weights are multiplied in place, in A1111's order, so
    # that equal weights compare equal (and merge) exactly as they do there.
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for entry in res[start:]:
            if not entry[2]:
                entry[1] *= factor

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_BREAK_SPLIT.split(chunk)):
            if i > 0:
                res.append([BREAK, BREAK_WEIGHT, True])
            res.append([part, 1.0, False])

    for m in _ATTENTION_TOKEN.finditer(text):
        if m.group("escaped"):
            res.append([m.group("escaped")[1], 1.0, False])
        elif m.group("backslash"):
            continue
        elif m.group("open") == "(":
            round_open.append(len(res))
        elif m.group("open") == "[":
            square_open.append(len(res))
        elif m.group("weight") is not None and round_open and _is_float(m.group("weight")):
            multiply(round_open.pop(), float(m.group("weight")))
        elif m.group("close") == ")" and round_open:
            multiply(round_open.pop(), ROUND_MULTIPLIER)
        elif m.group("close") == "]" and square_open:
            multiply(square_open.pop(), SQUARE_MULTIPLIER)
        else:  # plain text, a lone ':', or a closing bracket with nothing open
            add_text(m.group(0))

    for start in round_open:
        multiply(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply(start, SQUARE_MULTIPLIER)

    merged: list[list] = []
    for entry in res:
        if merged and not entry[2] and not merged[-1][2] and merged[-1][1] == entry[1]:
            merged[-1][0] += entry[0]
        else:
            merged.append(entry)
    # Empty fragments (around a BREAK, from a dropped backslash) tokenize to nothing; drop them
    # after merging so that merging (and so tokenization) is exactly A1111's.
    out = [(t, float(w)) for t, w, is_break in merged if is_break or t]
    return out or [("", 1.0)]


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def is_break(fragment: tuple[str, float]) -> bool:
    """True for the ("BREAK", -1) marker that `parse_prompt_attention` emits."""
    return fragment[0] == BREAK and fragment[1] == BREAK_WEIGHT


def extract_lora_tags(text: str) -> tuple[str, list[tuple[str, float]]]:
    """Remove A1111 extra-network tags `<lora:name>` / `<lora:name:weight>` from `text`.

    Returns the text without the tags (nothing else changed, as A1111 does) and the (name, weight)
    pairs in order; a missing weight is 1.0. `<lyco:...>` is read the same way. A named text-encoder
    weight (`<lora:name:te=0.5>`) is accepted; further arguments (A1111's UNet weight, dyn) are
    ignored here.
    """
    loras: list[tuple[str, float]] = []

    def take(m: re.Match) -> str:
        args = [a.strip() for a in m.group(1).split(":")]
        name = args[0]
        if not name:
            raise InvalidRequestError(f"LoRA tag {m.group(0)} has no name")
        weight = 1.0
        if len(args) > 1 and args[1]:
            raw = args[1].split("=", 1)[1] if args[1].startswith("te=") else args[1]
            if not _is_float(raw):
                raise InvalidRequestError(f"LoRA tag {m.group(0)} has weight {raw!r}, which is not a number")
            weight = float(raw)
        loras.append((name, weight))
        return ""

    return _LORA_TAG.sub(take, text), loras
