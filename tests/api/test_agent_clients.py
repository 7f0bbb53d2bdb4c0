"""Real agent clients against the real application over a FakeEngine: LangChain's ChatOpenAI, the
OpenAI Agents SDK (chat-completions mode) and openai-python's streaming helper, with a test family
that renders tools natively and writes calls in ``<tool_call>`` blocks.

What these prove, without llama.cpp and without timing: text before a call streams as it is
generated (the engine holds the rest of the answer until the client has that text: FakeEngine's
``gate``), calls come out as tool-call deltas the clients assemble, ``parallel_tool_calls: false``
keeps one call, a tool's result reaches the model in the next turn, and ``X-Ggufd-Ignored`` names
the fields that had no effect."""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import agents
import openai
import pydantic
import pytest
from inprocess import InProcessServer, fake_model, registry_of
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from openai.types.responses import ResponseFunctionCallArgumentsDeltaEvent, ResponseTextDeltaEvent

from ggufd.engine.fake import FakeEngine
from ggufd.types import GenerationRequest

#: the test family, written to a plugins_dir: the prompt is the chat as JSON (so the scripted
#: model can read it), tools rendered natively, calls in <tool_call> blocks, arguments streamed.
#: ``agent-effort`` models honour reasoning_effort; ``agent`` models honour nothing.
PLUGIN = textwrap.dedent(
    '''
    """ggufd test family for tests/api/test_agent_clients.py."""

    import json
    import re

    import ggufd

    FAMILIES = ("agent", "agent-effort")
    BEGIN, END = "<tool_call>", "</tool_call>"
    BLOCK = re.compile(re.escape(BEGIN) + r"(.*?)(?:" + re.escape(END) + r"|$)", re.DOTALL)
    #: the ``parallel`` argument of every tool_call_stream call: what the server made of the request
    PARALLEL = []


    @ggufd.hookimpl
    def format_chat(model, messages, tools, template_kwargs):
        if model.family not in FAMILIES:
            return None
        text = json.dumps({"messages": list(messages), "tools": [t["function"]["name"] for t in tools]})
        honoured = {"reasoning_effort"} & set(template_kwargs) if model.family == "agent-effort" else set()
        return ggufd.ChatPrompt(text, tools_rendered=bool(tools), honoured=frozenset(honoured))


    @ggufd.hookimpl
    def tool_call_openers(model):
        return [BEGIN] if model.family in FAMILIES else None


    @ggufd.hookimpl
    def tool_call_stream(model, tools, parallel):
        if model.family not in FAMILIES:
            return None
        PARALLEL.append(parallel)
        return ggufd.MarkedCalls(BEGIN, END, ggufd.json_call_block, [t["function"]["name"] for t in tools])


    @ggufd.hookimpl
    def parse_tool_calls(model, text):
        if model.family not in FAMILIES:
            return None
        calls = []
        for body in BLOCK.findall(text):
            try:
                data = json.loads(body)
            except ValueError:
                return None
            if not isinstance(data, dict) or not isinstance(data.get("arguments"), dict):
                return None
            calls.append(ggufd.tool_call(data["name"], data["arguments"]))
        return calls or None
    '''
)
PLUGIN_NAME = "agent_family"

TEXT = "Let me check."
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "%s"}}\n</tool_call>'
FIRST_TURN = f"{TEXT}\n\n{CALL % 'Paris'}"
TWO_CALLS = f"{TEXT}\n\n{CALL % 'Paris'}\n{CALL % 'Lyon'}"
WEATHER = {"Paris": "18 degrees and sunny", "Lyon": "21 degrees and cloudy"}
#: released before the engine holds the rest of an answer: "Let " and "me c" (content "Let me c")
GATE_AFTER = 2
#: a safety net only: a broken stream fails the test after this long instead of hanging it
WATCHDOG_S = 30.0


def pieces(text: str, size: int = 4) -> list[str]:
    """The text as the scripted model writes it: many small pieces (one per "token")."""
    return [text[at : at + size] for at in range(0, len(text), size)]


