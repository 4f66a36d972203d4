"""Prompt editing `[from:to:when]` and alternating words `[a|b]`, as AUTOMATIC1111 schedules them.

A1111 (modules/prompt_parser.py, `get_learned_conditioning_prompt_schedules`) parses the prompt with
a lark grammar; this is a hand-written recursive-descent parser that gives the same schedules:

- `[to:when]` adds `to` after step `when`; `[from::when]` removes `from` after it;
  `[from:to:when]` swaps. `when` with a decimal point is a fraction of the steps (`0.25`, `.5`),
  without one it is a step number (A1111's current, non-"old" scheduling). Edits nest.
- `[a|b|c]` cycles one option per step: a at step 1, b at step 2, ... (options may be empty).
- `(...)`, `(...:w)` and `[...]` are emphasis: kept as text here, weighted later by the encoder.
- Brackets that do not form one of these are literal text; a prompt A1111 cannot parse at all
  (a stray `|` outside alternation, a trailing backslash) is used unscheduled, as A1111 does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from egaku.errors import InvalidRequestError

# lark's SIGNED_NUMBER, with the optional whitespace A1111's grammar allows around it.
_WHEN = re.compile(r"\s*([+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)\s*")

_CLOSER = {"(": ")", "[": "]"}

# A parsed prompt is a list of nodes: str (literal text), _Edit or _Alternate.
Nodes = list


@dataclass
class _Edit:
    """`[before:after:when]`: `before` up to and including step `when`, `after` from then on."""

    before: Nodes
    after: Nodes
    when: str  # the number as written; its meaning depends on the step count


@dataclass
class _Alternate:
    """`[a|b|...]`: option (step - 1) % len at each step."""

    options: list[Nodes]


class _Unparsable(Exception):
    """The whole prompt fails A1111's grammar; it is then used as written."""


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.memo: dict[int, tuple[object, int] | None] = {}  # group start -> (node, end) | None

    def parse(self) -> Nodes:
        """Top level: a group that does not parse leaves its bracket as a literal character."""
        text, nodes, i = self.text, [], 0
        while i < len(text):
            c = text[i]
            if c in _CLOSER:
                group = self.group(i)
                if group is not None:
                    nodes.append(group[0])
                    i = group[1]
                    continue
                nodes.append(c)
                i += 1
            elif c == "\\":
                if i + 1 >= len(text) or text[i + 1] == "\n":
                    raise _Unparsable
                nodes.append(text[i : i + 2])
                i += 2
            elif c == "|":
                raise _Unparsable
            else:
                nodes.append(c)
                i += 1
        return nodes

    def group(self, start: int) -> tuple[object, int] | None:
        """Parse the bracket group opening at `start`: (node, index after it), or None."""
        if start not in self.memo:
            self.memo[start] = self._group(start)
        return self.memo[start]

    def _group(self, start: int) -> tuple[object, int] | None:
        text, opener = self.text, self.text[start]
        closer = _CLOSER[opener]
        parts: list[Nodes] = [[]]
        seps: list[str] = []
        i = start + 1
        while i < len(text):
            c = text[i]
            if c == closer:
                return self._build(opener, parts, seps), i + 1
            if c in ")]":
                return None
            if c in _CLOSER:
                inner = self.group(i)
                if inner is None:
                    return None
                parts[-1].append(inner[0])
                i = inner[1]
                continue
            if c == "\\":
                if i + 1 >= len(text) or text[i + 1] == "\n":
                    return None
                parts[-1].append(text[i : i + 2])
                i += 2
                continue
            if c in ":|":
                seps.append(c)
                parts.append([])
            else:
                parts[-1].append(c)
            i += 1
        return None  # never closed

    def _build(self, opener: str, parts: list[Nodes], seps: list[str]) -> object | None:
        if opener == "(":
            # Emphasis "(p)" or "(p:p)": text for the schedule, weighted later.
            if "|" in seps or len(seps) > 1:
                return None
            return ["(", *_join(parts, seps), ")"]
        if not seps:
            return ["[", *parts[0], "]"]
        if ":" not in seps:
            return _Alternate(parts)
        # An edit. A '|' beside a ':' is literal text (A1111 reads "[{b|d{:.5]" that way).
        split: list[Nodes] = [[]]
        for k, part in enumerate(parts):
            split[-1].extend(part)
            if k < len(seps):
                if seps[k] == ":":
                    split.append([])
                else:
                    split[-1].append("|")
        if len(split) not in (2, 3) or not all(isinstance(n, str) for n in split[-1]):
            return None
        m = _WHEN.fullmatch("".join(split[-1]))
        if m is None:
            return None
        before = split[0] if len(split) == 3 else []
        return _Edit(before=before, after=split[-2], when=m.group(1))


def _join(parts: list[Nodes], seps: list[str]) -> Nodes:
    out: Nodes = list(parts[0])
    for sep, part in zip(seps, parts[1:]):
        out += [sep, *part]
    return out


def _when_step(when: str, steps: int) -> int:
    """A1111: with a '.', a fraction of `steps`; else a step number; capped at `steps`."""
    v = float(when)
    if "." in when:
        v *= steps
    return min(steps, int(v))


def _collect_steps(nodes: Nodes, steps: int, out: set[int]) -> None:
    for node in nodes:
        if isinstance(node, _Edit):
            when = _when_step(node.when, steps)
            if when >= 1:
                out.add(when)
            _collect_steps(node.before, steps, out)
            _collect_steps(node.after, steps, out)
        elif isinstance(node, _Alternate):
            out.update(range(1, steps + 1))
            for option in node.options:
                _collect_steps(option, steps, out)
        elif isinstance(node, list):
            _collect_steps(node, steps, out)


def _render(nodes: Nodes, step: int, steps: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Edit):
            chosen = node.before if step <= _when_step(node.when, steps) else node.after
            out.append(_render(chosen, step, steps))
        elif isinstance(node, _Alternate):
            out.append(_render(node.options[(step - 1) % len(node.options)], step, steps))
        else:
            out.append(_render(node, step, steps))
    return "".join(out)


def get_prompt_schedule(text: str, steps: int) -> list[tuple[int, str]]:
    """The prompts to use over `steps` sampling steps: [(end_step, prompt), ...], end steps rising.

    Entry i is used for steps up to and including end_step (counted from 1), as in A1111:

    >>> get_prompt_schedule("a [b:c:0.5] d", 10)
    [(5, 'a b d'), (10, 'a c d')]
    >>> get_prompt_schedule("[fe|]male", 4)
    [(1, 'female'), (2, 'male'), (3, 'female'), (4, 'male')]
    """
    if not isinstance(steps, int) or steps < 1:
        raise InvalidRequestError(f"steps must be at least 1, got {steps}")
    try:
        nodes = _Parser(text).parse()
    except (_Unparsable, RecursionError):  # RecursionError: brackets nested absurdly deep
        return [(steps, text)]
    ends = {steps}
    _collect_steps(nodes, steps, ends)
    return [(end, _render(nodes, end, steps)) for end in sorted(ends)]
