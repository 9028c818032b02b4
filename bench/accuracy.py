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
import mimetypes
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from report import columns_table, log_to_stderr

from face_service.settings import REPOSITORY_ROOT
from face_service.testing.service_process import service_url

DEFAULT_FACES_DIR = Path("..") / "shared" / "faces"
SERVICE_PORT = 3100
TRITON_PORT = 8100  # and the next two
REQUEST_TIMEOUT_S = 120.0
RETRIES_ON_503 = 3
FALLBACK_THRESHOLD = 0.30
TARGET_FAR = 0.01
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


@dataclass
class SetMetrics:
    pairs: int
    same_pairs: int
    failed_pairs: int
    best_accuracy: float
    best_threshold: float
    best_range: tuple[float, float]
    accuracy_at_threshold: float
    threshold: float
    roc_auc: float
    tar_at_far: float
    far_at_far_threshold: float
    far_threshold: float
    eer: float
    eer_threshold: float


# ---------------------------------------------------------------- data


def read_pairs(faces_dir: Path) -> list[Pair]:
    with (faces_dir / "pairs.csv").open(newline="") as file:
        return [
            Pair(row["img_a"], row["img_b"], row["same"].strip() == "1")
            for row in csv.DictReader(file)
        ]


def unique_images(pairs: Sequence[Pair]) -> list[str]:
    return sorted({path for pair in pairs for path in (pair.img_a, pair.img_b)})


# ---------------------------------------------------------------- the service


# ---------------------------------------------------------------- embeddings over HTTP


def image_part(path: Path) -> tuple[str, bytes, str]:
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, path.read_bytes(), content_type


async def post_with_retry(
    client: httpx.AsyncClient, endpoint: str, files: dict[str, tuple[str, bytes, str]]
) -> httpx.Response:
    """POSTs multipart ``files``, retrying while the service answers 503 (model unavailable)."""
    for _ in range(RETRIES_ON_503):
        response = await client.post(endpoint, files=files)
        if response.status_code != 503:
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return await client.post(endpoint, files=files)


async def embed_one(
    client: httpx.AsyncClient, faces_dir: Path, image: str, limit: asyncio.Semaphore
) -> dict[str, object] | None:
    """The service's /embedding answer for the image, or None when it finds no face (422)."""
    async with limit:
        response = await post_with_retry(
            client, "/embedding", {"image": image_part(faces_dir / image)}
        )
    if response.status_code == 422:
        logger.warning("no face: %s (%s)", image, response.json().get("detail"))
        return None
    response.raise_for_status()
    return response.json()


async def embed_all(
    url: str, faces_dir: Path, images: Sequence[str], concurrency: int
) -> dict[str, dict[str, object] | None]:
    """/embedding answers per image (None: no face), ``concurrency`` requests at a time."""
    limit = asyncio.Semaphore(concurrency)
    done = 0

    async def embed_and_count(client: httpx.AsyncClient, image: str) -> dict[str, object] | None:
        nonlocal done
        answer = await embed_one(client, faces_dir, image, limit)
        done += 1
        if done % 100 == 0 or done == len(images):
            logger.info("embedded %d/%d images", done, len(images))
        return answer

    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        results = await asyncio.gather(*(embed_and_count(client, image) for image in images))
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


# ---------------------------------------------------------------- metrics (numpy only)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def pair_scores(
    pairs: Sequence[Pair], embeddings: dict[str, np.ndarray | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarities (-1 where an image failed), labels and failure flags of ``pairs``."""
    similarities, labels, failed = [], [], []
    for pair in pairs:
        a, b = embeddings[pair.img_a], embeddings[pair.img_b]
        failed.append(a is None or b is None)
        similarities.append(-1.0 if a is None or b is None else cosine(a, b))
        labels.append(pair.same)
    return np.asarray(similarities), np.asarray(labels, dtype=bool), np.asarray(failed, dtype=bool)


def decision_scores(similarities: np.ndarray, labels: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Scores that make a failed pair wrong at every threshold: -1 if same person, else +1."""
    return np.where(failed, np.where(labels, -1.0, 1.0), similarities)


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    return float(np.mean((scores >= threshold) == labels))


def best_accuracy(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[float, float, tuple[float, float]]:
    """Highest accuracy over all thresholds (decision: score >= threshold), the midpoint of the
    widest interval of thresholds reaching it, and the span of all such thresholds.

    Accuracy is constant for thresholds in ``(s[k-1], s[k]]`` between consecutive unique scores;
    below the lowest score everything is accepted and above the highest nothing is."""
    unique = np.unique(scores)
    lows = np.concatenate([[unique[0] - 1.0], unique])  # exclusive lower ends
    highs = np.concatenate([unique, [unique[-1] + 1.0]])  # inclusive upper ends
    accuracies = np.array([accuracy_at(scores, labels, high) for high in highs])
    best = accuracies.max()
    winners = np.flatnonzero(np.isclose(accuracies, best, rtol=0, atol=1e-12))
    widest = winners[np.argmax(highs[winners] - lows[winners])]
    midpoint = float((lows[widest] + highs[widest]) / 2)
    return float(best), midpoint, (float(lows[winners].min()), float(highs[winners].max()))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their average rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]]))
    ends = np.concatenate([starts[1:], [len(values)]])
    group_ranks = (starts + 1 + ends) / 2  # mean of the ranks starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(group_ranks, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg): the chance that a same-person pair scores higher than a
    different-person pair, ties counting one half."""
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = average_ranks(scores)[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def tar_at_far(
    scores: np.ndarray, labels: np.ndarray, far: float = TARGET_FAR
) -> tuple[float, float, float]:
    """(TAR, actual FAR, threshold) for the lowest threshold that accepts at most ``far`` of the
    different-person pairs."""
    negatives = np.sort(scores[~labels])[::-1]
    allowed = int(np.floor(far * len(negatives) + 1e-9))
    if allowed >= len(negatives):
        threshold = float(negatives[-1])
    else:
        # Just above the first rejected score; ties with it are rejected too.
        threshold = float(np.nextafter(negatives[allowed], np.inf))
    actual_far = float(np.mean(negatives >= threshold))
    return float(np.mean(scores[labels] >= threshold)), actual_far, threshold


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) where the false accept and false reject rates are closest, over the
    observed scores; EER is their mean there."""
    thresholds = np.unique(scores)
    far = np.array([np.mean(scores[~labels] >= t) for t in thresholds])
    frr = np.array([np.mean(scores[labels] < t) for t in thresholds])
    index = int(np.argmin(np.abs(far - frr)))
    return float((far[index] + frr[index]) / 2), float(thresholds[index])


def set_metrics(
    similarities: np.ndarray, labels: np.ndarray, failed: np.ndarray, threshold: float
) -> SetMetrics:
    scores = decision_scores(similarities, labels, failed)
    best, best_threshold, best_range = best_accuracy(scores, labels)
    tar, actual_far, far_threshold = tar_at_far(scores, labels)
    eer, eer_threshold = equal_error_rate(scores, labels)
    return SetMetrics(
        pairs=len(labels),
        same_pairs=int(labels.sum()),
        failed_pairs=int(failed.sum()),
        best_accuracy=best,
        best_threshold=best_threshold,
        best_range=best_range,
        accuracy_at_threshold=accuracy_at(scores, labels, threshold),
        threshold=threshold,
        roc_auc=roc_auc(scores, labels),
        tar_at_far=tar,
        far_at_far_threshold=actual_far,
        far_threshold=far_threshold,
        eer=eer,
        eer_threshold=eer_threshold,
    )


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
