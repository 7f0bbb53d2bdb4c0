"""The gpt-oss plugin (ggufd/families/gpt_oss.py): golden harmony prompts byte for byte (tool calls and
results included; the plain chats against OpenAI's published template are in
test_family_contract.py), family detection, taking generated text apart by channel, and parsing
harmony tool calls."""

from __future__ import annotations

import datetime
import random

import gguf_factory
import pytest
from family_kit import GPT_OSS, HARMONY_TEMPLATE, TEXT_CHATS
from family_kit import GPT_OSS_DATE as DATE

from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import read_metadata
from ggufd.types import ChatPrompt, ModelSpec

SYSTEM = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n"
    f"Current date: {DATE}\n\n"
    "Reasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
)
SYSTEM_AND_USER = TEXT_CHATS["terse-system"]
MULTI_TURN = TEXT_CHATS["short-multi-turn"]
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
TOOLS_THEN_USER = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "content": '{"temperature": 21}', "tool_call_id": "call_1"},
    {"role": "user", "content": "And in Rome?"},
]
RENDERED_CALL = '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
RENDERED_RESULT = (
    '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"temperature": 21}<|end|>'
)
metadata, model = GPT_OSS.metadata, GPT_OSS.model


@pytest.fixture
def gpt_oss(pm, monkeypatch):
    plugin = pm.manager.get_plugin("gpt_oss")
    assert plugin is not None and plugin.__name__ == "ggufd.families.gpt_oss"
    return GPT_OSS.pin(plugin, monkeypatch)  # the date in the prompt


# --------------------------------------------------------------------------- golden prompts


def test_system_and_user(gpt_oss):
    prompt = gpt_oss.format_chat(model=model(), messages=SYSTEM_AND_USER)
    assert prompt == ChatPrompt(
        text=SYSTEM
        + "<|start|>developer<|message|># Instructions\n\nYou are terse.\n\n<|end|><|start|>user<|message|>Hi<|end|><|start|>assistant",
        stop=("<|return|>", "<|call|>"),
        add_bos=False,
    )


def test_multi_turn(gpt_oss):
    prompt = gpt_oss.format_chat(model=model(), messages=MULTI_TURN)
    assert prompt.text == (
        SYSTEM
        + "<|start|>user<|message|>Hi<|end|>"
        + "<|start|>assistant<|channel|>final<|message|>Hello!<|end|>"
        + "<|start|>user<|message|>Name a colour.<|end|>"
        + "<|start|>assistant"
    )


def test_tool_call_result_and_follow_up(gpt_oss):
    prompt = gpt_oss.format_chat(model=model(), messages=TOOLS_THEN_USER)
    assert prompt.text == (
        SYSTEM
        + "<|start|>user<|message|>Weather in Paris?<|end|>"
        + RENDERED_CALL
        + RENDERED_RESULT
        + "<|start|>user<|message|>And in Rome?<|end|>"
        + "<|start|>assistant"
    )


def test_reasoning_of_a_tool_call_is_kept_until_an_answer_follows(gpt_oss):
    thinking = {**TOOLS_THEN_USER[1], "content": "I need the weather."}
    messages = [TOOLS_THEN_USER[0], thinking, TOOLS_THEN_USER[2]]
    analysis = "<|start|>assistant<|channel|>analysis<|message|>I need the weather.<|end|>"
    assert gpt_oss.format_chat(model=model(), messages=messages).text.endswith(
        analysis + RENDERED_CALL + RENDERED_RESULT + "<|start|>assistant"
    )
    answered = [*messages, {"role": "assistant", "content": "21 °C."}, {"role": "user", "content": "Thanks"}]
    text = gpt_oss.format_chat(model=model(), messages=answered).text
    assert analysis not in text
    assert RENDERED_CALL + RENDERED_RESULT + "<|start|>assistant<|channel|>final<|message|>21 °C.<|end|>" in text


def test_two_calls_and_results_find_their_names(gpt_oss):
    second = {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}
    messages = [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL, second]},
        {"role": "tool", "content": "21", "tool_call_id": "call_1"},
        {"role": "tool", "content": "10:00", "tool_call_id": "call_2"},
    ]
    text = gpt_oss.format_chat(model=model(), messages=messages).text
    assert text.endswith(
        RENDERED_CALL
        + '<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{"tz": "CET"}<|call|>'
        + "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>21<|end|>"
        + "<|start|>functions.get_time to=assistant<|channel|>commentary<|message|>10:00<|end|>"
        + "<|start|>assistant"
    )


