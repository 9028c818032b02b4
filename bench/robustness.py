"""Verification accuracy when the second photo of a pair arrives damaged: the live service against
the in-process peer (InsightFace ``FaceAnalysis`` on the same ONNX files), in one run.

Usage (from the repository root)::

    .venv/bin/python bench/robustness.py                    # starts the service itself
    .venv/bin/python bench/robustness.py --pairs 200 --auto-rotate false   # the service's old way
    .venv/bin/python bench/robustness.py --url http://localhost:3000 --output robustness.txt
    .venv/bin/python bench/robustness.py --damage "turned 180" --damage "blur sigma 2.5"  # some

Pairs come from ``../shared/faces/pairs.csv`` (the visible LFW fold and deepface's pairs), taken
evenly spaced over the file (``--pairs``). The first photo of each pair is sent as it is; the
second as taken and then damaged in each of these ways (no EXIF tag on any of them):
64x64 pixels, JPEG quality 8, Gaussian blur sigma 2.5, turned 90/180/270 degrees clockwise,
darkened (pixel values x0.25) and grayscale. Damaged photos travel as PNG (JPEG for the JPEG one)
so that no other loss is added.

Each side embeds its most prominent face (area - 2 * offset from the centre squared, InsightFace's
own ranking): the service through ``POST /embedding``, the peer with ``FaceAnalysis.get``. For each
damage the table gives, for each side, the accuracy at the threshold (the service's default, read
from ``/face-similarity``, unless ``--threshold``; the peer at the same one unless
``--peer-threshold``), ROC AUC, and the photos in which no face was found (a pair with such a photo
counts as wrongly decided at any threshold). For turned photos it also says how often the
service's reported ``rotation`` undid the turn.

``--latency N`` then times ``/embedding`` on N upright one-face photos, the orientation search on
and off interleaved in the same run: the added p50 that upright photos pay for it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from accuracy import Pair, accuracy_at, cosine, decision_scores, read_pairs, roc_auc
from peer import build_peer, decode, vectron_model_dir
from PIL import Image, ImageFilter, ImageOps
from report import columns_table, log_to_stderr

from face_service.settings import REPOSITORY_ROOT
from face_service.testing.service_process import service_url

DEFAULT_FACES_DIR = Path("..") / "shared" / "faces"
REQUEST_TIMEOUT_S = 120.0
DEFAULT_PAIRS = 200
DEFAULT_THREADS = 2  # the service's onnxruntime threads on this 2-core machine
JPEG_QUALITY = 8
BLUR_SIGMA = 2.5
TINY_SIDE = 64
DARKEN_FACTOR = 0.25

logger = logging.getLogger("bench.robustness")


# ---------------------------------------------------------------- damage


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _turned(degrees: int) -> Callable[[Image.Image], bytes]:
    # PIL's rotate is counter-clockwise: -degrees turns clockwise.
    return lambda image: _png(image.rotate(-degrees, expand=True))


def _darkened(image: Image.Image) -> bytes:
    pixels = np.asarray(image, dtype=np.float32) * DARKEN_FACTOR
    return _png(Image.fromarray(pixels.round().astype(np.uint8)))


# Damage name -> (function of the upright RGB photo to the bytes sent, clockwise turn it applies).
DAMAGES: dict[str, tuple[Callable[[Image.Image], bytes], int]] = {
    "as taken": (_png, 0),
    f"{TINY_SIDE}x{TINY_SIDE} pixels": (lambda im: _png(im.resize((TINY_SIDE, TINY_SIDE))), 0),
    f"JPEG quality {JPEG_QUALITY}": (_jpeg, 0),
    f"blur sigma {BLUR_SIGMA}": (
        lambda im: _png(im.filter(ImageFilter.GaussianBlur(BLUR_SIGMA))),
        0,
    ),
    "turned 90": (_turned(90), 90),
    "turned 180": (_turned(180), 180),
    "turned 270": (_turned(270), 270),
    f"darkened x{DARKEN_FACTOR}": (_darkened, 0),
    "grayscale": (lambda im: _png(im.convert("L")), 0),
}


def upright_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


# ---------------------------------------------------------------- the two sides


@dataclass
class Embedded:
    embedding: np.ndarray | None  # None: no face found
    rotation: int | None = None  # what the service reported; None for the peer


class ServiceSide:
    def __init__(self, url: str, auto_rotate: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S)
        # "default": the field is not sent, so the service's FACE_AUTO_ROTATE decides.
        self.form = {} if auto_rotate == "default" else {"auto_rotate": auto_rotate}

    def embed(self, photo: bytes, form: dict[str, str] | None = None) -> Embedded:
        response = self.client.post(
            "/embedding",
            files={"image": ("photo", photo, "application/octet-stream")},
            data=self.form if form is None else form,
        )
        if response.status_code == 422:
            return Embedded(None)
        response.raise_for_status()
        body = response.json()
        return Embedded(np.asarray(body["embedding"]), body["face"].get("rotation", 0))

    def threshold(self, photo_a: bytes, photo_b: bytes) -> float:
        response = self.client.post(
            "/face-similarity",
            files={
                "image_a": ("a", photo_a, "application/octet-stream"),
                "image_b": ("b", photo_b, "application/octet-stream"),
            },
        )
        response.raise_for_status()
        return float(response.json()["threshold"])


class PeerSide:
    def __init__(self, threads: int, pack_dir: Path) -> None:
        self.app = build_peer(vectron_model_dir(), pack_dir, threads)

    def embed(self, photo: bytes) -> Embedded:
        image = decode(photo)
        faces = self.app.get(image)
        if not faces:
            return Embedded(None)
        height, width = image.shape[:2]

        def prominence(face: object) -> float:
            x1, y1, x2, y2 = face.bbox  # type: ignore[attr-defined]
            offset = ((x1 + x2) / 2 - width / 2) ** 2 + ((y1 + y2) / 2 - height / 2) ** 2
            return (x2 - x1) * (y2 - y1) - 2.0 * offset

        return Embedded(np.asarray(max(faces, key=prominence).normed_embedding))


# ---------------------------------------------------------------- measuring


@dataclass
class SideResult:
    accuracy: float
    auc: float
    no_face: int
    rotation_right: int | None = None  # turned photos whose reported rotation undid the turn


def side_result(
    pairs: Sequence[Pair],
    firsts: dict[str, Embedded],
    seconds: Sequence[Embedded],
    threshold: float,
    turn: int,
) -> SideResult:
    labels = np.array([pair.same for pair in pairs])
    failed, similarities = [], []
    for pair, second in zip(pairs, seconds, strict=True):
        first = firsts[pair.img_a]
        missing = first.embedding is None or second.embedding is None
        failed.append(missing)
        similarities.append(-1.0 if missing else cosine(first.embedding, second.embedding))
    scores = decision_scores(np.array(similarities), labels, np.array(failed))
    no_face = sum(second.embedding is None for second in seconds)
    right = None
    if turn and seconds and seconds[0].rotation is not None:
        undo = (360 - turn) % 360  # the clockwise turn that makes the photo upright again
        right = sum(s.embedding is not None and s.rotation == undo for s in seconds)
    return SideResult(
        accuracy_at(scores, labels, threshold), roc_auc(scores, labels), no_face, right
    )


def evaluate(
    service: ServiceSide,
    peer: PeerSide,
    faces_dir: Path,
    pairs: Sequence[Pair],
    thresholds: tuple[float | None, float | None],
    damages: Sequence[str] = (),
) -> tuple[dict[str, tuple[SideResult, SideResult]], float, float]:
    firsts_photo = {p.img_a: (faces_dir / p.img_a).read_bytes() for p in pairs}
    service_firsts = {name: service.embed(photo) for name, photo in firsts_photo.items()}
    peer_firsts = {name: peer.embed(photo) for name, photo in firsts_photo.items()}
    uprights = [upright_rgb(faces_dir / pair.img_b) for pair in pairs]
    first_pair = pairs[0]
    service_threshold = thresholds[0]
    if service_threshold is None:
        service_threshold = service.threshold(
            firsts_photo[first_pair.img_a], (faces_dir / first_pair.img_b).read_bytes()
        )
    peer_threshold = service_threshold if thresholds[1] is None else thresholds[1]
    results = {}
    for name, (damage, turn) in DAMAGES.items():
        if damages and name != "as taken" and name not in damages:
            continue
        started = time.monotonic()
        photos = [damage(image) for image in uprights]
        service_seconds = [service.embed(photo) for photo in photos]
        peer_seconds = [peer.embed(photo) for photo in photos]
        results[name] = (
            side_result(pairs, service_firsts, service_seconds, service_threshold, turn),
            side_result(pairs, peer_firsts, peer_seconds, peer_threshold, turn),
        )
        logger.info("%s: %.0f s", name, time.monotonic() - started)
    return results, service_threshold, peer_threshold


def upright_latency(
    service: ServiceSide, photos: Sequence[bytes], rounds: int
) -> tuple[float, float]:
    """p50 ms of /embedding on upright photos with the orientation search on and off, the two
    interleaved (and which goes first alternating) so that machine noise hits both alike."""
    timings: dict[str, list[float]] = {"true": [], "false": []}
    for warm in photos[:3]:
        service.embed(warm, {"auto_rotate": "true"})
        service.embed(warm, {"auto_rotate": "false"})
    for index in range(rounds):
        photo = photos[index % len(photos)]
        order = ("true", "false") if index % 2 == 0 else ("false", "true")
        for value in order:
            started = time.perf_counter()
            service.embed(photo, {"auto_rotate": value})
            timings[value].append((time.perf_counter() - started) * 1000.0)
    return float(np.median(timings["true"])), float(np.median(timings["false"]))


# ---------------------------------------------------------------- report


def report(
    results: dict[str, tuple[SideResult, SideResult]],
    thresholds: tuple[float, float],
    pairs: Sequence[Pair],
) -> str:
    header = ["service acc", "AUC", "no face", "rotation right", "peer acc", "AUC", "no face"]
    rows = []
    for name, (ours, theirs) in results.items():
        rows.append(
            (
                name,
                [
                    f"{100 * ours.accuracy:.1f}%",
                    f"{ours.auc:.4f}",
                    str(ours.no_face),
                    "" if ours.rotation_right is None else str(ours.rotation_right),
                    f"{100 * theirs.accuracy:.1f}%",
                    f"{theirs.auc:.4f}",
                    str(theirs.no_face),
                ],
            )
        )
    same = sum(pair.same for pair in pairs)
    lines = [
        f"{len(pairs)} pairs ({same} same person, {len(pairs) - same} different); second photo"
        f" damaged; service threshold {thresholds[0]:.3f}, peer threshold {thresholds[1]:.3f}",
        "",
        *columns_table(header, rows),
    ]
    return "\n".join(lines)


def spaced(pairs: Sequence[Pair], count: int) -> list[Pair]:
    """``count`` pairs evenly spaced over the file (LFW's and deepface's both)."""
    if count >= len(pairs):
        return list(pairs)
    return [pairs[int(i * len(pairs) / count)] for i in range(count)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running service; default: start one")
    parser.add_argument("--faces-dir", type=Path, default=DEFAULT_FACES_DIR)
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS)
    parser.add_argument(
        "--auto-rotate",
        choices=("default", "true", "false"),
        default="default",
        help="the service's auto_rotate field; default: not sent (FACE_AUTO_ROTATE decides)",
    )
    parser.add_argument("--threshold", type=float, help="the service's; default: its own")
    parser.add_argument("--peer-threshold", type=float, help="default: the service's")
    parser.add_argument("--peer-threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--latency", type=int, default=0, help="upright /embedding rounds")
    parser.add_argument("--output", type=Path, help="also write the report here")
    parser.add_argument(
        "--damage",
        action="append",
        choices=list(DAMAGES),
        help="only this damage (repeatable; default: all); 'as taken' is always measured",
    )
    args = parser.parse_args(argv)
    if not args.faces_dir.is_absolute():
        args.faces_dir = (REPOSITORY_ROOT / args.faces_dir).resolve()
    if not (args.faces_dir / "pairs.csv").is_file():
        parser.error(f"{args.faces_dir / 'pairs.csv'} not found")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    log_to_stderr()
    args = parse_args(argv)
    pairs = spaced(read_pairs(args.faces_dir), args.pairs)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(service_url(args.url, api_port=0, triton_port=0))
        pack_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peer-pack-")))
        service = ServiceSide(url, args.auto_rotate)
        peer = PeerSide(args.peer_threads, pack_dir)
        results, threshold, peer_threshold = evaluate(
            service,
            peer,
            args.faces_dir,
            pairs,
            (args.threshold, args.peer_threshold),
            args.damage or (),
        )
        text = report(results, (threshold, peer_threshold), pairs)
        if args.latency:
            upright = [(args.faces_dir / pair.img_a).read_bytes() for pair in pairs[:20]]
            on, off = upright_latency(service, upright, args.latency)
            text += (
                f"\n\nUpright /embedding p50 over {args.latency} rounds: orientation search on"
                f" {on:.1f} ms, off {off:.1f} ms: {100 * (on / off - 1):+.1f}%"
            )
    sys.stdout.write(text + "\n")
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
