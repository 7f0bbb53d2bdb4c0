"""Tests for the tiny synthetic GGUF model generator (tests/gguf_factory.py)."""

from __future__ import annotations

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gguf_factory as gf  # noqa: E402

llama_cpp = pytest.importorskip("llama_cpp")
Llama = llama_cpp.Llama


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return gf.write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def llm(model_path):
    m = Llama(str(model_path), n_ctx=2048, verbose=False)
    yield m
    m.close()


def _generate(llm, prompt: bytes, n: int, *, temp: float, seed: int = 0) -> list[int]:
    llm.reset()
    llm.set_seed(seed)
    out: list[int] = []
    for tok in llm.generate(
        llm.tokenize(prompt),
        temp=temp,
        top_k=0,
        top_p=1.0,
        min_p=0.0,
        repeat_penalty=1.0,
    ):
        out.append(tok)
        if len(out) >= n:
            break
    return out


def _byte_of(tok: int) -> int | None:
    b = tok - gf.BYTE_TOKEN_OFFSET
    return b if 0 <= b < 256 else None


def test_file_is_small(model_path):
    assert model_path.stat().st_size < 1_000_000


def test_same_seed_same_bytes(tmp_path, model_path):
    again = gf.write_tiny_llama(tmp_path / "again.gguf")
    assert again.read_bytes() == model_path.read_bytes()
    other = gf.write_tiny_llama(tmp_path / "other.gguf", seed=1)
    assert other.read_bytes() != model_path.read_bytes()
    assert other.stat().st_size == model_path.stat().st_size


def test_metadata(llm):
    md = llm.metadata
    assert md["general.architecture"] == "llama"
    assert md["general.name"] == "tiny-llama"
    assert md["tokenizer.ggml.model"] == "llama"
    assert md["tokenizer.chat_template"] == gf.DEFAULT_CHAT_TEMPLATE
    assert llm.n_ctx() == 2048
    assert llm._model.n_ctx_train() == 2048
    assert llm.n_vocab() == len(gf.build_vocab()[0])
    assert llm.token_bos() == gf.BOS_ID
    assert llm.token_eos() == gf.EOS_ID
    assert llm._model.token_eot() == gf.IM_END_ID


def test_no_chat_template(tmp_path):
    p = gf.write_tiny_llama(tmp_path / "notpl.gguf", chat_template=None, name="x")
    m = Llama(str(p), n_ctx=256, verbose=False)
    try:
        assert "tokenizer.chat_template" not in m.metadata
        assert m.metadata["general.name"] == "x"
    finally:
        m.close()


def test_chat_markers_are_single_special_tokens(llm):
    toks = llm.tokenize(b"<|im_start|>user\nhello<|im_end|>", add_bos=False, special=True)
    assert toks[0] == gf.IM_START_ID
    assert toks[-1] == gf.IM_END_ID
    assert toks.count(gf.IM_START_ID) == 1 and toks.count(gf.IM_END_ID) == 1
    # Without special=True the markers are plain text, not control tokens.
    plain = llm.tokenize(b"<|im_start|>user\nhello<|im_end|>", add_bos=False, special=False)
    assert gf.IM_START_ID not in plain and gf.IM_END_ID not in plain


def test_bos_and_eog(llm):
    assert llm.tokenize(b"hello", add_bos=True)[0] == gf.BOS_ID
    assert gf.BOS_ID not in llm.tokenize(b"hello", add_bos=False)
    assert llm._model.add_bos_token() is True
    vocab = llm._model.vocab
    eog = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    assert eog == [gf.EOS_ID, gf.IM_END_ID]


def test_multibyte_round_trip(llm):
    text = "hello world café über 日本 € naïve 😀 ✓".encode()
    toks = llm.tokenize(text, add_bos=True)
    assert llm.detokenize(toks) == text
    # "✓" is not in the vocabulary: it must fall back to 3 byte tokens.
    tail = [_byte_of(t) for t in toks[-3:]]
    assert bytes(tail) == "✓".encode()
    # Whole multi-byte pieces exist too.
    pieces = {llm._model.token_to_piece(t).rstrip(b"\0") for t in toks}
    assert " 日本".encode() in pieces or "日本".encode() in pieces


