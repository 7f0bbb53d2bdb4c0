"""Tool-call streams: content before a call streams, calls come out as deltas, arguments as they
are written (MarkedCalls), and the result never depends on how the text was split."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ggufd.protocol.tools import parse_generic
from ggufd.tool_calls import Block, MarkedCalls, OpenerGate, json_call_block
from ggufd.types import ToolCallDelta

NAMES = ["get_weather", "get_time"]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}\n</tool_call>'


def gate() -> OpenerGate:
    return OpenerGate(
        ["<tool_call>"], lambda text: parse_generic(text.replace("<tool_call>", "").split("</")[0], NAMES)
    )


def marked() -> MarkedCalls:
    return MarkedCalls("<tool_call>", "</tool_call>", json_call_block, NAMES)


def run(stream, pieces: list[str]) -> tuple[list[str], list[ToolCallDelta]]:
    """Per piece: (the content pieces, all deltas)."""
    contents, deltas = [], []
    for piece in [*pieces, None]:
        out = stream.feed(piece) if piece is not None else stream.finish()
        contents.append("".join(p for p in out if isinstance(p, str)))
        deltas.extend(p for p in out if isinstance(p, ToolCallDelta))
    return contents, deltas


def joined(stream_factory, pieces: list[str]) -> tuple[str, list[tuple[str | None, str]]]:
    contents, deltas = run(stream_factory(), pieces)
    calls: dict[int, list] = {}
    for d in deltas:
        calls.setdefault(d.index, [d.name, ""])[1] += d.arguments
    return "".join(contents), [tuple(calls[i]) for i in sorted(calls)]


def splits(text: str) -> list[list[str]]:
    return [[text], list(text), [text[:7], text[7:30], text[30:]]]


@pytest.mark.parametrize("factory", [gate, marked])
def test_text_then_call(factory):
    text = "Let me check.\n\n" + CALL
    for pieces in splits(text):
        content, calls = joined(factory, pieces)
        assert content == "Let me check."  # the blank line that led to the call is not content
        ((name, arguments),) = calls
        assert name == "get_weather" and json.loads(arguments) == {"city": "Paris", "days": [1, 2]}


@pytest.mark.parametrize("factory", [gate, marked])
def test_text_streams_piece_by_piece_until_an_opener(factory):
    contents, deltas = run(factory(), ["Hello", " there", ", how", " are", " you?"])
    assert contents == ["Hello", " there", ", how", " are", " you?", ""] and deltas == []


@pytest.mark.parametrize("factory", [gate, marked])
def test_a_partial_opener_and_trailing_space_wait_for_the_next_piece(factory):
    contents, _ = run(factory(), ["Hi ", "<tool", "tip> ok"])
    assert contents == ["Hi", "", " <tooltip> ok", ""]


def test_marked_calls_stream_their_arguments():
    pieces = ["<tool_call>\n", '{"name": "get_weather", ', '"arguments": {"city": ', '"Paris", ', '"days": [1, 2]}}\n']
    contents, deltas = run(marked(), [*pieces, "</tool_call>"])
    assert deltas[0] == ToolCallDelta(0, "", deltas[0].id, "get_weather") and deltas[0].id.startswith("call_")
    fragments = [d.arguments for d in deltas[1:]]
    assert len(fragments) >= 3  # while the model wrote them, not at the end
    assert "".join(fragments) == '{"city": "Paris", "days": [1, 2]}'
    assert "".join(contents) == ""


def test_marked_calls_several_calls_and_text_between():
    second = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    for pieces in splits(CALL + "\n" + second):
        content, calls = joined(marked, pieces)
        assert [name for name, _ in calls] == ["get_weather", "get_time"] and calls[1][1] == "{}"
        assert content == ""  # the newline between the calls was the whitespace before the second one


def test_marked_calls_a_tool_not_offered_or_malformed_is_content():
    unknown = '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    broken = "<tool_call>not json</tool_call>"
    for text in (unknown, broken, "Before " + broken):
        for pieces in splits(text):
            assert joined(marked, pieces) == (text, []), pieces


def test_marked_calls_an_unclosed_call_at_the_end():
    text = '<tool_call>{"name": "get_time", "arguments": {"zone": "UTC"}}'
    for pieces in splits(text):
        assert joined(marked, pieces) == ("", [("get_time", '{"zone": "UTC"}')])


def test_opener_gate_json_at_the_start_is_held_and_parsed():
    gate_ = OpenerGate([], lambda text: parse_generic(text, NAMES))
    call = '```json\n{"name": "get_time", "arguments": {}}\n```'
    for pieces in splits(call):
        contents, deltas = run(OpenerGate([], lambda text: parse_generic(text, NAMES)), pieces)
        assert "".join(contents) == "" and [(d.name, d.arguments) for d in deltas] == [("get_time", "{}")]
    # a code block that is not JSON streams
    contents, deltas = run(gate_, ["```py", "thon\nprint(1)\n```"])
    assert contents[0] == "```py" and "".join(contents) == "```python\nprint(1)\n```" and not deltas


def test_opener_gate_held_text_that_is_no_call_is_content():
    for pieces in splits("Use <tool_call> tags like this."):
        assert joined(gate, pieces) == ("Use <tool_call> tags like this.", [])


@given(st.integers(0, len(CALL) + 20), st.integers(0, len(CALL) + 20), st.sampled_from([gate, marked]))
def test_any_split_gives_the_same_content_and_calls(a, b, factory):
    text = "Sure.  " + CALL + " trailing"
    a, b = sorted((min(a, len(text)), min(b, len(text))))
    assert joined(factory, [text[:a], text[a:b], text[b:]]) == joined(factory, [text])


def test_json_call_block_prefixes_only_grow():
    body = '\n{"name": "get_weather", "arguments": {"city": "Pa\\"ris", "n": {"x": [1, {"y": 2}]}}}\n'
    previous = ""
    for end in range(len(body) + 1):
        block = json_call_block(body[:end], complete=False)
        if block is not None and block.name is not None:
            assert block.arguments.startswith(previous)
            previous = block.arguments
    assert json_call_block(body, complete=True) == Block(
        "get_weather", '{"city": "Pa\\"ris", "n": {"x": [1, {"y": 2}]}}'
    )
    assert json.loads(previous) == {"city": 'Pa"ris', "n": {"x": [1, {"y": 2}]}}


def test_json_call_block_other_orders_and_shapes():
    assert json_call_block('{"arguments": {"a": 1}, "name": "f"}', complete=True) == Block("f", '{"a": 1}')
    assert json_call_block('{"arguments": {"a": 1}, "name": "f"', complete=False) is None
    assert json_call_block('{"name": "f", "arguments": "{\\"a\\": 1}"}', complete=True) == Block("f", '{"a": 1}')
    assert json_call_block('{"name": "f", "arguments": [1]}', complete=True) is None
    assert json_call_block("[]", complete=True) is None


def test_a_long_call_is_parsed_o_n_log_n_times_not_once_per_piece():
    """A 40 kB argument in 4-character pieces (10,000 pieces): the block parser is called a few hundred
    times, not 10,000 (each call reads the whole block), and the arguments still stream in many steps."""
    calls = []

    def counting(text: str, complete: bool):
        calls.append(len(text))
        return json_call_block(text, complete)

    code = "print('<tool_call> and \\\\\" quotes')\n" * 1100
    text = "<tool_call>" + json.dumps({"name": "get_time", "arguments": {"code": code}}) + "</tool_call>"
    stream = MarkedCalls("<tool_call>", "</tool_call>", counting, NAMES)
    contents, deltas = run(stream, [text[i : i + 4] for i in range(0, len(text), 4)])
    assert len(text) > 40_000 and len(calls) < 600
    assert len(deltas) > 100
    assert json.loads("".join(d.arguments for d in deltas)) == {"code": code}
