"""Fast, defensive reader for the metadata of GGUF model files.

Pure standard library (no numpy, no ``gguf`` package, no llama_cpp).

``read_metadata(path)`` reads the key/value section of a GGUF v2/v3
(little-endian) file.  Scalar values are decoded; arrays are *skipped* by
their declared length and only their element counts are kept, which makes
the read fast even for models with very large vocabularies (strings in
arrays are walked by their length prefixes only, no per-element objects).
The tensor-info section is parsed as well so that a file whose tensor data
is cut short is reported as truncated.

Every file is treated as untrusted: each length and count is checked against
the bytes left in the file before it is used, counts and lengths have sane
upper limits, the total number of array elements that have to be walked is
bounded, and the file is read in windows of at most ``_CHUNK`` bytes (or one
string value, at most ``MAX_STRING_LENGTH`` bytes).  Whatever is wrong with
the file's *content* -- empty, not GGUF, unsupported version, big-endian,
truncated anywhere, crafted counts/lengths, unknown types -- is reported as a
single :class:`GGUFFormatError` whose message says why (it never contains the
file's path; the caller adds that).

Errors of the *file system* are not format errors: a missing file, a
directory (``IsADirectoryError``) or an unreadable file (``PermissionError``)
raise ``OSError`` as usual, and the caller reports those.  Non-regular files
(FIFOs, devices, sockets) are opened non-blocking and rejected with
:class:`GGUFFormatError` without reading from them.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["GGUFFormatError", "GGUFMetadata", "read_metadata"]

# --------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_KV_COUNT = 1_000_000
MAX_TENSOR_COUNT = 1 << 20
MAX_KEY_LENGTH = 64 * 1024  # also used for tensor names
MAX_STRING_LENGTH = 16 * 1024 * 1024  # one string value or array element
MAX_ARRAY_DEPTH = 4  # arrays of arrays of ... at most this deep
MAX_WALKED_ELEMENTS = 1 << 24  # string/array elements walked in one file
MAX_TENSOR_DIMS = 4  # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32
_CHUNK = 1 << 20  # read window

# --------------------------------------------------------------------------
# Format constants
# --------------------------------------------------------------------------

_T_UINT8, _T_INT8, _T_UINT16, _T_INT16, _T_UINT32, _T_INT32 = 0, 1, 2, 3, 4, 5
_T_FLOAT32, _T_BOOL, _T_STRING, _T_ARRAY = 6, 7, 8, 9
_T_UINT64, _T_INT64, _T_FLOAT64 = 10, 11, 12

# value type -> (unpack_from, size)
_SCALARS: dict[int, tuple[Callable[[bytes, int], tuple[Any, ...]], int]] = {
    t: (struct.Struct(fmt).unpack_from, struct.calcsize(fmt))
    for t, fmt in (
        (_T_UINT8, "<B"),
        (_T_INT8, "<b"),
        (_T_UINT16, "<H"),
        (_T_INT16, "<h"),
        (_T_UINT32, "<I"),
        (_T_INT32, "<i"),
        (_T_FLOAT32, "<f"),
        (_T_BOOL, "<B"),
        (_T_UINT64, "<Q"),
        (_T_INT64, "<q"),
        (_T_FLOAT64, "<d"),
    )
}
_FIXED_SIZES: dict[int, int] = {t: size for t, (_, size) in _SCALARS.items()}

_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from

# ggml tensor type -> (elements per block, bytes per block).  Types missing
# here (newer than this table) are accepted, but their data size is unknown,
# so only their start offset is checked against the file size.
_GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
}

_TOKENS_KEY = "tokenizer.ggml.tokens"

ScalarValue = str | int | float | bool


class GGUFFormatError(ValueError):
    """A file is not a readable GGUF; the message says why (without the full path)."""


@dataclass(frozen=True)
class GGUFMetadata:
    """Metadata of one GGUF file.

    ``values`` holds every scalar key (strings decoded as UTF-8 with
    ``errors='replace'``); ``array_lengths`` maps every array key to its
    element count (the arrays themselves are not read).
    """

    version: int
    tensor_count: int
    values: Mapping[str, ScalarValue]
    array_lengths: Mapping[str, int]
    bos_token: str | None
    eos_token: str | None

    def _str(self, key: str) -> str | None:
        v = self.values.get(key)
        return v if isinstance(v, str) else None

    @property
    def architecture(self) -> str | None:
        return self._str("general.architecture")

    @property
    def name(self) -> str | None:
        return self._str("general.name")

    @property
    def chat_template(self) -> str | None:
        return self._str("tokenizer.chat_template")

    @property
    def context_length(self) -> int | None:
        arch = self.architecture
        if arch is None:
            return None
        v = self.values.get(f"{arch}.context_length")
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        return None

    def get(self, key: str, default=None):
        """The scalar value of ``key`` (arrays are not values), or ``default``."""
        return self.values.get(key, default)


def _q(name: str) -> str:
    """Quote a key/tensor name for an error message, shortened if long."""
    if len(name) > 80:
        return repr(name[:80]) + "..."
    return repr(name)


class _Reader:
    """Bounds-checked sequential reader over a window of the file."""

    __slots__ = ("_f", "size", "pos", "_buf", "_start", "what", "budget")

    def __init__(self, f, size: int) -> None:
        self._f = f
        self.size = size
        self.pos = 0
        self._buf = b""
        self._start = 0  # file offset of _buf[0]
        self.what = "the header"
        self.budget = MAX_WALKED_ELEMENTS

    # -- low level ---------------------------------------------------------

    def truncated(self, detail: str = "") -> GGUFFormatError:
        return GGUFFormatError(f"truncated while reading {self.what}{detail}")

    def _fill(self, pos: int, n: int) -> bytes:
        want = min(max(n, _CHUNK), self.size - pos)
        self._f.seek(pos)
        parts: list[bytes] = []
        got = 0
        while got < want:
            part = self._f.read(want - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if got < n:
            raise self.truncated(" (the file shrank while it was read)")
        self._buf = data
        self._start = pos
        return data

    def view(self, pos: int, n: int) -> tuple[bytes, int]:
        """(buf, off) with file bytes [pos, pos+n) at buf[off:off+n].

        The caller has checked that pos+n <= size.
        """
        rel = pos - self._start
        buf = self._buf
        if rel >= 0 and rel + n <= len(buf):
            return buf, rel
        return self._fill(pos, n), 0

    def take(self, n: int) -> tuple[bytes, int]:
        pos = self.pos
        if n > self.size - pos:
            raise self.truncated()
        self.pos = pos + n
        return self.view(pos, n)

    def skip(self, n: int) -> None:
        if n > self.size - self.pos:
            raise self.truncated()
        self.pos += n

    def u32(self) -> int:
        buf, off = self.take(4)
        return _U32(buf, off)[0]

    def u64(self) -> int:
        buf, off = self.take(8)
        return _U64(buf, off)[0]

    def text(self, n: int) -> str:
        buf, off = self.take(n)
        return str(buf[off : off + n], "utf-8", "replace")

    def string(self, limit: int, kind: str) -> str:
        n = self.u64()
        if n > limit:
            raise GGUFFormatError(f"{kind} is {n} bytes long (limit {limit})")
        return self.text(n)

    # -- arrays ------------------------------------------------------------

    def spend(self, count: int) -> None:
        self.budget -= count
        if self.budget < 0:
            raise GGUFFormatError(
                f"too many array elements to walk (limit {MAX_WALKED_ELEMENTS}) while reading {self.what}"
            )

    def skip_strings(self, count: int) -> None:
        """Advance past ``count`` length-prefixed strings."""
        size = self.size
        pos = self.pos
        if count > (size - pos) // 8:
            raise self.truncated(f" ({count} strings cannot fit in {size - pos} bytes)")
        unpack = _U64
        remaining = count
        while remaining:
            if size - pos < 8:
                raise self.truncated()
            buf, off = self.view(pos, 8)
            base = pos - off
            end = len(buf)
            last = end - 8
            # Fast path: every string that lies wholly inside the window.
            while remaining and off <= last:
                nxt = off + 8 + unpack(buf, off)[0]
                if nxt > end:
                    break
                off = nxt
                remaining -= 1
            new = base + off
            if remaining and new == pos:
                # The string at pos does not fit in the window: skip it by
                # its length without reading it.
                n = unpack(buf, off)[0]
                if n > MAX_STRING_LENGTH:
                    raise GGUFFormatError(f"a string in {self.what} is {n} bytes long (limit {MAX_STRING_LENGTH})")
                if n > size - pos - 8:
                    raise self.truncated()
                new = pos + 8 + n
                remaining -= 1
            pos = new
        self.pos = pos

    def skip_array(self, elem_type: int, count: int, depth: int) -> None:
        """Advance past ``count`` elements of ``elem_type``."""
        size = _FIXED_SIZES.get(elem_type)
        if size is not None:
            self.skip(count * size)
        elif elem_type == _T_STRING:
            if count > (self.size - self.pos) // 8:
                raise self.truncated(f" ({count} strings cannot fit in {self.size - self.pos} bytes)")
            self.spend(count)
            self.skip_strings(count)
        elif elem_type == _T_ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise GGUFFormatError(f"arrays nested more than {MAX_ARRAY_DEPTH} deep in {self.what}")
            if count > (self.size - self.pos) // 12:
                raise self.truncated(f" ({count} arrays cannot fit in {self.size - self.pos} bytes)")
            self.spend(count)
            for _ in range(count):
                et = self.u32()
                n = self.u64()
                self.skip_array(et, n, depth + 1)
        else:
            raise GGUFFormatError(f"unknown array element type {elem_type} in {self.what}")


def _parse(r: _Reader) -> GGUFMetadata:
    size = r.size
    if size == 0:
        raise GGUFFormatError("empty file")

    # -- header ------------------------------------------------------------
    n = min(4, size)
    buf, off = r.view(0, n)
    if buf[off : off + n] != GGUF_MAGIC[:n]:
        raise GGUFFormatError("not a GGUF file (bad magic)")
    r.what = "the header (magic)"
    r.skip(4)
    r.what = "the header (version)"
    version = r.u32()
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in SUPPORTED_VERSIONS:
            raise GGUFFormatError("big-endian GGUF files are not supported")
        raise GGUFFormatError(f"unsupported GGUF version {version} (supported: 2 and 3)")
    r.what = "the header (tensor count)"
    tensor_count = r.u64()
    r.what = "the header (key count)"
    kv_count = r.u64()
    if tensor_count > MAX_TENSOR_COUNT:
        raise GGUFFormatError(f"tensor count {tensor_count} is too large (limit {MAX_TENSOR_COUNT})")
    if kv_count > MAX_KV_COUNT:
        raise GGUFFormatError(f"key count {kv_count} is too large (limit {MAX_KV_COUNT})")
    # Each pair needs at least 8 (key length) + 4 (type) + 1 (value) bytes.
    if kv_count > (size - r.pos) // 13:
        raise GGUFFormatError(
            f"truncated: the header declares {kv_count} keys, more than the remaining {size - r.pos} bytes can hold"
        )

    # -- key/value pairs ---------------------------------------------------
    values: dict[str, ScalarValue] = {}
    arrays: dict[str, int] = {}
    tokens_at: tuple[int, int] | None = None
    scalars = _SCALARS
    for i in range(kv_count):
        r.what = f"key #{i}"
        key = r.string(MAX_KEY_LENGTH, f"the name of key #{i}")
        if key in values or key in arrays:
            raise GGUFFormatError(f"duplicate key {_q(key)}")
        r.what = f"key {_q(key)}"
        vtype = r.u32()
        sc = scalars.get(vtype)
        if sc is not None:
            unpack, width = sc
            buf, off = r.take(width)
            v = unpack(buf, off)[0]
            values[key] = bool(v) if vtype == _T_BOOL else v
        elif vtype == _T_STRING:
            values[key] = r.string(MAX_STRING_LENGTH, f"the value of key {_q(key)}")
        elif vtype == _T_ARRAY:
            elem_type = r.u32()
            count = r.u64()
            if key == _TOKENS_KEY and elem_type == _T_STRING:
                tokens_at = (r.pos, count)
            r.skip_array(elem_type, count, 1)
            arrays[key] = count
        else:
            raise GGUFFormatError(f"key {_q(key)} has unknown value type {vtype}")

    # -- tensor infos --------------------------------------------------------
    alignment = values.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFFormatError(f"general.alignment {alignment!r} is not a power of two")
    # Each tensor info needs at least 8 (name length) + 4 (n_dims) + 4 (type)
    # + 8 (offset) bytes.
    if tensor_count > (size - r.pos) // 24:
        raise GGUFFormatError(
            f"truncated: the header declares {tensor_count} tensors, more than "
            f"the remaining {size - r.pos} bytes can hold"
        )
    tensors: list[tuple[str, int, int, int | None]] = []
    for j in range(tensor_count):
        r.what = f"tensor info #{j}"
        name = r.string(MAX_KEY_LENGTH, f"the name of tensor #{j}")
        r.what = f"the info of tensor {_q(name)}"
        n_dims = r.u32()
        if n_dims > MAX_TENSOR_DIMS:
            raise GGUFFormatError(f"tensor {_q(name)} has {n_dims} dimensions (limit {MAX_TENSOR_DIMS})")
        buf, off = r.take(8 * n_dims)
        dims = struct.unpack_from(f"<{n_dims}Q", buf, off)
        ggml_type = r.u32()
        offset = r.u64()
        nbytes: int | None = None
        block = _GGML_BLOCKS.get(ggml_type)
        if block is not None:
            block_elems, block_bytes = block
            ne0 = dims[0] if dims else 1
            if ne0 % block_elems:
                raise GGUFFormatError(
                    f"tensor {_q(name)}: first dimension {ne0} is not a multiple of its type's block size {block_elems}"
                )
            elems = 1
            for d in dims:
                elems *= d
            nbytes = elems // block_elems * block_bytes
        tensors.append((name, ggml_type, offset, nbytes))
    data_start = -(-r.pos // alignment) * alignment
    for name, _ggml_type, offset, nbytes in tensors:
        end = data_start + offset + (nbytes or 0)
        if end > size:
            raise GGUFFormatError(
                f"truncated: the data of tensor {_q(name)} ends at byte {end}, past the end of the file ({size} bytes)"
            )

    # -- bos / eos token text ----------------------------------------------
    bos_token = eos_token = None
    if tokens_at is not None:
        wanted = {}
        for attr, key in (("bos", "tokenizer.ggml.bos_token_id"), ("eos", "tokenizer.ggml.eos_token_id")):
            tid = values.get(key)
            if isinstance(tid, int) and not isinstance(tid, bool) and 0 <= tid < tokens_at[1]:
                wanted[attr] = tid
        if wanted:
            texts = _token_texts(r, tokens_at[0], sorted(set(wanted.values())))
            bos_token = texts.get(wanted["bos"]) if "bos" in wanted else None
            eos_token = texts.get(wanted["eos"]) if "eos" in wanted else None

    return GGUFMetadata(
        version=version,
        tensor_count=tensor_count,
        values=MappingProxyType(values),
        array_lengths=MappingProxyType(arrays),
        bos_token=bos_token,
        eos_token=eos_token,
    )


def _token_texts(r: _Reader, start: int, ids: list[int]) -> dict[int, str]:
    """Texts of the tokens with the given (sorted, in-range) indices."""
    r.what = f"key {_q(_TOKENS_KEY)}"
    r.pos = start
    index = 0
    out: dict[int, str] = {}
    for tid in ids:
        r.skip_strings(tid - index)
        out[tid] = r.string(MAX_STRING_LENGTH, f"token {tid}")
        index = tid + 1
    return out


def read_metadata(path: str | os.PathLike[str]) -> GGUFMetadata:
    """Read the metadata of the GGUF file at ``path``.

    Raises :class:`GGUFFormatError` if the file's content is not a readable
    GGUF v2/v3 little-endian file (including truncated and crafted files, and
    non-regular files such as FIFOs or devices).  File-system errors are not
    caught: a missing file, a directory or an unreadable file raise
    ``OSError`` (``FileNotFoundError``, ``IsADirectoryError``,
    ``PermissionError``, ...) for the caller to report.
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(st.st_mode):
            raise GGUFFormatError("not a regular file")
        f = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    with f:
        return _parse(_Reader(f, st.st_size))
