"""End-to-end latency of the service against insightface ``FaceAnalysis`` run in-process.

Usage::

    python bench/latency.py                                  # starts the service itself
    python bench/latency.py --iterations 50 --output-json latency.json
    python bench/latency.py --url http://localhost:3000      # a service that is already running

It times ``POST /embedding`` (multipart ``image``) and ``POST /face-similarity`` (multipart
``image_a``, ``image_b``) over HTTP with one keep-alive ``httpx.Client``, one request at a time,
and the same work done by insightface 2.1 ``FaceAnalysis`` (detection + recognition only, on
the same buffalo_s ONNX files, det_size 640x640, CPUExecutionProvider) in this process:

- embedding: ``cv2.imdecode`` + ``app.get`` + the largest face. ``app.get`` embeds *every*
  face it finds, while the service embeds only the most prominent one, so on a photo with many
  faces a second peer variant detects all faces but embeds only the most prominent one
  (``app.det_model.detect`` + ``app.models["recognition"].get``): the like-for-like comparison.
- similarity: the same for both images, then the cosine of the two embeddings.

The agreement lines check that both sides see the same faces and embeddings; both pick the
most prominent face by InsightFace's ranking (area - 2 * offset from the centre^2).

Service and peer runs alternate within every iteration (and which one goes first alternates
between iterations) after a warm-up of both, so that machine noise hits both equally. The
ratios (service / peer, of p50s and of p99s) are measured in one run, on a machine whose 2 CPU
cores are shared by the benchmark client, the peer, the service process, Triton and Triton's
python-backend model processes: read them as relative figures for that machine, not as
absolute latencies. With few iterations p99 is close to the maximum.

Peer threads: the service's onnxruntime sessions use intra_op threads = cpu count (one model
instance) and inter_op threads = 1 (settings.py); the peer's sessions get the same by default
(``--peer-threads``), via the ``sess_options`` that ``FaceAnalysis`` passes to onnxruntime.

Without ``--url`` the service is started as ``python app.py`` from the repository root on port
3200 (Triton on 8200-8202, its log in a temporary folder) and stopped with SIGINT, then kill.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
from insightface.app import FaceAnalysis
from insightface.app.common import Face as InsightFace
from peer import build_peer, decode, percentiles, vectron_model_dir

from face_service.testing.service_process import service_url

SERVICE_PORT = 3200
TRITON_PORT = 8200  # and the next two
REQUEST_TIMEOUT_S = 60.0

Timed = Callable[[], object]
PeerEmbed = Callable[[FaceAnalysis, bytes], np.ndarray]


# ---------------------------------------------------------------- inputs


def read_photos(model_dir: Path) -> dict[str, bytes]:
    names = ("yaoming.jpg", "players.jpg", "gdp.jpg")
    return {name: (model_dir / name).read_bytes() for name in names}


# ---------------------------------------------------------------- the service


def service_embedding(client: httpx.Client, photo: bytes, name: str) -> dict[str, object]:
    response = client.post("/embedding", files={"image": (name, photo, "image/jpeg")})
    response.raise_for_status()
    return response.json()


def service_similarity(
    client: httpx.Client, photo_a: bytes, name_a: str, photo_b: bytes, name_b: str
) -> dict[str, object]:
    files = {"image_a": (name_a, photo_a, "image/jpeg"), "image_b": (name_b, photo_b, "image/jpeg")}
    response = client.post("/face-similarity", files=files)
    response.raise_for_status()
    return response.json()


# ---------------------------------------------------------------- the peer (insightface)


def box_area(bbox: np.ndarray) -> float:
    return float(max(0.0, bbox[2] - bbox[0]) * max(0.0, bbox[3] - bbox[1]))


def normalized(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def peer_embed_all(app: FaceAnalysis, photo: bytes) -> np.ndarray:
    """``app.get`` (every face embedded), then the largest face's embedding."""
    faces = app.get(decode(photo))
    if not faces:
        raise RuntimeError("the peer found no face")
    return normalized(max(faces, key=lambda face: box_area(face.bbox)).embedding)


