"""ggufd.engine.sampling: the numpy greedy pick applies only where it cannot change the choice,
and agrees with llama.cpp's own logit-bias -> greedy sampler chain, token for token."""

from __future__ import annotations

from dataclasses import replace

import llama_cpp
import numpy as np
import pytest

from ggufd.config import LlamaSettings
from ggufd.engine.devices import Placement
from ggufd.engine.llama_log import configure_llama
from ggufd.engine.model import load_model
from ggufd.engine.sampling import GreedyPick, make_sampler
from ggufd.types import SamplingParams


@pytest.mark.parametrize(
    "sampling, applies",
    [
        (SamplingParams(temperature=0), True),
        (
            SamplingParams(temperature=0, logit_bias=((5, 2.0),), seed=3, top_k=4),
            True,
        ),  # top-k/seed do nothing at temperature 0
        (SamplingParams(temperature=0, repeat_penalty=1.0), True),
        (SamplingParams(temperature=0, repeat_penalty=1.1), False),
        (SamplingParams(temperature=0, frequency_penalty=0.5), False),
        (SamplingParams(temperature=0, presence_penalty=-0.5), False),
        (SamplingParams(temperature=0, grammar='root ::= "a"'), False),
        (SamplingParams(temperature=0.2), False),
        (SamplingParams(), False),  # the model default temperature is not 0
    ],
)
def test_the_numpy_pick_applies_only_where_it_cannot_change_the_choice(sampling, applies):
    assert GreedyPick.applies(sampling) is applies


def test_ties_go_to_the_first_token_and_biases_are_float32():
    logits = np.array([0.0, 3.0, 1.0, 3.0], dtype=np.float32)
    assert GreedyPick(()).pick(logits) == 1
    assert GreedyPick(((1, -100.0),)).pick(logits) == 3
    assert GreedyPick(((0, 3.0),)).pick(logits) == 0  # 0 + 3 ties with token 1 and comes first
    assert GreedyPick(((2, 2.0000001),)).pick(logits) == 1  # rounds to 2.0 in float32: 3.0 ties, token 1 first
    assert GreedyPick(((2, 1.5), (2, 1.5))).pick(logits) == 2  # a repeated id adds up, as in llama.cpp's sampler
    assert logits.tolist() == [0.0, 3.0, 1.0, 3.0]  # llama.cpp's buffer is left alone


@pytest.fixture(scope="module")
def loaded(tiny_model):
    configure_llama("error")
    model = load_model(str(tiny_model), LlamaSettings(n_ctx=256, n_threads=1, parallel=1), Placement("cpu", 0))
    yield model
    model.close()


def decode(model, tokens: list[int], start: int) -> None:
    batch = model.batch
    for i, token in enumerate(tokens):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, start + i, 1, i == len(tokens) - 1
        batch.seq_id[i][0] = 0
    batch.n_tokens = len(tokens)
    assert llama_cpp.llama_decode(model.ctx, batch) == 0


@pytest.mark.parametrize("bias", [(), ((2, -100.0),), ((300, 1.5), (301, 0.1), (2, 12.0)), ((17, 100.0),)])
def test_the_numpy_pick_chooses_what_llama_cpps_greedy_chain_chooses(loaded, bias):
    llama_cpp.llama_memory_clear(loaded.memory, True)
    prompt = loaded.tokenize("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", True)
    decode(loaded, prompt, 0)
    sampling = SamplingParams(temperature=0, logit_bias=bias)
    chain, pick = make_sampler(sampling, loaded.n_vocab, loaded.vocab), GreedyPick(bias)
    position, chosen = len(prompt), []
    try:
        for _ in range(40):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(loaded.ctx, -1), shape=(loaded.n_vocab,))
            mine = pick.pick(logits)
            theirs = llama_cpp.llama_sampler_sample(chain, loaded.ctx, -1)
            assert mine == theirs
            chosen.append(mine)
            decode(loaded, [mine], position)
            position += 1
    finally:
        llama_cpp.llama_sampler_free(chain)
    if not bias or bias[0][1] != 100.0:
        assert len(set(chosen)) > 3  # a real walk through the vocabulary, not one token repeated
    else:
        assert set(chosen) == {17}


EXTRA_SAMPLERS = [
    SamplingParams(typical_p=0.9),
    SamplingParams(dry_multiplier=0.8),
    SamplingParams(dry_multiplier=0.8, dry_base=2.0, dry_allowed_length=1, dry_penalty_last_n=16),
    SamplingParams(dry_multiplier=0.8, dry_sequence_breakers=("\n", "x")),
    SamplingParams(dry_multiplier=0.8, dry_sequence_breakers=()),
    SamplingParams(xtc_probability=0.5, xtc_threshold=0.1),
    SamplingParams(top_n_sigma=1.0),
    SamplingParams(mirostat=1),
    SamplingParams(mirostat=2, mirostat_tau=3.0, mirostat_eta=0.2),
]


@pytest.mark.parametrize("extra", EXTRA_SAMPLERS)
def test_an_extra_sampler_turns_the_numpy_pick_off(extra):
    assert not GreedyPick.applies(replace(extra, temperature=0))


def generate(model, sampling: SamplingParams, n: int = 12) -> list[int]:
    llama_cpp.llama_memory_clear(model.memory, True)
    prompt = model.tokenize("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", True)
    decode(model, prompt, 0)
    chain = make_sampler(sampling, model.n_vocab, model.vocab, model.n_ctx)
    position, chosen = len(prompt), []
    try:
        for _ in range(n):
            token = llama_cpp.llama_sampler_sample(chain, model.ctx, -1)
            assert 0 <= token < model.n_vocab
            chosen.append(token)
            decode(model, [token], position)
            position += 1
    finally:
        llama_cpp.llama_sampler_free(chain)
    return chosen


@pytest.mark.parametrize("extra", EXTRA_SAMPLERS)
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_each_extra_sampler_generates_the_same_tokens_for_the_same_seed(loaded, extra, temperature):
    sampling = replace(extra, temperature=temperature, seed=11)
    assert generate(loaded, sampling) == generate(loaded, sampling)


OFF = SamplingParams(
    typical_p=1.0,
    dry_multiplier=0.0,
    dry_base=3.0,
    dry_sequence_breakers=("a",),
    xtc_probability=0.0,
    xtc_threshold=0.3,
    top_n_sigma=-1.0,
    mirostat=0,
    mirostat_tau=2.0,
)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_off_values_generate_what_unset_fields_generate(loaded, temperature):
    plain = SamplingParams(temperature=temperature, seed=5)
    assert generate(loaded, replace(OFF, temperature=temperature, seed=5)) == generate(loaded, plain)
    assert GreedyPick.applies(replace(OFF, temperature=0))
