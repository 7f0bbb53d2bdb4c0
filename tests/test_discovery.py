"""Discovery plugins: recursive directory discovery with include/exclude globs, an Ollama
store and a Hugging Face hub cache — ids, confinement to their roots, odd files — through
``load_config`` + ``make_plugin_manager`` + ``build_registry``, and one daemon end to end."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import gguf_factory
import pytest
from http_helpers import chat, request

from ggufd.config import load_config
from ggufd.default_plugins.directory_discovery import glob_match
from ggufd.default_plugins.ollama_discovery import model_id as ollama_id
from ggufd.errors import ConfigError, ModelNotFound
from ggufd.plugins import make_plugin_manager
from ggufd.registry import build_registry

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")


def registry_for(tmp_path: Path, **settings):
    """Write a TOML config (top-level keys only) and build the registry with the real plugin manager."""
    settings.setdefault("plugins_dir", "")
    if "models_dir" not in settings:
        empty = tmp_path / "no-models"
        empty.mkdir(exist_ok=True)
        settings["models_dir"] = empty
    config_path = tmp_path / "ggufd.toml"
    config_path.write_text(
        "".join(
            f"{key} = {json.dumps(value if isinstance(value, (bool, list)) else str(value))}\n"
            for key, value in settings.items()
        )
    )
    config = load_config(config_path, environ={})
    return build_registry(config, make_plugin_manager(config))


def place(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# =========================================================================== directory discovery


@pytest.fixture
def tree(tiny_model, tmp_path) -> Path:
    root = tmp_path / "models"
    for rel in (
        "top.gguf",
        "llama/Meta-Llama-3-8B.Q4_K_M.gguf",
        "llama/Meta-Llama-3-8B.f16.gguf",
        "mistral/instruct/mistral-7b.Q4_K_M.gguf",
        "old/retired.Q4_K_M.gguf",
        ".hidden/secret.gguf",
        "llama/.cache/partial.gguf",
    ):
        place(tiny_model, root / rel)
    (root / "llama" / "README.md").write_text("not a model")
    (root / "folder.gguf").mkdir()  # a folder with a model-like name is not a model
    return root


def test_recursive_ids_keep_the_sub_folder_and_skip_hidden_folders(tree, tmp_path):
    registry = registry_for(tmp_path, models_dir=tree, recursive=True)
    assert sorted(registry.models) == [
        "llama/Meta-Llama-3-8B.Q4_K_M",
        "llama/Meta-Llama-3-8B.f16",
        "mistral/instruct/mistral-7b.Q4_K_M",
        "old/retired.Q4_K_M",
        "top",
    ]
    info = registry.get("llama/Meta-Llama-3-8B.Q4_K_M")
    assert info.path == tree / "llama" / "Meta-Llama-3-8B.Q4_K_M.gguf"
    assert info.spec.source == "directory" and info.metadata.architecture == "llama"
    assert registry.skipped == ()
    for name in ("Meta-Llama-3-8B.Q4_K_M", "secret", ".hidden/secret", "llama/.cache/partial", "folder"):
        with pytest.raises(ModelNotFound):
            registry.get(name)


def test_flat_discovery_keeps_file_name_ids_and_ignores_sub_folders(tree, tmp_path):
    registry = registry_for(tmp_path, models_dir=tree)
    assert list(registry.models) == ["top"]
    registry = registry_for(tmp_path, models_dir=tree, models_include=["llama/*.gguf", "*.gguf"])
    assert list(registry.models) == ["top"]  # include chooses among files; it does not recurse


@pytest.mark.parametrize(
    "include, exclude, expected",
    [
        (["llama/*.gguf"], [], ["llama/Meta-Llama-3-8B.Q4_K_M", "llama/Meta-Llama-3-8B.f16"]),
        (
            ["**/*Q4_K_M*.gguf"],
            [],
            ["llama/Meta-Llama-3-8B.Q4_K_M", "mistral/instruct/mistral-7b.Q4_K_M", "old/retired.Q4_K_M"],
        ),
        (["**/*Q4_K_M*.gguf"], ["old/**"], ["llama/Meta-Llama-3-8B.Q4_K_M", "mistral/instruct/mistral-7b.Q4_K_M"]),
        (["*.gguf"], ["*.f16.gguf", "old/**", "mistral/**"], ["llama/Meta-Llama-3-8B.Q4_K_M", "top"]),
        (["mistral/*.gguf"], [], []),  # "*" stays within one folder
        (["mistral/**/*.gguf", "top.gguf"], [], ["mistral/instruct/mistral-7b.Q4_K_M", "top"]),
        # exclude wins over include
        (["llama/Meta-Llama-3-8B.Q4_K_M.gguf"], ["*Q4_K_M*"], []),
        (["**/*.gguf"], ["**/*.gguf"], []),
        ([], [], []),
    ],
)
def test_include_and_exclude_globs(tree, tmp_path, include, exclude, expected):
    registry = registry_for(tmp_path, models_dir=tree, recursive=True, models_include=include, models_exclude=exclude)
    assert sorted(registry.models) == expected


def test_glob_semantics():
    assert glob_match("*.gguf", "a/b/c.gguf")  # no "/": the file name, in any folder
    assert not glob_match("llama/*.gguf", "llama/sub/x.gguf")
    assert glob_match("**/*Q4*.gguf", "x.Q4.gguf") and glob_match("**/*Q4*.gguf", "a/b/x.Q4.gguf")
    assert glob_match("old/**", "old/a/b.gguf") and not glob_match("old/**", "older/a.gguf")
    assert glob_match("[!a]?.gguf", "bc.gguf") and not glob_match("[!a]?.gguf", "ac.gguf")
    assert glob_match("[abc.gguf", "[abc.gguf")  # an unclosed "[" is literal
    assert not glob_match("a[/]b.gguf", "a/b.gguf")


def test_split_models_in_sub_folders(tiny_model, tmp_path):
    root = tmp_path / "models"
    first = place(tiny_model, root / "big" / "model-00001-of-00002.gguf")
    (root / "big" / "model-00002-of-00002.gguf").write_bytes(b"shard two")
    other = place(tiny_model, root / "other" / "deep" / "model-00001-of-00002.gguf")
    (root / "other" / "deep" / "model-00002-of-00002.gguf").write_bytes(b"shard two")
    # shards of one model never combine across folders
    place(tiny_model, root / "half" / "model-00001-of-00002.gguf")
    (root / "half2").mkdir()
    (root / "half2" / "model-00002-of-00002.gguf").write_bytes(b"x")
    # the same file name in two folders: two ids
    place(tiny_model, root / "a" / "same.gguf")
    place(tiny_model, root / "b" / "same.gguf")
    registry = registry_for(tmp_path, models_dir=root, recursive=True)
    assert sorted(registry.models) == ["a/same", "b/same", "big/model", "other/deep/model"]
    assert registry.get("big/model").path == first
    assert registry.get("other/deep/model").path == other
    with pytest.raises(ModelNotFound):
        registry.get("big/model-00001-of-00002")


@needs_symlinks
def test_recursive_discovery_stays_inside_models_dir(tiny_model, tmp_path):
    root = tmp_path / "models"
    place(tiny_model, root / "sub" / "real.gguf")
    outside = place(tiny_model, tmp_path / "outside" / "leak.gguf")
    (root / "sub" / "escape.gguf").symlink_to(outside)
    (root / "sub" / "inside-link.gguf").symlink_to(root / "sub" / "real.gguf")
    (root / "sub" / "dangling.gguf").symlink_to(tmp_path / "nowhere.gguf")
    (root / "linked-out").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "linked-in").symlink_to(root / "sub", target_is_directory=True)  # symlinked folders are not entered
    (root / "sub" / "garbage.gguf").write_bytes(b"not a gguf at all" * 10)
    registry = registry_for(tmp_path, models_dir=root, recursive=True)
    assert sorted(registry.models) == ["sub/inside-link", "sub/real"]
    assert [s.id for s in registry.skipped] == ["sub/garbage"]


# =========================================================================== Ollama


@pytest.fixture(scope="module")
def blobs_src(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ollama-src")
    one = gguf_factory.write_tiny_llama(folder / "one.gguf", name="llama3.2-3b-tiny")
    two = gguf_factory.write_tiny_llama(folder / "two.gguf", seed=1, name="someone-tiny")
    return one, two


def add_blob(store: Path, src: Path) -> str:
    digest = sha256(src)
    place(src, store / "blobs" / f"sha256-{digest}")
    return f"sha256:{digest}"


def add_manifest(store: Path, rel: str, content) -> Path:
    path = store / "manifests" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def manifest(model_digest: str, size: int = 1) -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "0" * 64,
            "size": 10,
        },
        "layers": [
            {"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:" + "1" * 64, "size": 5},
            {"mediaType": "application/vnd.ollama.image.model", "digest": model_digest, "size": size},
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "2" * 64, "size": 5},
            {"mediaType": "application/vnd.ollama.image.params", "digest": "sha256:" + "3" * 64, "size": 5},
        ],
    }


@pytest.fixture
def ollama_store(tmp_path, blobs_src) -> Path:
    store = tmp_path / "ollama" / "models"
    one, two = blobs_src
    d1, d2 = add_blob(store, one), add_blob(store, two)
    add_manifest(store, "registry.ollama.ai/library/llama3.2/3b", manifest(d1))
    add_manifest(store, "registry.ollama.ai/someone/tiny-chat/latest", manifest(d2))
    add_manifest(store, "hf.co/org/repo-GGUF/Q4_K_M", manifest(d1))
    # bad ones: each logged and skipped
    add_manifest(store, "registry.ollama.ai/library/evil/latest", manifest("sha256:../../etc"))
    add_manifest(store, "registry.ollama.ai/library/evil2/latest", manifest("sha256:" + "A" * 64))  # not lower-case hex
    add_manifest(store, "registry.ollama.ai/library/broken/latest", '{"schemaVersion": 2, "layers": [')
    add_manifest(store, "registry.ollama.ai/library/wrongshape/latest", '["a list"]')
    add_manifest(store, "registry.ollama.ai/library/gone/1b", manifest("sha256:" + "f" * 64))
    nomodel = manifest(d1)
    nomodel["layers"] = [
        layer for layer in nomodel["layers"] if layer["mediaType"] != "application/vnd.ollama.image.model"
    ]
    add_manifest(store, "registry.ollama.ai/library/nomodel/latest", nomodel)
    add_manifest(store, "registry.ollama.ai/library/.hidden/latest", manifest(d1))
    (store / "manifests" / "registry.ollama.ai" / "library" / "shallow").write_text("a file where a folder belongs")
    return store


def test_ollama_store_ids_paths_and_metadata(ollama_store, tmp_path, blobs_src):
    registry = registry_for(tmp_path, ollama_models_dir=ollama_store)
    assert sorted(registry.models) == ["hf.co/org/repo-GGUF:Q4_K_M", "llama3.2:3b", "someone/tiny-chat:latest"]
    info = registry.get("llama3.2:3b")
    assert info.spec.source == "ollama"
    assert info.path == ollama_store / "blobs" / f"sha256-{sha256(blobs_src[0])}"
    assert info.metadata.architecture == "llama" and info.metadata.get("general.name") == "llama3.2-3b-tiny"
    assert registry.get("someone/tiny-chat:latest").metadata.get("general.name") == "someone-tiny"
    assert registry.get("someone/tiny-chat").id == "someone/tiny-chat:latest"  # ":latest" may be left out
    assert registry.get("hf.co/org/repo-GGUF:Q4_K_M").path == info.path  # one blob, two names
    assert registry.skipped == ()
    for name in (
        "evil:latest",
        "evil2:latest",
        "broken:latest",
        "wrongshape:latest",
        "gone:1b",
        "nomodel:latest",
        ".hidden:latest",
        "llama3.2",
        "library/llama3.2:3b",
    ):
        with pytest.raises(ModelNotFound):
            registry.get(name)


def test_ollama_id_scheme():
    assert ollama_id("registry.ollama.ai", "library", "llama3.2", "3b") == "llama3.2:3b"
    assert ollama_id("registry.ollama.ai", "someone", "m", "q4") == "someone/m:q4"
    assert ollama_id("hf.co", "bartowski", "Llama-3.2-1B-GGUF", "Q4_K_M") == "hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M"


@needs_symlinks
def test_ollama_blobs_and_manifests_must_stay_inside_the_store(tmp_path, blobs_src):
    store = tmp_path / "store"
    outside = place(blobs_src[0], tmp_path / "outside" / "model.gguf")
    digest = sha256(outside)
    (store / "blobs").mkdir(parents=True)
    (store / "blobs" / f"sha256-{digest}").symlink_to(outside)
    add_manifest(store, "registry.ollama.ai/library/escape/latest", manifest(f"sha256:{digest}"))
    # a manifest that is itself a symlink out of the store
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(manifest("sha256:" + digest)))
    link = store / "manifests" / "registry.ollama.ai" / "library" / "linked" / "latest"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    registry = registry_for(tmp_path, ollama_models_dir=store)
    assert list(registry.models) == []


def test_ollama_store_without_manifests_is_empty(tmp_path):
    store = tmp_path / "empty-store"
    store.mkdir()
    assert list(registry_for(tmp_path, ollama_models_dir=store).models) == []


# =========================================================================== Hugging Face cache

REV_OLD = "a" * 40
REV_MAIN = "b" * 40


def hf_file(cache: Path, repo: str, revision: str, rel: str, blob_src: Path | bytes) -> Path:
    """A snapshot file as huggingface_hub writes it: a relative symlink into ../../blobs/<hash>."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    data = blob_src if isinstance(blob_src, bytes) else blob_src.read_bytes()
    blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = repo_dir / "snapshots" / revision / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