def test_a_tool_result_without_a_call_is_refused(gpt_oss):
    with pytest.raises(InvalidRequest) as info:
        gpt_oss.format_chat(
            model=model(),
            messages=[{"role": "user", "content": "x"}, {"role": "tool", "content": "1", "tool_call_id": "c"}],
        )
    assert info.value.status == 400 and info.value.param == "messages.1"
    named = [{"role": "user", "content": "x"}, {"role": "tool", "content": "1", "name": "lookup"}]
    assert "<|start|>functions.lookup to=assistant" in gpt_oss.format_chat(model=model(), messages=named).text


def test_earlier_answers_keep_only_their_final_channel(gpt_oss):
    # what ggufd returns to clients today (see the plugin's limitation), sent back as history
    raw = "<|channel|>analysis<|message|>The user greets me.<|start|>assistant<|channel|>final<|message|>Hello!"
    messages = [MULTI_TURN[0], {"role": "assistant", "content": raw}, MULTI_TURN[2]]
    assert (
        gpt_oss.format_chat(model=model(), messages=messages).text
        == gpt_oss.format_chat(model=model(), messages=MULTI_TURN).text
    )


def test_several_system_messages_become_the_instructions(gpt_oss):
    messages = [
        {"role": "system", "content": "A"},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "B"},
    ]
    assert (
        "<|start|>developer<|message|># Instructions\n\nA\n\nB\n\n<|end|><|start|>user"
        in gpt_oss.format_chat(model=model(), messages=messages).text
    )


def test_the_date_is_today_unless_replaced(pm):
    plugin = pm.manager.get_plugin("gpt_oss")
    assert plugin.today() == datetime.date.today().isoformat()
    assert (
        f"Current date: {datetime.date.today().isoformat()}\n"
        in plugin.format_chat(model=model(), messages=MULTI_TURN).text
    )


def test_add_bos_follows_the_vocabulary(gpt_oss):
    assert gpt_oss.format_chat(model=model(meta=metadata(add_bos=True)), messages=MULTI_TURN).add_bos is True
    assert gpt_oss.format_chat(model=model(), messages=MULTI_TURN).add_bos is False


def test_only_a_system_message_is_rejected(gpt_oss):
    with pytest.raises(InvalidRequest) as info:
        gpt_oss.format_chat(model=model(), messages=[{"role": "system", "content": "x"}])
    assert info.value.param == "messages"


# --------------------------------------------------------------------------- OpenAI's template


# the plain chats are checked for every family in test_family_contract.py


def test_templates_tool_call_variant_is_parsed_too(gpt_oss):
    # The published template puts the recipient in the role and writes "json" without <|constrain|>;
    # the model may answer the same way after "<|start|>assistant".
    messages = [
        TOOLS_THEN_USER[0],
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{**WEATHER_CALL, "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
    ]
    rendered = GPT_OSS.reference(HARMONY_TEMPLATE, messages).text  # strftime_now gives DATE
    assert (
        '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>'
        in rendered
    )
    calls = gpt_oss.parse_tool_calls(model=model(), text=rendered.split("Weather in Paris?<|end|>")[1])
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("get_weather", '{"city": "Paris"}')
    ]


# --------------------------------------------------------------------------- detection


def test_detect_family(gpt_oss):
    spec = model().spec
    assert gpt_oss.detect_family(metadata=metadata(), spec=spec) == "gpt-oss"
    assert gpt_oss.detect_family(metadata=metadata(template=None), spec=spec) == "gpt-oss"
    assert (
        gpt_oss.detect_family(metadata=metadata(HARMONY_TEMPLATE, architecture="llama", name="converted"), spec=spec)
        == "gpt-oss"
    )
    assert gpt_oss.detect_family(metadata=metadata(None, architecture="gpt2", name="GPT-2"), spec=spec) is None


def test_through_the_plugin_manager(pm, monkeypatch):
    GPT_OSS.pin(pm.manager.get_plugin("gpt_oss"), monkeypatch)
    assert pm.hook.detect_family(metadata=metadata(), spec=model().spec) == "gpt-oss"
    assert (
        pm.format_chat(model=model(), messages=SYSTEM_AND_USER).text
        == GPT_OSS.reference(HARMONY_TEMPLATE, SYSTEM_AND_USER).text
    )


