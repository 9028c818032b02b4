"""The embedded gallery's in-memory index: its int8 scan must give exactly the float32
brute-force answer, whatever the data."""

from __future__ import annotations

import numpy as np
import pytest

from face_service.gallery.template_index import TemplateIndex, quantize
from face_service.gallery.types import NO_TEMPLATE_SIMILARITY

DIM = 512


class Rows:
    """The exact rows the index re-scores with, keyed like a database's rows; counts reads."""

    def __init__(self) -> None:
        self.by_key: dict[int, np.ndarray] = {}
        self.reads = 0

    def __call__(self, keys: np.ndarray) -> np.ndarray:
        self.reads += len(keys)
        return np.stack([self.by_key[int(k)] for k in keys]).astype(np.float32)


def units(rng: np.random.Generator, count: int) -> np.ndarray:
    rows = rng.standard_normal((count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def build(
    owners: list[str], rows: np.ndarray, *, scoring: str = "max", threads: int = 2
) -> tuple[TemplateIndex, Rows]:
    exact = Rows()
    index = TemplateIndex(DIM, scoring, exact, threads=threads)  # type: ignore[arg-type]
    index.reserve(len(rows), len(set(owners)))
    for identity_id in dict.fromkeys(owners):
        index.add_identity(identity_id)
    keys = np.arange(1000, 1000 + len(rows), dtype=np.int64)
    exact.by_key.update(zip(keys.tolist(), rows, strict=True))
    index.add_rows(owners, keys, rows)
    return index, exact


def brute_force(owners: list[str], rows: np.ndarray, query: np.ndarray, k: int):
    sims = rows @ query
    best: dict[str, float] = {}
    for owner, sim in zip(owners, sims.tolist(), strict=True):
        best[owner] = max(best.get(owner, -2.0), sim)
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def assert_same(found: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [i for i, _ in found] == [i for i, _ in expected]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-6)


def test_quantize_bounds_the_error_of_every_row() -> None:
    rows = units(np.random.default_rng(0), 200)
    rows[0] = 0.0
    rows[0, 3] = 1.0  # one-hot: the largest possible peak
    codes, scales, max_error, max_gain = quantize(rows)
    assert codes.dtype == np.int8
    assert np.abs(codes).max() == 127
    dequantized = codes.astype(np.float64) * scales[:, None]
    errors = np.linalg.norm(rows - dequantized, axis=1)
    assert errors.max() <= max_error
    assert 0 < max_error < 0.02  # half a step of 1/127 of the peak in 512 components, at most
    assert np.linalg.norm(dequantized, axis=1).max() == pytest.approx(max_gain)
    assert np.abs(dequantized[0] - rows[0]).max() < 1e-7


@pytest.mark.parametrize("size", [1, 50, 5_000, 70_000])
def test_search_equals_float32_brute_force(size: int) -> None:
    rng = np.random.default_rng(size)
    rows = units(rng, size)
    owners = [f"p{i % max(1, size // 3)}" for i in range(size)]  # ~3 templates each
    index, exact = build(owners, rows)
    queries = np.concatenate([units(rng, 5), rows[:: max(1, size // 5)][:5]])
    for query in queries:
        for k in (1, 5):
            assert_same(index.search(query, k), brute_force(owners, rows, query, k))
    # The scan only ranks: a handful of rows are re-read, not the gallery.
    assert exact.reads < 200 * len(queries) * 2


def test_near_ties_below_the_quantisation_step_are_still_ordered_exactly() -> None:
    rng = np.random.default_rng(1)
    base = units(rng, 1)[0]
    # 40 identities whose rows differ from each other by less than the int8 step.
    rows = base + 1e-4 * rng.standard_normal((40, DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows = np.concatenate([rows, units(rng, 2000)])
    owners = [f"near{i}" for i in range(40)] + [f"far{i}" for i in range(2000)]
    index, _ = build(owners, rows)
    for query in [base, rows[7], rows[31]]:
        assert_same(index.search(query, 10), brute_force(owners, rows, query, 10))


def test_an_identity_with_many_close_templates_does_not_crowd_out_the_others() -> None:
    rng = np.random.default_rng(2)
    query = units(rng, 1)[0]
    crowd = query + 0.3 * units(rng, 500)  # 500 templates of one person near the query
    crowd /= np.linalg.norm(crowd, axis=1, keepdims=True)
    rows = np.concatenate([crowd, units(rng, 3000)])
    owners = ["crowd"] * 500 + [f"p{i}" for i in range(3000)]
    index, _ = build(owners, rows)
    found = index.search(query, 5)
    assert found[0][0] == "crowd"
    assert_same(found, brute_force(owners, rows, query, 5))


def test_updates_keep_the_search_exact() -> None:
    rng = np.random.default_rng(3)
    rows = units(rng, 300)
    owners = [f"p{i // 3}" for i in range(300)]
    index, exact = build(owners, rows)
    keys = np.arange(1000, 1300)
    alive = dict(zip(keys.tolist(), zip(owners, rows, strict=True), strict=True))

    index.remove_identity("p5")
    alive = {k: v for k, v in alive.items() if v[0] != "p5"}
    index.remove_template("p7", 1000 + 21)
    del alive[1021]
    index.merge("p1", "p2")
    alive = {k: ("p1" if o == "p2" else o, r) for k, (o, r) in alive.items()}
    new = units(rng, 2)
    index.add_identity("late")
    index.add_rows(["late", "late"], np.array([5000, 5001]), new)
    exact.by_key.update({5000: new[0], 5001: new[1]})
    alive.update({5000: ("late", new[0]), 5001: ("late", new[1])})

    assert index.identities == 100 - 2 + 1
    assert index.templates == len(alive)
    live_owners = [o for o, _ in alive.values()]
    live_rows = np.stack([r for _, r in alive.values()])
    for query in [*units(rng, 5), new[1], rows[6]]:
        assert_same(index.search(query, 4), brute_force(live_owners, live_rows, query, 4))
    assert index.similarity(new[0], "late") == pytest.approx(1.0, abs=1e-6)
    assert set(index.snapshot()) == set(alive)
    assert "p5" not in index
    assert "p2" not in index


def test_identities_without_templates_never_match() -> None:
    rng = np.random.default_rng(4)
    rows = units(rng, 2)
    index, _ = build(["a", "b"], rows)
    index.add_identity("empty")
    index.remove_template("b", 1001)
    assert [i for i, _ in index.search(rows[1], 5)] == ["a"]
    assert index.similarity(rows[0], "empty") == NO_TEMPLATE_SIMILARITY
    assert index.similarity(rows[0], "b") == NO_TEMPLATE_SIMILARITY
    index.clear()
    assert index.search(rows[0], 3) == []


def test_mean_scoring_uses_the_centroids_the_owner_gives() -> None:
    rng = np.random.default_rng(5)
    rows = units(rng, 6)
    owners = ["a", "a", "a", "b", "b", "c"]
    index, _ = build(owners, rows, scoring="mean")
    for identity_id in "abc":
        index.set_centroid(identity_id, rows[[i for i, o in enumerate(owners) if o == identity_id]])
    query = units(rng, 1)[0]
    means = {o: rows[[i for i, x in enumerate(owners) if x == o]].mean(axis=0) for o in "abc"}
    expected = sorted(
        ((o, float(m @ query / np.linalg.norm(m))) for o, m in means.items()), key=lambda x: -x[1]
    )
    assert_same(index.search(query, 3), expected)
    assert index.similarity(query, "b") == pytest.approx(dict(expected)["b"], abs=1e-6)


def test_one_thread_and_several_give_the_same_answer() -> None:
    rng = np.random.default_rng(6)
    rows = units(rng, 70_000)
    owners = [f"p{i}" for i in range(len(rows))]
    single, _ = build(owners, rows, threads=1)
    pooled, _ = build(owners, rows, threads=3)
    for query in units(rng, 3):
        assert single.search(query, 5) == pooled.search(query, 5)
    single.close()
    pooled.close()