def script(request: GenerationRequest) -> list[str]:
    """The scripted model. First turn: a sentence, then a call (two when the user asks for "both
    cities"). After tool results: an answer made of them (so a test sees the result reached it)."""
    messages = json.loads(request.prompt.text)["messages"]
    if messages[-1]["role"] == "tool":
        results = []
        for message in reversed(messages):
            if message["role"] != "tool":
                break
            results.insert(0, message["content"])
        return pieces("The tool says: " + "; ".join(results) + ".")
    user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return pieces(TWO_CALLS if "both cities" in user else FIRST_TURN)


@pytest.fixture
def server(tmp_path) -> Iterator[InProcessServer]:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / f"{PLUGIN_NAME}.py").write_text(PLUGIN)
    registry = registry_of(fake_model("agent", family="agent"), fake_model("effort", family="agent-effort"))
    with InProcessServer(FakeEngine(reply=script), registry, plugins_dir=plugins) as server:
        assert not server.state.plugins.failures
        yield server


def seen_parallel(server: InProcessServer) -> list[bool]:
    """What the server made of each tools request's ``parallel_tool_calls`` (the test family records it)."""
    return server.state.plugins.manager.get_plugin(PLUGIN_NAME).PARALLEL


@contextmanager
def held(server: InProcessServer) -> Iterator[threading.Event]:
    """Each generation releases its first GATE_AFTER pieces, then waits until the test sets the
    event: what the client received before setting it was streamed before the end of the answer."""
    gate = threading.Event()
    watchdog = threading.Timer(WATCHDOG_S, gate.set)
    server.engine.gate, server.engine.gate_after = gate, GATE_AFTER
    watchdog.start()
    try:
        yield gate
    finally:
        watchdog.cancel()
        gate.set()
        server.engine.gate = None


def still_generating(server: InProcessServer, gate: threading.Event) -> bool:
    """The answer is not finished: the engine holds it at the gate."""
    return not gate.is_set() and server.engine.pending() == 1


def openai_client(server: InProcessServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=WATCHDOG_S * 2)


# --- LangChain


def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
        city: the city's name
    """
    return WEATHER[city]


def test_langchain_streams_text_then_a_tool_call(server):
    llm = ChatOpenAI(
        base_url=server.url + "/v1", api_key="x", model="agent", streaming=True, max_retries=0, timeout=WATCHDOG_S * 2
    ).bind_tools([get_weather])
    chunks: list[AIMessageChunk] = []
    early = None
    with held(server) as gate:
        for chunk in llm.stream("What is the weather in Paris?"):
            assert isinstance(chunk, AIMessageChunk)
            chunks.append(chunk)
            if chunk.content and early is None:
                early = (chunk.content, still_generating(server, gate), len(chunks))
                gate.set()
    assert early is not None
    first_text, generating, at = early
    assert generating and first_text == "Let"  # content arrived while the answer was held unfinished
    assert not any(c.tool_call_chunks for c in chunks[:at])
    calls = [c for c in chunks if c.tool_call_chunks]
    assert len(calls) >= 3  # the header, then the arguments as they were written
    assert calls[0].tool_call_chunks[0]["name"] == "get_weather" and calls[0].tool_call_chunks[0]["id"]
    header = next(i for i, c in enumerate(chunks) if c is calls[0])
    assert not any(c.content for c in chunks[header:])  # the call's text never leaks as content
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.content == TEXT
    assert [{k: v for k, v in call.items() if k != "id"} for call in total.tool_calls] == [
        {"name": "get_weather", "args": {"city": "Paris"}, "type": "tool_call"}
    ]
    assert total.response_metadata["finish_reason"] == "tool_calls"

    message = llm.invoke("What is the weather in Paris?")  # a plain request: the same answer
    assert message.content == TEXT
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert message.response_metadata["finish_reason"] == "tool_calls"


def test_langchain_parallel_tool_calls_false_keeps_one_call(server):
    llm = ChatOpenAI(base_url=server.url + "/v1", api_key="x", model="agent", max_retries=0)
    both = "What is the weather in both cities?"
    assert [c["args"] for c in llm.bind_tools([get_weather]).invoke(both).tool_calls] == [
        {"city": "Paris"},
        {"city": "Lyon"},
    ]
    single = llm.bind_tools([get_weather], parallel_tool_calls=False)
    assert [c["args"] for c in single.invoke(both).tool_calls] == [{"city": "Paris"}]
    streamed = None
    for chunk in single.stream(both):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and [c["args"] for c in streamed.tool_calls] == [{"city": "Paris"}]
    assert seen_parallel(server) == [True, False, False]


# --- OpenAI Agents SDK, chat-completions mode


@pytest.fixture(autouse=True)
def no_tracing():
    agents.set_tracing_disabled(True)  # the SDK would export traces to OpenAI's servers


def weather_agent(server: InProcessServer, ran: list[str], **settings):
    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
            city: the city's name
        """
        ran.append(city)
        return WEATHER[city]

    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=WATCHDOG_S * 2)
    model = agents.OpenAIChatCompletionsModel(model="agent", openai_client=client)
    agent = agents.Agent(
        name="weather",
        instructions="Answer with the weather.",
        model=model,
        tools=[get_weather],
        model_settings=agents.ModelSettings(**settings),
    )
    return agent, client


