"""The gpt-oss plugin (ggufd/families/gpt_oss.py): golden harmony prompts byte for byte (tool calls and
results included; the plain chats against OpenAI's published template are in
test_family_contract.py), family detection, taking generated text apart by channel, and parsing
harmony tool calls."""

from __future__ import annotations

import datetime
import random

import gguf_factory
import jinja2
import pytest
from family_kit import GPT_OSS, HARMONY_FULL_TEMPLATE, HARMONY_TEMPLATE, TEXT_CHATS
from family_kit import GPT_OSS_DATE as DATE

from ggufd.engine.reasoning_budget import ReasoningBudget
from ggufd.errors import InvalidRequest
from ggufd.gguf_metadata import read_metadata
from ggufd.types import ChatPrompt, ModelSpec, ReasoningSyntax

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


def render(plugin, messages, tools=(), meta=None, **template_kwargs) -> ChatPrompt:
    return plugin.format_chat(
        model=model(meta=meta), messages=messages, tools=list(tools), template_kwargs=template_kwargs
    )


@pytest.fixture
def gpt_oss(pm, monkeypatch):
    plugin = pm.manager.get_plugin("gpt_oss")
    assert plugin is not None and plugin.__name__ == "ggufd.families.gpt_oss"
    return GPT_OSS.pin(plugin, monkeypatch)  # the date in the prompt


# --------------------------------------------------------------------------- golden prompts


def test_system_and_user(gpt_oss):
    prompt = render(gpt_oss, SYSTEM_AND_USER)
    assert prompt == ChatPrompt(
        text=SYSTEM
        + "<|start|>developer<|message|># Instructions\n\nYou are terse.\n\n<|end|><|start|>user<|message|>Hi<|end|><|start|>assistant",
        stop=("<|return|>", "<|call|>"),
        add_bos=False,
        reasoning=ReasoningSyntax(
            "<|channel|>analysis<|message|>",
            "<|start|>",
            close="<|end|><|start|>assistant<|channel|>final<|message|>",
        ),
    )


def test_multi_turn(gpt_oss):
    prompt = render(gpt_oss, MULTI_TURN)
    assert prompt.text == (
        SYSTEM
        + "<|start|>user<|message|>Hi<|end|>"
        + "<|start|>assistant<|channel|>final<|message|>Hello!<|end|>"
        + "<|start|>user<|message|>Name a colour.<|end|>"
        + "<|start|>assistant"
    )


def test_tool_call_result_and_follow_up(gpt_oss):
    prompt = render(gpt_oss, TOOLS_THEN_USER)
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
    assert render(gpt_oss, messages).text.endswith(analysis + RENDERED_CALL + RENDERED_RESULT + "<|start|>assistant")
    answered = [*messages, {"role": "assistant", "content": "21 °C."}, {"role": "user", "content": "Thanks"}]
    text = render(gpt_oss, answered).text
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
    text = render(gpt_oss, messages).text
    assert text.endswith(
        RENDERED_CALL
        + '<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{"tz": "CET"}<|call|>'
        + "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>21<|end|>"
        + "<|start|>functions.get_time to=assistant<|channel|>commentary<|message|>10:00<|end|>"
        + "<|start|>assistant"
    )


def test_a_tool_result_without_a_call_is_refused(gpt_oss):
    with pytest.raises(InvalidRequest) as info:
        render(gpt_oss, [{"role": "user", "content": "x"}, {"role": "tool", "content": "1", "tool_call_id": "c"}])
    assert info.value.status == 400 and info.value.param == "messages.1"
    named = [{"role": "user", "content": "x"}, {"role": "tool", "content": "1", "name": "lookup"}]
    assert "<|start|>functions.lookup to=assistant" in render(gpt_oss, named).text


def test_earlier_answers_keep_only_their_final_channel(gpt_oss):
    # what ggufd returns to clients today (see the plugin's limitation), sent back as history
    raw = "<|channel|>analysis<|message|>The user greets me.<|start|>assistant<|channel|>final<|message|>Hello!"
    messages = [MULTI_TURN[0], {"role": "assistant", "content": raw}, MULTI_TURN[2]]
    assert render(gpt_oss, messages).text == render(gpt_oss, MULTI_TURN).text