def test_greedy_is_deterministic_and_fast(llm):
    t0 = time.perf_counter()
    a = _generate(llm, b"hello world", 50, temp=0.0)
    dt = time.perf_counter() - t0
    b = _generate(llm, b"hello world", 50, temp=0.0)
    assert len(a) == 50
    assert a == b
    assert dt < 1.0, f"50 greedy tokens took {dt:.3f}s"


def test_greedy_is_deterministic_across_instances(model_path, llm):
    other = Llama(str(model_path), n_ctx=2048, verbose=False)
    try:
        assert _generate(other, b"hello", 50, temp=0.0) == _generate(llm, b"hello", 50, temp=0.0)
    finally:
        other.close()


def test_sampling_emits_split_multibyte_bytes(llm):
    # With seed 0 and temperature 1.0 about a quarter of the sampled tokens are
    # byte tokens (256 of ~1000 vocabulary entries, fairly flat logits), so
    # 300 tokens always contain bytes >= 0x80, i.e. partial UTF-8 sequences.
    a = _generate(llm, b"hello world", 300, temp=1.0, seed=0)
    b = _generate(llm, b"hello world", 300, temp=1.0, seed=0)
    assert a == b
    assert len(a) == 300  # EOG tokens are suppressed by default
    high = [t for t in a if (_byte_of(t) or 0) >= 0x80]
    assert high, "expected at least one non-ASCII byte token"
    # A byte token detokenizes to exactly one raw (possibly invalid UTF-8) byte.
    assert llm.detokenize([high[0]]) == bytes([_byte_of(high[0])])
    data = llm.detokenize(a)
    assert any(c >= 0x80 for c in data)
    c = _generate(llm, b"hello world", 300, temp=1.0, seed=1)
    assert c != a


def test_eog_logit_bias_makes_model_stop(tmp_path):
    p = gf.write_tiny_llama(tmp_path / "stop.gguf", eog_logit_bias=12.0)
    m = Llama(str(p), n_ctx=256, verbose=False)
    try:
        r = m.create_chat_completion([{"role": "user", "content": "hello"}], max_tokens=20, temperature=0.0)
        assert r["choices"][0]["finish_reason"] == "stop"
        assert r["usage"]["completion_tokens"] == 0
    finally:
        m.close()


def test_chat_completion_runs(llm):
    llm.reset()
    r = llm.create_chat_completion([{"role": "user", "content": "hello"}], max_tokens=16, temperature=0.0)
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["usage"]["completion_tokens"] == 16


def test_f32_variant(tmp_path):
    p = gf.write_tiny_llama(tmp_path / "f32.gguf", dtype="f32", n_layer=1)
    m = Llama(str(p), n_ctx=256, verbose=False)
    try:
        assert len(_generate(m, b"hello", 10, temp=0.0)) == 10
    finally:
        m.close()


def test_invalid_files_fail_to_load(tmp_path, model_path):
    bad = gf.write_not_gguf(tmp_path / "bad.gguf")
    assert bad.read_bytes()[:4] != b"GGUF"
    trunc = gf.write_truncated_gguf(model_path, tmp_path / "trunc.gguf", 100_000)
    assert trunc.stat().st_size == 100_000
    assert trunc.read_bytes() == model_path.read_bytes()[:100_000]
    for p in (bad, trunc):
        with pytest.raises(ValueError):
            Llama(str(p), n_ctx=256, verbose=False)


def test_cli(tmp_path, model_path):
    import subprocess

    out = tmp_path / "cli.gguf"
    subprocess.run([sys.executable, gf.__file__, str(out)], check=True, capture_output=True)
    assert out.read_bytes() == model_path.read_bytes()


def test_synthetic_model_of_realistic_shape_is_loadable(tmp_path):
    """A scaled-down synthetic model (same code path as the 1.1B benchmark model)."""
    import llama_cpp
    from gguf_factory import EOS_ID, IM_END_ID, write_synthetic_llama

    path = write_synthetic_llama(
        tmp_path / "syn.gguf", n_embd=128, n_layer=2, n_head=4, n_head_kv=2, n_ff=256, vocab_size=5000
    )
    llm = llama_cpp.Llama(str(path), n_ctx=256, verbose=False, logits_all=False)
    assert llm.n_vocab() == 5000
    tokens = llm.tokenize(b"hello", add_bos=True)
    out = llm.create_completion("hello", max_tokens=40, temperature=0, logit_bias={EOS_ID: -100.0, IM_END_ID: -100.0})
    assert out["usage"]["completion_tokens"] == 40 and tokens
