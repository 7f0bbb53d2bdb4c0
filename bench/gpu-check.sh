#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and no internet (issue #8). Here, once: `bash bench/device-bundle.sh`
# (fills the git-ignored .device/: the CUDA build of llama_cpp and wheels for Python 3.12, ~49 MB). Then, on the
# GPU machine, from the repository root (with this project's device tool: carry [".device"], timeout_s 420):
#
#   OUT=/tmp/out bash bench/gpu-check.sh
#
# WHEELS (.device/wheels), CUDA_LLAMA (.device/llama_cpp-*-cuda*.tar.gz), NVIDIA_LIBS (where libcudart and
# libcublas live) and PYTHON (python3) have defaults for that machine; OUT is where the results go, as at most
# 8 files: summary.txt, health.json, check-config.json, ggufd-health.log, latest.md and latest.json.
# Steps: the sent packages on PYTHONPATH; the synthetic 1.1B model generated here; ggufd on device 0 with every
# layer offloaded (checked through /health); the benchmark at 1, 4, 8 and 32 streams (4 and 8 settle issue 7's
# batching ratios on a GPU) against ggufd, in-process
# llama-cpp-python and the in-process llama_decode loop; the GPU-only tests. Budget: under 5 minutes.
# CPU dry run (no GPU; passed 2026-12-01 after the layer refactor, Python 3.12 from pyenv): a CPU llama_cpp
# packed as the CUDA one is (`tar -czf /tmp/llama_cpp-cpu.tar.gz -C .venv/lib/python3.11/site-packages llama_cpp`:
# it is ctypes only, so a 3.11 build runs under 3.12), the GPU image's own packages added to the bundle, then
#   EXTRA="numpy jinja2 pluggy prometheus-client pytest httpx anyio pyyaml requests tqdm" DEST=/tmp/dry PYTHON=python3.12 bash bench/device-bundle.sh
#   OUT=/tmp/dry-out WHEELS=/tmp/dry/wheels CUDA_LLAMA=/tmp/llama_cpp-cpu.tar.gz PYTHON=python3.12 N_GPU_LAYERS=0 \
#       MODEL_ARGS="--n-layer 4" CONCURRENCY=1,4 bash bench/gpu-check.sh
set -euo pipefail
OUT=${OUT:?set OUT to a folder for the results}
WHEELS=${WHEELS:-.device/wheels}
CUDA_LLAMA=${CUDA_LLAMA:-$(ls .device/llama_cpp-*-cuda*.tar.gz 2>/dev/null | head -1)}
NVIDIA_LIBS=${NVIDIA_LIBS:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib}
PY=${PYTHON:-python3}
N_GPU_LAYERS=${N_GPU_LAYERS:--1}
MODEL_ARGS=${MODEL_ARGS:---synthetic-1b}
CONCURRENCY=${CONCURRENCY:-1,4,8,32}
mkdir -p "$OUT"
WORK=$(mktemp -d)
export LD_LIBRARY_PATH="$NVIDIA_LIBS:${LD_LIBRARY_PATH:-}"
# $OUT comes back from the device tool as at most 8 files: short texts go to summary.txt.
SUMMARY="$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$SUMMARY" || true

echo "== packages"
# Into a folder on PYTHONPATH, not a venv: the machine's python3 is itself a venv (PyTorch, numpy,
# jinja2, pluggy, pytest), and a venv made from it would not see those packages.
$PY -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl
mkdir -p "$WORK/cuda" && tar -xzf "$CUDA_LLAMA" -C "$WORK/cuda"
export PYTHONPATH="$WORK/cuda:$WORK/site:$PWD:$PWD/tests:${PYTHONPATH:-}"
VPY="$PY"
"$VPY" -c "import llama_cpp; assert llama_cpp.llama_supports_gpu_offload() or $N_GPU_LAYERS == 0, 'this llama_cpp has no GPU offload'; print('llama_cpp', llama_cpp.__version__, 'GPU offload', llama_cpp.llama_supports_gpu_offload())" | tee -a "$SUMMARY"

echo "== synthetic model"
"$VPY" tests/gguf_factory.py "$WORK/synthetic-1b.gguf" $MODEL_ARGS | tee -a "$SUMMARY"

echo "== offload check through /health"
"$VPY" - "$WORK" "$OUT" "$N_GPU_LAYERS" <<'PY' | tee -a "$SUMMARY"
import json, subprocess, sys, time, urllib.request
work, out, layers = sys.argv[1], sys.argv[2], int(sys.argv[3])
device = "0" if layers else '"cpu"'
open(f"{work}/ggufd.toml", "w").write(f'models_dir = "{work}"\nlog_level = "warning"\n[llama]\nn_gpu_layers = {layers}\nn_ctx = 2048\n[models."synthetic-1b"]\ndevice = {device}\n')
proc = subprocess.Popen([sys.executable, "-m", "ggufd", "--config", f"{work}/ggufd.toml", "--port", "18777", "--host", "127.0.0.1"],
                        stdout=open(f"{out}/ggufd-health.log", "w"), stderr=subprocess.STDOUT)
try:
    for _ in range(300):
        try:
            urllib.request.urlopen("http://127.0.0.1:18777/health", timeout=1); break
        except OSError:
            time.sleep(0.2)
    urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:18777/admin/models/synthetic-1b/load", method="POST", data=b""), timeout=120)
    health = json.load(urllib.request.urlopen("http://127.0.0.1:18777/health", timeout=5))
    json.dump(health, open(f"{out}/health.json", "w"), indent=2)
    state = health["model_states"]["synthetic-1b"]
    print("gpu_offload", health["gpu_offload"], "device", state["device"], "layers", state["offloaded_layers"], "/", state["total_layers"])
    if layers:
        assert health["gpu_offload"] and state["device"] == "cuda:0" and state["offloaded_layers"] == state["total_layers"], state
finally:
    proc.terminate(); proc.wait(30)
PY
"$VPY" -m ggufd --check-config --json --config "$WORK/ggufd.toml" > "$OUT/check-config.json" || true
"$VPY" -m ggufd --check-config --config "$WORK/ggufd.toml" 2>&1 | grep "GPU offload" | tee -a "$SUMMARY" || true

echo "== benchmark ($CONCURRENCY streams)"
"$VPY" bench/run.py --model "$WORK/synthetic-1b.gguf" --systems inprocess,inprocess-batched,ggufd --concurrency "$CONCURRENCY" \
    --repeats 3 --repeats-concurrent 2 --max-tokens 128 --n-ctx 1024 --n-gpu-layers "$N_GPU_LAYERS" --no-prefix-reuse --out "$OUT" | tail -40

echo "== GPU-only tests"
"$VPY" -m pytest -q tests/engine/test_gpu_hardware.py -p no:cacheprovider 2>&1 | tail -5 | tee -a "$SUMMARY"
rm -rf "$WORK"