def test_tiny_gguf_with_the_harmony_template(pm, tmp_path):
    path = gguf_factory.write_tiny_llama(
        tmp_path / "harmony.gguf", chat_template=HARMONY_TEMPLATE, name="gpt-oss-mini-test"
    )
    meta = read_metadata(path)
    assert meta.architecture == "llama" and meta.chat_template == HARMONY_TEMPLATE
    assert pm.hook.detect_family(metadata=meta, spec=ModelSpec(id="harmony", path=path)) == "gpt-oss"


# --------------------------------------------------------------------------- stops and channels


def test_end_is_no_stop_string(pm):
    # the stop strings and the other families: test_family_contract.py
    stops = [s for answer in pm.hook.stop_sequences(model=model()) for s in answer]
    assert "<|end|>" not in stops  # it ends the analysis message, before the answer


# What llama.cpp hands back for a harmony answer: <|channel|>, <|message|>, <|start|> and
# <|constrain|> are rendered as text, the control tokens <|end|>, <|return|>, <|call|> are not.
GENERATED = "<|channel|>analysis<|message|>The user wants a colour.<|start|>assistant<|channel|>final<|message|>Blue."


def test_split_channels(gpt_oss):
    assert gpt_oss.split_channels(GENERATED) == [
        {"channel": "analysis", "recipient": None, "body": "The user wants a colour."},
        {"channel": "final", "recipient": None, "body": "Blue."},
    ]
    with_controls = (
        "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Blue.<|return|>"
    )
    assert [m["body"] for m in gpt_oss.split_channels(with_controls)] == ["Think.", "Blue."]


def test_final_answer(gpt_oss):
    assert gpt_oss.final_answer(GENERATED) == "Blue."
    assert gpt_oss.final_answer("No markup at all.") == "No markup at all."
    assert gpt_oss.final_answer("<|channel|>analysis<|message|>cut short by max_tokens") == ""


# --------------------------------------------------------------------------- tool calls


def functions(calls):
    return [(c["type"], c["function"]["name"], c["function"]["arguments"]) for c in calls]


@pytest.mark.parametrize(
    "text",
    [
        '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}',
        '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
        '<|channel|>commentary to=functions.get_weather json<|message|>{"city": "Paris"}',
        '<|channel|>commentary to=functions.get_weather<|message|>{"city": "Paris"}',
        ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}',
        '<|channel|>analysis<|message|>Need the weather.<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}',
        '<|channel|>analysis<|message|>Need it.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|> {"city": "Paris"} ',
    ],
    ids=["constrain", "with-call", "plain-json", "no-type", "in-role", "after-analysis", "role-and-end"],
)
def test_parse_one_call(gpt_oss, text):
    calls = gpt_oss.parse_tool_calls(model=model(), text=text)
    assert functions(calls) == [("function", "get_weather", '{"city": "Paris"}')]
    assert calls[0]["id"].startswith("call_")


def test_parse_two_calls(gpt_oss):
    text = (
        '<|channel|>commentary to=functions.a <|constrain|>json<|message|>{"x": 1}'
        '<|start|>assistant<|channel|>commentary to=functions.b.c <|constrain|>json<|message|>{"y": "ü"}'
    )
    calls = gpt_oss.parse_tool_calls(model=model(), text=text)
    assert functions(calls) == [("function", "a", '{"x": 1}'), ("function", "b.c", '{"y": "ü"}')]
    assert calls[0]["id"] != calls[1]["id"]


def test_parse_what_format_chat_renders(gpt_oss):
    assert functions(gpt_oss.parse_tool_calls(model=model(), text=RENDERED_CALL)) == [
        ("function", "get_weather", '{"city": "Paris"}')
    ]


@pytest.mark.parametrize(
    "text",
    [
        GENERATED,
        "Plain text that mentions to=functions.get_weather but has no channels.",
        "<|channel|>final<|message|>Call to=functions.get_weather yourself.",
        '<|channel|>commentary to=browser.search <|constrain|>json<|message|>{"query": "x"}',  # a built-in tool, not a function
        "<|channel|>analysis<|message|>thinking",
        "",
    ],
    ids=["answer", "mention", "mention-in-final", "builtin", "analysis", "empty"],
)
def test_parse_no_call(gpt_oss, text):
    assert gpt_oss.parse_tool_calls(model=model(), text=text) is None


