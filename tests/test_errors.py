"""Every client-visible error is defined in ggufd/errors.py: no other module subclasses ApiError
or builds one from a bare status (so statuses, types and codes are decided in one place)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ggufd import errors

PACKAGE = Path(errors.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "errors.py")


def offences(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ClassDef) and any(
            getattr(base, "id", getattr(base, "attr", None)) in ("ApiError",) for base in node.bases
        ):
            found.append(f"class {node.name}(ApiError) at line {node.lineno}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "ApiError":
            found.append(f"ApiError(...) at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_error_is_defined_outside_errors_py(path):
    assert offences(path) == []


def test_the_check_finds_an_error_defined_elsewhere(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("class Oops(ApiError):\n    pass\n\nraise ApiError(418, 'teapot')\n")
    assert offences(sample) == ["class Oops(ApiError) at line 1", "ApiError(...) at line 4"]


def test_every_error_has_the_openai_shape():
    for error in (
        errors.WrongModelType("m", "chat"),
        errors.ModelBusy("m"),
        errors.BodyTooLarge(10),
        errors.PathNotFound("/x"),
        errors.UnsupportedMediaType("text/plain"),
        errors.Overloaded("busy"),
        errors.InvalidApiKey("no"),
    ):
        body = error.to_dict()
        assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
        assert 400 <= error.status < 600
