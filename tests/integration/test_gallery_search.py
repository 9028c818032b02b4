"""1:N search and 1:1 similarity on every backend: "max" and "mean" scoring, arguments,
embeddings refused, crowded results, and the recall of indexed search against exact search."""

from __future__ import annotations

import numpy as np
import pytest

from face_service.errors import IdentityNotFoundError
from face_service.gallery import Gallery
from face_service.gallery.postgres import PostgresGallery
from tests.integration.gallery_support import (
    DIM,
    Store,
    axis,
    enroll,
    random_units,
    search_set,
    unit,
)


def _scoring_gallery(store: Store, scoring: str) -> tuple[Gallery, dict[str, str]]:
    gallery = store.open(scoring=scoring)
    ids = {
        # A: two orthogonal templates, one of them exactly the query.
        "A": enroll(gallery, axis(0), axis(1), name="A"),
        # B: one template at cosine 0.9 from the query.
        "B": enroll(gallery, unit((0, 0.9), (3, np.sqrt(1 - 0.81))), name="B"),
        # C: one template at cosine 0.5.
        "C": enroll(gallery, unit((0, 0.5), (4, np.sqrt(0.75))), name="C"),
        # D: orthogonal to the query.
        "D": enroll(gallery, axis(5), name="D"),
    }
    return gallery, ids


def test_search_with_max_scoring_ranks_by_the_best_template(store: Store) -> None:
    gallery, ids = _scoring_gallery(store, "max")
    matches = gallery.search(axis(0), top_k=3)
    assert [m.name for m in matches] == ["A", "B", "C"]
    assert [m.similarity for m in matches] == pytest.approx([1.0, 0.9, 0.5], abs=1e-5)
    assert [m.identity_id for m in matches] == [ids["A"], ids["B"], ids["C"]]
    everything = gallery.search(axis(0), top_k=10)
    assert [m.name for m in everything] == ["A", "B", "C", "D"]
    assert everything[3].similarity == pytest.approx(0.0, abs=1e-6)
    assert [m.name for m in gallery.search(axis(1), top_k=1)] == ["A"]
    assert gallery.similarity(axis(0), identity_id=ids["A"]) == pytest.approx(1.0, abs=1e-6)
    assert gallery.similarity(axis(0), identity_id=ids["B"]) == pytest.approx(0.9, abs=1e-5)


def test_search_with_mean_scoring_ranks_by_the_centroid(store: Store) -> None:
    gallery, ids = _scoring_gallery(store, "mean")
    matches = gallery.search(axis(0), top_k=4)
    # A's centroid (e0 + e1) / sqrt(2) is at cosine 0.707 from e0: B (0.9) comes first.
    assert [m.name for m in matches] == ["B", "A", "C", "D"]
    expected = [0.9, np.sqrt(0.5), 0.5, 0.0]
    assert [m.similarity for m in matches] == pytest.approx(expected, abs=1e-5)
    assert gallery.similarity(axis(0), identity_id=ids["A"]) == pytest.approx(
        np.sqrt(0.5), abs=1e-5
    )
    # The centroids follow every write: a third template along e0 moves A's centroid.
    gallery.add_templates(identity_id=ids["A"], embeddings=axis(0)[None], sources=[None])
    assert gallery.similarity(axis(0), identity_id=ids["A"]) == pytest.approx(
        2 / np.sqrt(5), abs=1e-5
    )
    template = gallery.get_identity(identity_id=ids["A"]).templates[1].template_id  # e1
    gallery.delete_template(identity_id=ids["A"], template_id=template)
    assert [m.name for m in gallery.search(axis(0), top_k=1)] == ["A"]
    gallery.merge(target_id=ids["D"], source_id=ids["B"])  # D: e5 and B's vector
    d_score = gallery.similarity(axis(0), identity_id=ids["D"])
    mean = axis(5) + unit((0, 0.9), (3, np.sqrt(1 - 0.81)))
    assert d_score == pytest.approx(float(mean[0] / np.linalg.norm(mean)), abs=1e-5)
    assert [m.name for m in gallery.search(axis(0), top_k=3)] == ["A", "D", "C"]


