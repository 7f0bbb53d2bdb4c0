"""ggufd.engine.cpu_probe: does llama.cpp's AMX fault here? (a fault kills a child, never the caller)"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ggufd.engine import cpu_probe
from ggufd.engine.cpu_probe import ERROR, NO_AMX_BUFT, NO_EXEC, OK, REFUSED, WRONG, AmxVerdict, check, run_child

SIGILL = -4  # subprocess: a child killed by signal 4


class Runner:
    """A fake child: the return code (None = timed out) of each check, and which checks ran."""

    def __init__(self, instructions: int | None = OK, ggml: int | None = OK, detail: str = "") -> None:
        self.codes = {"instructions": instructions, "ggml": ggml}
        self.detail = detail
        self.ran: list[str] = []

    def __call__(self, name: str, timeout: float):
        assert timeout > 0
        self.ran.append(name)
        return self.codes[name], self.detail


def decide(runner, **facts) -> AmxVerdict:
    return check(runner=runner, **{"cpu_has_amx": True, "build_has_amx": True, **facts})


# ---- the decision, with the children faked


def test_ggml_kernel_killed_by_sigill_means_unusable():
    runner = Runner(ggml=SIGILL)
    verdict = decide(runner)
    assert verdict.unusable is True
    assert "SIGILL" in verdict.reason and "llama.cpp's AMX kernel faults" in verdict.reason
    assert runner.ran == ["instructions", "ggml"]


def test_both_children_exiting_0_means_usable():
    runner = Runner()
    verdict = decide(runner)
    assert verdict.unusable is False
    assert "AMX works here" in verdict.reason
    assert runner.ran == ["instructions", "ggml"]


def test_amx_instructions_faulting_means_unusable_without_trying_ggml():
    runner = Runner(instructions=SIGILL)
    verdict = decide(runner)
    assert verdict.unusable is True and "AMX instructions fault here (SIGILL" in verdict.reason
    assert runner.ran == ["instructions"]


@pytest.mark.parametrize("stage", ["instructions", "ggml"])
def test_a_child_that_hangs_counts_as_a_fault(stage):
    verdict = decide(Runner(**{stage: None}))
    assert verdict.unusable is True and "hung" in verdict.reason


def test_any_death_by_signal_counts():
    assert decide(Runner(ggml=-11)).unusable is True  # SIGSEGV
    assert "SIGSEGV" in decide(Runner(ggml=-11)).reason


def test_wrong_numbers_from_the_amx_kernel_mean_unusable():
    assert decide(Runner(ggml=WRONG)).unusable is True


def test_kernel_refusing_the_tile_permission_means_ggml_does_not_use_amx():
    runner = Runner(instructions=REFUSED)
    assert decide(runner).unusable is False
    assert runner.ran == ["instructions"]


@pytest.mark.parametrize("code", [NO_EXEC, ERROR])
def test_instructions_that_cannot_be_tried_leave_the_decision_to_ggml(code):
    assert decide(Runner(instructions=code, ggml=SIGILL)).unusable is True
    assert decide(Runner(instructions=code, ggml=OK)).unusable is False


@pytest.mark.parametrize("code", [NO_AMX_BUFT, ERROR, 1, 99])
def test_an_inconclusive_ggml_check_keeps_llama_cpp_defaults(code):
    verdict = decide(Runner(ggml=code, detail="RuntimeError: something"))
    assert verdict.unusable is False


def test_no_amx_on_the_cpu_or_in_the_build_spawns_nothing():
    runner = Runner(instructions=SIGILL, ggml=SIGILL)
    assert decide(runner, cpu_has_amx=False) == AmxVerdict(False, "this CPU does not advertise AMX")
    assert decide(runner, build_has_amx=False) == AmxVerdict(False, "this llama.cpp build has no AMX kernels")
    assert runner.ran == []


def test_a_broken_runner_never_raises():
    def runner(name, timeout):
        raise OSError("fork failed")

    verdict = decide(runner)
    assert verdict.unusable is False and "OSError: fork failed" in verdict.reason


def test_every_reason_is_one_line():
    runners = [
        Runner(),
        Runner(instructions=SIGILL),
        Runner(instructions=None),
        Runner(instructions=REFUSED),
        Runner(ggml=SIGILL),
        Runner(ggml=None),
        Runner(ggml=WRONG),
        Runner(ggml=ERROR, detail="x"),
    ]
    for runner in runners:
        reason = decide(runner).reason
        assert reason and "\n" not in reason


def test_the_answer_is_cached_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_probe, "_verdict", None)
    monkeypatch.setattr(cpu_probe, "check", lambda: calls.append(1) or AmxVerdict(True, "faked"))
    assert cpu_probe.amx_unusable() is True
    assert cpu_probe.amx_unusable() is True
    assert cpu_probe.amx_reason() == "faked"
    assert calls == [1]


def test_only_linux_x86_64_is_probed(monkeypatch):
    runner = Runner(instructions=SIGILL, ggml=SIGILL)
    monkeypatch.setattr(cpu_probe.platform, "machine", lambda: "aarch64")
    assert check(runner=runner).unusable is False
    monkeypatch.setattr(cpu_probe.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_probe.sys, "platform", "darwin")
    assert check(runner=runner).unusable is False
    assert runner.ran == []


# ---- the real children


def test_the_module_runs_without_the_ggufd_package():
    """The children run this file by path (runpy), so it may import only the standard library and llama_cpp."""
    tree = ast.parse(Path(cpu_probe.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"ggufd", "tornado", "structlog"}, imported


def test_run_child_reports_exit_codes_and_timeouts():
    code, detail = run_child("no-such-check", 60)
    assert code == ERROR and detail.startswith("usage: cpu_probe.py")
    assert run_child("instructions", 0.001) == (None, "")  # no interpreter starts in a millisecond


def test_the_real_probe_answers_a_bool_without_crashing_this_process():
    verdict = check()  # uncached: really spawns the children where the CPU and the build have AMX
    assert isinstance(verdict.unusable, bool)
    assert verdict.reason and "\n" not in verdict.reason
    assert isinstance(cpu_probe.amx_unusable(), bool)


_DECODE = textwrap.dedent("""
    import sys, llama_cpp
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()  # use_extra_bufts: true, llama.cpp's default
    model = llama_cpp.llama_model_load_from_file(sys.argv[1].encode(), params)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_threads, cparams.n_threads_batch = 256, 1, 1
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    tokens = (llama_cpp.llama_token * 8)(*([2] + [105] * 7))  # eight tokens: more than one row takes AMX's tile path
    sys.exit(llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, 8)))
""")


@pytest.mark.gemma
def test_the_probe_agrees_with_a_real_quantized_model(gemma_model):
    """The oracle: decode gemma-3-270m Q4_K_M with llama.cpp's default buffers in a child. Where that
    dies (as it does on the development machine: SIGILL in ggml_backend_amx_mul_mat) the probe must
    say unusable; where it works, the probe must keep AMX on."""
    if not cpu_probe._linux_x86_64() or not cpu_probe._cpu_advertises_amx():
        pytest.skip("this CPU does not advertise AMX (amx_tile, amx_int8): llama.cpp never uses its AMX kernels here")
    if not cpu_probe._build_has_amx():
        pytest.skip("this llama-cpp-python build has no AMX kernels (llama_print_system_info lacks AMX_INT8 = 1)")
    done = subprocess.run(
        [sys.executable, "-c", _DECODE, str(gemma_model)], capture_output=True, timeout=300, check=False
    )
    verdict = check()
    if done.returncode < 0:
        assert verdict.unusable is True, verdict.reason
    else:
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        assert verdict.unusable is False, verdict.reason
