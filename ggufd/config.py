"""Configuration: TOML file + environment + command line -> one validated, frozen :class:`Config`.

Precedence: command line > environment > file > built-in defaults. The file is validated
against ``schemas/config.json``; an unknown key, a wrong type or a missing file is a
:class:`ConfigError` that names the file and the key — ggufd refuses to start rather
than guess. Relative paths in the file resolve against the file's folder; relative paths
from the environment or the command line resolve against the working directory.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ggufd.errors import ConfigError
from ggufd.sizes import parse_size
from ggufd.validation import first_error

ENV_CONFIG = "GGUFD_CONFIG"

#: environment variable -> (config key path, converter); the seed project's names.
ENV_OVERRIDES: dict[str, tuple[tuple[str, ...], Callable[[str], Any]]] = {
    "GGUF_MODELS_DIR": (("models_dir",), str),
    "LLAMA_N_CTX": (("llama", "n_ctx"), int),
    "LLAMA_N_GPU_LAYERS": (("llama", "n_gpu_layers"), int),
    "LLAMA_N_BATCH": (("llama", "n_batch"), int),
    "LLAMA_N_THREADS": (("llama", "n_threads"), int),
    "LLAMA_LOG_LEVEL": (("llama_log_level",), str),
    "CUDA_VISIBLE_DEVICES": (("cuda_visible_devices",), str),
    "GGUFD_HOST": (("host",), str),
    "GGUFD_PORT": (("port",), int),
    "GGUFD_LOG_LEVEL": (("log_level",), str),
    "GGUFD_DISABLE_PLUGINS": (("disable_plugins",), lambda v: [p.strip() for p in v.split(",") if p.strip()]),
}

#: keys that hold paths; resolved against the folder of the source they came from.
PATH_KEYS = ("models_dir", "plugins_dir", "api_key_file", "ollama_models_dir", "hf_cache_dir")
MODEL_PATH_KEYS = ("path", "chat_template_file")


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LlamaSettings:
    """llama.cpp load settings; per-model tables override them."""

    n_ctx: int = 4096
    n_gpu_layers: int = -1
    n_batch: int = 512
    n_threads: int = 0  # 0: one per available core
    parallel: int = 4  # sequences decoded together (continuous batching); each gets n_ctx tokens
    flash_attn: bool | str = "auto"  # llama.cpp decides per device; true/false force it
    # Sliding-window layers (gemma 2/3, gpt-oss, ...) keep only their window of KV cache: for
    # gemma-3 about a fifth of the full size. true keeps every position (llama.cpp's C default).
    swa_full: bool = False
    embedding: bool = False  # serve /v1/embeddings (and nothing else) from this model
    gguf_pooling: bool = False  # the GGUF names its own pooling (an embedding model by design)
    # Map the weights from the file (llama.cpp's use_mmap). false reads them into memory (or onto the
    # GPU): a later change of the file cannot touch the running model (README "Updating a model file").
    mmap: bool = False

    @property
    def threads(self) -> int:
        return self.n_threads or default_threads()


@dataclass(frozen=True)
class Config:
    source: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    models_dir: Path = Path("models")
    recursive: bool = False
    models_include: tuple[str, ...] = ("*.gguf",)  # globs relative to models_dir (see directory_discovery)
    models_exclude: tuple[str, ...] = ()
    ollama_models_dir: Path | None = None  # an Ollama store (manifests/ + blobs/); None = off
    hf_cache_dir: Path | None = None  # a Hugging Face hub cache (models--ORG--NAME/); None = off
    default_model: str | None = None
    plugins_dir: Path | None = None  # local plugin files (*.py); None = none (the families are built in)
    disable_plugins: tuple[str, ...] = ()
    plugins_required: bool = False  # a third-party plugin that fails to load stops ggufd
    log_level: str = "info"
    llama_log_level: str = "warn"
    log_format: str = "auto"
    max_body_bytes: int = 16 * 1024 * 1024
    cuda_visible_devices: str | None = None
    # lifecycle and scheduling
    max_loaded_models: int = 0  # 0 = no limit
    memory_budget: Mapping[str, int] = field(default_factory=dict)  # device ("cpu", "gpu", "0", "*") -> bytes
    max_queue: int = 32  # waiting requests per model beyond the running one
    queue_timeout: float = 0  # seconds a request may wait before it starts; 0 = no limit
    shutdown_timeout: float = 30
    keep_alive: float = -1  # seconds a model stays loaded when idle; 0 = unload after use; -1 = forever
    preload: tuple[str, ...] = ()
    # security and limits
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # from api_keys, api_key_file and GGUFD_API_KEYS
    unauthenticated_remote: str = "warn"  # binding beyond loopback without keys: "warn" or "refuse"
    health_public: bool = True
    metrics_public: bool = False  # only matters when API keys are configured
    cors_origins: tuple[str, ...] = ()
    header_timeout: float = 60
    body_timeout: float = 60
    max_tokens_cap: int = 0  # 0 = no server cap
    max_messages: int = 4096
    max_embedding_inputs: int = 2048  # inputs per embeddings request
    max_logit_bias: int = 1024  # logit_bias entries per request
    max_tools: int = 128  # tools per chat request
    max_content_parts: int = 4096  # content parts per chat request, all messages together
    log_content: bool = False  # log prompts and completions (never by default)
    # chat defaults (a model's table may set them too; a request's own values win)
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reasoning_effort: str | None = None
    max_reasoning_tokens: int | None = None
    llama: LlamaSettings = field(default_factory=LlamaSettings)
    #: model id -> its ``[models."<id>"]`` table, paths resolved, chat_template_file read.
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def model_settings(self, options: Mapping[str, Any]) -> LlamaSettings:
        """The llama settings for one model: its own table over the global ``[llama]`` table."""
        base = self.llama
        return LlamaSettings(
            n_ctx=options.get("n_ctx", base.n_ctx),
            n_gpu_layers=options.get("n_gpu_layers", base.n_gpu_layers),
            n_batch=options.get("n_batch", base.n_batch),
            n_threads=options.get("n_threads", base.n_threads),
            parallel=options.get("parallel", base.parallel),
            flash_attn=options.get("flash_attn", base.flash_attn),
            swa_full=options.get("swa_full", base.swa_full),
            embedding=options.get("embedding", base.embedding),
            mmap=options.get("mmap", base.mmap),
        )


def _where(source: str, key: str) -> str:
    return f"{source}: {key}" if key else source


def _set(doc: dict, path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc.setdefault(part, {})
    doc[path[-1]] = value


def read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def _check_schema(doc: dict, source: str) -> None:
    problem = first_error(doc, "config")
    if problem is not None:
        key, message = problem
        raise ConfigError(f"{_where(source, key)}: {message}")


def _resolve(value: str, base: Path) -> Path:
    return (base / Path(value).expanduser()).resolve()


def load_config(
    path: str | os.PathLike | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the :class:`Config` from a TOML file, the environment and command-line overrides.

    :param path: the TOML file; ``None`` uses ``$GGUFD_CONFIG`` if set, else built-in defaults.
    :param environ: defaults to ``os.environ``.
    :param overrides: command-line values by key (``host``, ``port``, ``models_dir``); ``None`` values are ignored.
    :raises ConfigError: with the file (or variable, or option) and the key named.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_CONFIG):
        path = environ[ENV_CONFIG]
    source = Path(path).expanduser().resolve() if path is not None else None
    doc = read_toml(source) if source is not None else {}
    source_name = str(source) if source is not None else "defaults"
    _check_schema(doc, source_name)
    file_base = source.parent if source is not None else Path.cwd()
    origins: dict[str, str] = {}  # path key -> where its value came from, for error messages

    # Paths from the file resolve against the file's folder; do it before layering.
    for key in PATH_KEYS:
        if doc.get(key):  # "" (plugins_dir) means "none"
            doc[key] = str(_resolve(doc[key], file_base))
    models = copy.deepcopy(doc.get("models", {}))
    for table in models.values():
        for key in MODEL_PATH_KEYS:
            if key in table:
                table[key] = str(_resolve(table[key], file_base))

    for name, (key_path, convert) in ENV_OVERRIDES.items():
        raw = environ.get(name)
        # An empty CUDA_VISIBLE_DEVICES is meaningful (no GPU); other empty variables count as unset.
        if raw is None or (raw == "" and name != "CUDA_VISIBLE_DEVICES"):
            continue
        try:
            value = convert(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r}: expected {convert.__name__}") from None
        if key_path[0] in PATH_KEYS:
            value = str(_resolve(value, Path.cwd()))
            origins[key_path[0]] = f"environment variable {name}"
        _set(doc, key_path, value)
        _check_schema(doc, f"environment variable {name}")

    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in PATH_KEYS:
            value = str(_resolve(str(value), Path.cwd()))
            origins[key] = f"command-line option --{key.replace('_', '-')}"
        _set(doc, (key,), value)
        _check_schema(doc, f"command-line option --{key.replace('_', '-')}")

    config = Config(
        source=source,
        host=doc.get("host", Config.host),
        port=doc.get("port", Config.port),
        models_dir=Path(doc["models_dir"])
        if "models_dir" in doc
        else _resolve("models", file_base.parent if source else Path.cwd()),
        recursive=doc.get("recursive", False),
        models_include=tuple(doc.get("models_include", Config.models_include)),
        models_exclude=tuple(doc.get("models_exclude", ())),
        ollama_models_dir=Path(doc["ollama_models_dir"]) if doc.get("ollama_models_dir") else None,
        hf_cache_dir=Path(doc["hf_cache_dir"]) if doc.get("hf_cache_dir") else None,
        default_model=doc.get("default_model"),
        plugins_dir=Path(doc["plugins_dir"]) if doc.get("plugins_dir") else None,
        disable_plugins=tuple(doc.get("disable_plugins", ())),
        plugins_required=doc.get("plugins_required", False),
        log_level=doc.get("log_level", Config.log_level),
        llama_log_level=doc.get("llama_log_level", Config.llama_log_level),
        log_format=doc.get("log_format", Config.log_format),
        max_body_bytes=doc.get("max_body_bytes", Config.max_body_bytes),
        cuda_visible_devices=doc.get("cuda_visible_devices"),
        max_loaded_models=doc.get("max_loaded_models", Config.max_loaded_models),
        memory_budget=MappingProxyType(_budgets(doc.get("memory_budget"))),
        max_queue=doc.get("max_queue", Config.max_queue),
        queue_timeout=doc.get("queue_timeout", Config.queue_timeout),
        shutdown_timeout=doc.get("shutdown_timeout", Config.shutdown_timeout),
        keep_alive=doc.get("keep_alive", Config.keep_alive),
        preload=tuple(doc.get("preload", ())),
        api_keys=_api_keys(doc, environ, source_name),
        unauthenticated_remote=doc.get("unauthenticated_remote", Config.unauthenticated_remote),
        health_public=doc.get("health_public", Config.health_public),
        metrics_public=doc.get("metrics_public", Config.metrics_public),
        cors_origins=tuple(doc.get("cors_origins", ())),
        header_timeout=doc.get("header_timeout", Config.header_timeout),
        body_timeout=doc.get("body_timeout", Config.body_timeout),
        max_tokens_cap=doc.get("max_tokens_cap", Config.max_tokens_cap),
        max_messages=doc.get("max_messages", Config.max_messages),
        max_embedding_inputs=doc.get("max_embedding_inputs", Config.max_embedding_inputs),
        max_logit_bias=doc.get("max_logit_bias", Config.max_logit_bias),
        max_tools=doc.get("max_tools", Config.max_tools),
        max_content_parts=doc.get("max_content_parts", Config.max_content_parts),
        log_content=doc.get("log_content", Config.log_content),
        chat_template_kwargs=MappingProxyType(dict(doc.get("chat_template_kwargs") or {})),
        reasoning_effort=doc.get("reasoning_effort"),
        max_reasoning_tokens=doc.get("max_reasoning_tokens"),
        llama=LlamaSettings(**doc.get("llama", {})),
        models=MappingProxyType({mid: _finish_model(mid, table, source_name) for mid, table in models.items()}),
    )
    _check_files(config, source_name, origins)
    return config


def _api_keys(doc: dict, environ: Mapping[str, str], source: str) -> tuple[str, ...]:
    """Every accepted key: the file's ``api_keys``, the lines of ``api_key_file`` (``#`` comments
    allowed) and ``GGUFD_API_KEYS`` (comma-separated). Keys are never logged or shown."""
    keys = list(doc.get("api_keys", ()))
    if doc.get("api_key_file"):
        path = Path(doc["api_key_file"])
        try:
            lines = path.read_text("utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"{_where(source, 'api_key_file')}: cannot read {path}: {exc.strerror}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    keys += [key.strip() for key in environ.get("GGUFD_API_KEYS", "").split(",") if key.strip()]
    return tuple(dict.fromkeys(keys))


def _budgets(value) -> dict[str, int]:
    """``"20GiB"`` (every device) or ``{cpu = "8GiB", 0 = "20GiB"}`` -> device key -> bytes.
    GPU indexes become the engine's device keys ``cuda:N``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return {"*": parse_size(value)}
    return {(f"cuda:{key}" if key.isdigit() else key): parse_size(size) for key, size in value.items()}


