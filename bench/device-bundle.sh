#!/usr/bin/env bash
# Fills .device/ (git-ignored) with what bench/gpu-check.sh needs on a GPU machine that has no internet
# but has Python 3.12 with PyTorch, numpy, jinja2, pluggy, prometheus-client, pytest, httpx and anyio
# (see /work/.library/device/KINDS.md): the CUDA build of llama_cpp, and wheels for the rest of ggufd's
# and the benchmark client's dependencies. Run from the repository root:
#
#   bash bench/device-bundle.sh            # then: device run, carry [".device"], bash bench/gpu-check.sh
#
# SHARED_WHEELS: the folder with llama_cpp-*-cuda*.tar.gz, gguf and diskcache wheels (../shared/wheels).
# EXTRA: more requirements to fetch (the CPU dry run adds what the GPU machine already has).
# The whole working tree that travels must stay under 64 MiB; this prints the bundle's size.
set -euo pipefail
DEST=${DEST:-.device}
SHARED_WHEELS=${SHARED_WHEELS:-../shared/wheels}
PY=${PYTHON:-python3}
mkdir -p "$DEST/wheels"
cp "$SHARED_WHEELS"/llama_cpp-*.tar.gz "$DEST/"
cp "$SHARED_WHEELS"/*.whl "$DEST/wheels/"
# ggufd's own dependencies that the GPU image lacks, and the openai client for the benchmark.
"$PY" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST/wheels" "tornado>=6.3,<7" "jsonschema>=4.18,<5" "structlog>=23.1,<27" "openai>=1.40,<4" ${EXTRA:-}
# sdnotify is published as a source package only (pure Python): build its wheel here.
"$PY" -m pip wheel --quiet --no-deps -w "$DEST/wheels" "sdnotify>=0.3.2,<0.4"
# numpy (16 MB) is left to the GPU image's own; the small ones stay, since pydantic and httpx2 want newer
# typing_extensions/anyio/idna than an image may have (gpu-check.sh puts the wheels' folder first on PYTHONPATH).
if [ -z "${EXTRA:-}" ]; then
    rm -f "$DEST"/wheels/numpy-*.whl
fi
du -sh "$DEST"
ls "$DEST/wheels"
