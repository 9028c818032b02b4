"""Identification's query helpers (unit tests; the routes are tested in test_gallery_routes.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from face_service.errors import EmbeddingError
from face_service.gallery import Match
from face_service.identification import best_match, unit_vector

NOW = datetime.now(UTC)


def test_unit_vector_normalises_and_refuses_zero_and_nan() -> None:
    np.testing.assert_allclose(unit_vector([3.0, 4.0], 2), [0.6, 0.8])
    assert unit_vector([3.0, 4.0], 2).dtype == np.float32
    with pytest.raises(EmbeddingError, match="finite, non-zero"):
        unit_vector([0.0, 0.0], 2)
    with pytest.raises(EmbeddingError):
        unit_vector([float("nan"), 1.0], 2)


def test_unit_vector_refuses_another_width_than_the_recognizers() -> None:
    with pytest.raises(EmbeddingError, match="has 3 values; this service's embeddings have 2"):
        unit_vector([1.0, 2.0, 3.0], 2)


def test_best_match_needs_the_threshold() -> None:
    candidates = [Match("a", None, 0.5), Match("b", None, 0.2)]
    assert best_match(candidates, 0.4) == candidates[0]
    assert best_match(candidates, 0.6) is None
    assert best_match([], 0.0) is None