@pytest.fixture
def hf_cache(tmp_path, tiny_model) -> Path:
    cache = tmp_path / "hf" / "hub"
    bloke = "TheBloke/Mistral-7B-Instruct-v0.2-GGUF"
    hf_file(cache, bloke, REV_MAIN, "mistral-7b-instruct-v0.2.Q4_K_M.gguf", tiny_model)
    hf_file(cache, bloke, REV_OLD, "mistral-7b-instruct-v0.2.Q2_K.gguf", tiny_model)  # newer, but not main
    (cache / "models--TheBloke--Mistral-7B-Instruct-v0.2-GGUF" / "refs").mkdir()
    (cache / "models--TheBloke--Mistral-7B-Instruct-v0.2-GGUF" / "refs" / "main").write_text(REV_MAIN)
    snapshots = cache / "models--TheBloke--Mistral-7B-Instruct-v0.2-GGUF" / "snapshots"
    os.utime(snapshots / REV_MAIN, (1_000_000, 1_000_000))
    os.utime(snapshots / REV_OLD, (2_000_000, 2_000_000))

    # no refs/main: the newest snapshot wins; split shards in a sub-folder of the repository
    split = "org/Split-GGUF"
    hf_file(cache, split, REV_OLD, "Q8_0/model.Q8_0.gguf", tiny_model)
    hf_file(cache, split, REV_MAIN, "Q4_K_M/big-00001-of-00002.gguf", tiny_model)
    hf_file(cache, split, REV_MAIN, "Q4_K_M/big-00002-of-00002.gguf", b"second shard")
    hf_file(cache, split, REV_MAIN, "README.md", b"# readme")
    os.utime(cache / "models--org--Split-GGUF" / "snapshots" / REV_OLD, (1_000_000, 1_000_000))
    os.utime(cache / "models--org--Split-GGUF" / "snapshots" / REV_MAIN, (2_000_000, 2_000_000))

    # a repository without an organisation; refs/main naming a snapshot that is gone
    hf_file(cache, "gpt2", REV_OLD, "gpt2.gguf", tiny_model)
    (cache / "models--gpt2" / "refs").mkdir()
    (cache / "models--gpt2" / "refs" / "main").write_text("../../../../etc")

    # a snapshot symlink that escapes the cache, and a dangling one
    escape = cache / "models--evil--escape" / "snapshots" / REV_MAIN
    escape.mkdir(parents=True)
    outside = place(tiny_model, tmp_path / "outside" / "leak.gguf")
    (escape / "leak.gguf").symlink_to(outside)
    (escape / "dangling.gguf").symlink_to(escape / "nowhere.gguf")

    # not model repositories
    hf_file(cache, "x/y", REV_MAIN, "data.gguf", tiny_model)
    (cache / "models--x--y").rename(cache / "datasets--x--y")
    (cache / ".locks").mkdir()
    return cache


