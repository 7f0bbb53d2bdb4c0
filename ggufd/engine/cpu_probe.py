"""Can llama.cpp's Intel AMX kernels run here? If not, models load without its extra weight buffers.

Why this exists (measured on a development machine: Intel CPU with ``amx_tile amx_int8 amx_bf16``
in /proc/cpuinfo, Linux 6.18 guest, Debian 12, llama-cpp-python 0.3.36 built from source with
llama.cpp's default ``GGML_NATIVE=ON``): ggml compiled its AMX kernels, placed the quantized
weights of gemma-3-270m Q4_K_M in its "AMX" extra buffer type, and the first prompt killed the
process with SIGILL on ``tilezero %tmm4`` in ``ggml_backend_amx_mul_mat``. A daemon dies that way
on its first request, so every model is then loaded with ``use_extra_bufts = False`` (what
llama-server's ``--no-repack`` does): no AMX and no CPU_REPACK buffers, only plain CPU ones.

The CPU itself was fine: a process that requests the tile permission as ggml does
(``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``) runs ldtilecfg/tilezero/tilerelease
there without fault. The build was not: GCC 12.2's ``_tile_loadconfig`` tells the optimiser that
it reads only 8 bytes of the 64-byte tile configuration, so the stores of the rows and column
widths were dropped and ggml loaded an empty configuration (palette 1, every tile 0 x 0); the
next tile instruction raises #UD. So two checks, each in a child process (a fault kills the
child, never the caller):

1. the CPU, kernel and hypervisor run AMX instructions (a few bytes of machine code on an
   executable page, after the same ``arch_prctl`` request);
2. this llama.cpp build's own AMX kernel runs: a small Q8_0 matrix product through ggml's "AMX"
   buffer type, exactly the code path that crashed, and gives the right numbers.

AMX stays on wherever both pass (it and the repacked buffers speed up CPU inference), and nothing
is spawned unless the CPU advertises AMX and the build has it. Linux x86-64 only; anything else
answers "usable". The answer is computed once per process.

This module imports only the standard library (and llama_cpp inside the checks): the children
run this file itself (``runpy``), without importing the ``ggufd`` package.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds one child may take (Python start, importing llama_cpp, a tiny matrix product: about
#: a second here). A child that hangs counts as a fault: a slower daemon beats a dead one.
CHILD_TIMEOUT_S = 60.0

#: Exit codes of a child (a death by signal is a negative return code in subprocess).
OK = 0
REFUSED = 2  # arch_prctl refused the tile permission: ggml then does not use AMX at all
NO_EXEC = 3  # no executable page could be mapped: the instruction check cannot run
ERROR = 4  # an exception in the check itself (the child says which on stderr)
NO_AMX_BUFT = 5  # this build's CPU backend offers no "AMX" buffer type here: AMX is not used
WRONG = 6  # the AMX kernel ran but computed wrong numbers

#: A runner: (check name, timeout in seconds) -> (return code or None on timeout, last stderr line).
Runner = Callable[[str, float], "tuple[int | None, str]"]


@dataclass(frozen=True)
class AmxVerdict:
    unusable: bool  # True: load models with use_extra_bufts = False
    reason: str  # one line for the log


def amx_unusable() -> bool:
    """True only when this CPU advertises AMX, this llama.cpp build has AMX kernels, and running
    them (or AMX itself) kills a process here (or hangs, or gives wrong numbers). Cached; never raises."""
    return amx_verdict().unusable


def amx_reason() -> str:
    """One line for people: why AMX (and llama.cpp's repacked weight buffers) are on or off."""
    return amx_verdict().reason


_lock = threading.Lock()
_verdict: AmxVerdict | None = None


def amx_verdict() -> AmxVerdict:
    """:func:`check` once per process (thread-safe); later calls return the same answer."""
    global _verdict
    with _lock:
        if _verdict is None:
            _verdict = check()
        return _verdict


def check(
    runner: Runner | None = None, cpu_has_amx: bool | None = None, build_has_amx: bool | None = None
) -> AmxVerdict:
    """The uncached decision; the arguments replace the real facts (for tests)."""
    try:
        return _decide(runner or run_child, cpu_has_amx, build_has_amx)
    except Exception as exc:  # a report, never a reason to fail: keep llama.cpp's default
        return AmxVerdict(False, f"AMX check failed ({type(exc).__name__}: {exc}); llama.cpp's defaults are kept")


def _decide(runner: Runner, cpu_has_amx: bool | None, build_has_amx: bool | None) -> AmxVerdict:
    if cpu_has_amx is None:
        if not _linux_x86_64():
            return AmxVerdict(False, "not Linux x86-64: no AMX check")
        cpu_has_amx = _cpu_advertises_amx()
    if not cpu_has_amx:
        return AmxVerdict(False, "this CPU does not advertise AMX")
    if build_has_amx is None:
        build_has_amx = _build_has_amx()
    if not build_has_amx:
        return AmxVerdict(False, "this llama.cpp build has no AMX kernels")

    code, detail = runner("instructions", CHILD_TIMEOUT_S)
    if code is None:
        return AmxVerdict(
            True,
            f"this CPU advertises AMX but a process running AMX instructions hung for "
            f"{CHILD_TIMEOUT_S:.0f} s; llama.cpp's AMX/repacked weight buffers are off",
        )
    if code < 0:
        return AmxVerdict(
            True,
            f"this CPU advertises AMX but AMX instructions fault here ({_signal_name(code)}: the OS or "
            "hypervisor does not run AMX); llama.cpp's AMX/repacked weight buffers are off",
        )
    if code == REFUSED:
        return AmxVerdict(False, "the kernel refuses AMX to processes here, so llama.cpp does not use it")
    # OK, or NO_EXEC/ERROR (the instructions could not be tried): ggml's own kernel decides

    code, detail = runner("ggml", CHILD_TIMEOUT_S)
    if code is None:
        return AmxVerdict(
            True,
            f"this CPU advertises AMX but llama.cpp's AMX kernel hung for {CHILD_TIMEOUT_S:.0f} s "
            "in a test; llama.cpp's AMX/repacked weight buffers are off",
        )
    if code < 0:
        return AmxVerdict(
            True,
            f"this CPU advertises AMX but llama.cpp's AMX kernel faults here ({_signal_name(code)}; "
            "a known cause is a build by GCC 12.2, whose _tile_loadconfig lets the optimiser drop "
            "the tile configuration); llama.cpp's AMX/repacked weight buffers are off",
        )
    if code == WRONG:
        return AmxVerdict(
            True, "llama.cpp's AMX kernel computes wrong results here; llama.cpp's AMX/repacked weight buffers are off"
        )
    if code == OK:
        return AmxVerdict(False, "AMX works here: llama.cpp's AMX and repacked weight buffers stay on")
    if code == NO_AMX_BUFT:
        return AmxVerdict(False, "llama.cpp offers no AMX buffer here, so it does not use AMX")
    return AmxVerdict(
        False, f"AMX check inconclusive (exit {code}{': ' + detail if detail else ''}); llama.cpp's defaults are kept"
    )


def _linux_x86_64() -> bool:
    return sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")


def _cpu_advertises_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    return {"amx_tile", "amx_int8"} <= flags
    except OSError:
        pass
    return False


def _build_has_amx() -> bool:
    """llama.cpp's CPU backend features (``llama_print_system_info``) list ``AMX_INT8 = 1`` when
    ggml was compiled with AMX-INT8 (its AMX buffer type also needs AVX512-VNNI, which every
    AMX CPU has; the ggml check finds out if it is missing)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    return "AMX_INT8 = 1" in (info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info))


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def run_child(name: str, timeout: float) -> tuple[int | None, str]:
    """Run one check (``instructions`` or ``ggml``) in a fresh interpreter: this file, by path."""
    if not sys.executable:
        return ERROR, "no Python executable to run the check with"
    code = f"import runpy, sys; sys.argv = ['cpu_probe', {name!r}]; runpy.run_path({os.path.abspath(__file__)!r}, run_name='__main__')"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, ""
    except OSError as exc:
        return ERROR, str(exc)
    lines = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return done.returncode, (lines[-1].strip()[:200] if lines else "")


# ---- the checks, run only in a child process -------------------------------------------------

_SYS_ARCH_PRCTL = 158  # x86-64
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18

# ldtilecfg (%rdi); tilezero %tmm0; tilezero %tmm4; tilerelease; ret
_AMX_CODE = bytes.fromhex("c4e2784907c4e27b49c0c4e27b49e0c4e27849c0c3")


def _tile_config() -> bytes:
    """64 bytes: palette 1, tiles 0-7 configured, 16 rows of 64 bytes each."""
    colsb = b"".join((64).to_bytes(2, "little") for _ in range(8)) + bytes(16)
    rows = bytes([16] * 8) + bytes(8)
    return bytes([1, 0]) + bytes(14) + colsb + rows


def _request_tile_permission() -> bool:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return (
        libc.syscall(
            ctypes.c_long(_SYS_ARCH_PRCTL), ctypes.c_long(_ARCH_REQ_XCOMP_PERM), ctypes.c_long(_XFEATURE_XTILEDATA)
        )
        == 0
    )


def _instructions_check() -> int:
    import ctypes

    if not _request_tile_permission():
        return REFUSED
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prot_read, prot_write, prot_exec, map_private, map_anonymous = 1, 2, 4, 0x02, 0x20
    page = libc.mmap(None, 4096, prot_read | prot_write, map_private | map_anonymous, -1, 0)
    if page in (None, ctypes.c_void_p(-1).value):
        return NO_EXEC
    ctypes.memmove(page, _AMX_CODE, len(_AMX_CODE))
    config = page + 2048  # 64-byte aligned, on the same page (read as data)
    ctypes.memmove(config, _tile_config(), 64)
    if libc.mprotect(page, 4096, prot_read | prot_exec) != 0:  # W^X: write first, then execute
        return NO_EXEC
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(page)(config)
    return OK


def _ggml_check() -> int:
    """dst = src1 @ src0.T with src0 a 64 x 64 Q8_0 weight in ggml's "AMX" buffer type and src1 32 rows
    of F32 (more than one row: one row takes the AVX512-VNNI path, more take the AMX tile path)."""
    import ctypes
    from pathlib import Path

    import llama_cpp

    folder = Path(llama_cpp.__file__).resolve().parent / "lib"
    libs = [ctypes.CDLL(str(folder / name)) for name in ("libggml-base.so", "libggml.so") if (folder / name).exists()]

    def fn(name: str, restype, *argtypes):
        for lib in libs:
            try:
                f = getattr(lib, name)
            except AttributeError:
                continue
            f.restype, f.argtypes = restype, list(argtypes)
            return f
        raise RuntimeError(f"{name} not found in llama_cpp's libggml")

    P, S, I64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64

    class InitParams(ctypes.Structure):  # struct ggml_init_params
        _fields_ = [("mem_size", S), ("mem_buffer", P), ("no_alloc", ctypes.c_bool)]

    reg_by_name = fn("ggml_backend_reg_by_name", P, ctypes.c_char_p)
    reg_dev_get = fn("ggml_backend_reg_dev_get", P, P, S)
    proc_address = fn("ggml_backend_reg_get_proc_address", P, P, ctypes.c_char_p)
    buft_name = fn("ggml_backend_buft_name", ctypes.c_char_p, P)
    ggml_init = fn("ggml_init", P, InitParams)
    tensor_overhead = fn("ggml_tensor_overhead", S)
    graph_overhead = fn("ggml_graph_overhead", S)
    new_tensor_2d = fn("ggml_new_tensor_2d", P, P, ctypes.c_int, I64, I64)
    mul_mat = fn("ggml_mul_mat", P, P, P, P)
    new_graph = fn("ggml_new_graph", P, P)
    build_forward = fn("ggml_build_forward_expand", None, P, P)
    nbytes = fn("ggml_nbytes", S, P)
    alloc_from_buft = fn("ggml_backend_alloc_ctx_tensors_from_buft", P, P, P)
    alloc_for_backend = fn("ggml_backend_alloc_ctx_tensors", P, P, P)
    tensor_set = fn("ggml_backend_tensor_set", None, P, P, S, S)
    tensor_get = fn("ggml_backend_tensor_get", None, P, P, S, S)
    dev_init = fn("ggml_backend_dev_init", P, P, ctypes.c_char_p)
    graph_compute = fn("ggml_backend_graph_compute", ctypes.c_int, P, P)

    reg = reg_by_name(b"CPU")
    if not reg:
        raise RuntimeError("no CPU backend registered")
    dev = reg_dev_get(reg, 0)
    get_extra = proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not get_extra:
        return NO_AMX_BUFT
    # the first call builds the list, and ggml's AMX buffer type requests the tile permission itself
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(P), P)(get_extra)(dev)
    amx = None
    for i in range(64):
        if not bufts or not bufts[i]:
            break
        if buft_name(bufts[i]) == b"AMX":
            amx = bufts[i]
    if amx is None:
        return NO_AMX_BUFT

    f32, q8_0, k, n, m = 0, 8, 64, 64, 32  # enum ggml_type; sizes fit the AMX kernel's tiles
    size = tensor_overhead() * 8 + graph_overhead() + 4096
    weights_ctx = ggml_init(InitParams(size, None, True))
    ctx = ggml_init(InitParams(size, None, True))
    w = new_tensor_2d(weights_ctx, q8_0, k, n)
    x = new_tensor_2d(ctx, f32, k, m)
    y = mul_mat(ctx, w, x)
    graph = new_graph(ctx)
    build_forward(graph, y)
    backend = dev_init(dev, None)
    if not backend or not alloc_from_buft(weights_ctx, amx) or not alloc_for_backend(ctx, backend):
        raise RuntimeError("could not allocate the test tensors")
    set_threads = proc_address(reg, b"ggml_backend_set_n_threads")
    if set_threads:
        ctypes.CFUNCTYPE(None, P, ctypes.c_int)(set_threads)(backend, 1)

    block = (0x3C00).to_bytes(2, "little") + bytes([1] * 32)  # block_q8_0: d = 1.0 (fp16), 32 x int8 1
    row = block * (k // 32)
    weights = row * n
    if nbytes(w) != len(weights):
        raise RuntimeError(f"unexpected Q8_0 size {nbytes(w)} (expected {len(weights)})")
    tensor_set(w, weights, 0, len(weights))  # the AMX buffer repacks the weight here
    ones = (ctypes.c_float * (k * m))(*([1.0] * (k * m)))
    tensor_set(x, ones, 0, ctypes.sizeof(ones))
    print("computing", file=sys.stderr, flush=True)
    if graph_compute(backend, graph) != 0:
        raise RuntimeError("ggml_backend_graph_compute failed")
    out = (ctypes.c_float * (n * m))()
    tensor_get(y, out, 0, ctypes.sizeof(out))
    return OK if all(abs(v - k) < 0.5 for v in out) else WRONG


def _child_main(argv: list[str]) -> int:
    checks = {"instructions": _instructions_check, "ggml": _ggml_check}
    if len(argv) != 1 or argv[0] not in checks:
        print(f"usage: cpu_probe.py {{{','.join(checks)}}}", file=sys.stderr)
        return ERROR
    try:
        return checks[argv[0]]()
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return ERROR


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
