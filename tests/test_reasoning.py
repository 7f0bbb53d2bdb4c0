"""ReasoningFilter: reasoning split off by its markers, the same however the text is split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ggufd.reasoning import ReasoningFilter, partial_suffix, thinking_switch
from ggufd.types import ReasoningSyntax

THINK = ReasoningSyntax("<think>", "</think>")
OPENED = ReasoningSyntax("<think>", "</think>", opened=True)


def run(syntax: ReasoningSyntax, pieces: list[str]) -> tuple[str, str]:
    f = ReasoningFilter(syntax)
    content, reasoning = [], []
    for piece in pieces:
        c, r = f.feed(piece)
        content.append(c)
        reasoning.append(r)
    c, r = f.finish()
    return "".join(content) + c, "".join(reasoning) + r


def splits(text: str) -> list[list[str]]:
    return [[text], list(text), [text[: len(text) // 2], text[len(text) // 2 :]]]


@pytest.mark.parametrize(
    ("syntax", "text", "expected"),
    [
        (THINK, "<think>\nLet me think.\n</think>\n\nThe answer.", ("The answer.", "Let me think.")),
        (THINK, "  <think>a</think>b", ("b", "a")),
        (THINK, "No reasoning here.", ("No reasoning here.", "")),
        (THINK, "  leading space kept", ("  leading space kept", "")),
        (THINK, "<thi", ("<thi", "")),  # too short to be the marker: content
        (THINK, "<think>cut short by length", ("", "cut short by length")),
        (THINK, "<think>cut in the marker</thi", ("", "cut in the marker")),
        (THINK, "<think></think>", ("", "")),
        (THINK, "<think>\n\n</think>\n\nAnswer", ("Answer", "")),
        (OPENED, "reasoning first\n</think>\n\nthen the answer", ("then the answer", "reasoning first")),
        (OPENED, "never closed", ("", "never closed")),
        (OPENED, "a </think> b </think> c", ("b </think> c", "a")),  # only the first end marker ends it
        (THINK, "text then <think>not reasoning</think>", ("text then <think>not reasoning</think>", "")),
        (THINK, "<think>line 1\n\nline 2  \n</think>x", ("x", "line 1\n\nline 2")),
    ],
)
def test_reasoning_is_split_off_in_every_split(syntax, text, expected):
    for pieces in splits(text):
        assert run(syntax, pieces) == expected, pieces


@given(st.text(alphabet="<>/thinkab \n", max_size=40), st.lists(st.integers(0, 40), max_size=6), st.booleans())
def test_any_split_gives_the_same_result(text, cuts, opened):
    syntax = OPENED if opened else THINK
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert run(syntax, pieces) == run(syntax, [text])


def test_a_budget_close_text_ends_the_reasoning():
    syntax = ReasoningSyntax("<think>", "</think>", opened=True)
    assert syntax.closing_text == "\n</think>\n\n"
    assert run(syntax, ["thinking a lot", syntax.closing_text, "Answer."]) == ("Answer.", "thinking a lot")


def test_partial_suffix():
    assert partial_suffix("abc</th", ("</think>",)) == 3
    assert partial_suffix("abc", ("</think>",)) == 3
    assert partial_suffix("abc<", ("</think>", "<x>")) == 3


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, (True, frozenset())),
        ({"enable_thinking": False}, (False, frozenset({"enable_thinking"}))),
        ({"enable_thinking": 0}, (True, frozenset({"enable_thinking"}))),  # templates test `is false`
        ({"reasoning_effort": "minimal"}, (False, frozenset({"reasoning_effort"}))),
        ({"reasoning_effort": "XHIGH"}, (True, frozenset({"reasoning_effort"}))),
        (
            {"enable_thinking": False, "reasoning_effort": "high"},
            (True, frozenset({"enable_thinking", "reasoning_effort"})),
        ),
        ({"reasoning_effort": "extreme"}, (True, frozenset())),  # not a level: not honoured
    ],
)
def test_thinking_switch(kwargs, expected):
    assert thinking_switch(kwargs) == expected
