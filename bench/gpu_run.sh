#!/usr/bin/env bash
# The GPU measurement in one call of the device tool: unpacks the pack that bench/gpu_pack.sh built
# (default .gpu, carried), checks the machine early and loudly (CUDA seen by torch, every import of
# the service, tritonserver and the python backend stub linking), then runs bench/gpu.py on
# the best configuration measured so far (14 API processes on one Triton, 2 GPU instances per
# model, fitted detector canvas, inputs in the HTTP body: FACE_DEVICE=gpu's transport) with a
# concurrency sweep, the recognizer alone, parity with the CPU and bench/accuracy.py (LFW +
# deepface pairs of the pack), then, time allowing, one level with inputs through shared memory. Everything it prints
# is also written under $OUT (gpu_run.log, gpu.txt/json, gpu_shm.txt/json, triton logs).
#
#   bash bench/gpu_run.sh                          # on the GPU machine, from the repository root
#   REHEARSAL=1 OUT=/tmp/r bash bench/gpu_run.sh   # on a CPU box: FACE_DEVICE=cpu, short levels,
#                                                  # the local venv's packages, the pack's server
set -euo pipefail
cd "$(dirname "$0")/.."
pack="${GPU_PACK:-.gpu}"
out="${OUT:?set OUT to the folder for the results}"
rehearsal="${REHEARSAL:-0}"
site="${SITE:-/tmp/face-gpu-site}"
mkdir -p "$out"
exec > >(tee -a "$out/gpu_run.log") 2>&1
log() { echo "[$(date -u +%H:%M:%S) +$((SECONDS))s] $*"; }
fail() { log "FAILED: $*"; exit 1; }
# tar's xz filter where xz is installed, else Python's own lzma.
unpack() {
  tar -xJf "$1" -C "$2" 2>/dev/null ||
    "$python" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
}
export PYTHONUNBUFFERED=1
# Several GPUs are never assumed; NVLink multicast stays off (the device tool's KINDS.md).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

if [ "$rehearsal" = 1 ]; then
  python="${PYTHON:-.venv/bin/python}"
  device=cpu
  sweep=("--concurrency=2,4" --group-concurrency 2 --duration 3 --photos 40 --api-processes 2
    --client-processes 1 --recognizer-threads 1)
  accuracy=(--skip-accuracy)
  shm_sweep=(--concurrency 4 --group-concurrency "" --duration 3 --photos 40 --api-processes 2
    --client-processes 1 --recognizer-threads 1 --skip-accuracy)
else
  python="${PYTHON:-python3}"
  device=gpu
  sweep=("--concurrency=8,32,64,128,256,512" --group-concurrency 64 --duration 8 --photos 400
    --api-processes 14 --client-processes 4 --recognizer-threads 8)
  accuracy=()
  shm_sweep=(--concurrency 256 --group-concurrency "" --duration 8 --photos 400
    --api-processes 14 --client-processes 4 --recognizer-threads 8 --skip-accuracy)
fi
# The configuration (bench/gpu.py adds its GPU batching defaults): fp32 on the CPU side names no
# OpenVINO (not installed there); the GPU models run in FACE_GPU_PRECISION (fp16).
service_env=(--env FACE_TRITON_INSTANCES=2 --env FACE_DETECTOR_CANVAS=fit --env FACE_PRECISION=fp32
  --env FACE_CPU_RUNTIME=onnxruntime)

log "gpu_run.sh: device $device, $(nproc) cores, pack $pack, results in $out"
[ -f "$pack/tritonserver.tar.xz" ] || fail "$pack/tritonserver.tar.xz is missing: bash bench/gpu_pack.sh, and carry $pack"
[ -d "$pack/faces" ] || fail "$pack/faces is missing: bash bench/gpu_pack.sh"
mkdir -p "$site"
log "unpacking the server, the packages and the models into $site and model_repository"
unpack "$pack/tritonserver.tar.xz" "$site"
if [ "$rehearsal" = 1 ]; then
  # This box's Python is not 3.12: the packages stay the venv's, and its own python backend stub
  # stands in beside the pack's server (which carries 3.12's only).
  version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  stubs="$("$python" -c 'from face_service.inference.python_backend import pytriton_server_paths as p; print(p()[0].parent.parent / "python_backend_stubs")')"
  cp -r "$stubs/$version" "$site/pytriton/tritonserver/python_backend_stubs/"
else
  unpack "$pack/site.tar.xz" "$site"
fi
unpack "$pack/models.tar.xz" model_repository
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
log "unpacked: $(du -sh "$site" | cut -f1) of packages"