def tool_turn(server: InProcessServer) -> list[dict]:
    """The messages of the second request: the call and its result as the SDK sent them back."""
    return json.loads(server.engine.requests[1].prompt.text)["messages"]


def test_agents_sdk_runs_the_tool_and_the_model_answers_from_its_result(server):
    ran: list[str] = []
    agent, client = weather_agent(server, ran, parallel_tool_calls=False)

    async def run():
        async with client:
            return await agents.Runner.run(agent, "What is the weather in Paris?")

    result = asyncio.run(run())
    assert ran == ["Paris"]
    assert result.final_output == f"The tool says: {WEATHER['Paris']}."
    assert len(server.engine.requests) == 2 and seen_parallel(server) == [False, False]
    assistant, tool = tool_turn(server)[-2:]
    assert assistant["role"] == "assistant" and assistant["content"] == TEXT
    (call,) = assistant["tool_calls"]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert tool == {"role": "tool", "content": WEATHER["Paris"], "tool_call_id": call["id"]}


@pytest.mark.parametrize("parallel", [False, None])
def test_agents_sdk_two_calls_scripted(server, parallel):
    """The model writes two calls: with parallel_tool_calls false the SDK gets (and runs) one;
    by default both (so the script really wrote two)."""
    ran: list[str] = []
    agent, client = weather_agent(server, ran, parallel_tool_calls=parallel)

    async def run():
        async with client:
            return await agents.Runner.run(agent, "What is the weather in both cities?")

    result = asyncio.run(run())
    if parallel is False:
        assert ran == ["Paris"] and result.final_output == f"The tool says: {WEATHER['Paris']}."
        assert seen_parallel(server) == [False, False]
    else:
        assert ran == ["Paris", "Lyon"]
        assert result.final_output == f"The tool says: {WEATHER['Paris']}; {WEATHER['Lyon']}."
        assert seen_parallel(server) == [True, True]


def test_agents_sdk_streamed_run(server):
    ran: list[str] = []
    agent, client = weather_agent(server, ran, parallel_tool_calls=False)
    texts: list[str] = []
    arguments: list[str] = []
    items: list[str] = []
    early: list[bool] = []

    async def run():
        async with client:
            result = agents.Runner.run_streamed(agent, "What is the weather in Paris?")
            async for event in result.stream_events():
                if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
                    if not early:
                        early.append(still_generating(server, gate))
                        gate.set()
                    texts.append(event.data.delta)
                elif event.type == "raw_response_event" and isinstance(
                    event.data, ResponseFunctionCallArgumentsDeltaEvent
                ):
                    arguments.append(event.data.delta)
                elif event.type == "run_item_stream_event":
                    items.append(event.name)
            return result

    with held(server) as gate:
        result = asyncio.run(run())
    assert early == [True]  # the first text delta arrived while the first answer was held unfinished
    assert ran == ["Paris"] and result.final_output == f"The tool says: {WEATHER['Paris']}."
    assert "".join(texts) == TEXT + result.final_output
    assert len([a for a in arguments if a]) >= 2 and json.loads("".join(arguments)) == {"city": "Paris"}
    assert items == ["message_output_created", "tool_called", "tool_output", "message_output_created"]


