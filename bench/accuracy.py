"""Verification accuracy of the live HTTP service on the labelled photos in ``../shared/faces``.

Usage (from the repository root)::

    .venv/bin/python bench/accuracy.py                      # starts the service itself
    .venv/bin/python bench/accuracy.py --url http://localhost:3000
    .venv/bin/python bench/accuracy.py --output-json /tmp/accuracy.json

Every unique image of ``pairs.csv`` is sent once to ``POST /embedding`` (the service embeds the most
prominent face); each pair's cosine similarity is computed here from the cached embeddings.
Results are reported separately for LFW's pairs (View 2, fold 8), deepface's pairs
(``identities/deepface_*``) and both together:

- best accuracy: the threshold is chosen on that same set, so it is optimistic;
- accuracy at the service's default threshold (read from a ``/face-similarity`` response) or at
  ``--threshold``;
- ROC AUC (Mann-Whitney, ties counted as one half);
- TAR at FAR <= 1%: the threshold lets at most 1% of the different-person pairs through;
- equal error rate (EER), where the false accept and false reject rates cross.

Images with no face (HTTP 422) are failures: every pair with such an image counts as a wrong
decision at any threshold (its score is -1 for a same-person pair, +1 for a different-person one).

Without ``--url`` the service runs as a subprocess (``python app.py``) on ports 3100 (API) and
8100-8102 (Triton), so that it does not clash with a service already running on the default ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from report import columns_table, log_to_stderr
from service_http import gather_limited, image_part, post_with_retry
from verification_metrics import (
    TARGET_FAR,
    SetMetrics,
    accuracy_at,
    cosine,
    decision_scores,
    pair_scores,
    set_metrics,
)

from face_service.settings import REPOSITORY_ROOT
from face_service.testing.service_process import service_url

DEFAULT_FACES_DIR = Path("..") / "shared" / "faces"
SERVICE_PORT = 3100
TRITON_PORT = 8100  # and the next two
REQUEST_TIMEOUT_S = 120.0
RETRIES_ON_503 = 3
FALLBACK_THRESHOLD = 0.30
DEEPFACE_PREFIX = "identities/deepface_"

logger = logging.getLogger("bench.accuracy")


@dataclass(frozen=True)
class Pair:
    img_a: str
    img_b: str
    same: bool

    @property
    def subset(self) -> str:
        deepface = self.img_a.startswith(DEEPFACE_PREFIX) or self.img_b.startswith(DEEPFACE_PREFIX)
        return "deepface" if deepface else "LFW"


# ---------------------------------------------------------------- data


def read_pairs(faces_dir: Path) -> list[Pair]:
    with (faces_dir / "pairs.csv").open(newline="") as file:
        return [
            Pair(row["img_a"], row["img_b"], row["same"].strip() == "1")
            for row in csv.DictReader(file)
        ]


def unique_images(pairs: Sequence[Pair]) -> list[str]:
    return sorted({path for pair in pairs for path in (pair.img_a, pair.img_b)})


# ---------------------------------------------------------------- embeddings over HTTP


async def embed_all(
    url: str, faces_dir: Path, images: Sequence[str], concurrency: int
) -> dict[str, dict[str, object] | None]:
    """/embedding answers per image (None: no face), ``concurrency`` requests at a time."""
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:

        def job(image: str) -> Callable[[], Awaitable[dict[str, object] | None]]:
            async def embed() -> dict[str, object] | None:
                files = {"image": image_part(faces_dir / image)}
                response = await post_with_retry(client, "/embedding", RETRIES_ON_503, files=files)
                if response.status_code == 422:
                    logger.warning("no face: %s (%s)", image, response.json().get("detail"))
                    return None
                response.raise_for_status()
                return response.json()

            return embed

        results = await gather_limited([job(i) for i in images], concurrency, "embedded")
    return dict(zip(images, results, strict=True))


def service_threshold(url: str, faces_dir: Path, pair: Pair) -> tuple[float, float]:
    """The service's default threshold and its similarity for ``pair``, from /face-similarity."""
    files = {
        "image_a": image_part(faces_dir / pair.img_a),
        "image_b": image_part(faces_dir / pair.img_b),
    }
    response = httpx.post(f"{url}/face-similarity", files=files, timeout=REQUEST_TIMEOUT_S)
    response.raise_for_status()
    body = response.json()
    return float(body["threshold"]), float(body["similarity"])


