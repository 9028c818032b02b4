"""In-memory exact 1:N search for the embedded gallery.

Every template is held as int8 codes with a per-row scale (512 bytes a template instead of the
2 KB of float32), so that one scan over a million templates reads 0.5 GB instead of 2 GB: the
scan is bound by memory bandwidth. The scan only ranks; the answer is exact. Each row's
quantisation error is bounded, so the scan yields a score interval for every row; the rows whose
interval reaches the k-th best identity's are re-scored with their float32 embeddings, which
the owner reads from its database (:data:`ExactRows`). Whatever the quantisation, the identities
and similarities returned are those of a float32 brute-force search.

"mean" scoring keeps one float32 centroid per identity instead (the owner computes it from the
identity's exact rows) and scans them with BLAS.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numkong
import numpy as np

from face_service.gallery.rows import clip_similarity
from face_service.gallery.types import NO_TEMPLATE_SIMILARITY, Scoring

# Reads the exact float32 embeddings of the given row keys (len(keys) x dimension, same order).
ExactRows = Callable[[np.ndarray], np.ndarray]

_CODE_MAX = 127  # int8 codes in [-127, 127]: symmetric, so that a row and its negation agree
_PARALLEL_FROM_ROWS = 65_536  # below this one thread scans faster than a hand-off to the pool
_BLOCK = 64  # rows per block when looking for the best rows of a large gallery
_BLOCKS_FROM_ROWS = 65_536  # below this one partition of every row is as cheap


def quantize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(int8 codes, float32 scales, largest error norm, largest code norm x scale) of float32
    rows: ``row ~= scale * codes``, with ``||row - scale * codes|| <= error``."""
    peaks = np.abs(rows).max(axis=1).astype(np.float64)
    scales = np.where(peaks > 0, peaks / _CODE_MAX, 1.0)
    codes = np.rint(rows / scales[:, None]).clip(-_CODE_MAX, _CODE_MAX).astype(np.int8)
    scales32 = scales.astype(np.float32)
    dequantized = codes.astype(np.float64) * scales32.astype(np.float64)[:, None]
    errors = np.linalg.norm(rows.astype(np.float64) - dequantized, axis=1)
    gains = np.linalg.norm(dequantized, axis=1)
    return codes, scales32, float(errors.max(initial=0.0)), float(gains.max(initial=0.0))


