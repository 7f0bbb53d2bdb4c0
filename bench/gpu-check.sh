#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and no internet (issue #8). Run from the repository root:
#
#   WHEELS=.device/wheels CUDA_LLAMA=.device/llama_cpp-0.3.36-cuda13-sm90.tar.gz \
#   NVIDIA_LIBS=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib OUT=/tmp/out bash bench/gpu-check.sh
#
# WHEELS: a folder of wheels for ggufd's dependencies (pip download --only-binary=:all: --python-version 3.12
#   --platform manylinux2014_x86_64 -d .device/wheels tornado pluggy jsonschema structlog jinja2 prometheus-client
#   sdnotify openai gguf diskcache numpy ...); CUDA_LLAMA: the CUDA build of llama_cpp (a tarball of the package
#   folder); NVIDIA_LIBS: where libcudart/libcublas live; OUT: where the table, JSON and logs go.
# Steps: a venv with the sent packages; the synthetic 1.1B model generated here; ggufd on device 0 with every
# layer offloaded (checked through /health); the benchmark at 1, 8 and 32 streams against ggufd, in-process
# llama-cpp-python and the in-process llama_decode loop; the GPU-only tests. Budget: under 5 minutes.
set -euo pipefail
OUT=${OUT:?set OUT to a folder for the results}
WHEELS=${WHEELS:-.device/wheels}
CUDA_LLAMA=${CUDA_LLAMA:-.device/llama_cpp-0.3.36-cuda13-sm90.tar.gz}
NVIDIA_LIBS=${NVIDIA_LIBS:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib}
PY=${PYTHON:-python3}
N_GPU_LAYERS=${N_GPU_LAYERS:--1}
MODEL_ARGS=${MODEL_ARGS:---synthetic-1b}
CONCURRENCY=${CONCURRENCY:-1,8,32}
mkdir -p "$OUT"
WORK=$(mktemp -d)
export LD_LIBRARY_PATH="$NVIDIA_LIBS:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true

echo "== packages"
$PY -m venv --system-site-packages "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --no-index --no-deps "$WHEELS"/*.whl 2>&1 | tail -3 || true
mkdir -p "$WORK/cuda" && tar -xzf "$CUDA_LLAMA" -C "$WORK/cuda"
export PYTHONPATH="$WORK/cuda:$PWD:$PWD/tests:${PYTHONPATH:-}"
VPY="$WORK/venv/bin/python"
"$VPY" -c "import llama_cpp; assert llama_cpp.llama_supports_gpu_offload() or $N_GPU_LAYERS == 0, 'this llama_cpp has no GPU offload'; print('llama_cpp', llama_cpp.__version__, 'GPU offload', llama_cpp.llama_supports_gpu_offload())" | tee "$OUT/llama.txt"

echo "== synthetic model"
"$VPY" tests/gguf_factory.py "$WORK/synthetic-1b.gguf" $MODEL_ARGS | tee "$OUT/model.txt"

echo "== offload check through /health"
"$VPY" - "$WORK" "$OUT" "$N_GPU_LAYERS" <<'PY'
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

echo "== benchmark (1, 8, 32 streams)"
"$VPY" bench/run.py --model "$WORK/synthetic-1b.gguf" --systems inprocess,inprocess-batched,ggufd --concurrency "$CONCURRENCY" \
    --repeats 3 --repeats-concurrent 2 --max-tokens 128 --n-ctx 1024 --n-gpu-layers "$N_GPU_LAYERS" --no-prefix-reuse --out "$OUT" | tail -40

echo "== GPU-only tests"
"$VPY" -m pytest -q tests/test_gpu_hardware.py -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/gpu-tests.txt"
rm -rf "$WORK"
