"""ggufd.engine.llama_backend below the engine: the numpy greedy pick agrees with llama.cpp's own
logit-bias -> greedy sampler chain, token for token; sliding-window caches (swa_full = false)
take a fraction of the memory and reuse a cached prefix only while its window is intact."""

from __future__ import annotations

import numpy as np
import pytest

from ggufd.engine import llama_backend
from ggufd.config import LlamaSettings
from ggufd.engine.devices import Placement
from ggufd.engine.llama_backend import GreedyPick, make_sampler
from ggufd.types import SamplingParams


@pytest.mark.parametrize(
    "sampling, applies",
    [
        (SamplingParams(temperature=0), True),
        (SamplingParams(temperature=0, logit_bias=((5, 2.0),), seed=3, top_k=4), True),  # top-k/seed do nothing at temperature 0
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


def test_the_log_callback_is_in_place_before_llama_cpp_starts_its_backends(monkeypatch):
    """llama_backend_init starts the GPU backends, and that is where llama.cpp says why CUDA cannot
    be used: the callback that records it must already be installed."""
    import llama_cpp

    calls = []
    monkeypatch.setattr(llama_backend, "_keep_alive", [])
    monkeypatch.setattr(llama_cpp, "llama_log_set", lambda callback, data: calls.append("log_set"))
    monkeypatch.setattr(llama_cpp, "llama_backend_init", lambda: calls.append("backend_init"))
    llama_backend.configure_llama("warn")
    assert calls == ["log_set", "backend_init"]


@pytest.fixture(scope="module")
def loaded(tiny_model):
    llama_backend.configure_llama("error")
    model = llama_backend.load_model(str(tiny_model), LlamaSettings(n_ctx=256, n_threads=1, parallel=1), Placement("cpu", 0))
    yield model
    model.close()


def decode(model, tokens: list[int], start: int) -> None:
    import llama_cpp

    batch = model.batch
    for i, token in enumerate(tokens):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, start + i, 1, i == len(tokens) - 1
        batch.seq_id[i][0] = 0
    batch.n_tokens = len(tokens)
    assert llama_cpp.llama_decode(model.ctx, batch) == 0


@pytest.mark.parametrize("bias", [(), ((2, -100.0),), ((300, 1.5), (301, 0.1), (2, 12.0)), ((17, 100.0),)])
def test_the_numpy_pick_chooses_what_llama_cpps_greedy_chain_chooses(loaded, bias):
    import llama_cpp

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


# --- sliding-window caches (gemma-3: a 512-token window in 15 of its 18 layers)


def gemma_engine_run(loaded, prompts: list[str], max_tokens: int) -> list[tuple[str, int]]:
    """Run prompts one after another through the model's batch runner -> (text, prompt tokens decoded)."""
    import asyncio

    import llama_cpp

    from ggufd.engine.events import Generation, TextDelta
    from ggufd.types import ChatPrompt, GenerationRequest

    texts: dict[int, str] = {}
    decoded: list[int] = []
    original_deliver, original_decode = llama_backend.deliver_events, llama_cpp.llama_decode

    def deliver(pairs):
        for generation, event in pairs:
            if isinstance(event, TextDelta):
                texts[id(generation)] = texts.get(id(generation), "") + event.text

    def decode(ctx, batch):
        decoded.append(batch.n_tokens)
        return original_decode(ctx, batch)

    loop = asyncio.new_event_loop()
    llama_backend.deliver_events, llama_cpp.llama_decode = deliver, decode
    results = []
    try:
        for prompt in prompts:
            decoded.clear()
            generation = Generation(loop)
            request = GenerationRequest(ChatPrompt(prompt), SamplingParams(temperature=0, logit_bias=((1, -100.0), (106, -100.0))), max_tokens=max_tokens)
            future, _ = loaded.runner.submit(generation, request)
            loaded.runner.run()
            generated = future.result().completion_tokens
            results.append((texts.get(id(generation), ""), sum(decoded) - (generated - 1)))  # the last token is never decoded
    finally:
        llama_backend.deliver_events, llama_cpp.llama_decode = original_deliver, original_decode
        loop.close()
    return results


def load_gemma(gemma_model, swa_full: bool, parallel: int = 1, n_ctx: int = 1024):
    llama_backend.configure_llama("error")
    settings = LlamaSettings(n_ctx=n_ctx, n_threads=2, parallel=parallel, swa_full=swa_full)
    return llama_backend.load_model(str(gemma_model), settings, Placement("cpu", 0))


def turn(text: str) -> str:
    return f"<start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.gemma
def test_sliding_window_caches_reuse_a_prefix_only_while_its_window_is_intact(gemma_model):
    # ~1,350 tokens: the window cache (512 + a 512-token batch = 1,024 cells) overwrites the oldest positions
    history = turn("Count: " + " ".join(f"item{i}" for i in range(450)))
    loaded = load_gemma(gemma_model, swa_full=False, n_ctx=2048)
    try:
        assert loaded.n_swa == 512
        (answer, first_prefill), = gemma_engine_run(loaded, [history], 40)
        continued = history + answer + "<end_of_turn>\n" + turn("And then?")
        other = turn("Count: " + " ".join(f"item{i}" for i in range(100)) + " STOP")  # shares only ~300 tokens
        (cont_text, cont_prefill), (other_text, other_prefill) = gemma_engine_run(loaded, [continued, other], 16)
    finally:
        loaded.close()
    fresh = load_gemma(gemma_model, swa_full=False, n_ctx=2048)
    try:
        (cold_cont, _), = gemma_engine_run(fresh, [continued], 16)
        (cold_other, _), = gemma_engine_run(fresh, [other], 16)
    finally:
        fresh.close()
    assert cont_text == cold_cont and other_text == cold_other  # reused or not, the answers are right
    assert first_prefill > 1200
    assert cont_prefill < 30  # the window before the new turn is still cached: only the new turn was decoded
    # the shared start (~300 tokens) was overwritten while the rest of the history was processed: decoded again
    assert other_prefill > 300


@pytest.mark.gemma
def test_a_sliding_window_cache_takes_a_fraction_of_the_full_cache(gemma_model):
    def rss_growth(swa_full: bool) -> int:
        before = rss()
        loaded = load_gemma(gemma_model, swa_full=swa_full, parallel=4, n_ctx=4096)
        try:
            return rss() - before
        finally:
            loaded.close()

    def rss() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

    windowed, full = rss_growth(False), rss_growth(True)
    # KV cache of 4 x 4096 positions: 18 layers in full (~300 MB) vs 3 full layers + 15 windows (~90 MB)
    assert full - windowed > 150 * 1024**2, (windowed, full)


# --- load failures: llama.cpp's own reason reaches the log, a path-free one the client


@pytest.mark.parametrize(
    "lines, reason",
    [
        (["ggml_backend_cuda_buffer_type_alloc_buffer: allocating 14336.00 MiB on device 0: cudaMalloc failed: out of memory",
          "alloc_tensor_range: failed to allocate CUDA0 buffer of size 15032385536",
          "llama_model_load: error loading model: unable to allocate CUDA0 buffer"], "not enough memory on its device"),
        (["llama_kv_cache: failed to allocate buffer for kv cache"], "not enough memory on its device"),
        (["ggml_cuda_init: failed to initialize CUDA: CUDA driver version is insufficient for CUDA runtime version"], "NVIDIA driver is older"),
        (["llama_model_load: error loading model: tensor 'output.weight' data is not within the file bounds, model is corrupted or incomplete"],
         "corrupted or incomplete"),
        (["llama_model_load: error loading model: error loading model architecture: unknown model architecture: 'mamba9'"], "does not know the model's architecture"),
        (["llama_model_load_from_file_impl: failed to load model"], None),
        ([], None),
    ],
)
def test_load_failure_reasons(lines, reason):
    found = llama_backend.load_failure_reason(lines)
    assert (found is None) if reason is None else (reason in found and "/" not in found)


def test_a_model_file_llama_cpp_cannot_load_fails_with_its_reason(tiny_model, tmp_path):
    import gguf_factory

    broken = gguf_factory.write_truncated_gguf(tiny_model, tmp_path / "broken.gguf", tiny_model.stat().st_size - 4096)
    llama_backend.configure_llama("error")
    with pytest.raises(llama_backend.LoadError) as failure:
        llama_backend.load_model(str(broken), LlamaSettings(n_ctx=256, n_threads=1, parallel=1), Placement("cpu", 0))
    assert failure.value.reason == "the model file is corrupted or incomplete"
    assert any("not within the file bounds" in line for line in failure.value.details)
    assert "llama.cpp could not load the model file: " in str(failure.value)


def test_the_client_sees_the_reason_of_a_failed_load(tiny_model, tmp_path):
    import asyncio

    import gguf_factory
    from test_engine import make_engine, model_info, request

    from ggufd.errors import ServerError

    broken = gguf_factory.write_truncated_gguf(tiny_model, tmp_path / "broken.gguf", tiny_model.stat().st_size - 4096)

    import dataclasses

    info = model_info(tiny_model, "broken")  # discovered intact; cut short on disk afterwards
    info = dataclasses.replace(info, spec=dataclasses.replace(info.spec, path=broken))

    async def main():
        engine = make_engine()
        try:
            generation = engine.start(info, request(5))
            return await generation.next_events()
        finally:
            await engine.close()

    events = asyncio.run(main())
    error = events[-1].error
    assert isinstance(error, ServerError) and error.status == 500
    assert error.message == "The model 'broken' failed to load: the model file is corrupted or incomplete."


@pytest.mark.gemma
def test_a_conversation_continues_from_the_exact_window_a_squeezed_cache_kept(gemma_model):
    """Another long request squeezes the shared window cache down to what each sequence still needs
    (positions after pos_max + 1 - 512); continuing the conversation at pos_max + 1 needs exactly those."""
    import llama_cpp

    history = turn("Count: " + " ".join(f"item{i}" for i in range(450)))  # ~1,350 tokens
    other = turn("List: " + " ".join(f"thing{i}" for i in range(700)))  # ~2,100 tokens, another conversation
    loaded = load_gemma(gemma_model, swa_full=False, parallel=2, n_ctx=4096)
    try:
        (answer, _), _ = gemma_engine_run(loaded, [history, other], 8)
        seq = next(s for s, cached in loaded.runner._cached.items() if cached and cached[5] == loaded.tokenize(history, True)[5])
        pos_min = llama_cpp.llama_memory_seq_pos_min(loaded.memory, seq)
        pos_max = llama_cpp.llama_memory_seq_pos_max(loaded.memory, seq)
        continued = history + answer + "<end_of_turn>\n" + turn("And then?")
        (_, prefill), = gemma_engine_run(loaded, [continued], 4)
    finally:
        loaded.close()
    assert pos_min == pos_max + 2 - 512  # squeezed to the window: nothing to spare
    assert prefill < 30  # and still enough: only the new turn was decoded
