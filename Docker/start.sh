#!/usr/bin/env bash
# Entry point of the Docker image (see Docker/Dockerfile).
#
#   start.sh           all in one: Triton on 127.0.0.1 in the background, then the API on FACE_PORT
#                      (3000). With FACE_TRITON_URL already set it starts no Triton and runs only the
#                      API against that server.
#   start.sh triton    Triton alone, listening on all addresses, for API containers elsewhere
#                      (FACE_TRITON_URL=<this host>:8000); its control APIs are restricted when
#                      FACE_TRITON_CONTROL_KEY is set (give the API containers the same value).
#
# Before Triton starts, the config.pbtxt files are rewritten for this machine (onnxruntime threads
# follow its cores; FACE_TRITON_INSTANCES, FACE_*_MAX_BATCH_SIZE and the like apply), or, with
# FACE_MODEL_PACK set, that pack is installed first. A read-only repository keeps its configs.
# tritonserver's flags come from face_service.inference.server_arguments: the one list that the
# local server of `python app.py` gets too (ports, FACE_TRITON_EXTRA_ARGS and all).
#
# SIGTERM or SIGINT goes to the API; once it has exited, Triton gets SIGTERM (then SIGKILL after
# FACE_STOP_GRACE_S, 15 s). Triton shuts down gracefully on SIGTERM as on SIGINT, and SIGTERM also
# stops it while it is still loading models, when a background job ignores SIGINT. If either
# process dies, the other is stopped and the script exits non-zero.
#
# Every FACE_* variable is a setting of face_service/settings.py; the few read here are read
# before any Python runs, with the same defaults (FACE_MODEL_REPOSITORY: /models, the image's).
set -euo pipefail

APP_DIR="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
PYTHON="${FACE_PYTHON:-python3}"
TRITONSERVER="${FACE_TRITONSERVER:-tritonserver}"
# Exported: the Python steps below read it through the settings.
export FACE_MODEL_REPOSITORY="${FACE_MODEL_REPOSITORY:-/models}"
MODELS="$FACE_MODEL_REPOSITORY"
BACKEND="${FACE_TRITON_BACKEND:-onnxruntime}"
[ "$BACKEND" = auto ] && BACKEND=onnxruntime  # this image's Triton has the native backend
STARTUP_TIMEOUT_S="${FACE_TRITON_STARTUP_TIMEOUT_S:-180}"
STARTUP_TIMEOUT_S="${STARTUP_TIMEOUT_S%%.*}"  # the app's setting is a float
STOP_GRACE_S="${FACE_STOP_GRACE_S:-15}"

log() { echo "start.sh: $*" >&2; }

is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
for value in STARTUP_TIMEOUT_S STOP_GRACE_S; do
  if ! is_uint "${!value}"; then
    log "$value must be a whole number, not '${!value}'"
    exit 2
  fi
done

cd "$APP_DIR"

prepare_models() {
  if [ -n "${FACE_MODEL_PACK:-}" ]; then
    log "installing model pack $FACE_MODEL_PACK into $MODELS"
    "$PYTHON" extract_insightface_models.py --pack "$FACE_MODEL_PACK" --backend "$BACKEND" \
      --repository "$MODELS"
    return
  fi
  # Configs only: the ONNX files in the repository stay as they are (a mounted pack included).
  if ! "$PYTHON" -m face_service.inference.model_config --backend "$BACKEND"; then
    log "could not rewrite the configs in $MODELS; Triton serves the ones it has"
  fi
}

# Sets the array `arguments` to tritonserver's flags and HTTP_PORT to its HTTP port;
# $1: the address to listen on.
triton_arguments() {
  arguments=()
  mapfile -d '' -t arguments < <(
    "$PYTHON" -m face_service.inference.server_arguments --null --address "$1"
  )
  if [ "${#arguments[@]}" -eq 0 ]; then
    log "could not build tritonserver's arguments (see the error above)"
    exit 2
  fi
  HTTP_PORT=""
  for argument in "${arguments[@]}"; do
    case "$argument" in --http-port=*) HTTP_PORT="${argument#--http-port=}" ;; esac
  done
}