def peer_embed_largest(app: FaceAnalysis, photo: bytes) -> np.ndarray:
    """Every face detected, only the most prominent one embedded: what the service does.
    ``max_num=1`` ranks faces by InsightFace's area - 2 * offset^2, the service's own rule."""
    image = decode(photo)
    boxes, points = app.det_model.detect(image, max_num=1)
    if boxes.shape[0] == 0:
        raise RuntimeError("the peer found no face")
    face = InsightFace(bbox=boxes[0, :4], kps=points[0], det_score=boxes[0, 4])
    return normalized(app.models["recognition"].get(image, face))


def peer_similarity(app: FaceAnalysis, embed: PeerEmbed, photo_a: bytes, photo_b: bytes) -> float:
    return float(np.dot(embed(app, photo_a), embed(app, photo_b)))


def peer_face_count(app: FaceAnalysis, photo: bytes) -> int:
    boxes, _ = app.det_model.detect(decode(photo))
    return int(boxes.shape[0])


# ---------------------------------------------------------------- cases and measurement


@dataclass
class Variant:
    """One way of timing a case: the service over HTTP, or one peer variant in-process."""

    label: str
    run: Timed
    samples_ms: list[float] = field(default_factory=list)


@dataclass
class Case:
    name: str
    service: Variant
    peers: list[Variant]

    def variants(self) -> list[Variant]:
        return [self.service, *self.peers]


def build_cases(client: httpx.Client, app: FaceAnalysis, photos: dict[str, bytes]) -> list[Case]:
    yao, players, gdp = photos["yaoming.jpg"], photos["players.jpg"], photos["gdp.jpg"]
    crowd = peer_face_count(app, players)
    pair_faces = peer_face_count(app, yao) + peer_face_count(app, gdp)
    return [
        Case(
            "embedding yaoming.jpg",
            Variant("POST /embedding", lambda: service_embedding(client, yao, "yaoming.jpg")),
            [Variant("app.get (1 face)", lambda: peer_embed_all(app, yao))],
        ),
        Case(
            f"embedding players.jpg ({crowd} faces)",
            Variant("POST /embedding", lambda: service_embedding(client, players, "players.jpg")),
            [
                Variant(f"app.get (embeds all {crowd})", lambda: peer_embed_all(app, players)),
                Variant("detect all, embed prominent", lambda: peer_embed_largest(app, players)),
            ],
        ),
        Case(
            "similarity yaoming.jpg vs gdp.jpg",
            Variant(
                "POST /face-similarity",
                lambda: service_similarity(client, yao, "yaoming.jpg", gdp, "gdp.jpg"),
            ),
            [
                Variant(
                    f"app.get x2 (embeds all {pair_faces})",
                    lambda: peer_similarity(app, peer_embed_all, yao, gdp),
                ),
                Variant(
                    "detect all, embed prominent x2",
                    lambda: peer_similarity(app, peer_embed_largest, yao, gdp),
                ),
            ],
        ),
    ]


def time_ms(run: Timed) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000.0


def warm_up(cases: list[Case], rounds: int) -> None:
    for _ in range(rounds):
        for case in cases:
            for variant in case.variants():
                variant.run()


def measure(cases: list[Case], iterations: int) -> None:
    """Service and peer runs interleaved; every other iteration the order is reversed."""
    for iteration in range(iterations):
        for case in cases:
            variants = case.variants()
            if iteration % 2:
                variants.reverse()
            for variant in variants:
                variant.samples_ms.append(time_ms(variant.run))


# ---------------------------------------------------------------- agreement check


def agreement(client: httpx.Client, app: FaceAnalysis, photos: dict[str, bytes]) -> list[str]:
    """Lines showing that service and peer do the same work: same face, same embedding."""
    lines = []
    for name in ("yaoming.jpg", "players.jpg"):
        body = service_embedding(client, photos[name], name)
        service_vector = normalized(np.asarray(body["embedding"], dtype=np.float32))
        peer_vector = peer_embed_largest(app, photos[name])
        lines.append(
            f"{name}: faces service {body['faces_detected']} / peer "
            f"{peer_face_count(app, photos[name])}, cosine(service, peer embedding) "
            f"{float(np.dot(service_vector, peer_vector)):.4f}"
        )
    body = service_similarity(
        client, photos["yaoming.jpg"], "yaoming.jpg", photos["gdp.jpg"], "gdp.jpg"
    )
    peer = peer_similarity(app, peer_embed_largest, photos["yaoming.jpg"], photos["gdp.jpg"])
    lines.append(
        f"similarity yaoming.jpg vs gdp.jpg: service {body['similarity']:.4f}, peer {peer:.4f}"
    )
    return lines


