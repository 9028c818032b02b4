"""Pipeline: pure unit tests of face choice, and parity with InsightFace's own FaceAnalysis on
the same ONNX files, through the real Triton (anchor decoding and NMS: test_scrfd.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from conftest import vectron_dir

from face_service.imaging import ARCFACE_TEMPLATE
from face_service.inference.client import TritonClient
from face_service.settings import Settings
from face_service.testing.service_process import ServiceProcess
from pipeline import Face, FacePipeline, ImageFaces, cosine_similarity, most_prominent


def face(x1: float, y1: float, x2: float, y2: float) -> Face:
    return Face(bbox=np.array([x1, y1, x2, y2]), det_score=0.9, landmarks=np.zeros((5, 2)))


def test_most_prominent_is_largest_then_nearest_centre() -> None:
    small, large = face(0, 0, 10, 10), face(300, 300, 400, 400)
    assert most_prominent([small, large], 1000, 1000) is large
    edge, centre = face(0, 0, 100, 100), face(450, 450, 549, 549)
    assert most_prominent([edge, centre], 1000, 1000) is centre
    with pytest.raises(ValueError, match="no faces"):
        most_prominent([], 10, 10)


def test_most_prominent_prefers_the_centred_subject_over_a_larger_bystander_at_the_edge() -> None:
    # LFW Nia_Vardalos/4.jpg (250x250): the subject is centred, a 14% larger face at the edge.
    subject, bystander = face(71, 68, 165, 197), face(160, 41, 250, 196)
    assert most_prominent([bystander, subject], 250, 250) is subject
    # Scaling the photo does not change the choice.
    scaled = [face(*(v * 4 for v in f.bbox)) for f in (bystander, subject)]
    assert most_prominent(scaled, 1000, 1000) is scaled[1]


def test_cosine_similarity() -> None:
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(1.0)
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(0.0)


# ---------------------------------------------------------------- parity with InsightFace


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def analyze_over_triton(service: ServiceProcess, photo: Path) -> ImageFaces:
    async def analyze() -> ImageFaces:
        client = TritonClient(service.triton_address, timeout_s=30)
        try:
            return await FacePipeline(client, Settings()).analyze(photo.read_bytes(), "image")
        finally:
            await client.close()

    return asyncio.run(analyze())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """InsightFace's FaceAnalysis on exactly the two ONNX files the service serves."""
    import cv2  # noqa: F401  (insightface imports it too)
    from insightface.app import FaceAnalysis

    folder = tmp_path_factory.mktemp("buffalo_s")
    for name in ("scrfd_500m_bnkps.onnx", "w600k_mbf.onnx"):
        (folder / name).symlink_to(vectron_dir() / name)
    analysis = FaceAnalysis(
        name=str(folder),
        providers=["CPUExecutionProvider"],
        allowed_modules=["detection", "recognition"],
    )
    analysis.prepare(ctx_id=-1, det_size=(640, 640))
    return analysis


@pytest.mark.integration
@pytest.mark.parametrize("photo", ["players", "t1", "gdp", "yaoming"])
def test_parity_with_insightface_face_analysis(
    service: ServiceProcess, reference, photos: dict[str, Path], photo: str
) -> None:
    import cv2

    expected = reference.get(cv2.imread(str(photos[photo])))
    assert expected, "the reference found no face"
    found = analyze_over_triton(service, photos[photo]).faces
    assert len(found) == len(expected)
    for reference_face in expected:
        ious = [box_iou(reference_face.bbox, face.bbox) for face in found]
        match = found[int(np.argmax(ious))]
        assert max(ious) >= 0.95
        assert abs(match.det_score - reference_face.det_score) < 0.01
        np.testing.assert_allclose(match.landmarks, reference_face.kps, atol=1.0)
        assert cosine_similarity(match.embedding, reference_face.embedding) >= 0.995


@pytest.mark.integration
def test_padded_retry_finds_the_frame_filling_face_that_insightface_misses(
    service: ServiceProcess, reference, photos: dict[str, Path]
) -> None:
    import cv2

    assert reference.get(cv2.imread(str(photos["tom_hanks"]))) == []
    [face] = analyze_over_triton(service, photos["tom_hanks"]).faces
    x1, y1, x2, y2 = face.bbox
    # The photo is a 112x112 aligned crop: the box, mapped back from the padded canvas, fills it
    # and the landmarks sit near ArcFace's template points.
    assert x1 < 15
    assert y1 < 15
    assert x2 > 80
    assert y2 > 100
    np.testing.assert_allclose(face.landmarks, ARCFACE_TEMPLATE, atol=8)
    assert face.det_score > 0.5
    assert face.embedding is not None