@needs_symlinks
def test_hf_cache_ids_snapshots_and_confinement(hf_cache, tmp_path):
    registry = registry_for(tmp_path, hf_cache_dir=hf_cache)
    assert sorted(registry.models) == [
        "TheBloke/Mistral-7B-Instruct-v0.2-GGUF/mistral-7b-instruct-v0.2.Q4_K_M",
        "gpt2/gpt2",
        "org/Split-GGUF/Q4_K_M/big",
    ]
    info = registry.get("TheBloke/Mistral-7B-Instruct-v0.2-GGUF/mistral-7b-instruct-v0.2.Q4_K_M")
    assert info.spec.source == "hf-cache" and info.metadata.architecture == "llama"
    # the snapshot path (a symlink) is served, so llama.cpp finds split shards beside it
    assert (
        info.path
        == hf_cache
        / "models--TheBloke--Mistral-7B-Instruct-v0.2-GGUF"
        / "snapshots"
        / REV_MAIN
        / "mistral-7b-instruct-v0.2.Q4_K_M.gguf"
    )
    assert registry.get("org/Split-GGUF/Q4_K_M/big").path.name == "big-00001-of-00002.gguf"
    assert registry.skipped == ()


def test_hf_cache_without_models_is_empty(tmp_path):
    cache = tmp_path / "hub"
    (cache / "models--a--b" / "snapshots").mkdir(parents=True)
    (cache / "models--c--d").mkdir(parents=True)
    assert list(registry_for(tmp_path, hf_cache_dir=cache).models) == []