# --- openai-python's streaming helper


class GetWeather(pydantic.BaseModel):
    """Get the current weather in a city."""

    city: str


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_openai_stream_helper_events_and_final_completion(server):
    client = openai_client(server)
    events = []
    early = None
    with held(server) as gate, client.chat.completions.stream(model="agent", messages=ASK, tools=TOOLS) as stream:
        for event in stream:
            events.append(event)
            if event.type == "content.delta" and event.delta and early is None:
                early = (event.delta, still_generating(server, gate))
                gate.set()
        final = stream.get_final_completion()
    assert early == ("Let", True)  # the first content arrived while the answer was held unfinished
    types = [e.type for e in events if e.type != "chunk"]
    assert types.index("content.done") < types.index("tool_calls.function.arguments.done")
    assert types[-1] == "tool_calls.function.arguments.done"
    assert "".join(e.delta for e in events if e.type == "content.delta") == TEXT
    fragments = [e.arguments_delta for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert len([f for f in fragments if f]) >= 3  # the arguments as the model wrote them, in pieces
    assert json.loads("".join(fragments)) == {"city": "Paris"}
    (done,) = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert done.name == "get_weather" and json.loads(done.arguments) == {"city": "Paris"}

    plain = client.chat.completions.create(model="agent", messages=ASK, tools=TOOLS)
    for completion in (final, plain):
        assert completion.choices[0].finish_reason == "tool_calls"
    streamed, whole = final.choices[0].message, plain.choices[0].message
    assert streamed.content == whole.content == TEXT
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in streamed.tool_calls] == [
        (c.type, c.function.name, json.loads(c.function.arguments)) for c in whole.tool_calls
    ]
    assert [c.function.name for c in whole.tool_calls] == ["get_weather"]


def test_openai_pydantic_function_tool_parses_the_arguments(server):
    client = openai_client(server)
    tools = [openai.pydantic_function_tool(GetWeather, name="get_weather")]  # strict: true
    with client.chat.completions.stream(model="agent", messages=ASK, tools=tools) as stream:
        final = stream.get_final_completion()
    plain = client.chat.completions.parse(model="agent", messages=ASK, tools=tools)
    for completion in (final, plain):
        message = completion.choices[0].message
        assert message.content == TEXT
        (call,) = message.tool_calls
        assert call.function.name == "get_weather" and call.function.parsed_arguments == GetWeather(city="Paris")


# --- X-Ggufd-Ignored


def ignored(response) -> list[str]:
    header = response.headers.get("x-ggufd-ignored")
    return header.split(", ") if header else []


def test_ignored_fields_are_named_in_a_header(server):
    client = openai_client(server)
    raw = client.chat.completions.with_raw_response
    asked = {"messages": ASK, "user": "someone", "reasoning_effort": "low"}
    response = raw.create(model="agent", **asked)
    assert ignored(response) == ["reasoning_effort", "user"]
    assert response.parse().choices[0].message.content  # the answer itself is as usual
    assert ignored(raw.create(model="effort", **asked)) == ["user"]  # its prompt honours reasoning_effort
    assert ignored(raw.create(model="agent", messages=ASK)) == []
    # parallel_tool_calls has an effect only when tools are offered
    assert ignored(raw.create(model="agent", messages=ASK, parallel_tool_calls=False)) == ["parallel_tool_calls"]
    assert ignored(raw.create(model="agent", messages=ASK, tools=TOOLS, parallel_tool_calls=False)) == []
    kwargs = {"chat_template_kwargs": {"enable_thinking": False}}
    assert ignored(raw.create(model="agent", messages=ASK, extra_body=kwargs)) == [
        "chat_template_kwargs.enable_thinking"
    ]
    with client.chat.completions.with_streaming_response.create(
        model="agent", stream=True, **asked
    ) as streamed:  # a stream's headers go out before its first event: the header is there too
        assert ignored(streamed) == ["reasoning_effort", "user"]
        assert any(line.startswith("data: ") for line in streamed.iter_lines())