def test_search_arguments_and_small_galleries(gallery: Gallery) -> None:
    assert gallery.search(axis(0), top_k=5) == []
    identity_id = enroll(gallery, axis(0), axis(1), axis(2))
    # One identity with many matching templates is one match.
    assert [m.identity_id for m in gallery.search(unit((0, 1), (1, 1)), top_k=5)] == [identity_id]
    # Queries are normalised.
    assert gallery.search(axis(0) * 7, top_k=1)[0].similarity == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="top_k"):
        gallery.search(axis(0), top_k=0)
    with pytest.raises(ValueError, match="shape"):
        gallery.search(np.ones(DIM + 1, np.float32), top_k=1)
    with pytest.raises(ValueError, match="zero"):
        gallery.search(np.zeros(DIM, np.float32), top_k=1)
    with pytest.raises(IdentityNotFoundError):
        gallery.similarity(axis(0), identity_id="missing")


def test_bad_embeddings_are_refused_without_writing(gallery: Gallery) -> None:
    identity_id = enroll(gallery, axis(0))
    with pytest.raises(ValueError, match="shape"):
        enroll(gallery, np.ones(DIM - 1, np.float32))
    with pytest.raises(ValueError, match="zero"):
        enroll(gallery, axis(1), np.zeros(DIM, np.float32))
    with pytest.raises(ValueError, match="finite"):
        enroll(gallery, np.full(DIM, np.nan, np.float32))
    with pytest.raises(ValueError, match="one per embedding"):
        enroll(gallery, axis(1), sources=[None, None])
    with pytest.raises(ValueError, match="one per embedding"):
        gallery.add_templates(identity_id=identity_id, embeddings=axis(1)[None], sources=[])
    assert gallery.count() == (1, 1)


def test_many_templates_per_identity_still_give_top_k_identities(gallery: Gallery) -> None:
    check_crowded_search(gallery)


def test_the_index_search_widens_when_one_identity_crowds_the_top(
    postgres_store: Store,
) -> None:
    # A small ef_search: the first index scan cannot find five identities.
    check_crowded_search(postgres_store.open(exact_search_below=0, ef_search=10))


def check_crowded_search(gallery: Gallery) -> None:
    rng = np.random.default_rng(7)
    query = random_units(rng, 1)[0]
    # The 50 templates nearest the query all belong to one identity.
    near = query + 0.3 * random_units(rng, 50)
    crowded = enroll(gallery, *near)
    others = [enroll(gallery, v) for v in random_units(rng, 20)]
    matches = gallery.search(query, top_k=5)
    assert matches[0].identity_id == crowded
    assert len(matches) == 5
    assert {m.identity_id for m in matches[1:]} <= set(others)
    sims = [m.similarity for m in matches]
    assert sims == sorted(sims, reverse=True)


# -- approximate search ---------------------------------------------------------------------------


@pytest.mark.parametrize("scoring", ["max", "mean"])
def test_indexed_search_recall_and_exact_search(store: Store, scoring: str) -> None:
    vectors, ids, queries, truth = search_set(np.random.default_rng(5), 2000, 100)

    if store.backend == "postgres":
        gallery = store.open(scoring=scoring, exact_search_below=0, ef_search=100)
        gallery.drop_index()
        gallery.add_identities_bulk(list(zip(ids, [None] * len(ids), vectors, strict=True)))
        gallery.rebuild_index()
        assert isinstance(gallery, PostgresGallery)
        assert gallery.uses_index()
        exact = store.open(scoring=scoring, exact_search_below=10**9)
        assert isinstance(exact, PostgresGallery)
        assert not exact.uses_index()
    else:
        gallery = exact = store.open(scoring=scoring)
        gallery.add_identities_bulk(list(zip(ids, [None] * len(ids), vectors, strict=True)))

    found = [gallery.search(q, top_k=1)[0].identity_id for q in queries]
    recall = np.mean([f == t for f, t in zip(found, truth, strict=True)])
    assert recall >= (0.95 if store.backend == "postgres" else 1.0), recall
    exact_found = [exact.search(q, top_k=3) for q in queries]
    assert [m[0].identity_id for m in exact_found] == truth
    for query, matches in zip(queries[:10], exact_found[:10], strict=True):
        scores = vectors @ query
        best = np.argsort(-scores)[:3]
        assert [m.identity_id for m in matches] == [ids[i] for i in best]
        assert [m.similarity for m in matches] == pytest.approx(scores[best].tolist(), abs=1e-5)