# =========================================================================== config


def test_store_paths_resolve_against_the_config_folder_and_home(tmp_path, monkeypatch):
    (tmp_path / "conf" / "ollama").mkdir(parents=True)
    (tmp_path / "home" / ".cache" / "huggingface" / "hub").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "conf" / "ggufd.toml"
    path.write_text(
        'models_dir = "../models"\nollama_models_dir = "ollama"\nhf_cache_dir = "~/.cache/huggingface/hub"\n'
    )
    config = load_config(path, environ={})
    assert config.ollama_models_dir == (tmp_path / "conf" / "ollama").resolve()
    assert config.hf_cache_dir == (tmp_path / "home" / ".cache" / "huggingface" / "hub").resolve()
    assert config.models_include == ("*.gguf",) and config.models_exclude == ()

    defaults = load_config(None, environ={"GGUF_MODELS_DIR": str(tmp_path / "models")})
    assert defaults.ollama_models_dir is None and defaults.hf_cache_dir is None


@pytest.mark.parametrize("key", ["ollama_models_dir", "hf_cache_dir"])
def test_missing_store_folder_is_a_config_error(tmp_path, key):
    (tmp_path / "models").mkdir()
    path = tmp_path / "ggufd.toml"
    path.write_text(f'models_dir = "models"\n{key} = "does-not-exist"\n')
    with pytest.raises(ConfigError, match=rf"{key}: .*does-not-exist is not a folder"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    "line, key",
    [
        ('models_include = "*.gguf"', "models_include"),
        ("models_exclude = [1]", "models_exclude"),
        ('models_include = [""]', "models_include"),
        ('ollama_models_dir = ""', "ollama_models_dir"),
        ("hf_cache_dir = 3", "hf_cache_dir"),
    ],
)
def test_discovery_keys_are_validated(tmp_path, line, key):
    (tmp_path / "models").mkdir()
    path = tmp_path / "ggufd.toml"
    path.write_text(f'models_dir = "models"\n{line}\n')
    with pytest.raises(ConfigError, match=key):
        load_config(path, environ={})


# =========================================================================== end to end


def test_daemon_serves_an_ollama_model(ollama_store, tmp_path, make_daemon):
    empty = tmp_path / "empty-models"
    empty.mkdir()
    daemon = make_daemon(
        {"models_dir": str(empty), "ollama_models_dir": str(ollama_store), "llama": {"n_ctx": 256, "n_threads": 1}}
    )

    status, _, body = request(daemon.url, path="/v1/models")
    assert status == 200
    listed = {m["id"]: m for m in json.loads(body)["data"]}
    assert {"llama3.2:3b", "someone/tiny-chat:latest", "hf.co/org/repo-GGUF:Q4_K_M"} == set(listed)
    assert listed["someone/tiny-chat:latest"]["aliases"] == ["someone/tiny-chat"]

    status, _, body = request(daemon.url, path="/v1/models/someone/tiny-chat:latest")
    assert status == 200 and json.loads(body)["id"] == "someone/tiny-chat:latest"

    status, _, body = chat(
        daemon.url, {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["model"] == "llama3.2:3b"
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"]["completion_tokens"] == 2
