"""Continuous batching (ggufd.engine.batch.BatchRunner through the engine): sequences decoded
together give the same answers as alone, join a running batch at the next step, reuse a cached
prefix, and stop or cancel without disturbing each other."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_lifecycle_engine import PROMPT, collect, make_engine, model_info, text_of

from ggufd.engine.events import Started
from ggufd.types import ChatPrompt, GenerationRequest, SamplingParams


def chat_prompt(text: str) -> ChatPrompt:
    return ChatPrompt(text=f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


REQUESTS = [
    GenerationRequest(chat_prompt("hello"), SamplingParams(temperature=0), max_tokens=40),
    GenerationRequest(chat_prompt("tell me a story"), SamplingParams(temperature=1.0, seed=7), max_tokens=30),
    GenerationRequest(
        chat_prompt("the weather"), SamplingParams(temperature=0.7, top_k=5, seed=3, repeat_penalty=1.3), max_tokens=50
    ),
    GenerationRequest(
        chat_prompt("numbers"),
        SamplingParams(temperature=1.2, top_p=0.5, min_p=0.1, seed=11, presence_penalty=0.5, frequency_penalty=0.5),
        max_tokens=20,
        stop=("e",),
    ),
]


async def run_alone_then_together(tiny_model, parallel: int):
    info = model_info(tiny_model)
    engine = make_engine(n_ctx=256, parallel=parallel)
    alone = [await collect(engine.start(info, r)) for r in REQUESTS]
    await engine.close()
    # A fresh engine: no prompt comes from the cache. (A cached prefix changes the last bits of the
    # logits — its KV was computed in a batch of another shape — which a seeded draw can notice;
    # llama-server documents the same for cache_prompt.)
    engine = make_engine(n_ctx=256, parallel=parallel)
    together = await asyncio.gather(*(collect(engine.start(info, r)) for r in REQUESTS))
    await engine.close()
    return alone, together


@pytest.mark.parametrize("parallel", [1, 4])
def test_batched_outputs_equal_solo_outputs(tiny_model, parallel):
    alone, together = asyncio.run(run_alone_then_together(tiny_model, parallel))
    for solo, batched in zip(alone, together, strict=True):
        assert text_of(batched) == text_of(solo) and text_of(solo)
        assert batched[-1] == solo[-1]
    assert alone[3][-1].reason == "stop"  # the stop string ended that one early
    assert len({text_of(a) for a in alone}) == 4


def test_cancelling_one_sequence_leaves_the_others_intact(tiny_model, monkeypatch):
    from test_lifecycle_engine import VICTIM, cancel_after

    watched = cancel_after(monkeypatch, 3)

    async def main():
        engine = make_engine(n_ctx=256, parallel=4)
        info = model_info(tiny_model)
        solo = [await collect(engine.start(info, r)) for r in REQUESTS[:3]]
        victim = watched["generation"] = engine.start(
            info,
            GenerationRequest(chat_prompt("victim"), SamplingParams(temperature=0), max_tokens=150, stop=(VICTIM,)),
        )
        others = [engine.start(info, r) for r in REQUESTS[:3]]
        results = await asyncio.gather(collect(victim), *(collect(g) for g in others))
        await engine.close()
        return solo, results

    solo, (victim, *others) = asyncio.run(main())
    assert victim[-1].reason == "cancelled" and victim[-1].completion_tokens == 3
    assert [text_of(o) for o in others] == [text_of(s) for s in solo]


def test_a_sequence_reaching_the_context_end_while_others_run(tiny_model):
    async def main():
        engine = make_engine(n_ctx=128, parallel=3)
        info = model_info(tiny_model)
        to_the_end = engine.start(info, GenerationRequest(PROMPT, SamplingParams(temperature=0), max_tokens=None))
        short = [engine.start(info, r) for r in REQUESTS[:2]]
        results = await asyncio.gather(collect(to_the_end), *(collect(g) for g in short))
        await engine.close()
        return results

    end, *short = asyncio.run(main())
    assert end[-1].reason == "length" and end[0].prompt_tokens + end[-1].completion_tokens == 128
    assert [s[-1].completion_tokens for s in short] == [40, 30]


def test_a_new_request_joins_the_running_batch(tiny_model):
    async def main():
        engine = make_engine(n_ctx=2048, parallel=2)
        info = model_info(tiny_model)
        await engine.load(info)
        long = engine.start(info, GenerationRequest(PROMPT, SamplingParams(temperature=0), max_tokens=1800))
        started = time.perf_counter()
        first = await long.next_events()
        assert isinstance(first[0], Started)
        short = await collect(
            engine.start(info, GenerationRequest(PROMPT, SamplingParams(temperature=0), max_tokens=5))
        )
        short_done = time.perf_counter() - started
        rest = await collect(long)
        long_done = time.perf_counter() - started
        await engine.close()
        return short, short_done, rest, long_done

    short, short_done, rest, long_done = asyncio.run(main())
    assert short[-1].completion_tokens == 5 and rest[-1].completion_tokens == 1800
    # it did not wait for the 1800-token request: done within a few steps of joining
    assert short_done < long_done / 5, (short_done, long_done)


def test_parallel_1_runs_one_request_at_a_time(tiny_model):
    async def main():
        engine = make_engine(n_ctx=256, parallel=1)
        info = model_info(tiny_model)
        order = []

        async def run(name, max_tokens):
            generation = engine.start(
                info, GenerationRequest(PROMPT, SamplingParams(temperature=0), max_tokens=max_tokens)
            )
            for event in await collect(generation):
                order.append((name, type(event).__name__))

        await asyncio.gather(run("a", 100), run("b", 5))
        await engine.close()
        return order

    order = asyncio.run(main())
    assert order.index(("a", "Finished")) < order.index(("b", "Started"))


HISTORY = "<|im_start|>user\n" + "hello world " * 60 + "<|im_end|>\n<|im_start|>assistant\n"


def follow_up(history: str, answer: str) -> ChatPrompt:
    return ChatPrompt(history + answer + "<|im_end|>\n<|im_start|>user\nmore<|im_end|>\n<|im_start|>assistant\n")


def count_decodes(monkeypatch) -> list[int]:
    """From now on: the number of tokens of every llama_decode call."""
    import llama_cpp

    decoded: list[int] = []
    original = llama_cpp.llama_decode

    def counting_decode(ctx, batch):
        decoded.append(batch.n_tokens)
        return original(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", counting_decode)
    return decoded


def test_a_continuing_conversation_reuses_its_cached_prefix(tiny_model, monkeypatch):
    async def main():
        engine = make_engine(n_ctx=1024, parallel=2)
        info = model_info(tiny_model)
        await engine.load(info)
        decoded = count_decodes(monkeypatch)
        first = await collect(
            engine.start(info, GenerationRequest(ChatPrompt(HISTORY), SamplingParams(temperature=0), max_tokens=10))
        )
        first_prefill = decoded[0]
        decoded.clear()
        second = await collect(
            engine.start(
                info, GenerationRequest(follow_up(HISTORY, text_of(first)), SamplingParams(temperature=0), max_tokens=3)
            )
        )
        await engine.close()
        return first, first_prefill, second, decoded[0]

    first, first_prefill, second, second_prefill = asyncio.run(main())
    assert first_prefill == first[0].prompt_tokens
    assert second[0].prompt_tokens > first_prefill + 10
    assert second_prefill < 25, second_prefill  # only the new turn (and the re-tokenized answer) was decoded


def test_a_request_that_does_not_stream_gets_its_text_after_the_first_in_one_delivery(tiny_model, monkeypatch):
    """Streaming: one delivery per token. Not streaming: the first text at once (time to first
    token), everything else with the end — same events, same order, far fewer event-loop wake-ups."""
    from ggufd.engine import batch as engine_batch
    from ggufd.engine.events import TokenLogprob

    deliveries: list[list] = []
    original = engine_batch.deliver_events

    def counting(pairs):
        pairs = list(pairs)
        deliveries.append([type(event).__name__ for _, event in pairs])
        original(pairs)

    monkeypatch.setattr(engine_batch, "deliver_events", counting)

    async def main(stream: bool):
        deliveries.clear()
        engine = make_engine(n_ctx=256, parallel=2)
        request = GenerationRequest(PROMPT, SamplingParams(temperature=0), max_tokens=30, logprobs=2, stream=stream)
        events = await collect(engine.start(model_info(tiny_model), request))
        await engine.close()
        return events, list(deliveries)

    streamed, streamed_deliveries = asyncio.run(main(True))
    plain, plain_deliveries = asyncio.run(main(False))
    assert [type(e) for e in plain] == [type(e) for e in streamed] and plain[-1] == streamed[-1]
    assert text_of(plain) == text_of(streamed) and [e for e in plain if isinstance(e, TokenLogprob)] == [
        e for e in streamed if isinstance(e, TokenLogprob)
    ]
    assert plain[-1].completion_tokens == 30
    assert len(streamed_deliveries) >= 25
    first_text = next(
        i for i, names in enumerate(plain_deliveries) if "TextDelta" in names
    )  # a token may have no text of its own
    assert plain_deliveries[: first_text + 1] == streamed_deliveries[: first_text + 1]
    assert len(plain_deliveries) == first_text + 2, plain_deliveries  # then one more: the rest, with the end


def test_a_new_conversation_leaves_a_cached_one_alone(tiny_model, monkeypatch):
    """A prompt that shares only the chat header with a cached conversation takes an empty KV
    stream; the cached conversation still continues from its prefix afterwards."""
    stranger = ChatPrompt("<|im_start|>user\nsomething else entirely<|im_end|>\n<|im_start|>assistant\n")

    async def main():
        engine = make_engine(n_ctx=1024, parallel=2)
        info = model_info(tiny_model)
        await engine.load(info)
        first = await collect(
            engine.start(info, GenerationRequest(ChatPrompt(HISTORY), SamplingParams(temperature=0), max_tokens=10))
        )
        await collect(engine.start(info, GenerationRequest(stranger, SamplingParams(temperature=0), max_tokens=10)))
        decoded = count_decodes(monkeypatch)
        await collect(
            engine.start(
                info, GenerationRequest(follow_up(HISTORY, text_of(first)), SamplingParams(temperature=0), max_tokens=3)
            )
        )
        await engine.close()
        return decoded[0]

    assert asyncio.run(main()) < 25  # the conversation's prefix survived the stranger
