"""Many threads writing and searching one gallery: every answer stays consistent with the
stored rows, before and after a reopen."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

import numpy as np
import pytest

from face_service.errors import IdentityNotFoundError, TemplateNotFoundError
from face_service.gallery import Gallery
from face_service.gallery.sqlite import SQLiteGallery
from tests.integration.gallery_support import Store, enroll, random_units


def _expected_scores(
    identity_ids: list[str], matrix: np.ndarray, query: np.ndarray, scoring: str
) -> dict[str, float]:
    """Brute force from the database's rows."""
    sims = matrix @ query
    scores: dict[str, float] = {}
    if scoring == "max":
        for identity_id, sim in zip(identity_ids, sims.tolist(), strict=True):
            scores[identity_id] = max(scores.get(identity_id, -2.0), sim)
        return scores
    for identity_id in set(identity_ids):
        rows = matrix[[i for i, x in enumerate(identity_ids) if x == identity_id]]
        mean = rows.astype(np.float64).mean(axis=0)
        scores[identity_id] = float(mean @ query / np.linalg.norm(mean))
    return scores


def assert_consistent(gallery: Gallery, rng: np.random.Generator, scoring: str) -> None:
    identity_ids, template_ids, matrix = gallery.export_templates()
    listed, total = gallery.list_identities(offset=0, limit=10**6, name_contains=None)
    identities, templates = gallery.count()
    assert identities == total == len(listed)
    assert templates == len(template_ids) == sum(len(i.templates) for i in listed)
    by_identity = {i.identity_id: {t.template_id for t in i.templates} for i in listed}
    assert set(identity_ids) <= set(by_identity)  # every template's identity exists
    exported: dict[str, set[str]] = {i: set() for i in by_identity}
    for identity_id, template_id in zip(identity_ids, template_ids, strict=True):
        exported[identity_id].add(template_id)
    assert exported == by_identity
    if isinstance(gallery, SQLiteGallery):  # the in-memory index holds the database's rows
        snapshot = gallery._index.snapshot()
        seqs = dict(gallery._conn.execute("SELECT template_id, seq FROM templates").fetchall())
        assert set(snapshot) == set(seqs.values())
        for row, (identity_id, template_id) in enumerate(
            zip(identity_ids, template_ids, strict=True)
        ):
            owner, dequantized = snapshot[seqs[template_id]]
            assert owner == identity_id
            # int8 codes with a per-row scale: within half a step of the stored row
            step = np.abs(matrix[row]).max() / 127
            assert np.abs(dequantized - matrix[row]).max() <= step / 2 + 1e-6
    for query in random_units(rng, 5):
        expected = _expected_scores(identity_ids, matrix, query, scoring)
        matches = gallery.search(query, top_k=len(listed) + 1)
        assert len(matches) == len(expected)
        ranked = sorted(expected.values(), reverse=True)
        for match, score in zip(matches, ranked, strict=True):
            assert match.similarity == pytest.approx(score, abs=1e-4)
            assert expected[match.identity_id] == pytest.approx(match.similarity, abs=1e-4)
        for match in matches[:5]:
            assert gallery.similarity(query, identity_id=match.identity_id) == pytest.approx(
                match.similarity, abs=1e-4
            )


@pytest.mark.parametrize("scoring", ["max", "mean"])
def test_concurrent_writes_and_searches_stay_consistent(store: Store, scoring: str) -> None:
    gallery = store.open(scoring=scoring)
    known: list[str] = [enroll(gallery, *random_units(np.random.default_rng(0), 2))]
    known_lock = threading.Lock()
    done = {"ops": 0, "searches": 0}
    deadline = time.monotonic() + 2.0

    def pick(rng: np.random.Generator) -> str:
        with known_lock:
            return known[int(rng.integers(len(known)))]

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        operations: list[Callable[[], Any]] = []

        def create() -> None:
            vectors = random_units(rng, int(rng.integers(1, 4)))
            identity_id = enroll(gallery, *vectors, name=f"w{seed}")
            with known_lock:
                known.append(identity_id)

        def add() -> None:
            gallery.add_templates(
                identity_id=pick(rng), embeddings=random_units(rng, 2), sources=["x", None]
            )

        def delete_template() -> None:
            identity = gallery.get_identity(identity_id=pick(rng))
            if identity.templates:
                template = identity.templates[int(rng.integers(len(identity.templates)))]
                gallery.delete_template(
                    identity_id=identity.identity_id, template_id=template.template_id
                )

        def delete() -> None:
            gallery.delete_identity(identity_id=pick(rng))

        def merge() -> None:
            target, source = pick(rng), pick(rng)
            if target != source:
                gallery.merge(target_id=target, source_id=source)

        def search() -> None:
            matches = gallery.search(random_units(rng, 1)[0], top_k=5)
            sims = [m.similarity for m in matches]
            assert sims == sorted(sims, reverse=True)
            assert len({m.identity_id for m in matches}) == len(matches) <= 5
            with known_lock:
                done["searches"] += 1

        def similarity() -> None:
            gallery.similarity(random_units(rng, 1)[0], identity_id=pick(rng))

        operations = [create, create, add, delete_template, delete, merge, search, search]
        operations.append(similarity)
        while time.monotonic() < deadline:
            # IdentityNotFoundError, TemplateNotFoundError: another thread got there first.
            with suppress(IdentityNotFoundError, TemplateNotFoundError):
                operations[int(rng.integers(len(operations)))]()
            with known_lock:
                done["ops"] += 1

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(worker, seed) for seed in range(8)]:
            future.result(timeout=60)  # re-raises a worker's failure
    assert done["ops"] > 200, done
    assert done["searches"] > 20, done
    assert gallery.count()[0] > 5
    assert_consistent(gallery, np.random.default_rng(99), scoring)
    # And the same after a reopen, from the stored rows alone.
    gallery.close()
    assert_consistent(store.open(scoring=scoring), np.random.default_rng(98), scoring)
