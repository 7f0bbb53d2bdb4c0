"""Directory discovery: the ``*.gguf`` files in ``models_dir`` are the models.

Ids: a file directly in ``models_dir`` keeps the original project's id, its file name
without ``.gguf``. With ``recursive = true`` sub-folders are searched too, and a file in a
sub-folder is named by its path relative to ``models_dir`` without ``.gguf``, with ``/``
kept: ``llama/Meta-Llama-3-8B.Q4_K_M``. Hidden folders (``.name``) are never searched, and
symlinked folders are not followed.

Split models (``name-00001-of-00003.gguf`` ...) appear once per folder, as ``name`` (or
``sub/name``), pointing at the first shard (llama.cpp loads the rest itself); an
incomplete split set is reported and skipped. Files (or symlinks) that resolve outside the
models folder are skipped.

``models_include`` / ``models_exclude`` are glob patterns that choose among the ``.gguf``
files; a file is served when an include pattern matches it and no exclude pattern does
(exclude wins). A pattern without ``/`` is matched against the file name (so ``*.gguf``
matches in every folder); a pattern with ``/`` is matched against the path relative to
``models_dir``, where ``*`` and ``?`` stop at ``/`` and ``**`` spans any number of folders:
``llama/*.gguf``, ``**/*Q4_K_M*.gguf``, ``old/**``. For a split model every shard must match.

The helpers :func:`find_gguf_files` and :func:`group_models` are shared with the other
discovery plugins (``hf_cache_discovery``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path, PurePosixPath

import structlog

from ggufd import hookimpl
from ggufd.types import ModelSpec

log = structlog.get_logger("ggufd.discovery")

SPLIT_NAME = re.compile(r"^(?P<name>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
GGUF_SUFFIX = ".gguf"
DEFAULT_INCLUDE = ("*.gguf",)


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern:
    """A ``/``-aware glob (``*``, ``?``, ``[...]``, ``**``) as an anchored regular expression."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":  # "**/": zero or more folders
                    out.append("(?:[^/]*/)*")
                    i += 1
                else:  # "**" elsewhere (e.g. "old/**"): anything, across folders
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = i + 1
            if end < n and pattern[end] in "!^":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            while end < n and pattern[end] != "]":
                end += 1
            if end >= n:  # no closing bracket: a literal "["
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = "".join("\\" + c if c in "\\^[]" else c for c in body)
                out.append(f"[^/{body}]" if negate else f"(?!/)[{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def glob_match(pattern: str, relative: str) -> bool:
    """Whether ``relative`` (a ``/``-separated path) matches ``pattern``; a pattern
    without ``/`` is matched against the last path segment only."""
    pattern = pattern.lstrip("/")
    if "/" not in pattern:
        relative = relative.rsplit("/", 1)[-1]
    return _glob_regex(pattern).match(relative) is not None


def _selected(relative: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return any(glob_match(p, relative) for p in include) and not any(glob_match(p, relative) for p in exclude)


def _candidates(root: Path, recursive: bool) -> Iterator[Path]:
    """Every non-folder entry named ``*.gguf`` under ``root``, sorted per folder; hidden and
    symlinked folders are not entered. Unreadable folders are logged and skipped."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda entry: entry.name)
        except OSError as exc:
            log.warning("skipping unreadable folder", folder=str(folder), reason=exc.strerror or type(exc).__name__)
            continue
        subfolders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                if recursive and not entry.name.startswith("."):
                    subfolders.append(Path(entry.path))
            elif entry.name.endswith(GGUF_SUFFIX):
                yield Path(entry.path)
        stack.extend(reversed(subfolders))


def find_gguf_files(
    root: Path,
    recursive: bool,
    include: Sequence[str] = DEFAULT_INCLUDE,
    exclude: Sequence[str] = (),
    *,
    confine_to: Path | None = None,
) -> list[Path]:
    """The ``*.gguf`` files under ``root`` chosen by ``include``/``exclude`` (paths relative
    to ``root``), as found (symlinks not resolved). A file that is dangling or resolves
    outside ``confine_to`` (default: ``root``) is logged and skipped."""
    boundary = (confine_to or root).resolve()
    found = []
    for path in _candidates(root, recursive):
        relative = path.relative_to(root).as_posix()
        if not _selected(relative, include, exclude):
            continue
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            log.warning("skipping unreadable or dangling model file", file=relative)
            continue
        if not target.is_relative_to(boundary):
            log.warning("skipping model file that points outside its folder", file=relative, folder=str(boundary))
            continue
        if target.is_file():
            found.append(path)
    return found


def group_models(files: Iterable[Path], root: Path | None = None) -> list[tuple[str, Path]]:
    """(id, first file) per model; split shards grouped per folder under their base name.

    Without ``root`` the id is the file name without ``.gguf``; with it, the path relative
    to ``root`` without ``.gguf``, ``/``-separated (a file directly in ``root`` keeps its name).
    """

    def model_id(folder: Path, name: str) -> str:
        if root is None or folder == root:
            return name
        return (PurePosixPath(folder.relative_to(root).as_posix()) / name).as_posix()

    models: list[tuple[str, Path]] = []
    shards: dict[tuple[Path, str, int], set[int]] = {}
    first: dict[tuple[Path, str, int], Path] = {}
    for path in files:
        match = SPLIT_NAME.match(path.name)
        if not match:
            models.append((model_id(path.parent, path.name[: -len(GGUF_SUFFIX)]), path))
            continue
        key = (path.parent, match["name"], int(match["count"]))
        shards.setdefault(key, set()).add(int(match["index"]))
        if int(match["index"]) == 1:
            first[key] = path
    for key, indexes in shards.items():
        folder, name, count = key
        if indexes != set(range(1, count + 1)) or key not in first:
            missing = sorted(set(range(1, count + 1)) - indexes)
            log.warning("skipping incomplete split model", model=model_id(folder, name), missing_parts=missing[:10])
            continue
        models.append((model_id(folder, name), first[key]))
    unique: dict[str, Path] = {}
    for mid, path in sorted(models):
        if mid in unique:
            log.warning("two model files have the same id; serving the first", model=mid, file=path.name)
            continue
        unique[mid] = path
    return list(unique.items())


@hookimpl(trylast=True)
def discover_models(config):
    root = config.models_dir
    include = getattr(config, "models_include", DEFAULT_INCLUDE)
    exclude = getattr(config, "models_exclude", ())
    files = find_gguf_files(root, config.recursive, include, exclude)
    return [ModelSpec(id=model_id, path=path, source="directory") for model_id, path in group_models(files, root)]