def test_several_system_messages_become_the_instructions(gpt_oss):
    messages = [
        {"role": "system", "content": "A"},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "B"},
    ]
    assert (
        "<|start|>developer<|message|># Instructions\n\nA\n\nB\n\n<|end|><|start|>user"
        in render(gpt_oss, messages).text
    )


def test_the_date_is_today_unless_replaced(pm):
    plugin = pm.manager.get_plugin("gpt_oss")
    assert plugin.today() == datetime.date.today().isoformat()
    assert (
        f"Current date: {datetime.date.today().isoformat()}\n"
        in plugin.format_chat(model=model(), messages=MULTI_TURN, tools=[], template_kwargs={}).text
    )


def test_add_bos_follows_the_vocabulary(gpt_oss):
    assert render(gpt_oss, MULTI_TURN, meta=metadata(add_bos=True)).add_bos is True
    assert render(gpt_oss, MULTI_TURN).add_bos is False


def test_only_a_system_message_is_rejected(gpt_oss):
    with pytest.raises(InvalidRequest) as info:
        render(gpt_oss, [{"role": "system", "content": "x"}])
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


# --------------------------------------------------------------------------- reasoning effort and identity


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_levels(gpt_oss, effort):
    prompt = render(gpt_oss, SYSTEM_AND_USER, reasoning_effort=effort)
    assert f"\n\nReasoning: {effort}\n\n# Valid channels" in prompt.text
    assert prompt.honoured == frozenset({"reasoning_effort"})
    assert prompt.text == GPT_OSS.reference(HARMONY_FULL_TEMPLATE, SYSTEM_AND_USER, reasoning_effort=effort).text


def test_efforts_gpt_oss_does_not_have(gpt_oss):
    low = render(gpt_oss, SYSTEM_AND_USER, reasoning_effort="low").text
    for effort in ("minimal", "none", "NONE", " Low "):  # its lowest level: gpt-oss always reasons
        prompt = render(gpt_oss, SYSTEM_AND_USER, reasoning_effort=effort)
        assert prompt.text == low and prompt.honoured == frozenset({"reasoning_effort"}), effort
    assert render(gpt_oss, SYSTEM_AND_USER, reasoning_effort="HIGH").text == (
        render(gpt_oss, SYSTEM_AND_USER, reasoning_effort="high").text
    )
    default = render(gpt_oss, SYSTEM_AND_USER)
    assert "Reasoning: medium" in default.text and default.honoured == frozenset()
    for unknown in ("extreme", "", 3, None, ["high"]):  # left as it is, and reported as ignored
        prompt = render(gpt_oss, SYSTEM_AND_USER, reasoning_effort=unknown)
        assert prompt.text == default.text and prompt.honoured == frozenset(), unknown
    other = render(gpt_oss, SYSTEM_AND_USER, enable_thinking=False)
    assert other.text == default.text and other.honoured == frozenset()


def test_model_identity(gpt_oss):
    prompt = render(gpt_oss, SYSTEM_AND_USER, model_identity="You are Ada.", reasoning_effort="high")
    assert prompt.text.startswith("<|start|>system<|message|>You are Ada.\nKnowledge cutoff: 2024-06\n")
    assert prompt.honoured == frozenset({"model_identity", "reasoning_effort"})
    expected = GPT_OSS.reference(
        HARMONY_FULL_TEMPLATE, SYSTEM_AND_USER, model_identity="You are Ada.", reasoning_effort="high"
    )
    assert prompt.text == expected.text


def test_the_reasoning_syntax(gpt_oss):
    reasoning = render(gpt_oss, MULTI_TURN).reasoning
    assert reasoning == ReasoningSyntax("<|channel|>analysis<|message|>", "<|start|>", close=CLOSE)
    assert not reasoning.opened and reasoning.closing_text == CLOSE


