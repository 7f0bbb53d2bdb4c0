"""A reasoning budget through the real engine on the tiny model: the model's first tokens are its
own, then the close is written in its place (verbatim, counted, never ended by an end-of-generation
token or a stop string, seen by the penalties and decoded into the KV cache), then the model goes
on; no budget with a grammar; a request without a budget is unchanged.

The tiny model writes random text, never ``<think>`` on its own: the markers here are spelled out
of its ordinary pieces (its byte tokens cover any text), and a reasoning the prompt opened
(``opened=True``) starts with the first token. Greedy decoding makes every run repeatable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import llama_cpp
import pytest
from test_lifecycle_engine import PROMPT, collect, make_engine, model_info, text_of

from ggufd.config import LlamaSettings
from ggufd.engine import batch as engine_batch
from ggufd.engine.devices import Placement
from ggufd.engine.events import Finished, Generation, TextDelta, TokenLogprob
from ggufd.engine.fake import FakeEngine
from ggufd.engine.llama_log import configure_llama
from ggufd.engine.model import load_model
from ggufd.types import ChatPrompt, GenerationRequest, ModelInfo, ModelSpec, ReasoningSyntax, SamplingParams

GREEDY = SamplingParams(temperature=0)
OPENED = ReasoningSyntax("<think>", "</think>", opened=True)
CLOSE = OPENED.closing_text  # "\n</think>\n\n"
N_CLOSE = 9  # its tokens in the tiny vocabulary: "\n", "<", "/", "th", "in", "k", ">", "\n", "\n"


def thinking(syntax: ReasoningSyntax = OPENED) -> ChatPrompt:
    return ChatPrompt(PROMPT.text + "<think>\n", reasoning=syntax)


def ask(
    max_tokens: int,
    budget: int | None = None,
    syntax: ReasoningSyntax | None = OPENED,
    sampling: SamplingParams = GREEDY,
    **options,
) -> GenerationRequest:
    prompt = thinking(syntax) if syntax is not None else ChatPrompt(PROMPT.text + "<think>\n")
    return GenerationRequest(prompt, sampling, max_tokens=max_tokens, max_reasoning_tokens=budget, **options)


def run_all(tiny_model, *requests: GenerationRequest) -> list[list]:
    """Each request's events, each on a fresh engine: no prompt comes from the cache (a cached
    prefix may change the last bits of the logits, which a seeded draw can notice)."""

    async def main():
        results = []
        for request in requests:
            engine = make_engine(n_ctx=256)
            results.append(await collect(engine.start(model_info(tiny_model), request)))
            await engine.close()
        return results

    return asyncio.run(main())


def tokens_of(events) -> list[str]:
    return [e.token for e in events if isinstance(e, TokenLogprob)]


def finished(events) -> Finished:
    assert isinstance(events[-1], Finished)
    return events[-1]


@pytest.mark.parametrize("budget", [1, 5, 12])
def test_the_first_tokens_are_free_then_the_close_then_the_answer(tiny_model, budget):
    free, limited = run_all(tiny_model, ask(budget, logprobs=0), ask(40, budget, logprobs=0))
    assert "</think>" not in text_of(free)  # the model did not close its reasoning by itself
    text = text_of(limited)
    assert text.startswith(text_of(free) + CLOSE)
    answer = text[len(text_of(free) + CLOSE) :]
    assert answer.strip()  # the generation went on after the close
    pieces = tokens_of(limited)
    assert pieces[:budget] == tokens_of(free)
    assert "".join(pieces[budget : budget + N_CLOSE]) == CLOSE
    assert finished(limited).reason == "length"
    assert finished(limited).completion_tokens == 40 == len(pieces)  # the close counts, max_tokens bounds it all


def test_a_budget_of_0_closes_before_the_first_token(tiny_model):
    (limited,) = run_all(tiny_model, ask(10, 0, logprobs=0))
    assert "".join(tokens_of(limited)[:N_CLOSE]) == CLOSE and text_of(limited).startswith(CLOSE)
    assert text_of(limited)[len(CLOSE) :].strip()
    assert finished(limited).completion_tokens == 10


@pytest.fixture
def runner_model(tiny_model, monkeypatch):
    """The tiny model with its BatchRunner driven directly (events captured, no engine)."""
    configure_llama("error")
    loaded = load_model(str(tiny_model), LlamaSettings(n_ctx=256, n_threads=1, parallel=1), Placement("cpu", 0))
    texts: dict[int, str] = {}

    def deliver(pairs):
        for generation, event in pairs:
            if isinstance(event, TextDelta):
                texts[id(generation)] = texts.get(id(generation), "") + event.text

    monkeypatch.setattr(engine_batch, "deliver_events", deliver)
    loop = asyncio.new_event_loop()

    def run(request: GenerationRequest, tokens: list[int] | None = None) -> tuple[str, Finished]:
        generation = Generation(loop)
        future, _ = loaded.runner.submit(generation, request, tokens)
        loaded.runner.run()
        return texts.pop(id(generation), ""), future.result()  # popped: a later generation may get its id

    yield loaded, run
    loop.close()
    loaded.close()


def test_the_close_is_tokenized_as_written_without_a_space_prefix(runner_model):
    loaded, _ = runner_model
    assert loaded.tokenize(CLOSE, False)[0] == loaded.tokenize(" ", False)[-1]  # SentencePiece adds " " here
    close = loaded.runner._closing_tokens(CLOSE)
    assert b"".join(loaded.token_bytes(t) for t in close) == CLOSE.encode() and len(close) == N_CLOSE
    with_special = loaded.runner._closing_tokens("\n</think><|im_end|>\n")  # and after a special token
    assert b"".join(loaded.token_text(t) for t in with_special) == b"\n</think><|im_end|>\n"


def test_closing_tokens_are_decoded_and_accepted_by_the_penalties(runner_model, monkeypatch):
    loaded, run = runner_model
    accepted: list[int] = []
    original_accept = llama_cpp.llama_sampler_accept

    def accept(sampler, token):
        accepted.append(token)
        return original_accept(sampler, token)

    monkeypatch.setattr(llama_cpp, "llama_sampler_accept", accept)
    close = loaded.runner._closing_tokens(CLOSE)
    penalised = SamplingParams(temperature=0, repeat_penalty=1.3)
    request = GenerationRequest(thinking(), penalised, max_tokens=20, max_reasoning_tokens=3)
    text, end = run(request)
    assert end.completion_tokens == 20 and CLOSE in text
    prompt = loaded.tokenize(request.prompt.text, True)
    cached = loaded.runner._cached[0]
    assert cached[: len(prompt)] == prompt
    assert cached[len(prompt) + 3 : len(prompt) + 3 + len(close)] == close  # decoded after the 3 free tokens
    assert accepted == close  # (sampled tokens are accepted inside llama_sampler_sample)


def test_the_model_answers_after_the_close_as_if_it_had_written_it(runner_model):
    """The close is in the KV cache: the answer is what the model says after those tokens."""
    loaded, run = runner_model
    request = GenerationRequest(thinking(), GREEDY, max_tokens=24, max_reasoning_tokens=5)
    text, _ = run(request)
    answer = text.split(CLOSE, 1)[1]
    n_prompt = len(loaded.tokenize(request.prompt.text, True))
    context = loaded.runner._cached[0][: n_prompt + 5 + N_CLOSE]  # prompt, 5 free tokens, the close
    loaded.runner._forget_all()  # computed afresh: a reused cache may change the logits' last bits
    replay, end = run(GenerationRequest(thinking(), GREEDY, max_tokens=24 - 5 - N_CLOSE), context)
    assert replay == answer and end.completion_tokens == 24 - 5 - N_CLOSE


def test_an_end_of_generation_token_in_the_close_does_not_end_the_answer(tiny_model):
    syntax = ReasoningSyntax("<think>", "</think>", opened=True, close="\n</think><|im_end|>\n")
    (events,) = run_all(tiny_model, ask(25, 2, syntax=syntax, logprobs=0))
    pieces = tokens_of(events)
    assert pieces[2:11] == ["\n", "<", "/", "th", "in", "k", ">", "", "\n"]  # <|im_end|> shows as nothing
    assert text_of(events).startswith("".join(pieces[:2]) + "\n</think>\n")
    assert finished(events).reason == "length" and finished(events).completion_tokens == 25


@pytest.mark.parametrize("stop", ["\n\n", "</think>", "think", "\n", "</"])
def test_a_stop_string_does_not_cut_the_close(tiny_model, stop):
    free, limited, in_prompt = run_all(
        tiny_model,
        ask(3),
        ask(30, 3, stop=(stop,)),
        GenerationRequest(
            ChatPrompt(thinking().text, stop=(stop,), reasoning=OPENED), GREEDY, max_tokens=30, max_reasoning_tokens=3
        ),
    )
    assert stop not in text_of(free)
    for events in limited, in_prompt:
        assert text_of(events).startswith(text_of(free) + CLOSE)
    assert text_of(in_prompt) == text_of(limited) and finished(in_prompt) == finished(limited)


def test_a_stop_string_in_the_answer_after_the_close_still_stops(tiny_model):
    (limited,) = run_all(tiny_model, ask(30, 3))
    reasoning, answer = text_of(limited).split(CLOSE, 1)
    stop = next(answer[i : i + 4] for i in range(len(answer)) if answer[i : i + 4] not in reasoning + CLOSE)
    (stopped,) = run_all(tiny_model, ask(30, 3, stop=(stop,)))
    assert finished(stopped).reason == "stop"
    assert text_of(stopped) == reasoning + CLOSE + answer[: answer.index(stop)]


def test_max_tokens_bounds_the_close_too(tiny_model):
    free, limited = run_all(tiny_model, ask(4, logprobs=0), ask(6, 4, logprobs=0))
    assert tokens_of(limited) == tokens_of(free) + ["\n", "<"]
    assert finished(limited).reason == "length" and finished(limited).completion_tokens == 6


def test_no_budget_with_a_grammar(tiny_model):
    grammar = SamplingParams(temperature=0, grammar='root ::= [a-z ]+ "."')
    plain, budgeted = run_all(tiny_model, ask(20, sampling=grammar), ask(20, 2, sampling=grammar))
    assert text_of(budgeted) == text_of(plain) and "</think>" not in text_of(budgeted)
    assert finished(budgeted) == finished(plain)


@pytest.mark.parametrize(
    "sampling",
    [GREEDY, SamplingParams(temperature=1.0, seed=7), SamplingParams(temperature=0.7, seed=3, repeat_penalty=1.3)],
)
def test_without_a_budget_the_answer_is_unchanged(tiny_model, sampling):
    before, with_syntax, unspent = run_all(
        tiny_model,
        ask(40, syntax=None, sampling=sampling),
        ask(40, sampling=sampling),
        ask(40, 1000, sampling=sampling),  # a budget never reached changes nothing either
    )
    assert text_of(before) and text_of(with_syntax) == text_of(before) == text_of(unspent)
    assert finished(with_syntax) == finished(before) == finished(unspent)


def test_a_budget_without_a_reasoning_syntax_does_nothing(tiny_model):
    before, budgeted = run_all(tiny_model, ask(20, syntax=None), ask(20, 2, syntax=None))
    assert text_of(budgeted) == text_of(before)


def test_not_opened_the_budget_counts_after_the_start_marker(tiny_model):
    """The model's first two tokens as the start marker: the budget counts the tokens after them.
    (Its first token is a lone UTF-8 lead byte: its text, U+FFFD, is only known with the second.)"""
    (free,) = run_all(tiny_model, ask(8, syntax=None, logprobs=0))
    start = "".join(tokens_of(free)[:2])
    assert start.strip()
    syntax = ReasoningSyntax(start, "</think>")
    (limited,) = run_all(tiny_model, ask(30, 3, syntax=syntax, logprobs=0))
    assert tokens_of(limited)[:5] == tokens_of(free)[:5]
    assert text_of(limited).startswith("".join(tokens_of(free)[:5]) + CLOSE)
    (at_once,) = run_all(tiny_model, ask(30, 0, syntax=syntax))
    assert text_of(at_once).startswith(start + CLOSE)
    never = ReasoningSyntax("<think>", "</think>")  # the model never writes it: no budget
    (unlimited,) = run_all(tiny_model, ask(8, 1, syntax=never, logprobs=0))
    assert text_of(unlimited) == text_of(free)


def test_budgeted_and_other_sequences_batched_together(tiny_model):
    requests = [ask(30, 4), ask(30), ask(30, 0, sampling=SamplingParams(temperature=1.0, seed=5))]
    alone = run_all(tiny_model, *requests)

    async def together():
        engine = make_engine(n_ctx=256, parallel=3)
        info = model_info(tiny_model)
        results = await asyncio.gather(*(collect(engine.start(info, r)) for r in requests))
        await engine.close()
        return results

    batched = asyncio.run(together())
    assert [text_of(e) for e in batched] == [text_of(e) for e in alone]
    assert [finished(e) for e in batched] == [finished(e) for e in alone]


# --- the FakeEngine follows the same rules on its scripted pieces


def fake_run(reply: list[str], request: GenerationRequest) -> list:
    engine = FakeEngine(reply=lambda _: reply)
    info = ModelInfo(spec=ModelSpec(id="fake", path=Path("fake.gguf")), metadata=None, family="fake")  # no file read

    async def main():
        return await collect(engine.generate(info, request))

    return asyncio.run(main())


SCRIPT = ["Let", " me", " think", " hard", "</think>", "\n\n", "The", " answer", "."]


def fake_ask(budget, syntax=OPENED, **options) -> GenerationRequest:
    return GenerationRequest(
        thinking(syntax), GREEDY, max_tokens=options.pop("max_tokens", None), max_reasoning_tokens=budget, **options
    )


def pieces_of(events) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


def test_the_fake_engine_closes_the_reasoning_after_the_budget():
    events = fake_run(SCRIPT, fake_ask(2))
    assert pieces_of(events) == ["Let", " me", CLOSE, "\n\n", "The", " answer", "."]
    assert finished(events).completion_tokens == 7


def test_the_fake_engine_with_budget_0_and_text_after_the_end_marker():
    script = ["Hm", " so", "</think>The", " answer"]
    assert pieces_of(fake_run(script, fake_ask(0))) == [CLOSE, "The", " answer"]
    assert pieces_of(fake_run(script, fake_ask(1))) == ["Hm", CLOSE, "The", " answer"]


def test_the_fake_engine_end_marker_split_across_pieces():
    script = ["a", "b", "c", "</th", "ink>", "Answer"]
    assert pieces_of(fake_run(script, fake_ask(1))) == ["a", CLOSE, "Answer"]


def test_the_fake_engine_without_a_spent_budget():
    assert pieces_of(fake_run(SCRIPT, fake_ask(10))) == SCRIPT  # closed by the script before the budget
    assert pieces_of(fake_run(SCRIPT, fake_ask(None))) == SCRIPT
    grammar = GenerationRequest(
        thinking(), SamplingParams(grammar='root ::= "a"'), max_tokens=None, max_reasoning_tokens=1
    )
    assert pieces_of(fake_run(SCRIPT, grammar)) == SCRIPT
    not_opened = ReasoningSyntax("<think>", "</think>")
    assert pieces_of(fake_run(SCRIPT, fake_ask(1, syntax=not_opened))) == SCRIPT  # no start marker: no reasoning
    scripted = ["<think>", "a", "b", "</think>", "Yes"]
    assert pieces_of(fake_run(scripted, fake_ask(1, syntax=not_opened))) == ["<think>", "a", CLOSE, "Yes"]


def test_the_fake_engine_close_is_not_cut_by_a_stop_and_max_tokens_counts_it():
    events = fake_run(SCRIPT, fake_ask(1, stop=("</think>", "\n\n")))
    assert pieces_of(events)[:2] == ["Let", CLOSE]
    assert finished(events).reason == "stop" and "".join(pieces_of(events)) == "Let" + CLOSE  # the script's "\n\n"
    events = fake_run(SCRIPT, fake_ask(2, max_tokens=3))
    assert pieces_of(events) == ["Let", " me", CLOSE] and finished(events).reason == "length"
