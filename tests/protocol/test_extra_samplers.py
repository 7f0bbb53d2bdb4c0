"""llama.cpp's extra samplers (typical, DRY, XTC, top-n-sigma, mirostat) as request fields of chat and text
completions and as per-model ``sampling`` defaults: parsed, defaulted, range-checked (a 400 naming the field)."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from jsonschema import Draft202012Validator

from ggufd.errors import InvalidRequest
from ggufd.protocol.openai_chat import EFFECTIVE, parse_chat_request
from ggufd.protocol.openai_completions import parse_completion_request
from ggufd.protocol.options import SAMPLING_FIELDS, with_model_defaults
from ggufd.types import SamplingParams

EXTRAS = {
    "typical_p": 0.9,
    "dry_multiplier": 0.8,
    "dry_base": 1.75,
    "dry_allowed_length": 2,
    "dry_penalty_last_n": -1,
    "dry_sequence_breakers": ["\n", ":"],
    "xtc_probability": 0.5,
    "xtc_threshold": 0.1,
    "top_n_sigma": 1.5,
    "mirostat": 2,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.1,
}
EXPECTED = SamplingParams(**{**EXTRAS, "dry_sequence_breakers": ("\n", ":")})


def chat(**fields):
    return parse_chat_request({"messages": [{"role": "user", "content": "hi"}], **fields})


def completion(**fields):
    return parse_completion_request({"prompt": "hi", **fields})


@pytest.mark.parametrize("parse", [chat, completion])
def test_the_fields_parse_into_sampling_params(parse):
    assert parse(**EXTRAS).sampling == EXPECTED


@pytest.mark.parametrize("parse", [chat, completion])
def test_unset_and_null_fields_are_none(parse):
    assert parse().sampling == SamplingParams()
    assert parse(**dict.fromkeys(EXTRAS)).sampling == SamplingParams()


def test_every_field_is_a_sampling_field_that_counts_as_effective():
    assert set(EXTRAS) <= set(SAMPLING_FIELDS)
    assert set(EXTRAS) <= EFFECTIVE  # never reported in X-Ggufd-Ignored


def test_model_defaults_fill_unset_fields_and_request_values_win():
    defaults = {**EXTRAS, "dry_sequence_breakers": ["*"]}  # a TOML list
    options = with_model_defaults(chat(typical_p=0.5, mirostat=0), defaults)
    assert options.sampling.typical_p == 0.5
    assert options.sampling.mirostat == 0  # 0 (off) is a value, not "unset"
    assert options.sampling.dry_sequence_breakers == ("*",)
    assert options.sampling.dry_multiplier == 0.8
    hash(options.sampling)  # still hashable with the list as a tuple
    assert with_model_defaults(chat(dry_sequence_breakers=[]), defaults).sampling.dry_sequence_breakers == ()


BAD = [
    ("typical_p", 1.5),
    ("typical_p", -0.1),
    ("dry_multiplier", -1),
    ("dry_multiplier", "1"),
    ("dry_base", 0.5),
    ("dry_allowed_length", -1),
    ("dry_allowed_length", 2.0),
    ("dry_penalty_last_n", -2),
    ("dry_penalty_last_n", 2**31),
    ("dry_sequence_breakers", "\n"),
    ("dry_sequence_breakers", [""]),
    ("dry_sequence_breakers", ["x" * 41]),
    ("dry_sequence_breakers", ["a"] * 33),
    ("dry_sequence_breakers", [1]),
    ("xtc_probability", 1.1),
    ("xtc_threshold", -0.1),
    ("top_n_sigma", -2),
    ("mirostat", 3),
    ("mirostat", 1.0),
    ("mirostat", True),
    ("mirostat_tau", -1),
    ("mirostat_eta", 2),
]


@pytest.mark.parametrize("parse", [chat, completion])
@pytest.mark.parametrize("field, value", BAD)
def test_a_value_out_of_range_is_a_400_naming_the_field(parse, field, value):
    with pytest.raises(InvalidRequest) as info:
        parse(**{field: value})
    assert info.value.status == 400
    assert (info.value.param or "").split(".")[0] == field


@pytest.mark.parametrize("field, value", [(f, v) for f, v in BAD if not isinstance(v, float) or f[-1] == "p"])
def test_the_config_sampling_table_checks_the_same_ranges(field, value):
    schema = json.loads(resources.files("ggufd").joinpath("schemas/config.json").read_text())
    table = Draft202012Validator({**schema["$defs"]["sampling"], "$defs": schema["$defs"]})
    assert not table.is_valid({field: value})
    assert table.is_valid({field: EXTRAS[field]})
