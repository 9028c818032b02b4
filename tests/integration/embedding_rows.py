"""Whether the recognizer's rows for concurrent calls are each call's own, when Triton may have
joined the calls in one dynamic batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def assert_rows_are_their_own(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> None:
    """Every row of ``got`` is the embedding of the same input as that row of ``want``.

    Not equal values: in bf16 (the recognizer's default where the CPU has it) a row computed
    alone and in a dynamic batch differ by up to ~0.02 per element, at cosine >= 0.9999 (OpenVINO
    compiles batch 1 for its fixed shape, other sizes run the dynamic model), while embeddings of
    different random crops are at most ~0.86 to each other. A transport mistake (another call's
    region or rows) gives another crop's row."""
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
    rows, expected = (np.concatenate(arrays).astype(np.float64) for arrays in (got, want))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    cosines = rows @ expected.T
    assert np.diag(cosines).min() >= 0.999
    assert (cosines - 2 * np.eye(len(cosines))).max() <= 0.95