def _finish_model(model_id: str, table: dict, source: str) -> Mapping[str, Any]:
    table = dict(table)
    if "chat_template_file" in table:
        template_path = Path(table.pop("chat_template_file"))
        try:
            table["chat_template"] = template_path.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{_where(source, f'models.{model_id}.chat_template_file')}: cannot read {template_path}: {exc.strerror}"
            ) from None
    if "path" in table:
        table["path"] = Path(table["path"])
    table["aliases"] = tuple(table.get("aliases", ()))
    return MappingProxyType(table)


def _check_files(config: Config, source: str, origins: Mapping[str, str]) -> None:
    if not config.models_dir.is_dir():
        raise ConfigError(
            f"{_where(origins.get('models_dir', source), 'models_dir')}: {config.models_dir} is not a folder"
        )
    for key in ("ollama_models_dir", "hf_cache_dir"):
        folder = getattr(config, key)
        if folder is not None and not folder.is_dir():
            raise ConfigError(f"{_where(origins.get(key, source), key)}: {folder} is not a folder")
    if config.plugins_dir is not None and not config.plugins_dir.is_dir():
        raise ConfigError(
            f"{_where(origins.get('plugins_dir', source), 'plugins_dir')}: {config.plugins_dir} is not a folder"
        )
    for model_id, table in config.models.items():
        path = table.get("path")
        if path is not None and not path.is_file():
            raise ConfigError(f"{_where(source, f'models.{model_id}.path')}: {path} is not a file")


def apply_process_environment(config: Config) -> None:
    """Export settings that native libraries read from the environment (before llama.cpp loads)."""
    if config.cuda_visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = config.cuda_visible_devices