# the rendered text, token by token, of an answer that reasons, then answers (<|end|> renders as nothing)
ANSWER_TOKENS = ["<|channel|>", "analysis", "<|message|>", "Colour", "s.", "", "<|start|>", "assistant"]
ANSWER_TOKENS += ["<|channel|>", "final", "<|message|>", "Blue", ".", " It", " is", " a", " colour", "."]


def test_a_budget_sees_where_the_analysis_ends(gpt_oss):
    reasoning = render(gpt_oss, MULTI_TURN).reasoning
    ample = ReasoningBudget(reasoning, 5)
    assert not any(ample.feed(text) for text in ANSWER_TOKENS)  # never a close in the answer
    assert ample.done and ample.used == 4  # "Colour", "s.", the <|end|>, the <|start|>
    tight = ReasoningBudget(reasoning, 1)
    assert [tight.feed(text) for text in ANSWER_TOKENS[:5]] == [False, False, False, True, True]


@pytest.mark.parametrize("rendered_end", [True, False], ids=["end-rendered", "end-not-rendered"])
def test_a_spent_budget_leads_to_the_final_answer(gpt_oss, rendered_end):
    # the engine makes the model "write" the close; <|end|> is a control token llama.cpp does not render
    close = CLOSE if rendered_end else CLOSE.removeprefix("<|end|>")
    text = "<|channel|>analysis<|message|>The user wants a colour. Maybe" + close + "Blue."
    whole = run_filter(gpt_oss.HarmonyFilter, [text])
    assert whole == ("Blue.", "The user wants a colour. Maybe")
    assert run_filter(gpt_oss.HarmonyFilter, list(text)) == whole


# --------------------------------------------------------------------------- tools

CLOSE = "<|end|><|start|>assistant<|channel|>final<|message|>"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            },
            "required": ["city"],
        },
    },
}
NO_PARAMETERS = {"type": "function", "function": {"name": "now", "description": "The time", "parameters": {}}}
KITCHEN_SINK = {
    "type": "function",
    "function": {
        "name": "kitchen",
        "description": "Every type é",
        "parameters": {
            "type": "object",
            "required": ["a", "d"],
            "properties": {
                "a": {"type": "array", "items": {"type": "string"}},
                "b": {"type": "array", "items": {"type": "integer"}, "nullable": True},
                "c": {"type": "array"},
                "d": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
                },
                "e": {"type": ["string", "null"]},
                "f": {"oneOf": [{"type": "string", "description": "s"}, {"type": "number", "default": 3}]},
                "g": {"type": "string", "nullable": True, "default": "hi"},
                "h": {"type": "integer", "default": 5},
                "i": {"type": "boolean"},
                "j": {
                    "type": "object",
                    "properties": {"k": {"type": "string"}, "l": {"type": "array", "items": {"type": "boolean"}}},
                    "required": ["k"],
                },
                "k": {"type": "object"},
                "m": {},
                "n": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
                "o": {"oneOf": [{"type": "object"}, {"type": "string"}], "default": "z"},
                "p": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"a" * 30: {"type": "string"}, "b" * 30: {"type": "string"}},
                    },
                },
                "q": {"type": ["array"]},
                "r": {"type": "number", "description": "A number", "default": 1.5},
            },
        },
    },
}
TOOL_SETS = {"weather": [WEATHER_TOOL], "three": [WEATHER_TOOL, NO_PARAMETERS, KITCHEN_SINK]}


def test_tools_golden(gpt_oss):
    prompt = render(gpt_oss, SYSTEM_AND_USER, [WEATHER_TOOL, NO_PARAMETERS])
    assert prompt.text == (
        SYSTEM.removesuffix("<|end|>") + "\nCalls to these tools must go to the commentary channel: 'functions'.<|end|>"
        "<|start|>developer<|message|># Instructions\n\nYou are terse.\n\n"
        "# Tools\n\n## functions\n\nnamespace functions {\n\n"
        "// Get the weather\ntype get_weather = (_: {\n// The city\ncity: string,\n"
        'unit?: "celsius" | "fahrenheit", // default: celsius,\n}) => any;\n\n'
        "// The time\ntype now = () => any;\n\n"
        "} // namespace functions<|end|>"
        "<|start|>user<|message|>Hi<|end|><|start|>assistant"
    )
    assert prompt.tools_rendered is True
    assert render(gpt_oss, SYSTEM_AND_USER).tools_rendered is False
    # tools and no system message: a developer message with the tools alone
    assert "<|start|>developer<|message|># Tools\n\n## functions" in render(gpt_oss, MULTI_TURN, [NO_PARAMETERS]).text


