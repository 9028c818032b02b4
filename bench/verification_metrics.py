"""Verification metrics over pair scores (numpy only): accuracy at a threshold and at the best
one, ROC AUC, TAR at a FAR and the equal error rate, for bench/accuracy.py.

A pair whose photo showed no face is wrong at every threshold: its decision score is -1 for a
same-person pair and +1 for a different-person one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

TARGET_FAR = 0.01


class LabelledPair(Protocol):
    img_a: str
    img_b: str
    same: bool


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


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def pair_scores(
    pairs: Sequence[LabelledPair], embeddings: dict[str, np.ndarray | None]
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
