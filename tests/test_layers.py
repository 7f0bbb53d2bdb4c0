"""The three layers' import rules (DESIGN.md section 2), read from the source with ``ast``:

- nothing under ``ggufd/engine/`` imports ``tornado``, ``ggufd.api`` or ``ggufd.protocol``;
- nothing under ``ggufd/protocol/`` imports ``tornado`` or ``ggufd.api``;
- ``tornado`` is imported only under ``ggufd/api/`` (``ggufd/cli.py`` included: it imports none).

Every import counts: at module level, inside functions, under ``if TYPE_CHECKING``, relative ones,
and ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ggufd"
MODULES = sorted(path.relative_to(PACKAGE.parent).as_posix() for path in PACKAGE.rglob("*.py"))

#: (folder, forbidden modules, why): a module under ``folder`` imports none of them.
LAYER_RULES = [
    ("ggufd/engine/", ("tornado", "ggufd.api", "ggufd.protocol"), "the engine knows neither HTTP nor a wire format"),
    ("ggufd/protocol/", ("tornado", "ggufd.api"), "a wire format is parsed and encoded without HTTP"),
]
TORNADO_HOME = "ggufd/api/"


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str, list[str]]]:
    """(line, the import as written, the dotted names it may load) of every import in ``source``,
    the code of the module ``module``; ``from a import b`` may load ``a`` and ``a.b``."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = ".".join(package[: len(package) - (node.level - 1)] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            function = node.func
            if (function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)) not in (
                "import_module",
                "__import__",
            ):
                continue
            names = [node.args[0].value]
        else:
            continue
        found.append((node.lineno, ast.unparse(node), names))
    return sorted(found, key=lambda item: item[0])


def module_name(path: str) -> tuple[str, bool]:
    """``ggufd/engine/batch.py`` -> ("ggufd.engine.batch", False); a package's ``__init__.py`` -> (its name, True)."""
    dotted = path[: -len(".py")].replace("/", ".")
    if dotted.endswith(".__init__"):
        return dotted[: -len(".__init__")], True
    return dotted, False


def violations(path: str, source: str) -> list[str]:
    """The layer rules that ``path`` (e.g. ``ggufd/engine/batch.py``) with this ``source`` breaks:
    one line per import and rule, naming the module, the line, the import and the rule."""
    rules = [(forbidden, why) for folder, forbidden, why in LAYER_RULES if path.startswith(folder)]
    if not path.startswith(TORNADO_HOME) and not any("tornado" in forbidden for forbidden, _ in rules):
        rules.append((("tornado",), "Tornado lives only in ggufd/api/"))
    found = []
    for line, written, names in imports(source, *module_name(path)):
        for forbidden, why in rules:
            hit = next((name for name in names for f in forbidden if name == f or name.startswith(f + ".")), None)
            if hit is not None:
                found.append(f"{path}:{line}: `{written}` imports {hit}: {why}")
    return found


@pytest.mark.parametrize("path", MODULES)
def test_every_module_keeps_its_layers_import_rules(path):
    problems = violations(path, (PACKAGE.parent / path).read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_the_layers_are_where_the_rules_look():
    """The rules would pass vacuously if the layers moved: each folder holds modules."""
    for folder in [folder for folder, _, _ in LAYER_RULES] + [TORNADO_HOME]:
        assert any(path.startswith(folder) for path in MODULES), folder
    assert "ggufd/cli.py" in MODULES


def test_the_check_sees_every_kind_of_import():
    source = """
import os
import tornado.web
from typing import TYPE_CHECKING
from ggufd import api
from ggufd.protocol.openai import ChatRequest
from .. import protocol
from ..api.app import make_app
from . import devices

if TYPE_CHECKING:
    from tornado.ioloop import IOLoop


def later():
    import importlib

    from ggufd.api import handlers  # a function-local import counts too
    importlib.import_module("tornado.httpserver")
    return __import__("ggufd.protocol.tools")
"""
    engine = "the engine knows neither HTTP nor a wire format"
    assert violations("ggufd/engine/example.py", source) == [
        f"ggufd/engine/example.py:3: `import tornado.web` imports tornado.web: {engine}",
        f"ggufd/engine/example.py:5: `from ggufd import api` imports ggufd.api: {engine}",
        f"ggufd/engine/example.py:6: `from ggufd.protocol.openai import ChatRequest` imports ggufd.protocol.openai: {engine}",
        f"ggufd/engine/example.py:7: `from .. import protocol` imports ggufd.protocol: {engine}",
        f"ggufd/engine/example.py:8: `from ..api.app import make_app` imports ggufd.api.app: {engine}",
        f"ggufd/engine/example.py:12: `from tornado.ioloop import IOLoop` imports tornado.ioloop: {engine}",
        f"ggufd/engine/example.py:18: `from ggufd.api import handlers` imports ggufd.api: {engine}",
        f"ggufd/engine/example.py:19: `importlib.import_module('tornado.httpserver')` imports tornado.httpserver: {engine}",
        f"ggufd/engine/example.py:20: `__import__('ggufd.protocol.tools')` imports ggufd.protocol.tools: {engine}",
    ]
    assert violations("ggufd/engine/__init__.py", "from . import lifecycle\nfrom .. import api\n") == [
        f"ggufd/engine/__init__.py:2: `from .. import api` imports ggufd.api: {engine}"
    ]  # a package's own dots
    assert violations("ggufd/api/example.py", source) == []  # the HTTP layer may import all of it
    assert (
        violations(
            "ggufd/protocol/example.py", "from ..engine import lifecycle\nfrom ggufd.engine.events import Started\n"
        )
        == []
    )
    assert (
        violations("ggufd/cli.py", "def main():\n    from ggufd.api.app import serve\n") == []
    )  # the wiring may use api
    assert violations("ggufd/cli.py", "def main():\n    import tornado.ioloop\n") == [
        "ggufd/cli.py:2: `import tornado.ioloop` imports tornado.ioloop: Tornado lives only in ggufd/api/"
    ]
    assert violations("ggufd/registry.py", "import tornado\n") == [
        "ggufd/registry.py:1: `import tornado` imports tornado: Tornado lives only in ggufd/api/"
    ]