@pytest.mark.parametrize(
    "text",
    [
        '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": ',  # cut short
        "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>not json",
        "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>[1, 2]",
        '<|channel|>commentary to=functions. <|constrain|>json<|message|>{"a": 1}',
        "<|channel|>commentary to=functions.a <|constrain|>json<|message|>{}<|start|>assistant<|channel|>commentary to=functions.b<|message|>{",
    ],
    ids=["cut", "not-json", "array", "no-name", "second-bad"],
)
def test_parse_malformed_calls_give_none(gpt_oss, text):
    assert gpt_oss.parse_tool_calls(model=model(), text=text) is None


def test_parse_through_the_plugin_manager(pm):
    assert functions(pm.hook.parse_tool_calls(model=model(), text=RENDERED_CALL)) == [
        ("function", "get_weather", '{"city": "Paris"}')
    ]
    assert pm.hook.parse_tool_calls(model=model(family="gguf-template"), text=RENDERED_CALL) is None


# --------------------------------------------------------------------------- answer filter

# (generated text as llama.cpp hands it back, expected content, expected reasoning)
FILTER_CASES = {
    "analysis-and-final": (GENERATED, "Blue.", "The user wants a colour."),
    "final-only": ("<|channel|>final<|message|>Hello! How can I help?", "Hello! How can I help?", ""),
    "no-markup": ("Paris is the capital of France.", "Paris is the capital of France.", ""),
    "no-markup-with-angles": ("a <| b and x < y", "a <| b and x < y", ""),
    "analysis-cut-by-max-tokens": (
        "<|channel|>analysis<|message|>The user asks about 2+2. That is",
        "",
        "The user asks about 2+2. That is",
    ),
    "tool-call": (
        '<|channel|>analysis<|message|>Need the weather.<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}',
        "",
        "Need the weather.",
    ),
    "tool-call-recipient-in-role": (
        ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}',
        "",
        "",
    ),
    "preamble-then-call": (
        "<|channel|>analysis<|message|>Look it up.<|start|>assistant<|channel|>commentary<|message|>Checking the weather…"
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}',
        "",
        "Look it up.\n\nChecking the weather…",
    ),
    "unicode": (
        "<|channel|>analysis<|message|>Der Nutzer fragt auf 日本語 😀 — café.<|start|>assistant<|channel|>final<|message|>Ja: 東京 🗼 ist groß, ½ < ¾.",
        "Ja: 東京 🗼 ist groß, ½ < ¾.",
        "Der Nutzer fragt auf 日本語 😀 — café.",
    ),
    "final-mentions-markup": (
        "<|channel|>analysis<|message|>Explain.<|start|>assistant<|channel|>final<|message|>Write <|channel|> then the name.",
        "Write <|channel|> then the name.",
        "Explain.",
    ),
    "control-tokens-rendered": (
        "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Blue.",
        "Blue.",
        "Think.",
    ),
}
MARKER_FRAGMENTS = ("<|channel", "<|message", "<|start", "<|constrain", "<|end", "<|return", "<|call", "|>")


def run_filter(make, pieces):
    answer = make()
    content, reasoning = [], []
    for piece in pieces:
        c, r = answer.feed(piece)
        content.append(c)
        reasoning.append(r)
    c, r = answer.finish()
    return "".join(content) + c, "".join(reasoning) + r


@pytest.mark.parametrize("case", FILTER_CASES, ids=str)
def test_answer_filter_takes_the_channels_apart(gpt_oss, case):
    text, content, reasoning = FILTER_CASES[case]
    assert run_filter(gpt_oss.HarmonyFilter, [text]) == (content, reasoning)


@pytest.mark.parametrize("case", FILTER_CASES, ids=str)
def test_answer_filter_does_not_depend_on_the_split(gpt_oss, case):
    text = FILTER_CASES[case][0]
    whole = run_filter(gpt_oss.HarmonyFilter, [text])
    for at in range(len(text) + 1):
        assert run_filter(gpt_oss.HarmonyFilter, [text[:at], text[at:]]) == whole, at
    assert run_filter(gpt_oss.HarmonyFilter, list(text)) == whole
    assert run_filter(gpt_oss.HarmonyFilter, ["", *text, ""]) == whole