if [ "${1:-}" = triton ]; then
  prepare_models
  triton_arguments "${FACE_TRITON_BIND_ADDRESS:-0.0.0.0}"
  log "starting tritonserver alone"
  exec "$TRITONSERVER" "${arguments[@]}"
fi
if [ $# -gt 0 ]; then
  log "unknown argument '$1' (expected none, or 'triton')"
  exit 2
fi

if [ -n "${FACE_TRITON_URL:-}" ]; then
  log "FACE_TRITON_URL=$FACE_TRITON_URL: using that Triton, starting none here"
  exec "$PYTHON" app.py
fi

BIND="${FACE_TRITON_BIND_ADDRESS:-127.0.0.1}"
CLIENT_HOST="$BIND"
[ "$BIND" = 0.0.0.0 ] && CLIENT_HOST=127.0.0.1

triton_pid=""
app_pid=""

# Sends $2 to process $1, waits up to $3 seconds, then kills it.
stop_process() {
  local pid=$1 signal=$2 grace=$3 ticks=0
  kill -s "$signal" "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$ticks" -ge $((grace * 4)) ]; then
      log "process $pid ignored SIG$signal for ${grace} s; killing it"
      kill -s KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.25
    ticks=$((ticks + 1))
  done
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # called by the traps below
on_signal() {  # $1: TERM or INT
  if [ -n "$app_pid" ]; then
    log "SIG$1: stopping the API"
    kill -s "$1" "$app_pid" 2>/dev/null || true
  else
    log "SIG$1 while Triton was starting: stopping it"
    [ -n "$triton_pid" ] && stop_process "$triton_pid" TERM "$STOP_GRACE_S"
    [ "$1" = INT ] && exit 130
    exit 143
  fi
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

prepare_models

# Triton's control APIs (shared-memory registration, model repository, trace, logging) answer
# only requests with this key (server_arguments.py), which the API below gets too: a fresh one
# per start unless FACE_TRITON_CONTROL_KEY is set. Never logged.
if [ -z "${FACE_TRITON_CONTROL_KEY:-}" ]; then
  FACE_TRITON_CONTROL_KEY="$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
fi
export FACE_TRITON_CONTROL_KEY

triton_arguments "$BIND"
log "starting tritonserver ${arguments[*]//$FACE_TRITON_CONTROL_KEY/<key>}"
"$TRITONSERVER" "${arguments[@]}" &
triton_pid=$!

ready_url="http://$CLIENT_HOST:$HTTP_PORT/v2/health/ready"
deadline=$((SECONDS + STARTUP_TIMEOUT_S))
until curl -fs -o /dev/null --max-time 2 "$ready_url"; do
  if ! kill -0 "$triton_pid" 2>/dev/null; then
    status=0
    wait "$triton_pid" || status=$?
    log "tritonserver exited with status $status before it was ready"
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "tritonserver was not ready after ${STARTUP_TIMEOUT_S} s ($ready_url)"
    stop_process "$triton_pid" TERM "$STOP_GRACE_S"
    exit 1
  fi
  sleep 0.5
done
log "tritonserver is ready (pid $triton_pid)"

export FACE_TRITON_URL="$CLIENT_HOST:$HTTP_PORT"
export FACE_MODEL_REPOSITORY="$MODELS"
"$PYTHON" app.py &
app_pid=$!

# Wait for the first of the two to exit; a trapped signal interrupts `wait` and leaves `exited` unset.
status=0
while :; do
  unset exited
  status=0
  wait -n -p exited "$app_pid" "$triton_pid" || status=$?
  [ -n "${exited:-}" ] && break
done

if [ "$exited" = "$app_pid" ]; then
  log "the API exited with status $status; stopping tritonserver"
  stop_process "$triton_pid" TERM "$STOP_GRACE_S"
  exit "$status"
fi
log "tritonserver exited with status $status; stopping the API"
stop_process "$app_pid" TERM "$STOP_GRACE_S"
exit 1