log "self-check: Python, torch and CUDA, the service's imports"
"$python" - "$device" <<'PY' || fail "self-check (above)"
import sys
device = sys.argv[1]
print("python", sys.version.split()[0], sys.executable)
import numpy, onnx, onnxruntime, cv2
print("numpy", numpy.__version__, "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__, "opencv", cv2.__version__)
if device == "gpu":
    import torch, onnx2torch  # noqa: F401
    assert torch.cuda.is_available(), "torch sees no CUDA device"
    print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))
import app, pipeline, triton_service  # noqa: F401  (the service's whole import graph)
import tritonclient.http, fastapi, uvicorn, pydantic_settings, psycopg, numkong  # noqa: F401
from face_service.inference.python_backend import python_library_dir, pytriton_server_paths
binary, libs = pytriton_server_paths()
print("tritonserver", binary)
print("libpython in", python_library_dir())
PY
tritonserver="$("$python" -c 'from face_service.inference.python_backend import pytriton_server_paths as p; print(p()[0])')"
libs="$("$python" -c 'from face_service.inference.python_backend import pytriton_server_paths as p; print(p()[1])')"
libpython="$("$python" -c 'from face_service.inference.python_backend import python_library_dir as d; print(d())')"
case "$tritonserver" in "$site"/*) ;; *) fail "tritonserver $tritonserver is not the pack's ($site)" ;; esac
server="$(dirname "$(dirname "$tritonserver")")"
stub="$server/python_backend_stubs/$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')/triton_python_backend_stub"
missing="$(LD_LIBRARY_PATH="$libpython:$libs" ldd "$tritonserver" "$server"/backends/python/*.so "$stub" | grep 'not found' || true)"
[ -z "$missing" ] || fail "tritonserver, its python backend or the stub lacks: $missing"
if [ "$device" = gpu ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv,noheader || true
fi
log "self-check passed"

# LAYOUTS="10 14 16": instead of the full run, the API process counts to compare at C=256 and
# 512, inputs in the HTTP body (GPU machine, 2026-12-02: 823 img/s at 12.4 ms of API CPU per
# request against 642 img/s at 16.8 ms through shared memory, 14 API processes, C=256).
if [ -n "${LAYOUTS:-}" ]; then
  for processes in $LAYOUTS; do
    log "layout: $processes API processes, inputs in the HTTP body"
    timeout 300 "$python" bench/gpu.py --device "$device" --faces-dir "$pack/faces" \
      "--concurrency=256,512" --group-concurrency "" --duration 8 --photos 400 \
      --api-processes "$processes" --client-processes 4 --recognizer-threads 8 --skip-accuracy \
      "${service_env[@]}" --env FACE_TRITON_TRANSPORT=binary \
      --output-json "$out/layout_$processes.json" 2>&1 | tee "$out/layout_$processes.txt" || true
  done
  for processes in $LAYOUTS; do
    echo "===== $processes API processes ====="
    grep -A3 '^POST /embedding' "$out/layout_$processes.txt" || true
    grep '^where the wall' "$out/layout_$processes.txt" || true
  done
  exit 0
fi

log "bench/gpu.py: the sweep, the recognizer alone, parity and accuracy"
set +e
timeout 420 "$python" bench/gpu.py --device "$device" --faces-dir "$pack/faces" "${sweep[@]}" \
  "${accuracy[@]}" "${service_env[@]}" --output-json "$out/gpu.json" --keep-logs "$out/triton.log" \
  2>&1 | tee "$out/gpu.txt"
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || fail "bench/gpu.py exited with $status (Triton's log: $out/triton.log)"
log "main run done"

if [ "$SECONDS" -lt "${BINARY_BEFORE_S:-380}" ]; then
  log "one more level with inputs through shared memory (FACE_TRITON_TRANSPORT=shm)"
  set +e
  timeout $((560 - SECONDS)) "$python" bench/gpu.py --device "$device" --faces-dir "$pack/faces" \
    "${shm_sweep[@]}" "${service_env[@]}" --env FACE_TRITON_TRANSPORT=shm \
    --output-json "$out/gpu_shm.json" 2>&1 | tee "$out/gpu_shm.txt"
  set -e
else
  log "no time left for the shared-memory level"
fi
log "gpu_run.sh: done in ${SECONDS}s; results in $out: $(find "$out" -type f -printf '%f ')"
# The tool returns the end of the output: the tables again, last.
echo "===== summary: inputs in the HTTP body (gpu.txt) ====="
grep -v ' INFO ' "$out/gpu.txt" || true
if [ -f "$out/gpu_shm.txt" ]; then
  echo "===== inputs through shared memory (gpu_shm.txt) ====="
  grep -A4 '^POST /embedding' "$out/gpu_shm.txt" || true
fi
