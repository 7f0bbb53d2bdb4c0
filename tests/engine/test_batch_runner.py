"""ggufd.engine.batch.BatchRunner below the engine: with sliding-window caches (swa_full = false)
a cached prefix is reused only while its window is intact, and exactly the window a squeezed cache
kept is enough to continue a conversation."""

from __future__ import annotations

import asyncio

import llama_cpp
import pytest
from test_model import load_gemma

from ggufd.engine import batch as engine_batch
from ggufd.engine.events import Generation, TextDelta
from ggufd.types import ChatPrompt, GenerationRequest, SamplingParams

# --- sliding-window caches (gemma-3: a 512-token window in 15 of its 18 layers)


def gemma_engine_run(loaded, prompts: list[str], max_tokens: int) -> list[tuple[str, int]]:
    """Run prompts one after another through the model's batch runner -> (text, prompt tokens decoded)."""
    texts: dict[int, str] = {}
    decoded: list[int] = []
    original_deliver, original_decode = engine_batch.deliver_events, llama_cpp.llama_decode

    def deliver(pairs):
        for generation, event in pairs:
            if isinstance(event, TextDelta):
                texts[id(generation)] = texts.get(id(generation), "") + event.text

    def decode(ctx, batch):
        decoded.append(batch.n_tokens)
        return original_decode(ctx, batch)

    loop = asyncio.new_event_loop()
    engine_batch.deliver_events, llama_cpp.llama_decode = deliver, decode
    results = []
    try:
        for prompt in prompts:
            decoded.clear()
            generation = Generation(loop)
            request = GenerationRequest(
                ChatPrompt(prompt),
                SamplingParams(temperature=0, logit_bias=((1, -100.0), (106, -100.0))),
                max_tokens=max_tokens,
            )
            future, _ = loaded.runner.submit(generation, request)
            loaded.runner.run()
            generated = future.result().completion_tokens
            results.append(
                (texts.get(id(generation), ""), sum(decoded) - (generated - 1))
            )  # the last token is never decoded
    finally:
        engine_batch.deliver_events, llama_cpp.llama_decode = original_deliver, original_decode
        loop.close()
    return results


def turn(text: str) -> str:
    return f"<start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.gemma
def test_sliding_window_caches_reuse_a_prefix_only_while_its_window_is_intact(gemma_model):
    # ~1,350 tokens: the window cache (512 + a 512-token batch = 1,024 cells) overwrites the oldest positions
    history = turn("Count: " + " ".join(f"item{i}" for i in range(450)))
    loaded = load_gemma(gemma_model, swa_full=False, n_ctx=2048)
    try:
        assert loaded.n_swa == 512
        ((answer, first_prefill),) = gemma_engine_run(loaded, [history], 40)
        continued = history + answer + "<end_of_turn>\n" + turn("And then?")
        other = turn("Count: " + " ".join(f"item{i}" for i in range(100)) + " STOP")  # shares only ~300 tokens
        (cont_text, cont_prefill), (other_text, other_prefill) = gemma_engine_run(loaded, [continued, other], 16)
    finally:
        loaded.close()
    fresh = load_gemma(gemma_model, swa_full=False, n_ctx=2048)
    try:
        ((cold_cont, _),) = gemma_engine_run(fresh, [continued], 16)
        ((cold_other, _),) = gemma_engine_run(fresh, [other], 16)
    finally:
        fresh.close()
    assert cont_text == cold_cont and other_text == cold_other  # reused or not, the answers are right
    assert first_prefill > 1200
    assert cont_prefill < 30  # the window before the new turn is still cached: only the new turn was decoded
    # the shared start (~300 tokens) was overwritten while the rest of the history was processed: decoded again
    assert other_prefill > 300


@pytest.mark.gemma
def test_a_conversation_continues_from_the_exact_window_a_squeezed_cache_kept(gemma_model):
    """Another long request squeezes the shared window cache down to what each sequence still needs
    (positions after pos_max + 1 - 512); continuing the conversation at pos_max + 1 needs exactly those."""
    history = turn("Count: " + " ".join(f"item{i}" for i in range(450)))  # ~1,350 tokens
    other = turn("List: " + " ".join(f"thing{i}" for i in range(700)))  # ~2,100 tokens, another conversation
    loaded = load_gemma(gemma_model, swa_full=False, parallel=2, n_ctx=4096)
    try:
        (answer, _), _ = gemma_engine_run(loaded, [history, other], 8)
        seq = next(
            s
            for s, cached in loaded.runner._cached.items()
            if cached and cached[5] == loaded.tokenize(history, True)[5]
        )
        pos_min = llama_cpp.llama_memory_seq_pos_min(loaded.memory, seq)
        pos_max = llama_cpp.llama_memory_seq_pos_max(loaded.memory, seq)
        continued = history + answer + "<end_of_turn>\n" + turn("And then?")
        ((_, prefill),) = gemma_engine_run(loaded, [continued], 4)
    finally:
        loaded.close()
    assert pos_min == pos_max + 2 - 512  # squeezed to the window: nothing to spare
    assert prefill < 30  # and still enough: only the new turn was decoded
