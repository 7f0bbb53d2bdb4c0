"""The official client's async API through every endpoint (tiny model and gemma-3-270m): responses
parse into the client's types and the values make sense."""

from __future__ import annotations

import asyncio
import json
import shutil

import jsonschema
import openai
import pytest

pytestmark = pytest.mark.e2e

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"q": {"enum": ["a", "b"]}},
            "required": ["q"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def daemon(tiny_model, gemma_model, tmp_path_factory):
    from conftest import Daemon, write_config

    folder = tmp_path_factory.mktemp("conformance")
    shutil.copy(tiny_model, folder / "tiny.gguf")
    shutil.copy(tiny_model, folder / "tiny-embed.gguf")
    config = write_config(
        folder / "ggufd.toml",
        {
            "models_dir": str(folder),
            "llama": {"n_ctx": 1024, "n_threads": 2},
            "models": {"tiny-embed": {"embedding": True}, "gemma": {"path": str(gemma_model)}},
        },
    )
    d = Daemon(config).start()
    yield d
    d.stop()


async def exercise(url: str, model: str) -> dict:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Say something."}]
    results = {}
    results["chat"] = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2
    )
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    results["chat_stream"] = [chunk async for chunk in stream]
    results["json"] = await client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}},
    )
    results["tool"] = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=60, temperature=0, tools=[TOOL], tool_choice="required"
    )
    results["completion"] = await client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=6, temperature=0, logprobs=1
    )
    stream = await client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True
    )
    results["completion_stream"] = [chunk async for chunk in stream]
    results["model"] = await client.models.retrieve(model)
    await client.close()
    return results


@pytest.mark.parametrize("model", ["tiny", "gemma"])
def test_async_client_through_every_endpoint(daemon, model):
    r = asyncio.run(exercise(daemon.url, model))
    chat = r["chat"]
    assert isinstance(chat, openai.types.chat.ChatCompletion)
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    assert "".join(e.token for e in chat.choices[0].logprobs.content) == chat.choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in r["chat_stream"] if c.choices)
    assert (
        streamed == chat.choices[0].message.content
        and r["chat_stream"][-1].usage.completion_tokens == chat.usage.completion_tokens
    )
    jsonschema.validate(json.loads(r["json"].choices[0].message.content), SCHEMA)
    call = r["tool"].choices[0].message.tool_calls[0]
    assert r["tool"].choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
    jsonschema.validate(json.loads(call.function.arguments), TOOL["function"]["parameters"])
    completion = r["completion"]
    assert isinstance(completion, openai.types.Completion) and completion.usage.completion_tokens <= 6
    assert "".join(completion.choices[0].logprobs.tokens) == completion.choices[0].text
    assert "".join(c.choices[0].text for c in r["completion_stream"] if c.choices) == completion.choices[0].text
    assert r["model"].id == model


def test_async_embeddings(daemon):
    async def run():
        client = openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)
        response = await client.embeddings.create(model="tiny-embed", input=["a", "b"])
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model="tiny", input="a")
        await client.close()
        return response

    response = asyncio.run(run())
    assert isinstance(response, openai.types.CreateEmbeddingResponse) and len(response.data) == 2