@pytest.mark.parametrize("tools", TOOL_SETS, ids=str)
@pytest.mark.parametrize("chat", TEXT_CHATS, ids=str)
def test_tools_equal_the_published_template(gpt_oss, chat, tools):
    messages = TEXT_CHATS[chat]
    expected = GPT_OSS.reference(HARMONY_FULL_TEMPLATE, messages, tools=TOOL_SETS[tools])
    assert render(gpt_oss, messages, TOOL_SETS[tools]).text == expected.text


def test_the_typescript_types(gpt_oss):
    section = gpt_oss.tool_namespace([KITCHEN_SINK])
    # the template's own spacing: nested objects break their lines, oneOf variants are joined by " | \n"
    assert "d: {\nx: \n                number}[],\n" in section
    assert "f?: string// s | \nnumber                    // default: 3,\n" in section
    assert "o?: object | \nstring// default: z,\n" in section
    assert "e?: string | null,\n" in section and "p?: any[],\n" in section and "n?: string[][],\n" in section
    assert section == gpt_oss.tool_namespace([KITCHEN_SINK])  # it is a pure function


def test_a_tool_without_a_description(gpt_oss):
    # the published template fails on it ("// " + undefined); the plugin leaves the comment out
    bare = {"type": "function", "function": {"name": "ping"}}
    assert (
        "namespace functions {\n\ntype ping = () => any;\n\n} // namespace functions"
        in render(gpt_oss, MULTI_TURN, [bare]).text
    )
    with pytest.raises(jinja2.UndefinedError):
        GPT_OSS.reference(HARMONY_FULL_TEMPLATE, MULTI_TURN, tools=[bare])


def test_tool_history_with_tools_offered(gpt_oss):
    # the history keeps the harmony syntax the model writes; what comes before it is the template's
    prompt = render(gpt_oss, TOOLS_THEN_USER, [WEATHER_TOOL])
    expected = GPT_OSS.reference(HARMONY_FULL_TEMPLATE, TOOLS_THEN_USER[:1], tools=[WEATHER_TOOL]).text
    assert prompt.text.startswith(expected.removesuffix("<|start|>assistant"))
    assert RENDERED_CALL + RENDERED_RESULT in prompt.text


# --------------------------------------------------------------------------- more of what gpt-oss writes


@pytest.mark.parametrize(
    "text",
    [
        '<|channel|>commentary to=functions.get_weather<|constrain|>json<|message|>{"city": "Paris"}',
        '<|channel|>commentary to=functions.get_weather <|constrain|> json<|message|>{"city": "Paris"}',
        '<|channel|>analysis to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}',
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>\n{"city": "Paris"}\n',
        "<|channel|>analysis<|message|>Weather needed.<|end|><|start|>assistant<|channel|>commentary<|message|>Let me look."
        '<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}',
        "<|channel|>analysis<|message|>x"
        + CLOSE.removeprefix("<|end|>")
        + "Hmm.<|start|>assistant<|channel|>commentary "
        'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
    ],
    ids=["no-space", "spaced-constrain", "analysis-channel", "newlines", "preamble", "after-final"],
)
def test_parse_what_gpt_oss_writes(gpt_oss, text):
    assert functions(gpt_oss.parse_tool_calls(model=model(), text=text)) == [
        ("function", "get_weather", '{"city": "Paris"}')
    ]


def test_an_empty_description_is_a_comment_still(gpt_oss):
    tool = {"type": "function", "function": {"name": "ping", "description": ""}}
    expected = GPT_OSS.reference(HARMONY_FULL_TEMPLATE, MULTI_TURN, tools=[tool]).text
    assert "// \ntype ping = () => any;" in expected
    assert render(gpt_oss, MULTI_TURN, [tool]).text == expected
