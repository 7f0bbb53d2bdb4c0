"""llama.cpp's grammar extensions: which field wins, and raw GBNF that would need U+0000 refused."""

from __future__ import annotations

import pytest

from ggufd.errors import InvalidRequest
from ggufd.protocol.structured_output import JSON_OBJECT_GRAMMAR, raw_grammar, request_grammar

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize(
    "grammar",
    [
        JSON_OBJECT_GRAMMAR,  # [^"\\\x7F\x00-\x1F]: U+0000 excluded, harmless
        'root ::= [^\\x00] "ok"',
        "root ::= [a-z]+ # not \\x00 here: a comment\n",
        'root ::= "say \\"\\x41\\""',
    ],
)
def test_grammars_that_never_require_nul_are_accepted(grammar):
    assert raw_grammar(grammar) == grammar


@pytest.mark.parametrize(
    "grammar",
    ['root ::= "\\x00"', "root ::= [\\x00-\\x1F]", "root ::= \\u0000", 'root ::= "a\x00"', "root ::= [\\U00000000]"],
)
def test_grammars_that_require_nul_are_refused(grammar):
    with pytest.raises(InvalidRequest) as error:
        raw_grammar(grammar)
    assert error.value.param == "grammar" and "U+0000" in error.value.message


def test_which_field_gives_the_grammar():
    assert request_grammar({}) is None
    assert request_grammar({"response_format": {"type": "text"}, "grammar": "root ::= [a]"}) == "root ::= [a]"
    assert request_grammar({"response_format": {"type": "json_object"}}) == JSON_OBJECT_GRAMMAR
    assert request_grammar({"json_schema": SCHEMA}) == request_grammar(
        {"response_format": {"type": "json_object", "schema": SCHEMA}}
    )
    with pytest.raises(InvalidRequest) as error:
        request_grammar({"response_format": {"type": "json_object"}, "grammar": "root ::= [a]"})
    assert error.value.param == "grammar"