# ---------------------------------------------------------------- report


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def report_table(metrics: dict[str, SetMetrics]) -> str:
    names = list(metrics)
    rows: list[tuple[str, list[str]]] = [
        (
            "pairs (same / different)",
            [f"{m.pairs} ({m.same_pairs}/{m.pairs - m.same_pairs})" for m in metrics.values()],
        ),
        ("pairs with a no-face image", [str(m.failed_pairs) for m in metrics.values()]),
        (
            "best accuracy (thr. chosen on this set)",
            [percent(m.best_accuracy) for m in metrics.values()],
        ),
        ("  at threshold (midpoint)", [f"{m.best_threshold:.4f}" for m in metrics.values()]),
        (
            "  optimal threshold range",
            [f"{m.best_range[0]:.3f}..{m.best_range[1]:.3f}" for m in metrics.values()],
        ),
    ]
    threshold = next(iter(metrics.values())).threshold
    rows += [
        (
            f"accuracy at service threshold {threshold:.3f}",
            [percent(m.accuracy_at_threshold) for m in metrics.values()],
        ),
        ("ROC AUC", [f"{m.roc_auc:.4f}" for m in metrics.values()]),
        (f"TAR @ FAR<={percent(TARGET_FAR)}", [percent(m.tar_at_far) for m in metrics.values()]),
        ("  actual FAR", [percent(m.far_at_far_threshold) for m in metrics.values()]),
        ("  threshold", [f"{m.far_threshold:.4f}" for m in metrics.values()]),
        ("EER", [percent(m.eer) for m in metrics.values()]),
        ("  at threshold", [f"{m.eer_threshold:.4f}" for m in metrics.values()]),
    ]
    lines = columns_table(names, rows)
    return "\n".join(lines)


def recommendation_text(
    metrics: dict[str, SetMetrics], recommended: float, recommended_accuracy: dict[str, float]
) -> str:
    lfw = metrics["LFW"]
    low, high = lfw.best_range
    at_recommended = ", ".join(f"{name} {percent(v)}" for name, v in recommended_accuracy.items())
    at_service = ", ".join(
        f"{name} {percent(m.accuracy_at_threshold)}" for name, m in metrics.items()
    )
    return "\n".join(
        [
            f"Recommended default threshold: {recommended:.3f}",
            "  (maximises accuracy over LFW+deepface combined: midpoint of the widest optimal",
            "  interval; chosen on this data, so the accuracy there is optimistic)",
            f"  accuracy there: {at_recommended}",
            f"  LFW alone is best for thresholds in {low:.3f}..{high:.3f}"
            f" (widest interval's midpoint {lfw.best_threshold:.3f})",
            f"Service's current threshold: {lfw.threshold:.3f}; accuracy there: {at_service}",
        ]
    )


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", help="base URL of a running service; default: start one on port 3100"
    )
    parser.add_argument(
        "--faces-dir",
        type=Path,
        default=DEFAULT_FACES_DIR,
        help="labelled photos with pairs.csv; relative paths are from the repository root",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight (default 2)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="threshold to report accuracy at; default: the service's "
        f"(fallback {FALLBACK_THRESHOLD})",
    )
    parser.add_argument("--output-json", type=Path, help="also write metrics and similarities here")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if not args.faces_dir.is_absolute():
        args.faces_dir = (REPOSITORY_ROOT / args.faces_dir).resolve()
    if not (args.faces_dir / "pairs.csv").is_file():
        parser.error(f"{args.faces_dir / 'pairs.csv'} not found")
    return args


def resolve_threshold(
    url: str,
    faces_dir: Path,
    pairs: Sequence[Pair],
    embeddings: dict[str, np.ndarray | None],
    given: float | None,
) -> float:
    """``given``, or the service's default read from one /face-similarity call (which also checks
    that the endpoint agrees with the similarity computed here from /embedding)."""
    if given is not None:
        return given
    probe = next(
        (p for p in pairs if embeddings[p.img_a] is not None and embeddings[p.img_b] is not None),
        None,
    )
    if probe is None:
        logger.warning(
            "no pair with faces to probe /face-similarity; using %.2f", FALLBACK_THRESHOLD
        )
        return FALLBACK_THRESHOLD
    threshold, similarity = service_threshold(url, faces_dir, probe)
    local = cosine(embeddings[probe.img_a], embeddings[probe.img_b])  # type: ignore[arg-type]
    if abs(local - similarity) > 1e-3:
        logger.warning(
            "/face-similarity says %.6f, /embedding gives %.6f for %s", similarity, local, probe
        )
    return threshold


