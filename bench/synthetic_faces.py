"""Seeded synthetic 512-d unit vectors for the gallery benchmarks: isotropic ones (the worst
case for a graph index) and face-like ones, matched to real buffalo_s embeddings.

The face-like model was fitted to the MobileFaceNet (w600k_mbf) embeddings of the real photos in
``../shared/faces`` (894 photos of 456 people, one embedding per person for the spectrum):

| | real | synthetic |
|---|---|---|
| impostor cosine mean / std / p99 | 0.006 / 0.066 / 0.168 | 0.006 / 0.067 / 0.162 |
| genuine cosine mean / std / p5 | 0.604 / 0.109 / 0.417 | 0.604 / 0.109 / 0.425 |
| 456 people: participation ratio, PCs for 50 / 90 % | 153, 55, 171 | 152, 55, 165 |

Isotropic 512-d vectors have an impostor std of 0.044 (effective dimension 512); real
embeddings spread less evenly (effective dimension ~230), which is the structure a graph index
navigates by. Identities are Gaussian with eigenvalues ``i^-0.25 * exp(-(i/250)^4)`` in a random
orthogonal basis plus a small common mean, normalised; a known probe (a "second photo") has a
cosine to its template drawn from the real genuine distribution, the rest of it along
within-person variation (covariance ``lambda^0.25`` in the same basis).
"""

from __future__ import annotations

import numpy as np

DIMENSION = 512
_SPECTRUM_ALPHA, _SPECTRUM_CUTOFF, _SPECTRUM_SHARPNESS = 0.25, 250.0, 4.0
_MEAN_SQUARED = 0.0062  # |common mean|^2: the impostor cosine mean
_WITHIN_GAMMA = 0.25  # within-person covariance ~ lambda^gamma
_GENUINE_MEAN, _GENUINE_STD, _GENUINE_RANGE = 0.604, 0.109, (0.05, 0.95)
_CHUNK = 100_000


def _face_model(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(orthogonal basis, per-axis std of identities, per-axis std of within-person variation,
    common mean)."""
    rng = np.random.default_rng([seed, 0xFACE])
    basis, r = np.linalg.qr(rng.standard_normal((DIMENSION, DIMENSION)))
    basis *= np.sign(np.diag(r))  # uniformly random among orthogonal bases
    rank = np.arange(1, DIMENSION + 1, dtype=np.float64)
    eigenvalues = rank**-_SPECTRUM_ALPHA * np.exp(
        -((rank / _SPECTRUM_CUTOFF) ** _SPECTRUM_SHARPNESS)
    )
    eigenvalues *= (1 - _MEAN_SQUARED) / eigenvalues.sum()
    within = eigenvalues**_WITHIN_GAMMA
    within /= within.sum()
    mean = np.sqrt(_MEAN_SQUARED) * basis[:, 0]
    return basis, np.sqrt(eigenvalues), np.sqrt(within), mean


def _normalized(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def gallery_vectors(kind: str, n: int, seed: int, *, stream: int = 1) -> np.ndarray:
    """``n`` unit vectors, one template per identity: ``kind`` "face" or "isotropic". Another
    ``stream`` gives other people of the same model."""
    if kind not in ("face", "isotropic"):
        raise ValueError(f"kind must be 'face' or 'isotropic', got {kind!r}")
    rng = np.random.default_rng([seed, stream])
    out = np.empty((n, DIMENSION), np.float32)
    if kind == "face":
        basis, spread, _, mean = _face_model(seed)
    for start in range(0, n, _CHUNK):
        count = min(_CHUNK, n - start)
        noise = rng.standard_normal((count, DIMENSION))
        rows = noise if kind == "isotropic" else (noise * spread) @ basis.T + mean
        out[start : start + count] = _normalized(rows)
    return out


def probes(kind: str, sources: np.ndarray, seed: int) -> np.ndarray:
    """A known probe of each source row. Face-like: a "second photo" (cosine to the source from
    the real genuine distribution); isotropic: the source plus Gaussian noise of norm 0.8
    (cosine ~0.78), as this benchmark always used."""
    rng = np.random.default_rng([seed, 2, len(sources)])
    source = np.asarray(sources, np.float64)
    if kind == "isotropic":
        noise = rng.standard_normal(source.shape) * (0.8 / np.sqrt(DIMENSION))
        return _normalized(source + noise)
    basis, _, within, _ = _face_model(seed)
    cosine = np.clip(rng.normal(_GENUINE_MEAN, _GENUINE_STD, len(source)), *_GENUINE_RANGE)
    other = (rng.standard_normal(source.shape) * within) @ basis.T
    other -= np.sum(other * source, axis=1, keepdims=True) * source  # orthogonal to the source
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    return _normalized(cosine[:, None] * source + np.sqrt(1 - cosine[:, None] ** 2) * other)


def unknown_probes(kind: str, count: int, seed: int) -> np.ndarray:
    """Probes of people who are not in the gallery (drawn from the same model)."""
    return gallery_vectors(kind, count, seed, stream=3)
