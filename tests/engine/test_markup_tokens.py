"""Markup tokens: a control token the family names (``markup_tokens``) is rendered as its text in
the generated text; other control tokens stay invisible, as llama.cpp renders them."""

from __future__ import annotations

import asyncio

import gguf_factory
from test_lifecycle_engine import PROMPT, collect, make_engine, model_info, text_of

from ggufd.types import GenerationRequest, SamplingParams

# <|im_start|> is a control token of the tiny vocabulary; a large bias makes the model write it
FORCED = SamplingParams(temperature=0, logit_bias=((gguf_factory.IM_START_ID, 100.0),))


def run_one(tiny_model, request: GenerationRequest) -> list:
    async def main():
        engine = make_engine(n_ctx=256)
        try:
            return await collect(engine.start(model_info(tiny_model), request))
        finally:
            await engine.close()

    return asyncio.run(main())


def test_a_named_control_token_is_rendered_as_its_text(tiny_model):
    plain = run_one(tiny_model, GenerationRequest(PROMPT, FORCED, max_tokens=3))
    named = run_one(tiny_model, GenerationRequest(PROMPT, FORCED, max_tokens=3, markup=("<|im_start|>", "[NONE]")))
    assert text_of(plain) == ""  # a control token renders as nothing
    assert text_of(named) == "<|im_start|>" * 3
    assert named[-1].completion_tokens == plain[-1].completion_tokens == 3