def evaluate(url: str, args: argparse.Namespace, pairs: list[Pair]) -> dict[str, object]:
    images = unique_images(pairs)
    logger.info(
        "%d pairs, %d unique images, concurrency %d", len(pairs), len(images), args.concurrency
    )
    started = time.monotonic()
    answers = asyncio.run(embed_all(url, args.faces_dir, images, args.concurrency))
    embeddings = {
        image: None if answer is None else np.asarray(answer["embedding"], dtype=np.float64)
        for image, answer in answers.items()
    }
    elapsed = time.monotonic() - started
    threshold = resolve_threshold(url, args.faces_dir, pairs, embeddings, args.threshold)

    similarities, labels, failed = pair_scores(pairs, embeddings)
    subsets = np.array([pair.subset for pair in pairs])
    masks = {
        "LFW": subsets == "LFW",
        "deepface": subsets == "deepface",
        "all": np.ones(len(pairs), bool),
    }
    # A pairs.csv with one subset only (e.g. LFW alone, where deepface's photos are not at hand).
    masks = {name: mask for name, mask in masks.items() if mask.any()}
    metrics = {
        name: set_metrics(similarities[mask], labels[mask], failed[mask], threshold)
        for name, mask in masks.items()
    }
    recommended = metrics["all"].best_threshold
    scores = decision_scores(similarities, labels, failed)
    recommended_accuracy = {
        name: accuracy_at(scores[mask], labels[mask], recommended) for name, mask in masks.items()
    }
    no_face = sorted(image for image, embedding in embeddings.items() if embedding is None)
    return {
        "images": len(images),
        "no_face_images": no_face,
        "embedding_seconds": elapsed,
        "threshold": threshold,
        "recommended_threshold": recommended,
        "accuracy_at_recommended": recommended_accuracy,
        "metrics": metrics,
        "pairs": [
            {**asdict(pair), "subset": pair.subset, "similarity": float(s), "failed": bool(f)}
            for pair, s, f in zip(pairs, similarities, failed, strict=True)
        ],
        "faces": {
            image: None
            if answer is None
            else {"faces_detected": answer["faces_detected"], "face": answer["face"]}
            for image, answer in answers.items()
        },
    }


def write_report(result: dict[str, object], url: str) -> None:
    metrics: dict[str, SetMetrics] = result["metrics"]  # type: ignore[assignment]
    no_face: list[str] = result["no_face_images"]  # type: ignore[assignment]
    images = result["images"]
    seconds = float(result["embedding_seconds"])  # type: ignore[arg-type]
    lines = [
        f"Face verification accuracy of {url}",
        f"{images} unique images embedded in {seconds:.0f} s; no face found in {len(no_face)}"
        + (": " + ", ".join(no_face) if no_face else ""),
        "",
        report_table(metrics),
        "",
        recommendation_text(
            metrics,
            float(result["recommended_threshold"]),  # type: ignore[arg-type]
            result["accuracy_at_recommended"],  # type: ignore[arg-type]
        ),
        "",
    ]
    sys.stdout.write("\n".join(lines))


def write_json(result: dict[str, object], path: Path) -> None:
    serialisable = {
        **result,
        "metrics": {name: asdict(m) for name, m in result["metrics"].items()},  # type: ignore[attr-defined]
    }
    path.write_text(json.dumps(serialisable, indent=2) + "\n")
    logger.info("wrote %s", path)


def run(args: argparse.Namespace) -> None:
    pairs = read_pairs(args.faces_dir)
    with contextlib.ExitStack() as stack:
        url = (
            args.url.rstrip("/")
            if args.url
            else stack.enter_context(
                service_url(None, api_port=SERVICE_PORT, triton_port=TRITON_PORT)
            )
        )
        result = evaluate(url, args, pairs)
    write_report(result, url)
    if args.output_json:
        write_json(result, args.output_json)


def main(argv: Sequence[str] | None = None) -> None:
    log_to_stderr()
    run(parse_args(argv))


if __name__ == "__main__":
    main()
