"""How much memory a model needs, estimated from its GGUF before loading it.

need = weights (the file sizes; all shards of a split model) + KV cache for ``parallel``
sequences of n_ctx tokens (layers x context x KV heads x (key + value head size) x 2 bytes
for f16) + a compute buffer allowance. The estimate decides eviction; it errs on the large side.

Sliding-window layers (gemma 2/3, gpt-oss, cohere2) cache only their window when
``swa_full`` is off: ``window x parallel + n_ubatch`` cells, as llama.cpp allocates them.
"""

from __future__ import annotations

import re
from pathlib import Path

from ggufd.gguf_metadata import GGUFMetadata
from ggufd.sizes import format_bytes, parse_size  # noqa: F401  (re-exported)

SPLIT = re.compile(r"^(?P<name>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
#: compute buffers, output buffer and bookkeeping beyond weights and KV cache
OVERHEAD_BYTES = 64 * 1024**2
F16_BYTES = 2
#: llama.cpp's sliding-window layer pattern per architecture when the GGUF names none
#: (``{arch}.attention.sliding_window_pattern``): of every N layers, the last attends to everything.
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2}


def model_files(path: Path) -> list[Path]:
    """The file and, for a split model, every shard beside it."""
    match = SPLIT.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    return [path.with_name(f"{match['name']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def weights_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in model_files(path) if p.exists())


def kv_cache_bytes(
    metadata: GGUFMetadata, n_ctx: int, parallel: int = 1, *, swa_full: bool = True, n_ubatch: int = 512
) -> int:
    """KV cache of ``parallel`` sequences of ``n_ctx`` tokens (one unified cache, f16)."""
    arch = metadata.architecture or ""
    get = metadata.get
    layers = get(f"{arch}.block_count") or 0
    heads = get(f"{arch}.attention.head_count") or 1
    kv_heads = get(f"{arch}.attention.head_count_kv") or heads
    width = get(f"{arch}.embedding_length") or 0
    key = get(f"{arch}.attention.key_length") or (width // heads if heads else 0)
    value = get(f"{arch}.attention.value_length") or key
    if n_ctx <= 0:
        n_ctx = metadata.context_length or 4096
    cells = -(-n_ctx * max(1, parallel) // 256) * 256  # llama.cpp pads the context to 256 cells
    per_cell = kv_heads * (key + value) * F16_BYTES
    window = get(f"{arch}.attention.sliding_window") or 0
    pattern = SWA_PATTERNS.get(arch)  # only architectures whose pattern counts as below
    named = get(f"{arch}.attention.sliding_window_pattern")
    if pattern and isinstance(named, int) and not isinstance(named, bool) and named > 0:
        pattern = named
    if swa_full or not window or not pattern or not isinstance(window, int):
        return int(layers * cells * per_cell)
    full_layers = layers // pattern
    window_cells = -(-min(cells, window * max(1, parallel) + n_ubatch) // 256) * 256  # llama.cpp pads to 256 cells
    return int((full_layers * cells + (layers - full_layers) * window_cells) * per_cell)


def estimate_model_bytes(
    metadata: GGUFMetadata, path: Path, n_ctx: int, parallel: int = 1, *, swa_full: bool = True, n_ubatch: int = 512
) -> int:
    """Weights + KV cache for ``parallel`` sequences of ``n_ctx`` tokens + a compute allowance."""
    return (
        weights_bytes(path)
        + kv_cache_bytes(metadata, n_ctx, parallel, swa_full=swa_full, n_ubatch=n_ubatch)
        + OVERHEAD_BYTES
    )