# ---------------------------------------------------------------- report


def rows(cases: list[Case]) -> list[dict[str, object]]:
    result = []
    for case in cases:
        service_p50, service_p99 = percentiles(case.service.samples_ms)
        for peer in case.peers:
            peer_p50, peer_p99 = percentiles(peer.samples_ms)
            result.append(
                {
                    "case": case.name,
                    "service": case.service.label,
                    "peer": peer.label,
                    "service_p50_ms": service_p50,
                    "service_p99_ms": service_p99,
                    "peer_p50_ms": peer_p50,
                    "peer_p99_ms": peer_p99,
                    "ratio_p50": service_p50 / peer_p50,
                    "ratio_p99": service_p99 / peer_p99,
                }
            )
    return result


def table(report_rows: list[dict[str, object]]) -> str:
    header = ("case", "peer", "svc p50", "svc p99", "peer p50", "peer p99", "p50 x", "p99 x")
    lines = [
        (
            str(row["case"]),
            str(row["peer"]),
            f"{row['service_p50_ms']:.1f}",
            f"{row['service_p99_ms']:.1f}",
            f"{row['peer_p50_ms']:.1f}",
            f"{row['peer_p99_ms']:.1f}",
            f"{row['ratio_p50']:.2f}",
            f"{row['ratio_p99']:.2f}",
        )
        for row in report_rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def format_line(cells: tuple[str, ...]) -> str:
        text = [
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(text)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([format_line(header), rule, *(format_line(line) for line in lines)])


def write_json(path: Path, meta: dict[str, object], cases: list[Case], checks: list[str]) -> None:
    samples = {
        case.name: {variant.label: variant.samples_ms for variant in case.variants()}
        for case in cases
    }
    document = {**meta, "rows": rows(cases), "agreement": checks, "samples_ms": samples}
    path.write_text(json.dumps(document, indent=2) + "\n")


# ---------------------------------------------------------------- main


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running service (default: start one on :3200)")
    parser.add_argument("--iterations", type=int, default=30, help="timed runs per case and side")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed runs per case and side first"
    )
    parser.add_argument(
        "--peer-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="onnxruntime intra_op threads of the peer (default: cpu count, as the service)",
    )
    parser.add_argument("--output-json", type=Path, help="also write rows and raw samples here")
    arguments = parser.parse_args(argv)
    if arguments.iterations < 1 or arguments.warmup < 0 or arguments.peer_threads < 1:
        parser.error("--iterations and --peer-threads must be >= 1, --warmup >= 0")
    return arguments


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    model_dir = vectron_model_dir()
    photos = read_photos(model_dir)
    with (
        tempfile.TemporaryDirectory(prefix="face-bench-peer-") as pack_dir,
        service_url(arguments.url, api_port=SERVICE_PORT, triton_port=TRITON_PORT) as url,
        httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client,
    ):
        app = build_peer(model_dir, Path(pack_dir), arguments.peer_threads)
        cases = build_cases(client, app, photos)
        warm_up(cases, arguments.warmup)
        checks = agreement(client, app, photos)
        measure(cases, arguments.iterations)
    meta = {
        "url": url,
        "iterations": arguments.iterations,
        "warmup": arguments.warmup,
        "cpu_count": os.cpu_count(),
        "peer_intra_op_threads": arguments.peer_threads,
        "onnxruntime": onnxruntime.__version__,
    }
    sys.stdout.write(
        f"service {url} vs insightface FaceAnalysis in-process; {arguments.iterations} iterations "
        f"after {arguments.warmup} warm-up, interleaved; {os.cpu_count()} CPUs shared; peer "
        f"intra_op threads {arguments.peer_threads}; times in ms, x = service / peer\n\n"
    )
    sys.stdout.write(table(rows(cases)) + "\n\nagreement (service vs peer, same photos):\n")
    sys.stdout.write("".join(f"  {line}\n" for line in checks))
    if arguments.output_json is not None:
        write_json(arguments.output_json, meta, cases, checks)
        sys.stdout.write(f"\nwrote {arguments.output_json}\n")


if __name__ == "__main__":
    main()
