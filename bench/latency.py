"""End-to-end latency of the service against insightface ``FaceAnalysis`` run in-process.

Usage::

    python bench/latency.py                                  # starts the services itself
    python bench/latency.py --iterations 50 --output-json latency.json
    python bench/latency.py --services "openvino fp32 fixed,onnxruntime fp32 fixed"
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

Services: without ``--url`` one service per ``--services`` configuration (runtime and precision:
"onnxruntime fp32 fixed", "openvino fp32 fixed", "openvino fp32 fit", "openvino auto fit" (the
default), "openvino bf16 fit"; default all five) is started as
``python app.py`` on free ports, all at once, and every configuration is timed in the same
interleaved rounds as the peer. The one-face cases include LFW photos (250x250, held out from the
accuracy threshold; ``../shared/faces/identities``), one different photo per iteration.

Model time alone: for each configuration, the same runtime and precision in this process
(face_service.inference.python_runtimes, the service's own runtime code) running only the two
models on the inputs the service gives them (the detector on the canvas the service letterboxes
the photo to, the recognizer on one 112x112 crop per image), so that "x model" = service p50 /
model-alone p50 is the service's overhead over pure model time (pre- and post-processing,
HTTP, Triton's hops).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
from insightface.app import FaceAnalysis
from insightface.app.common import Face as InsightFace
from latency_report import Case, Timed, Variant, rows, table, write_json
from model_alone import ModelAlone
from peer import build_peer, decode, vectron_model_dir

from face_service.settings import Settings
from face_service.testing.service_process import ServiceProcess

REQUEST_TIMEOUT_S = 60.0
# Held-out LFW photos (250x250) for the one-face case, relative to the repository root.
LFW_PHOTOS = Path("../shared/faces/identities")
LFW_COUNT = 20


# Service configurations: environment of each.
def configuration(runtime: str, precision: str, canvas: str) -> dict[str, str]:
    return {
        "FACE_CPU_RUNTIME": runtime,
        "FACE_PRECISION": precision,
        "FACE_DETECTOR_CANVAS": canvas,
    }


CONFIGURATIONS = {
    "onnxruntime fp32 fixed": configuration("onnxruntime", "fp32", "fixed"),  # before issue 13
    "openvino fp32 fixed": configuration("openvino", "fp32", "fixed"),
    "openvino fp32 fit": configuration("openvino", "fp32", "fit"),
    # The default: the recognizer in bf16 where the CPU has it natively, the detector in fp32.
    "openvino auto fit": configuration("openvino", "auto", "fit"),
    "openvino bf16 fit": configuration("openvino", "bf16", "fit"),
}

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


def read_lfw(count: int) -> list[tuple[str, bytes]]:
    """``count`` held-out LFW photos, one per identity, sorted by name."""
    if not LFW_PHOTOS.is_dir():
        raise SystemExit(f"{LFW_PHOTOS} is missing: run from the repository root")
    paths = sorted(LFW_PHOTOS.glob("*/1.jpg"))[:count]
    return [(path.parent.name + ".jpg", path.read_bytes()) for path in paths]


class Rotation:
    """The LFW photo of the current iteration: every variant of one round gets the same one."""

    def __init__(self, photos: list[tuple[str, bytes]]) -> None:
        self.photos = photos
        self.index = 0

    def current(self) -> tuple[str, bytes]:
        return self.photos[self.index % len(self.photos)]


def build_cases(
    clients: dict[str, httpx.Client],
    models: dict[str, ModelAlone],
    app: FaceAnalysis,
    photos: dict[str, bytes],
    lfw: Rotation,
) -> list[Case]:
    yao, players, gdp = photos["yaoming.jpg"], photos["players.jpg"], photos["gdp.jpg"]
    crowd = peer_face_count(app, players)
    pair_faces = peer_face_count(app, yao) + peer_face_count(app, gdp)
    inputs = {
        label: {name: model.detector_input(photo) for name, photo in photos.items()}
        for label, model in models.items()
    }
    lfw_inputs = {
        label: [model.detector_input(photo) for _, photo in lfw.photos]
        for label, model in models.items()
    }

    def services(run: Callable[[httpx.Client], object], route: str) -> list[Variant]:
        return [
            Variant(f"{route} {label}", lambda c=client: run(c))
            for label, client in clients.items()
        ]

    def alone(names: tuple[str, ...]) -> list[Variant]:
        return [
            Variant(
                f"models alone {label}",
                lambda m=model, i=inputs[label]: m.run([i[name] for name in names]),
            )
            for label, model in models.items()
        ]

    return [
        Case(
            f"embedding LFW 250x250 ({len(lfw.photos)} photos)",
            services(
                lambda c: service_embedding(c, lfw.current()[1], lfw.current()[0]), "/embedding"
            ),
            [Variant("app.get (1 face)", lambda: peer_embed_all(app, lfw.current()[1]))],
            [
                Variant(
                    f"models alone {label}",
                    lambda m=model, i=lfw_inputs[label]: m.run([i[lfw.index % len(i)]]),
                )
                for label, model in models.items()
            ],
        ),
        Case(
            "embedding yaoming.jpg",
            services(lambda c: service_embedding(c, yao, "yaoming.jpg"), "/embedding"),
            [Variant("app.get (1 face)", lambda: peer_embed_all(app, yao))],
            alone(("yaoming.jpg",)),
        ),
        Case(
            f"embedding players.jpg ({crowd} faces)",
            services(lambda c: service_embedding(c, players, "players.jpg"), "/embedding"),
            [
                Variant(f"app.get (embeds all {crowd})", lambda: peer_embed_all(app, players)),
                Variant("detect all, embed prominent", lambda: peer_embed_largest(app, players)),
            ],
            alone(("players.jpg",)),
        ),
        Case(
            "similarity yaoming.jpg vs gdp.jpg",
            services(
                lambda c: service_similarity(c, yao, "yaoming.jpg", gdp, "gdp.jpg"),
                "/face-similarity",
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
            alone(("yaoming.jpg", "gdp.jpg")),
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


def measure(cases: list[Case], iterations: int, lfw: Rotation) -> None:
    """Service and peer runs interleaved; every other iteration the order is reversed."""
    for iteration in range(iterations):
        lfw.index = iteration
        for case in cases:
            variants = case.variants()
            if iteration % 2:
                variants.reverse()
            for variant in variants:
                variant.samples_ms.append(time_ms(variant.run))


# ---------------------------------------------------------------- agreement check


def agreement(
    clients: dict[str, httpx.Client], app: FaceAnalysis, photos: dict[str, bytes]
) -> list[str]:
    """Lines showing that services and peer do the same work: same face, same embedding."""
    lines = []
    for label, client in clients.items():
        for name in ("yaoming.jpg", "players.jpg"):
            body = service_embedding(client, photos[name], name)
            service_vector = normalized(np.asarray(body["embedding"], dtype=np.float32))
            peer_vector = peer_embed_largest(app, photos[name])
            lines.append(
                f"{label}: {name}: faces service {body['faces_detected']} / peer "
                f"{peer_face_count(app, photos[name])}, cosine(service, peer embedding) "
                f"{float(np.dot(service_vector, peer_vector)):.4f}"
            )
        body = service_similarity(
            client, photos["yaoming.jpg"], "yaoming.jpg", photos["gdp.jpg"], "gdp.jpg"
        )
        peer = peer_similarity(app, peer_embed_largest, photos["yaoming.jpg"], photos["gdp.jpg"])
        lines.append(
            f"{label}: similarity yaoming.jpg vs gdp.jpg: service {body['similarity']:.4f}, "
            f"peer {peer:.4f}"
        )
    return lines


# ---------------------------------------------------------------- main


def parse_services(text: str) -> list[str]:
    labels = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [label for label in labels if label not in CONFIGURATIONS]
    if not labels or unknown:
        raise argparse.ArgumentTypeError(
            f"choose from {', '.join(CONFIGURATIONS)} (comma-separated), not {text!r}"
        )
    return labels


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running service (default: start them)")
    parser.add_argument(
        "--services",
        type=parse_services,
        default=list(CONFIGURATIONS),
        help=f"configurations to start and time (default: {','.join(CONFIGURATIONS)})",
    )
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


@contextmanager
def service_clients(arguments: argparse.Namespace) -> Iterator[dict[str, httpx.Client]]:
    """A client per service: the given one, or one started per configuration."""
    with ExitStack() as stack:
        if arguments.url is not None:
            urls = {"given": arguments.url.rstrip("/")}
        else:
            urls = {}
            for label in arguments.services:
                work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="face-bench-"))
                process = ServiceProcess(
                    api_port=0, triton_port=0, work_dir=Path(work_dir), env=CONFIGURATIONS[label]
                )
                stack.enter_context(process)
                urls[label] = process.url
        yield {
            label: stack.enter_context(httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S))
            for label, url in urls.items()
        }


def models_alone(labels: list[str]) -> dict[str, ModelAlone]:
    """The models alone for each configuration (none for a given --url service)."""
    result = {}
    for label in labels:
        environment = CONFIGURATIONS[label]
        result[label] = ModelAlone(
            Settings(
                cpu_runtime=environment["FACE_CPU_RUNTIME"],
                precision=environment["FACE_PRECISION"],
                detector_canvas=environment["FACE_DETECTOR_CANVAS"],
            )
        )
    return result


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    model_dir = vectron_model_dir()
    photos = read_photos(model_dir)
    lfw = Rotation(read_lfw(LFW_COUNT))
    with (
        tempfile.TemporaryDirectory(prefix="face-bench-peer-") as pack_dir,
        service_clients(arguments) as clients,
    ):
        app = build_peer(model_dir, Path(pack_dir), arguments.peer_threads)
        models = models_alone([] if arguments.url else arguments.services)
        cases = build_cases(clients, models, app, photos, lfw)
        warm_up(cases, arguments.warmup)
        checks = agreement(clients, app, photos)
        measure(cases, arguments.iterations, lfw)
    meta = {
        "services": list(clients),
        "iterations": arguments.iterations,
        "warmup": arguments.warmup,
        "cpu_count": os.cpu_count(),
        "peer_intra_op_threads": arguments.peer_threads,
        "onnxruntime": onnxruntime.__version__,
    }
    sys.stdout.write(
        f"services {', '.join(clients)} vs insightface FaceAnalysis in-process; "
        f"{arguments.iterations} iterations after {arguments.warmup} warm-up, interleaved; "
        f"{os.cpu_count()} CPUs shared; peer intra_op threads {arguments.peer_threads}; times in "
        "ms, x = service / peer, x model = service / its models alone\n\n"
    )
    sys.stdout.write(table(rows(cases)) + "\n\nagreement (service vs peer, same photos):\n")
    sys.stdout.write("".join(f"  {line}\n" for line in checks))
    if arguments.output_json is not None:
        write_json(arguments.output_json, meta, cases, checks)
        sys.stdout.write(f"\nwrote {arguments.output_json}\n")


if __name__ == "__main__":
    main()
