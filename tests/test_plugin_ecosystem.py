"""Third-party plugins: the example package (installed by `make test` through its entry point),
GET /-/plugins, broken plugins, and the plugin documentation."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO
from http_helpers import chat, request

from ggufd import hookspecs

pytestmark = pytest.mark.e2e

DOCS = REPO / "docs" / "plugins.md"


def example_installed() -> bool:
    from importlib.metadata import entry_points

    return any(ep.name == "example_family" for ep in entry_points(group="ggufd"))


needs_example = pytest.mark.skipif(
    not example_installed(), reason="run `make test` (it installs plugins/examples/ggufd-example-family)"
)


@needs_example
def test_ggufd_plugins_lists_the_installed_package_with_its_version(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ggufd", "--json", "plugins", "--models-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert plugins["example_family"]["origin"] == "ggufd-example-family 1.0.0"
    assert plugins["example_family"]["hooks"] == ["detect_family", "format_chat", "stop_sequences"]


@needs_example
def test_the_daemon_uses_the_installed_plugin(tiny_model, tmp_path, make_daemon):
    import llama_cpp

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model, models / "example-family-tiny.gguf")
    shutil.copy(tiny_model, models / "plain-tiny.gguf")
    daemon = make_daemon({"models_dir": str(models), "llama": {"n_ctx": 256, "n_threads": 1}})
    families = {m["id"]: m["family"] for m in json.loads(request(daemon.url, path="/v1/models")[2])["data"]}
    assert families == {"example-family-tiny": "example", "plain-tiny": "gguf-template"}
    listing = json.loads(request(daemon.url, path="/-/plugins")[2])
    assert "example_family" in {p["name"] for p in listing["plugins"]} and listing["failed"] == []

    messages = [{"role": "user", "content": "hi"}]
    usage = json.loads(chat(daemon.url, {"model": "example-family-tiny", "messages": messages, "max_tokens": 1})[2])[
        "usage"
    ]
    vocab = llama_cpp.Llama(str(tiny_model), vocab_only=True, verbose=False)
    expected = vocab.tokenize(b"### Instruction:\nhi\n\n### Response:\n", add_bos=True, special=True)
    assert usage["prompt_tokens"] == len(expected)  # the plugin's format, not the GGUF's ChatML template


def test_a_broken_plugin_does_not_take_the_daemon_down(tiny_model, tmp_path, make_daemon):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    # a copy of a family (as the old systemd recipe made) replaces the built-in one
    shutil.copy(REPO / "ggufd" / "families" / "gemma.py", plugins / "gemma.py")
    (plugins / "broken.py").write_text("import ggufd\nraise ImportError('missing dependency: frobnicate')\n")
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model, models / "tiny.gguf")
    daemon = make_daemon(
        {"models_dir": str(models), "plugins_dir": str(plugins), "llama": {"n_ctx": 256, "n_threads": 1}}
    )
    listing = json.loads(request(daemon.url, path="/-/plugins")[2])
    assert [f["name"] for f in listing["failed"]] == ["broken"] and "frobnicate" in listing["failed"][0]["error"]
    assert {p["name"]: p["origin"] for p in listing["plugins"]}["gemma"] == str(plugins / "gemma.py")
    assert daemon.logs("plugin not loaded", plugin="broken")
    assert chat(daemon.url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})[0] == 200


def test_every_hook_is_documented_with_an_example_and_tested():
    text = DOCS.read_text("utf-8")
    tests = "\n".join(
        p.read_text("utf-8") for p in (REPO / "tests").rglob("test_*.py") if p.name != "test_plugin_ecosystem.py"
    )
    names = [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "ggufd_spec")]
    assert len(names) >= 7
    for name in names:
        section = re.search(rf"^### `{name}\((.*?)\)`.*?(?=^### |\Z)", text, re.MULTILINE | re.DOTALL)
        assert section, f"docs/plugins.md has no section for {name}"
        body = section.group(0)
        assert "firstresult" in body, f"{name}: say whether it is firstresult"
        assert "```python" in body and "@ggufd.hookimpl" in body, f"{name}: needs a runnable example"
        assert re.search(rf"\b{name}\b", tests), f"no test mentions the hook {name}"


def test_documented_examples_run(tmp_path):
    """Every example in docs/plugins.md is a complete plugin module: it loads and validates."""
    from ggufd.config import Config
    from ggufd.plugins import make_plugin_manager

    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text("utf-8"), re.DOTALL)
    examples = [b for b in blocks if "@ggufd.hookimpl" in b]
    assert examples
    for index, source in enumerate(examples):
        folder = tmp_path / f"p{index}"
        folder.mkdir()
        (folder / f"doc_example_{index}.py").write_text(source)
        models = tmp_path / "models"
        models.mkdir(exist_ok=True)
        pm = make_plugin_manager(Config(models_dir=models, plugins_dir=folder, plugins_required=True))
        assert f"doc_example_{index}" in {name for name, _ in pm.manager.list_name_plugin()}


def test_the_testing_example_runs_and_its_tests_pass():
    """The "Testing a plugin" section is a complete test module for ggufd.testing: run its tests."""
    section = DOCS.read_text("utf-8").split("## Testing a plugin", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1 and "from ggufd.testing import" in blocks[0]
    namespace: dict = {"__name__": "doc_testing_example"}
    exec(compile(blocks[0], "docs/plugins.md", "exec"), namespace)
    tests = [func for name, func in namespace.items() if name.startswith("test_") and callable(func)]
    assert len(tests) == 3
    for test in tests:
        test()
    for internal in ("ggufd.config", "ggufd.plugins import", "ggufd.registry"):
        assert internal not in blocks[0], f"the example should use ggufd.testing, not {internal}"


FILTER_PLUGIN = '''
import ggufd


class FirstTenAreReasoning:
    """Split-independent: the first ten characters are reasoning, the rest is content."""

    def __init__(self):
        self.seen = 0

    def feed(self, text):
        head = text[: max(0, 10 - self.seen)]
        self.seen += len(text)
        return text[len(head):], head

    def finish(self):
        return "", ""


@ggufd.hookimpl
def detect_family(metadata, spec):
    return "split" if spec.path.name.startswith("split") else None


@ggufd.hookimpl
def answer_filter(model):
    return FirstTenAreReasoning() if model.family == "split" else None
'''


def test_answer_filter_separates_reasoning_in_streamed_and_plain_answers(tiny_model, tmp_path, make_daemon):
    import openai

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "split_family.py").write_text(FILTER_PLUGIN)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model, models / "split-tiny.gguf")
    shutil.copy(tiny_model, models / "plain-tiny.gguf")
    daemon = make_daemon(
        {"models_dir": str(models), "plugins_dir": str(plugins), "llama": {"n_ctx": 256, "n_threads": 1}}
    )
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
    kwargs = dict(messages=[{"role": "user", "content": "hi"}], max_tokens=30, temperature=0)
    plain = client.chat.completions.create(model="plain-tiny", **kwargs).choices[0].message
    split = client.chat.completions.create(model="split-tiny", **kwargs).choices[0].message
    assert split.model_extra["reasoning_content"] == plain.content[:10]
    assert split.content == plain.content[10:]
    chunks = list(client.chat.completions.create(model="split-tiny", stream=True, **kwargs))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == plain.content[:10]
    assert "".join(d.content or "" for d in deltas) == plain.content[10:]
