"""Memory estimates from GGUF metadata, sizes in the config."""

from __future__ import annotations

import pytest

from ggufd.engine.memory import (
    OVERHEAD_BYTES,
    estimate_model_bytes,
    kv_cache_bytes,
    model_files,
    parse_size,
    weights_bytes,
)
from ggufd.gguf_metadata import read_metadata


@pytest.mark.parametrize(
    "text, expected",
    [
        ("512MiB", 512 * 1024**2),
        ("20GiB", 20 * 1024**3),
        ("1.5 GB", 1_500_000_000),
        ("4096", 4096),
        (123, 123),
        ("2g", 2 * 1000**3),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1GiB", "5 parsecs"])
def test_parse_size_rejects_nonsense(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_kv_cache_follows_the_metadata(tiny_model):
    metadata = read_metadata(tiny_model)
    arch = metadata.architecture
    layers = metadata.get(f"{arch}.block_count")
    kv_heads = metadata.get(f"{arch}.attention.head_count_kv")
    head = metadata.get(f"{arch}.embedding_length") // metadata.get(f"{arch}.attention.head_count")
    assert kv_cache_bytes(metadata, 1024) == layers * 1024 * kv_heads * 2 * head * 2
    assert kv_cache_bytes(metadata, 1000) == kv_cache_bytes(metadata, 1024)  # llama.cpp pads the context to 256 cells
    assert kv_cache_bytes(metadata, 2048) == 2 * kv_cache_bytes(metadata, 1024)
    assert (
        estimate_model_bytes(metadata, tiny_model, 1024)
        == tiny_model.stat().st_size + kv_cache_bytes(metadata, 1024) + OVERHEAD_BYTES
    )


def test_gemma_estimate_uses_its_head_sizes(gemma_model):
    metadata = read_metadata(gemma_model)
    # 18 layers x 1 KV head x (256 + 256) x 2 bytes per cell
    assert kv_cache_bytes(metadata, 4096) == 18 * 4096 * 1 * 512 * 2
    assert kv_cache_bytes(metadata, 4096, 4) == 4 * kv_cache_bytes(metadata, 4096) == 288 * 1024**2


def test_gemma_sliding_window_layers_count_only_their_window(gemma_model):
    metadata = read_metadata(gemma_model)
    # what llama.cpp 0.3.36 allocates at 4 x 4096 (its log): a 16384-cell cache for 3 layers (48 MiB) and a
    # 2560-cell one (512 x 4 + 512) for the 15 sliding-window layers (37.5 MiB)
    assert kv_cache_bytes(metadata, 4096, 4, swa_full=False, n_ubatch=512) == int(85.5 * 1024**2)
    assert kv_cache_bytes(metadata, 512, 1, swa_full=False) == kv_cache_bytes(
        metadata, 512, 1
    )  # the window spans it all
    weights = gemma_model.stat().st_size
    assert (
        estimate_model_bytes(metadata, gemma_model, 4096, 4, swa_full=False)
        == weights + int(85.5 * 1024**2) + OVERHEAD_BYTES
    )


def test_models_without_sliding_windows_are_unaffected(tiny_model):
    metadata = read_metadata(tiny_model)
    assert (
        kv_cache_bytes(metadata, 1024, 4, swa_full=False)
        == kv_cache_bytes(metadata, 1024, 4)
        == 4 * kv_cache_bytes(metadata, 1024)
    )


def test_split_models_count_every_shard(tmp_path):
    for i in (1, 2, 3):
        (tmp_path / f"big-0000{i}-of-00003.gguf").write_bytes(b"x" * (100 * i))
    first = tmp_path / "big-00001-of-00003.gguf"
    assert len(model_files(first)) == 3
    assert weights_bytes(first) == 600
