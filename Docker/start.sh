#!/usr/bin/env bash
# Entry point of the Docker image (see Docker/Dockerfile).
#
#   start.sh           all in one: the API (`python app.py`) on FACE_PORT (3000), which starts
#                      Triton itself (FACE_TRITONSERVER, the image's native-onnxruntime server, on
#                      127.0.0.1) and supervises it as the local service does: a Triton that dies
#                      or stops answering is killed and restarted by the watchdog of
#                      triton_service.py, while /health answers 503 and requests fail fast. With
#                      FACE_TRITON_URL set, the API uses that server and starts none.
#   start.sh triton    Triton alone, listening on all addresses, for API containers elsewhere
#                      (FACE_TRITON_URL=<this host>:8000); its control APIs are restricted when
#                      FACE_TRITON_CONTROL_KEY is set (give the API containers the same value).
#                      If it dies the container exits: run it with a restart policy.
#
# With FACE_MODEL_PACK set, that pack is installed into FACE_MODEL_REPOSITORY first. The
# config.pbtxt files are then rewritten for this machine (onnxruntime threads follow its cores;
# FACE_TRITON_INSTANCES, FACE_*_MAX_BATCH_SIZE and the like apply): by the API at start in the
# all-in-one mode, here for `triton`. A read-only repository keeps its configs.
# tritonserver's flags come from face_service.inference.server_arguments in both modes.
#
# SIGTERM or SIGINT goes to the process this script becomes (exec): the API shuts down, then
# stops Triton (SIGINT, then SIGKILL after FACE_STOP_GRACE_S, 15 s); Triton alone shuts down
# gracefully on SIGTERM. Should the API itself exit, so does the container: the documented
# `--restart unless-stopped` (compose: `restart: unless-stopped`) brings it back.
#
# Every FACE_* variable is a setting of face_service/settings.py; the few read here are read
# before any Python runs, with the same defaults (FACE_MODEL_REPOSITORY: /models, the image's).
set -euo pipefail

APP_DIR="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
PYTHON="${FACE_PYTHON:-python3}"
# Exported: the Python steps below read it through the settings.
export FACE_MODEL_REPOSITORY="${FACE_MODEL_REPOSITORY:-/models}"
BACKEND="${FACE_TRITON_BACKEND:-onnxruntime}"
[ "$BACKEND" = auto ] && BACKEND=onnxruntime # this image's Triton has the native backend

log() { echo "start.sh: $*" >&2; }

cd "$APP_DIR"

install_model_pack() {
  if [ -n "${FACE_MODEL_PACK:-}" ]; then
    log "installing model pack $FACE_MODEL_PACK into $FACE_MODEL_REPOSITORY"
    "$PYTHON" extract_insightface_models.py --pack "$FACE_MODEL_PACK" --backend "$BACKEND" \
      --repository "$FACE_MODEL_REPOSITORY"
  fi
}

if [ "${1:-}" = triton ]; then
  install_model_pack
  # Configs only: the ONNX files in the repository stay as they are (a mounted pack included).
  if ! "$PYTHON" -m face_service.inference.model_config --backend "$BACKEND"; then
    log "could not rewrite the configs in $FACE_MODEL_REPOSITORY; Triton serves the ones it has"
  fi
  arguments=()
  mapfile -d '' -t arguments < <(
    "$PYTHON" -m face_service.inference.server_arguments --null \
      --address "${FACE_TRITON_BIND_ADDRESS:-0.0.0.0}"
  )
  if [ "${#arguments[@]}" -eq 0 ]; then
    log "could not build tritonserver's arguments (see the error above)"
    exit 2
  fi
  log "starting tritonserver alone"
  exec "${FACE_TRITONSERVER:-tritonserver}" "${arguments[@]}"
fi
if [ $# -gt 0 ]; then
  log "unknown argument '$1' (expected none, or 'triton')"
  exit 2
fi

if [ -n "${FACE_TRITON_URL:-}" ]; then
  log "FACE_TRITON_URL=$FACE_TRITON_URL: using that Triton, starting none here"
else
  install_model_pack
fi
exec "$PYTHON" app.py
