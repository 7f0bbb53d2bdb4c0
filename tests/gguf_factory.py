"""Tiny synthetic GGUF models for the test suite.

Writes a randomly initialised ``llama``-architecture model (a few hundred KB)
with a SentencePiece-style vocabulary, ChatML chat markers and all 256 byte
tokens, so that llama-cpp-python can load it and generate text in
milliseconds.  The output is garbage text, but it is *deterministic* for a
given set of arguments and exercises the awkward parts of a server:
multi-byte UTF-8 characters arriving whole or split over byte tokens, special
tokens, end-of-generation tokens.

This module is imported as a top-level module by ``tests/conftest.py`` (the
tests directory is put on ``sys.path``); it must not import ``ggufd``.

Token ids of the default vocabulary (stable, see ``SPECIAL_TOKENS``)::

    0 <unk>  1 <s> (BOS)  2 </s> (EOS)  3 <|im_start|>  4 <|im_end|> (EOT)
    5..260   <0x00>..<0xFF> byte tokens
    261..    normal pieces

Logit shaping: dimension 0 of the residual stream is a constant "bias"
feature (constant in every token embedding; no layer writes to it), which
lets ``output.weight`` add a fixed per-token offset to the logits.  By default
``<unk>``, ``<s>`` and ``<|im_start|>`` are suppressed and the EOG tokens
``</s>``/``<|im_end|>`` get ``eog_logit_bias`` (default -12: the model
practically never stops on its own, generations run to ``max_tokens``; use
e.g. ``eog_logit_bias=+12`` for a model that stops at once, ~0 for one that
stops at random points).

CLI: ``python tests/gguf_factory.py OUT.gguf`` writes the default model.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Iterable, Sequence

import gguf
import numpy as np

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
    "IM_START_ID",
    "IM_END_ID",
    "BYTE_TOKEN_OFFSET",
    "build_vocab",
    "write_tiny_llama",
    "write_not_gguf",
    "write_truncated_gguf",
]

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

UNK_ID, BOS_ID, EOS_ID, IM_START_ID, IM_END_ID = 0, 1, 2, 3, 4
SPECIAL_TOKENS = {
    "<unk>": UNK_ID,
    "<s>": BOS_ID,
    "</s>": EOS_ID,
    "<|im_start|>": IM_START_ID,
    "<|im_end|>": IM_END_ID,
}
BYTE_TOKEN_OFFSET = 5  # <0xNN> has id BYTE_TOKEN_OFFSET + NN

SPIECE_UNDERLINE = "\u2581"  # "▁"

_COMMON_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "I",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "hot",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "time",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "write",
    "would",
    "like",
    "so",
    "these",
    "her",
    "long",
    "make",
    "thing",
    "see",
    "him",
    "two",
    "has",
    "look",
    "more",
    "day",
    "could",
    "go",
    "come",
    "did",
    "number",
    "sound",
    "no",
    "most",
    "people",
    "my",
    "over",
    "know",
    "water",
    "than",
    "call",
    "first",
    "who",
    "may",
    "down",
    "side",
    "been",
    "now",
    "find",
    "any",
    "new",
    "work",
    "part",
    "take",
    "get",
    "place",
    "made",
    "live",
    "where",
    "after",
    "back",
    "little",
    "only",
    "round",
    "man",
    "year",
    "came",
    "show",
    "every",
    "good",
    "me",
    "give",
    "our",
    "under",
    "name",
    "very",
    "through",
    "just",
    "form",
    "sentence",
    "great",
    "think",
    "say",
    "help",
    "low",
    "line",
    "differ",
    "turn",
    "cause",
    "much",
    "mean",
    "before",
    "move",
    "right",
    "boy",
    "old",
    "too",
    "same",
    "tell",
    "does",
    "set",
    "three",
    "want",
    "air",
    "well",
    "also",
    "play",
    "small",
    "end",
    "put",
    "home",
    "read",
    "hand",
    "port",
    "large",
    "spell",
    "add",
    "even",
    "land",
    "here",
    "must",
    "big",
    "high",
    "such",
    "follow",
    "act",
    "why",
    "ask",
    "men",
    "change",
    "went",
    "light",
    "kind",
    "off",
    "need",
    "house",
    "picture",
    "try",
    "us",
    "again",
    "animal",
    "point",
    "mother",
    "world",
    "near",
    "build",
    "self",
    "earth",
    "father",
    "head",
    "stand",
    "own",
    "page",
    "should",
    "country",
    "found",
    "answer",
    "school",
    "grow",
    "study",
    "still",
    "learn",
    "plant",
    "cover",
    "food",
    "sun",
    "four",
    "between",
    "state",
    "keep",
    "eye",
    "never",
    "last",
    "let",
    "thought",
    "city",
    "tree",
    "cross",
    "farm",
    "hard",
    "start",
    "might",
    "story",
    "saw",
    "far",
    "sea",
    "draw",
    "left",
    "late",
    "run",
    "don't",
    "while",
    "press",
    "close",
    "night",
    "real",
    "life",
    "few",
    "north",
    "hello",
    "Hello",
    "The",
    "It",
    "This",
    "What",
    "Yes",
    "No",
    "OK",
    "assistant",
    "user",
    "system",
    "model",
]

_SUBWORDS = [
    "ing",
    "ed",
    "er",
    "es",
    "ly",
    "tion",
    "s",
    "re",
    "un",
    "able",
    "ment",
    "ness",
    "th",
    "he",
    "in",
    "an",
    "on",
    "at",
    "en",
    "nd",
    "st",
]

# Multi-byte UTF-8 pieces: some are whole tokens, others (not listed here) can
# only be produced through byte tokens.
_MULTIBYTE_PIECES = [
    "é",
    "è",
    "ü",
    "ö",
    "ä",
    "ß",
    "ñ",
    "ç",
    "€",
    "日",
    "本",
    "日本",
    "語",
    "▁café",
    "▁über",
    "▁€",
    "▁日本",
    "▁naïve",
    "Ω",
    "λ",
    "→",
    "😀",
    "▁😀",
]

_PUNCT = list(".,!?;:'\"-()[]{}/*+=<>_#@&%$")


def _word_chain(word: str) -> list[str]:
    """All prefixes of ``▁word`` (SentencePiece merges need each step)."""
    piece = SPIECE_UNDERLINE + word
    return [piece[:i] for i in range(2, len(piece) + 1)]


def build_vocab(
    extra_words: Iterable[str] | None = None, size: int | None = None
) -> tuple[list[str], list[float], list[int]]:
    """Return ``(tokens, scores, token_types)`` of the synthetic vocabulary; ``size`` pads it
    with filler pieces (``▁t12345``) to a realistic vocabulary size."""
    tokens: list[str] = list(SPECIAL_TOKENS)
    types: list[int] = [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ]
    scores: list[float] = [0.0] * len(tokens)

    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
        scores.append(0.0)

    normal: dict[str, None] = {}

    def add(piece: str) -> None:
        if piece and piece not in normal and piece not in SPECIAL_TOKENS:
            normal[piece] = None

    add(SPIECE_UNDERLINE)
    for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
        add(c)
    for c in _PUNCT:
        add(c)
    for sw in _SUBWORDS:
        add(sw)
    for piece in _MULTIBYTE_PIECES:
        add(piece)
    for w in list(_COMMON_WORDS) + list(extra_words or ()):
        for p in _word_chain(w):
            add(p)

    filler = 0
    while size is not None and len(tokens) + len(normal) < size:
        add(f"{SPIECE_UNDERLINE}t{filler}")
        filler += 1

    for rank, piece in enumerate(normal):
        tokens.append(piece)
        types.append(gguf.TokenType.NORMAL)
        # Higher score = merged earlier by the SPM tokenizer.  Longer pieces
        # first so that whole words win over partial merges.
        scores.append(float(len(piece)) - rank * 1e-4)

    return tokens, scores, [int(t) for t in types]


def write_tiny_llama(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    context_length: int = 2048,
    chat_template: str | None = DEFAULT_CHAT_TEMPLATE,
    name: str = "tiny-llama",
    extra_words: Sequence[str] | None = None,
    eog_logit_bias: float = -12.0,
    logit_scale: float = 0.25,
    dtype: str = "f16",
    vocab_size: int | None = None,
) -> pathlib.Path:
    """Write a tiny random llama GGUF to ``path`` and return it as a Path.

    Same arguments -> byte-identical file.  ``dtype`` is ``"f32"`` or
    ``"f16"`` (matrices only; norms stay F32).  ``logit_scale`` controls
    how peaked the next-token distribution is (std of the logits is about
    ``logit_scale * sqrt(n_embd)``).
    """
    path = pathlib.Path(path)
    if n_embd % n_head:
        raise ValueError("n_embd must be divisible by n_head")
    if n_head % n_head_kv:
        raise ValueError("n_head must be divisible by n_head_kv")
    if dtype not in ("f32", "f16"):
        raise ValueError("dtype must be 'f32' or 'f16'")
    mat_dtype = np.float32 if dtype == "f32" else np.float16

    head_dim = n_embd // n_head
    n_embd_kv = head_dim * n_head_kv
    tokens, scores, types = build_vocab(extra_words, vocab_size)
    n_vocab = len(tokens)

    rng = np.random.default_rng(seed)

    def rand(shape: tuple[int, ...], std: float) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def mat(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.astype(mat_dtype))

    # --- token embeddings: dim 0 is a constant bias feature ------------------
    bias_value = 2.0
    tok_embd = rand((n_vocab, n_embd), 1.0)
    tok_embd[:, 0] = bias_value

    # --- output head -----------------------------------------------------------
    output = rand((n_vocab, n_embd), logit_scale)
    # After the final RMS norm, dim 0 is roughly bias_value / rms(h); divide by
    # an estimate so that column 0 translates to about "logit offset" units.
    col0 = np.zeros(n_vocab, dtype=np.float32)
    suppress = -12.0
    col0[UNK_ID] = suppress
    col0[BOS_ID] = suppress
    col0[IM_START_ID] = suppress
    col0[EOS_ID] = eog_logit_bias
    col0[IM_END_ID] = eog_logit_bias
    output[:, 0] = col0 / bias_value
    # EOG / suppressed tokens: no random component, so the offset dominates.
    for tid in (UNK_ID, BOS_ID, EOS_ID, IM_START_ID, IM_END_ID):
        output[tid, 1:] = 0.0

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)

    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(UNK_ID)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_eot_token_id(IM_END_ID)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    w.add_tensor("token_embd.weight", mat(tok_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", mat(output))

    proj_std = 1.0 / np.sqrt(n_embd)
    for i in range(n_layer):
        p = f"blk.{i}."
        attn_out = rand((n_embd, n_embd), 0.5 / np.sqrt(n_embd))
        ffn_down = rand((n_embd, n_ff), 0.5 / np.sqrt(n_ff))
        # Nothing writes into the bias dimension.
        attn_out[0, :] = 0.0
        ffn_down[0, :] = 0.0
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", mat(rand((n_embd, n_embd), proj_std)))
        w.add_tensor(p + "attn_k.weight", mat(rand((n_embd_kv, n_embd), proj_std)))
        w.add_tensor(p + "attn_v.weight", mat(rand((n_embd_kv, n_embd), proj_std)))
        w.add_tensor(p + "attn_output.weight", mat(attn_out))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", mat(rand((n_ff, n_embd), proj_std)))
        w.add_tensor(p + "ffn_up.weight", mat(rand((n_ff, n_embd), proj_std)))
        w.add_tensor(p + "ffn_down.weight", mat(ffn_down))

    path.parent.mkdir(parents=True, exist_ok=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


#: a llama-style 1.1B model (TinyLlama's shape): speed does not depend on the weights' values
SYNTHETIC_1B = dict(n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192, vocab_size=32000, context_length=4096)


def write_synthetic_llama(path: str | os.PathLike[str], **shape) -> pathlib.Path:
    """A random-weight llama GGUF of realistic shape for benchmarks (F16, ~2.2 GB for the default
    1.1B shape). Generation length is fixed with ``max_tokens`` and the end-of-generation tokens
    suppressed through ``logit_bias`` (ids EOS_ID and IM_END_ID)."""
    return write_tiny_llama(path, **{**SYNTHETIC_1B, "name": "synthetic-llama-1.1b", "eog_logit_bias": 0.0, **shape})


def write_not_gguf(path: str | os.PathLike[str], n_bytes: int = 4096, *, seed: int = 0) -> pathlib.Path:
    """Write ``n_bytes`` of random bytes (not starting with the GGUF magic)."""
    path = pathlib.Path(path)
    data = bytearray(np.random.default_rng(seed).bytes(n_bytes))
    if data[:4] == b"GGUF":
        data[0] ^= 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def write_truncated_gguf(src: str | os.PathLike[str], dst: str | os.PathLike[str], n_bytes: int) -> pathlib.Path:
    """Copy the first ``n_bytes`` of ``src`` (a valid GGUF) to ``dst``."""
    dst = pathlib.Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        remaining = n_bytes
        while remaining > 0:
            chunk = fin.read(min(remaining, 1 << 20))
            if not chunk:
                break
            fout.write(chunk)
            remaining -= len(chunk)
    return dst


def _main(argv: list[str]) -> int:
    """python tests/gguf_factory.py OUT.gguf [--synthetic-1b] [--n-layer N] [--n-embd N] ..."""
    import argparse

    parser = argparse.ArgumentParser(prog="gguf_factory", description="Write a synthetic GGUF model.")
    parser.add_argument("out")
    parser.add_argument("--synthetic-1b", action="store_true", help="a llama-style 1.1B model (F16, ~2.2 GB)")
    for key in ("n_embd", "n_layer", "n_head", "n_head_kv", "n_ff", "vocab_size", "context_length"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, dest=key)
    args = parser.parse_args(argv)
    shape = {k: v for k, v in vars(args).items() if k not in ("out", "synthetic_1b") and v is not None}
    out = write_synthetic_llama(args.out, **shape) if args.synthetic_1b else write_tiny_llama(args.out, **shape)
    print(f"{out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
