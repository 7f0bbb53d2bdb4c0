"""ggufd.config.load_config: defaults, path resolution, precedence, errors, the example config.

Every call passes ``environ=`` explicitly; ``os.environ`` is never read or changed here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import REPO

from ggufd.config import ENV_OVERRIDES, Config, LlamaSettings, load_config
from ggufd.errors import ConfigError

EXAMPLE = REPO / "etc" / "ggufd.toml"
SCHEMA = json.loads((REPO / "ggufd" / "schemas" / "config.json").read_text("utf-8"))


@pytest.fixture
def models(tmp_path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def config_file(tmp_path: Path, text: str, name: str = "ggufd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


def load_text(tmp_path: Path, text: str, **kwargs) -> Config:
    """Load a config whose models_dir is the (existing) ``models`` folder beside it."""
    (tmp_path / "models").mkdir(exist_ok=True)
    return load_config(
        config_file(tmp_path, 'models_dir = "models"\n' + text), environ=kwargs.pop("environ", {}), **kwargs
    )


def config_error(tmp_path: Path, text: str, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(config_file(tmp_path, text), environ=kwargs.pop("environ", {}), **kwargs)
    return str(info.value)


# --- defaults


def test_builtin_defaults_without_a_file(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config.source is None
    assert config.host == "127.0.0.1"
    assert config.port == 8000
    assert config.models_dir == tmp_path / "models"  # ./models without a file
    assert config.recursive is False
    assert config.default_model is None
    assert config.plugins_dir is None  # local plugins only; the families are built into the package
    assert config.disable_plugins == ()
    assert config.log_level == "info"
    assert config.llama_log_level == "warn"
    assert config.max_body_bytes == 16 * 1024 * 1024
    assert config.cuda_visible_devices is None
    assert config.llama == LlamaSettings(n_ctx=4096, n_gpu_layers=-1, n_batch=512, n_threads=0)
    assert dict(config.models) == {}


def test_empty_file_gives_the_same_defaults(tmp_path):
    config = load_text(tmp_path, "")
    assert (config.host, config.port) == ("127.0.0.1", 8000)
    assert (config.llama.n_ctx, config.llama.n_gpu_layers, config.llama.n_batch, config.llama.n_threads) == (
        4096,
        -1,
        512,
        0,
    )


def test_models_dir_default_with_a_file_is_models_beside_the_config_folder(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "models").mkdir()
    config = load_config(config_file(tmp_path / "etc", "port = 8001\n"), environ={})
    assert config.models_dir == tmp_path / "models"
    assert config.source == tmp_path / "etc" / "ggufd.toml"


def test_threads_are_the_available_cores_when_n_threads_is_zero():
    cores = len(os.sched_getaffinity(0))
    assert LlamaSettings().n_threads == 0
    assert LlamaSettings().threads == cores
    assert LlamaSettings(n_threads=3).threads == 3


def test_file_values_are_used(tmp_path):
    config = load_text(
        tmp_path,
        'host = "0.0.0.0"\nport = 9123\nrecursive = true\nlog_level = "debug"\nllama_log_level = "error"\n'
        'log_format = "json"\nmax_body_bytes = 2048\ncuda_visible_devices = "1"\ndisable_plugins = ["gemma"]\n'
        "[llama]\nn_ctx = 2048\nn_gpu_layers = 0\nn_batch = 64\nn_threads = 2\n",
    )
    assert (config.host, config.port, config.recursive) == ("0.0.0.0", 9123, True)
    assert (config.log_level, config.llama_log_level, config.log_format) == ("debug", "error", "json")
    assert config.max_body_bytes == 2048
    assert config.cuda_visible_devices == "1"
    assert config.disable_plugins == ("gemma",)
    assert config.llama == LlamaSettings(n_ctx=2048, n_gpu_layers=0, n_batch=64, n_threads=2)
    assert config.llama.threads == 2


# --- relative paths


def test_relative_paths_in_the_file_resolve_against_its_folder(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    for sub in ("m", "p", "weights", "templates"):
        (conf_dir / sub).mkdir(parents=True)
    (conf_dir / "weights" / "x.gguf").write_bytes(b"not read by load_config")
    (conf_dir / "templates" / "x.jinja").write_text("{{ messages }}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # must not matter for paths written in the file
    path = config_file(
        conf_dir,
        'models_dir = "m"\nplugins_dir = "p"\n[models."x"]\npath = "weights/x.gguf"\nchat_template_file = "templates/x.jinja"\n',
    )
    config = load_config(path, environ={})
    assert config.models_dir == conf_dir / "m"
    assert config.plugins_dir == conf_dir / "p"
    assert config.models["x"]["path"] == conf_dir / "weights" / "x.gguf"
    assert isinstance(config.models["x"]["path"], Path)
    assert config.models["x"]["chat_template"] == "{{ messages }}"


def test_config_given_as_a_relative_path_resolves_against_cwd_then_its_folder(tmp_path, monkeypatch):
    (tmp_path / "conf" / "m").mkdir(parents=True)
    config_file(tmp_path / "conf", 'models_dir = "m"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/ggufd.toml", environ={})
    assert config.source == tmp_path / "conf" / "ggufd.toml"
    assert config.models_dir == tmp_path / "conf" / "m"


def test_paths_from_environment_and_command_line_resolve_against_cwd(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    (conf_dir / "from-file").mkdir(parents=True)
    cwd = tmp_path / "cwd"
    (cwd / "from-env").mkdir(parents=True)
    (cwd / "from-cli").mkdir()
    (conf_dir / "from-env").mkdir()  # a decoy: the env value must not resolve against the file's folder
    (conf_dir / "from-cli").mkdir()
    monkeypatch.chdir(cwd)
    path = config_file(conf_dir, 'models_dir = "from-file"\n')
    assert load_config(path, environ={}).models_dir == conf_dir / "from-file"
    assert load_config(path, environ={"GGUF_MODELS_DIR": "from-env"}).models_dir == cwd / "from-env"
    from_cli = load_config(path, environ={"GGUF_MODELS_DIR": "from-env"}, overrides={"models_dir": "from-cli"})
    assert from_cli.models_dir == cwd / "from-cli"


# --- precedence


@pytest.mark.parametrize(
    "key, file_value, env_name, env_value, cli_value",
    [
        ("host", "10.0.0.1", "GGUFD_HOST", "10.0.0.2", "10.0.0.3"),
        ("port", 9001, "GGUFD_PORT", "9002", 9003),
    ],
)
def test_command_line_beats_environment_beats_file_beats_default(
    tmp_path, key, file_value, env_name, env_value, cli_value
):
    default = getattr(Config, key)
    assert getattr(load_text(tmp_path, ""), key) == default
    text = f"{key} = {json.dumps(file_value)}\n"
    assert getattr(load_text(tmp_path, text), key) == file_value
    assert getattr(load_text(tmp_path, text, environ={env_name: env_value}), key) == type(file_value)(env_value)
    both = load_text(tmp_path, text, environ={env_name: env_value}, overrides={key: cli_value})
    assert getattr(both, key) == cli_value
    # a None override (option not given) leaves the environment's value
    none = load_text(tmp_path, text, environ={env_name: env_value}, overrides={key: None})
    assert getattr(none, key) == type(file_value)(env_value)


def test_models_dir_precedence(tmp_path, monkeypatch):
    for name in ("file-dir", "env-dir", "cli-dir", "models"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    bare = config_file(tmp_path / "file-dir", "")  # no models_dir: default beside the config folder
    assert load_config(bare, environ={}).models_dir == tmp_path / "models"
    path = config_file(tmp_path, 'models_dir = "file-dir"\n', name="with-dir.toml")
    assert load_config(path, environ={}).models_dir == tmp_path / "file-dir"
    assert load_config(path, environ={"GGUF_MODELS_DIR": "env-dir"}).models_dir == tmp_path / "env-dir"
    config = load_config(path, environ={"GGUF_MODELS_DIR": "env-dir"}, overrides={"models_dir": "cli-dir"})
    assert config.models_dir == tmp_path / "cli-dir"


SEED_VARIABLES = [
    # variable, TOML in the file, file value, env value, expected env value, getter
    ("LLAMA_N_CTX", "[llama]\nn_ctx = 1024\n", 1024, "2048", 2048, lambda c: c.llama.n_ctx),
    ("LLAMA_N_GPU_LAYERS", "[llama]\nn_gpu_layers = 10\n", 10, "0", 0, lambda c: c.llama.n_gpu_layers),
    ("LLAMA_N_BATCH", "[llama]\nn_batch = 128\n", 128, "256", 256, lambda c: c.llama.n_batch),
    ("LLAMA_N_THREADS", "[llama]\nn_threads = 2\n", 2, "5", 5, lambda c: c.llama.n_threads),
    ("LLAMA_LOG_LEVEL", 'llama_log_level = "error"\n', "error", "debug", "debug", lambda c: c.llama_log_level),
    ("CUDA_VISIBLE_DEVICES", 'cuda_visible_devices = "0"\n', "0", "1,2", "1,2", lambda c: c.cuda_visible_devices),
    ("GGUFD_LOG_LEVEL", 'log_level = "warning"\n', "warning", "debug", "debug", lambda c: c.log_level),
]


@pytest.mark.parametrize(
    "variable, toml, file_value, env_value, expected, get", SEED_VARIABLES, ids=[v[0] for v in SEED_VARIABLES]
)
def test_seed_variables_beat_the_file(tmp_path, variable, toml, file_value, env_value, expected, get):
    assert variable in ENV_OVERRIDES
    assert get(load_text(tmp_path, toml)) == file_value
    assert get(load_text(tmp_path, toml, environ={variable: env_value})) == expected
    # and beat the built-in default when the file is silent
    assert get(load_text(tmp_path, "", environ={variable: env_value})) == expected


def test_seed_models_dir_variable_beats_the_file(tmp_path):
    (tmp_path / "env-models").mkdir()
    config = load_text(tmp_path, "", environ={"GGUF_MODELS_DIR": str(tmp_path / "env-models")})
    assert config.models_dir == tmp_path / "env-models"


def test_environment_changes_one_llama_key_and_keeps_the_others(tmp_path):
    config = load_text(tmp_path, "[llama]\nn_ctx = 1024\nn_batch = 64\n", environ={"LLAMA_N_CTX": "3000"})
    assert config.llama == LlamaSettings(n_ctx=3000, n_gpu_layers=-1, n_batch=64, n_threads=0)


def test_empty_variables_count_as_unset(tmp_path):
    config = load_text(
        tmp_path, "[llama]\nn_ctx = 1024\n", environ={"LLAMA_N_CTX": "", "GGUFD_PORT": "", "GGUFD_HOST": ""}
    )
    assert (config.llama.n_ctx, config.port, config.host) == (1024, 8000, "127.0.0.1")


def test_empty_cuda_visible_devices_is_kept_it_hides_every_gpu(tmp_path):
    config = load_text(tmp_path, 'cuda_visible_devices = "0"\n', environ={"CUDA_VISIBLE_DEVICES": ""})
    assert config.cuda_visible_devices == ""


def test_disable_plugins_variable_is_comma_separated(tmp_path):
    config = load_text(
        tmp_path, 'disable_plugins = ["x"]\n', environ={"GGUFD_DISABLE_PLUGINS": "gemma, gguf_template,,"}
    )
    assert config.disable_plugins == ("gemma", "gguf_template")


def test_ggufd_config_variable_names_the_file_when_no_path_is_given(tmp_path):
    (tmp_path / "models").mkdir()
    path = config_file(tmp_path, 'models_dir = "models"\nport = 9555\n')
    config = load_config(None, environ={"GGUFD_CONFIG": str(path)})
    assert config.source == path
    assert config.port == 9555
    # an explicit path wins over GGUFD_CONFIG
    other = config_file(tmp_path, 'models_dir = "models"\nport = 9556\n', name="other.toml")
    assert load_config(other, environ={"GGUFD_CONFIG": str(path)}).port == 9556


def test_ggufd_config_naming_a_missing_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(None, environ={"GGUFD_CONFIG": str(missing)})
    assert str(missing) in str(info.value)


# --- errors name the file and the key


def test_unknown_top_level_key(tmp_path):
    message = config_error(tmp_path, 'models_dir = "."\nmodel_dir = "x"\n')
    assert message == f"{tmp_path / 'ggufd.toml'}: model_dir: unknown key 'model_dir'"


def test_unknown_key_in_a_model_table(tmp_path):
    message = config_error(tmp_path, 'models_dir = "."\n[models."my-model"]\nn_ctxx = 5\n')
    assert str(tmp_path / "ggufd.toml") in message
    assert "models.my-model.n_ctxx" in message
    assert "unknown key 'n_ctxx'" in message


def test_unknown_key_in_a_sampling_table(tmp_path):
    message = config_error(tmp_path, 'models_dir = "."\n[models."m".sampling]\ntemp = 0.5\n')
    assert "models.m.sampling.temp: unknown key 'temp'" in message


def test_unknown_key_in_llama(tmp_path):
    message = config_error(tmp_path, 'models_dir = "."\n[llama]\nn_gpu = 1\n')
    assert message == f"{tmp_path / 'ggufd.toml'}: llama.n_gpu: unknown key 'n_gpu'"


@pytest.mark.parametrize(
    "text, key, fragment",
    [
        ('port = "8000"\n', "port", "is not of type 'integer'"),
        ("port = 8000.0\n", "port", "is not of type 'integer'"),
        ("recursive = 1\n", "recursive", "is not of type 'boolean'"),
        ('disable_plugins = "gemma"\n', "disable_plugins", "is not of type 'array'"),
        ("[llama]\nn_ctx = 4096.0\n", "llama.n_ctx", "is not of type 'integer'"),
        ("[llama]\nn_gpu_layers = -2\n", "llama.n_gpu_layers", "less than the minimum of -1"),
        ('log_level = "verbose"\n', "log_level", "is not one of"),
        ('[models."m"]\naliases = "a"\n', "models.m.aliases", "is not of type 'array'"),
        ('[models."m".sampling]\ntemperature = 3\n', "models.m.sampling.temperature", "greater than the maximum of 2"),
        ('[llama]\nmmap = "no"\n', "llama.mmap", "is not of type 'boolean'"),
        ('[models."m"]\nmmap = 1\n', "models.m.mmap", "is not of type 'boolean'"),
    ],
)
def test_wrong_type_or_value_names_file_and_key(tmp_path, text, key, fragment):
    message = config_error(tmp_path, 'models_dir = "."\n' + text)
    assert message.startswith(f"{tmp_path / 'ggufd.toml'}: {key}: ")
    assert fragment in message


def test_mmap_is_off_by_default_and_set_globally_or_per_model(tmp_path):
    assert load_text(tmp_path, "").model_settings({}).mmap is False
    config = load_text(tmp_path, '[llama]\nmmap = true\n[models."a"]\nmmap = false\n')
    assert config.llama.mmap is True and config.model_settings({}).mmap is True
    assert config.model_settings(config.models["a"]).mmap is False


@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_out_of_range_port(tmp_path, port):
    message = config_error(tmp_path, f'models_dir = "."\nport = {port}\n')
    assert message.startswith(f"{tmp_path / 'ggufd.toml'}: port: ")
    assert str(port) in message


def test_port_limits_are_accepted(tmp_path):
    assert load_text(tmp_path, "port = 0\n").port == 0
    assert load_text(tmp_path, "port = 65535\n").port == 65535


def test_bad_toml_syntax(tmp_path):
    message = config_error(tmp_path, 'models_dir = "."\nport = \n')
    assert message.startswith(f"{tmp_path / 'ggufd.toml'}: not valid TOML")
    assert "line 2" in message


def test_missing_config_file(tmp_path):
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, environ={})
    assert str(info.value) == f"{missing}: config file not found"


def test_config_path_that_is_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path, environ={})


def test_models_dir_that_is_not_a_folder(tmp_path):
    message = config_error(tmp_path, 'models_dir = "no-such-dir"\n')
    assert message == f"{tmp_path / 'ggufd.toml'}: models_dir: {tmp_path / 'no-such-dir'} is not a folder"
    (tmp_path / "a-file").write_text("x")
    message = config_error(tmp_path, 'models_dir = "a-file"\n')
    assert "models_dir" in message and "is not a folder" in message


def test_models_dir_error_from_the_environment_names_the_variable(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    path = config_file(tmp_path, 'models_dir = "models"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"GGUF_MODELS_DIR": "missing"})
    assert (
        str(info.value) == f"environment variable GGUF_MODELS_DIR: models_dir: {tmp_path / 'missing'} is not a folder"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={}, overrides={"models_dir": "missing"})
    assert str(info.value).startswith("command-line option --models-dir: models_dir: ")


def test_plugins_dir_that_is_not_a_folder(tmp_path):
    message = config_error(tmp_path, 'models_dir = "."\nplugins_dir = "no-plugins"\n')
    assert message == f"{tmp_path / 'ggufd.toml'}: plugins_dir: {tmp_path / 'no-plugins'} is not a folder"


def test_model_path_missing(tmp_path):
    message = config_error(tmp_path, 'models_dir = "."\n[models."x"]\npath = "x.gguf"\n')
    assert message == f"{tmp_path / 'ggufd.toml'}: models.x.path: {tmp_path / 'x.gguf'} is not a file"


def test_chat_template_file_unreadable(tmp_path):
    message = config_error(tmp_path, 'models_dir = "."\n[models."x"]\nchat_template_file = "missing.jinja"\n')
    assert message.startswith(
        f"{tmp_path / 'ggufd.toml'}: models.x.chat_template_file: cannot read {tmp_path / 'missing.jinja'}"
    )


def test_chat_template_and_chat_template_file_together(tmp_path):
    (tmp_path / "t.jinja").write_text("x")
    message = config_error(
        tmp_path, 'models_dir = "."\n[models."x"]\nchat_template = "y"\nchat_template_file = "t.jinja"\n'
    )
    assert message.startswith(f"{tmp_path / 'ggufd.toml'}: models.x: ")
    assert "chat_template, chat_template_file" in message


@pytest.mark.parametrize(
    "variable", ["LLAMA_N_CTX", "LLAMA_N_GPU_LAYERS", "LLAMA_N_BATCH", "LLAMA_N_THREADS", "GGUFD_PORT"]
)
def test_non_integer_environment_value_names_the_variable(tmp_path, variable):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "", environ={variable: "lots"})
    assert str(info.value) == f"environment variable {variable}='lots': expected int"


def test_out_of_range_environment_value_names_the_variable_and_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "", environ={"GGUFD_PORT": "99999"})
    assert str(info.value).startswith("environment variable GGUFD_PORT: port: 99999 is greater than the maximum")
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "", environ={"LLAMA_LOG_LEVEL": "loud"})
    assert str(info.value).startswith("environment variable LLAMA_LOG_LEVEL: llama_log_level: 'loud'")


def test_out_of_range_command_line_value_names_the_option(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "", overrides={"port": 70000})
    assert str(info.value).startswith("command-line option --port: port: 70000")


# --- per-model tables


def test_chat_template_file_content_becomes_chat_template(tmp_path):
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"
    (tmp_path / "chat.jinja").write_text(template, "utf-8")
    config = load_text(tmp_path, '[models."x"]\nchat_template_file = "chat.jinja"\n')
    options = config.models["x"]
    assert options["chat_template"] == template
    assert "chat_template_file" not in options


def test_model_tables_are_frozen_with_tuple_aliases(tmp_path):
    config = load_text(
        tmp_path,
        '[models."x"]\naliases = ["a", "b"]\nfamily = "gemma"\n[models."x".sampling]\ntemperature = 0.2\nstop = ["END"]\n',
    )
    options = config.models["x"]
    assert options["aliases"] == ("a", "b")
    assert options["family"] == "gemma"
    assert options["sampling"] == {"temperature": 0.2, "stop": ["END"]}
    assert load_text(tmp_path, '[models."y"]\nn_ctx = 5\n').models["y"]["aliases"] == ()
    with pytest.raises(TypeError):
        options["family"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.models["z"] = {}  # type: ignore[index]


def test_model_settings_override_the_global_llama_table(tmp_path):
    config = load_text(
        tmp_path,
        "[llama]\nn_ctx = 2048\nn_gpu_layers = 7\nn_batch = 256\nn_threads = 4\n"
        '[models."big"]\nn_ctx = 8192\nn_threads = 1\n',
    )
    assert config.model_settings(config.models["big"]) == LlamaSettings(
        n_ctx=8192, n_gpu_layers=7, n_batch=256, n_threads=1
    )
    assert config.model_settings({}) == LlamaSettings(n_ctx=2048, n_gpu_layers=7, n_batch=256, n_threads=4)
    assert config.model_settings({"n_gpu_layers": 0}).n_gpu_layers == 0  # a falsy value still overrides


# --- the example config


def _example(tmp_path) -> Config:
    return load_config(EXAMPLE, environ={}, overrides={"models_dir": str(tmp_path)})


def test_example_config_loads(tmp_path):
    config = _example(tmp_path)
    assert config.source == EXAMPLE.resolve()
    assert config.models_dir == tmp_path
    assert config.plugins_dir is None  # shown commented out, as an example
    gemma = config.models["gemma-3-270m-q4_k_m"]
    assert gemma["aliases"] == ("gemma",)
    assert gemma["family"] == "gemma"
    assert gemma["sampling"]["temperature"] == 0.7
    assert "path" not in gemma


def test_example_config_values_are_the_builtin_defaults(tmp_path):
    """The example says "the values shown are the defaults unless marked example"."""
    config = _example(tmp_path)
    defaults = Config()
    for key in (
        "host",
        "port",
        "recursive",
        "disable_plugins",
        "log_level",
        "llama_log_level",
        "log_format",
        "max_body_bytes",
    ):
        assert getattr(config, key) == getattr(defaults, key), key
    assert config.llama == LlamaSettings()


def test_example_models_dir_is_the_repository_models_folder():
    # The folder is tracked (models/.gitkeep), so the example loads as it is.
    config = load_config(EXAMPLE, environ={})
    assert config.models_dir == (REPO / "models").resolve()


def _schema_keys() -> dict[str, set[str]]:
    return {
        "top level": set(SCHEMA["properties"]),
        "[llama]": set(SCHEMA["$defs"]["llama"]["properties"]),
        '[models."<id>"]': set(SCHEMA["$defs"]["model"]["properties"]),
        "sampling": set(SCHEMA["$defs"]["sampling"]["properties"]),
    }


def test_schema_sections_are_not_empty():
    keys = _schema_keys()
    assert {"host", "port", "models_dir", "llama", "models"} <= keys["top level"]
    assert keys["[llama]"] == {
        "n_ctx",
        "n_gpu_layers",
        "n_batch",
        "n_threads",
        "parallel",
        "flash_attn",
        "swa_full",
        "mmap",
    }
    assert {"path", "chat_template_file", "sampling"} <= keys['[models."<id>"]']
    assert {"temperature", "stop", "max_tokens"} <= keys["sampling"]


def test_example_config_mentions_every_schema_key():
    text = EXAMPLE.read_text("utf-8")
    missing = []
    for section, keys in _schema_keys().items():
        for key in sorted(keys):
            as_key = re.search(rf"^\s*(#\s*)?{re.escape(key)}\s*=", text, re.MULTILINE)
            # a table header in which the key is one dotted segment: [llama], [models."x"], [models."x".sampling]
            as_table = re.search(rf"^\s*(#\s*)?\[([^\]\n]*\.)?{re.escape(key)}(\.[^\]\n]*)?\]", text, re.MULTILINE)
            if not (as_key or as_table):
                missing.append(f"{section}: {key}")
    assert missing == [], f"etc/ggufd.toml does not show: {missing}"


def test_schema_key_check_would_notice_a_missing_key(tmp_path):
    """Guard for the test above: its pattern does not match keys that merely appear in prose."""
    text = '# the n_ctx value and the sampling table\nfoo = 1\n[models."sampling-model"]\n'
    assert not re.search(r"^\s*(#\s*)?n_ctx\s*=", text, re.MULTILINE)
    assert not re.search(r"^\s*(#\s*)?\[([^\]\n]*\.)?sampling(\.[^\]\n]*)?\]", text, re.MULTILINE)
    assert re.search(r"^\s*(#\s*)?\[([^\]\n]*\.)?sampling(\.[^\]\n]*)?\]", '[models."m".sampling]', re.MULTILINE)


def test_no_plugins_dir_even_when_run_from_a_checkout_with_a_plugins_folder(tmp_path, monkeypatch):
    # the checkout's plugins/ is a drop-in folder for local plugins, used only when configured
    monkeypatch.chdir(REPO)
    config_path = tmp_path / "c.toml"
    config_path.write_text(f'models_dir = "{tmp_path}"\n')
    assert (REPO / "plugins").is_dir()
    assert load_config(config_path, environ={}).plugins_dir is None
    assert load_config(None, environ={"GGUF_MODELS_DIR": str(tmp_path)}).plugins_dir is None


def test_empty_plugins_dir_means_no_plugins_folder(tmp_path):
    config_path = tmp_path / "c.toml"
    config_path.write_text(f'models_dir = "{tmp_path}"\nplugins_dir = ""\n')
    assert load_config(config_path, environ={}).plugins_dir is None


# --- chat defaults


def test_chat_defaults_at_the_top_and_per_model(tmp_path):
    config = load_text(
        tmp_path,
        'reasoning_effort = "low"\nmax_reasoning_tokens = 512\n'
        "chat_template_kwargs = { enable_thinking = false }\n"
        '[models.qwen]\nreasoning_effort = "high"\nchat_template_kwargs = { x = 1 }\n',
    )
    assert (config.reasoning_effort, config.max_reasoning_tokens) == ("low", 512)
    assert dict(config.chat_template_kwargs) == {"enable_thinking": False}
    assert config.models["qwen"]["reasoning_effort"] == "high"
    assert config.models["qwen"]["chat_template_kwargs"] == {"x": 1}


@pytest.mark.parametrize(
    "text", ['reasoning_effort = "extreme"\n', "max_reasoning_tokens = -1\n", 'chat_template_kwargs = "x"\n']
)
def test_bad_chat_defaults_are_config_errors(tmp_path, text):
    (tmp_path / "models").mkdir()
    assert config_error(tmp_path, 'models_dir = "models"\n' + text)