@pytest.mark.parametrize("case", [c for c in FILTER_CASES if c != "final-mentions-markup"], ids=str)
def test_answer_filter_never_emits_marker_fragments(gpt_oss, case):
    text = FILTER_CASES[case][0]
    for pieces in ([text], list(text)):
        answer = gpt_oss.HarmonyFilter()
        for out in [answer.feed(p) for p in pieces] + [answer.finish()]:
            for part in out:
                assert not any(f in part for f in MARKER_FRAGMENTS), (pieces, part)


def test_answer_filter_holds_back_a_partial_marker(gpt_oss):
    answer = gpt_oss.HarmonyFilter()
    assert answer.feed("<|chan") == ("", "")
    assert answer.feed("nel|>analysis<|mess") == ("", "")
    assert answer.feed("age|>Thinking <|st") == ("", "Thinking ")
    assert answer.feed("art|>assistant<|channel|>final<|message|>Hi") == ("Hi", "")
    assert answer.feed(" there") == (" there", "")
    assert answer.finish() == ("", "")


def test_answer_filter_drops_half_a_marker_at_the_end(gpt_oss):
    assert run_filter(gpt_oss.HarmonyFilter, ["<|channel|>analysis<|message|>Hmm<|sta"]) == ("", "Hmm")
    assert run_filter(gpt_oss.HarmonyFilter, ["<|channel|>analysis<|message|>x <"]) == ("", "x <")
    assert run_filter(gpt_oss.HarmonyFilter, ["<|chan"]) == ("", "")
    assert run_filter(gpt_oss.HarmonyFilter, ["<|channel|>final"]) == ("", "")  # an unfinished header
    assert run_filter(gpt_oss.HarmonyFilter, [""]) == ("", "")
    assert run_filter(gpt_oss.HarmonyFilter, ["to"]) == ("to", "")


def test_answer_filter_passes_a_direct_answer_through_at_once(gpt_oss):
    answer = gpt_oss.HarmonyFilter()
    assert answer.feed("Hel") == ("Hel", "")
    assert answer.feed("lo <|channel|>") == ("lo <|channel|>", "")
    assert answer.finish() == ("", "")


def test_answer_filter_random_splits(gpt_oss):
    rng = random.Random(0)
    alphabet = [
        "a",
        " ",
        "é",
        "😀",
        "<",
        "|",
        ">",
        "<|",
        "|>",
        "to=",
        "to=functions.f ",
        "json",
        "\n",
        "<|channel|>",
        "<|message|>",
        "<|start|>",
        "assistant",
        "<|constrain|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "analysis",
        "final",
        "commentary",
        "<|channel|>analysis<|message|>",
        "<|channel|>final<|message|>",
    ]
    texts = [case[0] for case in FILTER_CASES.values()]
    for _ in range(2000):
        if rng.random() < 0.5:
            text = rng.choice(texts)
        else:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        whole = run_filter(gpt_oss.HarmonyFilter, [text])
        cuts = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(0, 8)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert run_filter(gpt_oss.HarmonyFilter, pieces) == whole, (text, pieces)
        assert all(isinstance(part, str) for part in whole)


def test_answer_filter_survives_odd_input(gpt_oss):
    answer = gpt_oss.HarmonyFilter()
    for piece in [
        "<|message|><|message|>",
        "<|start|><|start|>",
        "<|channel|>",
        "<|channel|><|message|>x",
        None,
        "<|end|>",
        "|>",
    ]:
        content, reasoning = answer.feed(piece)
        assert isinstance(content, str) and isinstance(reasoning, str)
    assert all(isinstance(part, str) for part in answer.finish())
    assert all(isinstance(part, str) for part in answer.finish())  # a second finish is harmless


def test_answer_filter_hook(pm):
    first = pm.answer_filter(model=model())
    second = pm.answer_filter(model=model())
    assert type(first).__name__ == "HarmonyFilter" and first is not second
    first.feed("<|channel|>analysis<|message|>Some ")  # the filters keep separate state
    assert run_filter(lambda: second, [GENERATED]) == ("Blue.", "The user wants a colour.")
    for family in ("gguf-template", "generic", "chatml", "gemma"):
        assert pm.manager.get_plugin("gpt_oss").answer_filter(model=model(family), prompt=ChatPrompt("")) is None
        assert type(pm.answer_filter(model=model(family))).__name__ != "HarmonyFilter"