class TemplateIndex:
    """Every template's int8 codes (rows ``[:n]``), scale, identity (an integer code) and key
    (the owner's id for the row, used to read its exact embedding back). Appends grow the
    capacity geometrically; removals move the last rows into the holes. Codes of deleted
    identities are reused. Not thread-safe: the owner guards it (its scans use ``threads``
    worker threads of its own)."""

    def __init__(
        self, dimension: int, scoring: Scoring, exact_rows: ExactRows, *, threads: int = 0
    ) -> None:
        self.dimension = dimension
        self.scoring = scoring
        self._exact_rows = exact_rows
        self._threads = threads if threads > 0 else len(os.sched_getaffinity(0))
        self._pool = (
            ThreadPoolExecutor(self._threads, thread_name_prefix="gallery-scan")
            if self._threads > 1
            else None
        )
        self.clear()

    def clear(self) -> None:
        self._codes = np.empty((0, self.dimension), np.int8)
        self._scales = np.empty(0, np.float32)
        self._owners = np.empty(0, np.int32)
        self._keys = np.empty(0, np.int64)
        self._scores = np.empty(0, np.float32)  # scan output, reused between searches
        self._n = 0
        # Upper bounds over every row ever added (removals leave them valid, if loose).
        self._max_error = 0.0
        self._max_gain = 0.0
        self._code_of: dict[str, int] = {}
        self._id_of: list[str | None] = []
        self._free_codes: list[int] = []
        self._templates_of = np.empty(0, np.int64)  # per identity code
        self._centroids = np.empty((0, self.dimension), np.float32)

    def close(self) -> None:
        self.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- sizes

    @property
    def identities(self) -> int:
        return len(self._code_of)

    @property
    def templates(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (capacity included)."""
        arrays = (self._codes, self._scales, self._owners, self._keys, self._scores)
        return sum(a.nbytes for a in arrays) + self._templates_of.nbytes + self._centroids.nbytes

    def __contains__(self, identity_id: str) -> bool:
        return identity_id in self._code_of

    @staticmethod
    def _grown(capacity: int, needed: int) -> int:
        return max(needed, capacity + capacity // 2, 1024)

    def reserve(self, rows: int, identities: int = 0) -> None:
        """Makes room for ``rows`` more templates and ``identities`` more identities, so that
        the updates after a commit cannot fail for memory."""
        needed = self._n + rows
        if needed > len(self._codes):
            capacity = self._grown(len(self._codes), needed)
            self._codes = _resized(self._codes, capacity, self._n)
            self._scales = _resized(self._scales, capacity, self._n)
            self._owners = _resized(self._owners, capacity, self._n)
            self._keys = _resized(self._keys, capacity, self._n)
            # Padded to whole blocks, the padding never ranks.
            self._scores = np.full(math.ceil(capacity / _BLOCK) * _BLOCK, -np.inf, np.float32)
        used = len(self._id_of)
        needed = used + max(0, identities - len(self._free_codes))
        if needed > len(self._templates_of):
            capacity = self._grown(len(self._templates_of), needed)
            self._templates_of = _resized(self._templates_of, capacity, used)
            if self.scoring == "mean":
                self._centroids = _resized(self._centroids, capacity, used)

    # -- updates

    def add_identity(self, identity_id: str) -> int:
        self.reserve(0, 1)
        if self._free_codes:
            code = self._free_codes.pop()
            self._id_of[code] = identity_id
        else:
            code = len(self._id_of)
            self._id_of.append(identity_id)
        self._code_of[identity_id] = code
        self._templates_of[code] = 0
        return code

    def add_rows(self, identity_ids: list[str], keys: np.ndarray, rows: np.ndarray) -> None:
        """Templates of existing identities: row i belongs to ``identity_ids[i]``."""
        owners = np.fromiter((self._code_of[i] for i in identity_ids), np.int32, len(rows))
        codes, scales, max_error, max_gain = quantize(rows)
        self.reserve(len(rows))
        end = self._n + len(rows)
        self._codes[self._n : end] = codes
        self._scales[self._n : end] = scales
        self._owners[self._n : end] = owners
        self._keys[self._n : end] = keys
        self._n = end
        np.add.at(self._templates_of, owners, 1)
        self._max_error = max(self._max_error, max_error)
        self._max_gain = max(self._max_gain, max_gain)

    def set_centroid(self, identity_id: str, rows: np.ndarray) -> None:
        """ "mean" scoring: the identity's centroid from all its exact rows (none: no centroid)."""
        if self.scoring != "mean":
            return
        code = self._code_of[identity_id]
        self._centroids[code] = _normalized(rows.sum(axis=0, dtype=np.float64, keepdims=True))

    def add_to_centroids(self, identity_ids: list[str], rows: np.ndarray) -> None:
        """ "mean" scoring, for identities whose centroid is not set yet (new ones, or all of
        them at a load): adds exact rows, grouped by identity, to their centroid sums. An
        identity may come in several calls; :meth:`normalize_centroids` after the last."""
        if self.scoring != "mean" or not identity_ids:
            return
        codes = np.fromiter((self._code_of[i] for i in identity_ids), np.int64, len(rows))
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        # Grouped rows: each code once per call, so a fancy-indexed += adds every group.
        self._centroids[codes[starts]] += np.add.reduceat(rows, starts, axis=0, dtype=np.float64)

    def normalize_centroids(self) -> None:
        """ "mean" scoring: every centroid sum to a unit vector."""
        if self.scoring == "mean":
            used = len(self._id_of)
            self._centroids[:used] = _normalized(self._centroids[:used])

    def _rows_of(self, code: int) -> np.ndarray:
        return np.flatnonzero(self._owners[: self._n] == code)

    def _remove_rows(self, rows: np.ndarray) -> None:
        """Removes the given (unique) rows: the surviving rows of the tail fill the holes."""
        if len(rows) == 0:
            return
        rows = np.unique(rows)
        np.subtract.at(self._templates_of, self._owners[rows], 1)
        end = self._n - len(rows)
        holes = rows[rows < end]
        survivors = np.setdiff1d(np.arange(end, self._n), rows, assume_unique=True)
        for array in (self._codes, self._scales, self._owners, self._keys):
            array[holes] = array[survivors]
        self._n = end

    def remove_template(self, identity_id: str, key: int) -> None:
        rows = self._rows_of(self._code_of[identity_id])
        self._remove_rows(rows[self._keys[rows] == key])

    def remove_identity(self, identity_id: str) -> None:
        code = self._code_of.pop(identity_id)
        self._remove_rows(self._rows_of(code))
        self._id_of[code] = None
        self._free_codes.append(code)
        if self.scoring == "mean":
            self._centroids[code] = 0.0

    def merge(self, target_id: str, source_id: str) -> None:
        """The source's rows become the target's (then :meth:`set_centroid` the target)."""
        source = self._code_of.pop(source_id)
        target = self._code_of[target_id]
        self._owners[self._rows_of(source)] = target
        self._templates_of[target] += self._templates_of[source]
        self._templates_of[source] = 0
        self._id_of[source] = None
        self._free_codes.append(source)
        if self.scoring == "mean":
            self._centroids[source] = 0.0

    # -- queries

    def search(self, query: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        """The ``top_k`` identities most similar to the unit vector ``query``, best first."""
        if self.scoring == "mean":
            return self._search_centroids(query, top_k)
        if self._n == 0:
            return []
        approximate, slack = self._scan(query)
        kth, k = self._kth_identity_score(approximate, top_k)
        # Every row that can beat the k-th identity's true score, re-scored exactly.
        candidates = np.flatnonzero(approximate[: self._n] >= kth - 2 * slack)
        exact = self._exact_rows(self._keys[candidates]) @ query
        owners = self._owners[candidates]
        order = np.lexsort((owners, -exact))  # best first; ties by identity code
        _, first = np.unique(owners[order], return_index=True)
        best = order[np.sort(first)[:k]]
        return [(self._id_of[owners[r]], clip_similarity(exact[r])) for r in best.tolist()]

    def _scan(self, query: np.ndarray) -> tuple[np.ndarray, float]:
        """(approximate similarity of every row (padding: -inf), the largest possible error of
        any of them)."""
        peak = float(np.abs(query).max())
        query_scale = peak / _CODE_MAX if peak > 0 else 1.0
        query_codes = np.rint(query / query_scale).clip(-_CODE_MAX, _CODE_MAX).astype(np.int8)
        query_error = float(
            np.linalg.norm(query.astype(np.float64) - query_codes * np.float64(query_scale))
        )
        n = self._n
        scores = self._scores
        self._dot_products(query_codes, scores[:n])  # exact integers, < 2**24: exact in float32
        scores[:n] *= self._scales[:n]
        scores[:n] *= np.float32(query_scale)
        # row . query = s r.(t q) + s r.w + e.query, with ||w|| = query_error, ||e|| <= error;
        # 1e-4 covers the float32 rounding of the products above and of the exact re-scores
        # (a 512-term float32 dot product of unit vectors is off by 3e-5 at worst).
        norm = float(np.linalg.norm(query))
        slack = self._max_gain * query_error + self._max_error * norm + 1e-4
        scores[n : math.ceil(n / _BLOCK) * _BLOCK] = -np.inf  # the last block's padding
        return scores, slack

    def _dot_products(self, query_codes: np.ndarray, out: np.ndarray) -> None:
        """out[i] = codes[i] . query_codes, the rows split between the scan threads."""
        n = len(out)
        query = query_codes.reshape(1, -1)
        if self._pool is None or n < _PARALLEL_FROM_ROWS:
            numkong.cdist(query, self._codes[:n], metric="dot", out=out.reshape(1, -1))
            return
        bounds = np.linspace(0, n, self._threads + 1).astype(int)
        shards = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
        # numkong releases the GIL: the shards run side by side.
        futures = [
            self._pool.submit(
                numkong.cdist,
                query,
                self._codes[start:stop],
                metric="dot",
                out=out[start:stop].reshape(1, -1),
            )
            for start, stop in shards
        ]
        for future in futures:
            future.result()

    def _kth_identity_score(self, scores: np.ndarray, k: int) -> tuple[float, int]:
        """(the approximate score of the k-th best identity by its best row, k): walk the
        rows from the best down until k identities are seen; fewer when the gallery holds
        fewer identities with templates."""
        n = self._n
        wanted = min(n, max(4 * k, 64))
        while True:
            best = self._best_rows(scores, wanted)
            _, first = np.unique(self._owners[best], return_index=True)
            if len(first) >= k or wanted == n:
                k = min(k, len(first))
                return float(scores[best[np.sort(first)[k - 1]]]), k
            wanted = min(n, wanted * 4)

    def _best_rows(self, scores: np.ndarray, wanted: int) -> np.ndarray:
        """At least the ``wanted`` best rows, best first. In a large gallery the ``wanted``-th
        best block maximum is a score that at least ``wanted`` rows reach, and one compare
        finds them: cheaper than partitioning every row."""
        n = self._n
        if wanted >= n:
            rows = np.arange(n)
        elif n >= _BLOCKS_FROM_ROWS and wanted <= n // _BLOCK:
            blocks = scores[: math.ceil(n / _BLOCK) * _BLOCK].reshape(-1, _BLOCK).max(axis=1)
            floor = np.partition(blocks, len(blocks) - wanted)[len(blocks) - wanted]
            rows = np.flatnonzero(scores[:n] >= floor)
        else:
            rows = np.argpartition(scores[:n], n - wanted)[n - wanted :]
        return rows[np.argsort(-scores[rows], kind="stable")]

    def _search_centroids(self, query: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        used = len(self._id_of)
        has_centroid = self._templates_of[:used] > 0
        k = min(top_k, int(has_centroid.sum()))
        if k == 0:
            return []
        sims = self._centroids[:used] @ query
        sims[~has_centroid] = -np.inf
        best = np.argpartition(sims, used - k)[used - k :]
        best = best[np.argsort(-sims[best], kind="stable")]
        return [(self._id_of[c], clip_similarity(sims[c])) for c in best.tolist()]

    def similarity(self, query: np.ndarray, identity_id: str) -> float:
        """The query's score against one identity, exactly."""
        code = self._code_of[identity_id]
        if self._templates_of[code] == 0:
            return NO_TEMPLATE_SIMILARITY
        if self.scoring == "mean":
            return clip_similarity(self._centroids[code] @ query)
        rows = self._rows_of(code)
        return clip_similarity(np.max(self._exact_rows(self._keys[rows]) @ query))

    def snapshot(self) -> dict[int, tuple[str, np.ndarray]]:
        """key -> (identity id, dequantised embedding): for checks."""
        n = self._n
        rows = self._codes[:n].astype(np.float32) * self._scales[:n, None]
        return {
            int(key): (self._id_of[int(owner)], row)
            for key, owner, row in zip(self._keys[:n], self._owners[:n], rows, strict=True)
        }


def _resized(array: np.ndarray, capacity: int, used: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), array.dtype)
    grown[:used] = array[:used]
    return grown


def _normalized(rows: np.ndarray) -> np.ndarray:
    """Rows as unit vectors; zero rows (no template) stay zero."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
