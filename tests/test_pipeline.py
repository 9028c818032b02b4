"""Pipeline: pure unit tests of anchor decoding and NMS, and parity with
InsightFace's own FaceAnalysis on the same ONNX files, through the real Triton."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from conftest import vectron_dir

from face_service.faces import cosine_similarity
from face_service.imaging import ARCFACE_TEMPLATE
from face_service.settings import Settings
from face_service.testing.service_process import ServiceProcess
from pipeline import (
    FacePipeline,
    ImageFaces,
    anchor_centers,
    decode_scrfd,
    distance_to_box,
    distance_to_points,
    nms,
)
from triton_service import TritonClient


def test_anchor_centers_are_row_major_and_repeated_per_anchor() -> None:
    centers = anchor_centers(2, 3, 8, 2)
    assert centers.shape == (12, 2)
    np.testing.assert_array_equal(centers[:6], [[0, 0], [0, 0], [8, 0], [8, 0], [16, 0], [16, 0]])
    np.testing.assert_array_equal(centers[6:8], [[0, 8], [0, 8]])
    np.testing.assert_array_equal(anchor_centers(1, 2, 16, 1), [[0, 0], [16, 0]])


def test_distances_become_boxes_and_points() -> None:
    centers = np.array([[100.0, 50.0]], dtype=np.float32)
    np.testing.assert_allclose(
        distance_to_box(centers, np.array([[10.0, 20.0, 30.0, 40.0]])), [[90, 30, 130, 90]]
    )
    points = distance_to_points(centers, np.arange(10, dtype=np.float32)[None])
    np.testing.assert_allclose(points[0, 0], [100, 51])
    np.testing.assert_allclose(points[0, 4], [108, 59])


def synthetic_scrfd_outputs(
    size: int, hits: dict[int, tuple[int, float]]
) -> tuple[list, list, list]:
    """Zero-score SCRFD outputs for a ``size`` canvas, with ``hits[stride] = (anchor, score)``."""
    scores, boxes, points = [], [], []
    for stride in (8, 16, 32):
        count = (size // stride) ** 2 * 2
        score = np.zeros((count, 1), np.float32)
        box = np.ones((count, 4), np.float32)
        kps = np.zeros((count, 10), np.float32)
        if stride in hits:
            anchor, value = hits[stride]
            score[anchor, 0] = value
            box[anchor] = [1, 2, 3, 4]
            kps[anchor] = np.arange(10)
        scores.append(score)
        boxes.append(box)
        points.append(kps)
    return scores, boxes, points


def test_decode_scrfd_places_hits_at_their_anchors_scaled_by_stride() -> None:
    # 64x64 canvas, stride 16: a 4x4 map, 2 anchors per cell; anchor 11 is cell 5 = (x=1, y=1).
    scores, boxes, points = synthetic_scrfd_outputs(64, {16: (11, 0.9), 32: (0, 0.3)})
    out_boxes, out_scores, out_points = decode_scrfd(
        scores, boxes, points, input_height=64, input_width=64, threshold=0.5
    )
    np.testing.assert_allclose(out_scores, [0.9])
    np.testing.assert_allclose(out_boxes, [[16 - 16, 16 - 32, 16 + 48, 16 + 64]])
    np.testing.assert_allclose(out_points[0, 1], [16 + 2 * 16, 16 + 3 * 16])


def test_decode_scrfd_with_nothing_above_threshold_is_empty() -> None:
    scores, boxes, points = synthetic_scrfd_outputs(64, {})
    out_boxes, out_scores, out_points = decode_scrfd(
        scores, boxes, points, input_height=64, input_width=64, threshold=0.5
    )
    assert out_boxes.shape == (0, 4)
    assert out_scores.shape == (0,)
    assert out_points.shape == (0, 5, 2)


def test_decode_scrfd_refuses_outputs_that_do_not_fit_the_canvas() -> None:
    scores, boxes, points = synthetic_scrfd_outputs(64, {})
    with pytest.raises(Exception, match="do not fit"):
        decode_scrfd(scores, boxes, points, input_height=128, input_width=128, threshold=0.5)


def test_nms_keeps_best_of_overlapping_boxes_and_all_separate_ones() -> None:
    boxes = np.array(
        [[0, 0, 100, 100], [5, 5, 105, 105], [200, 200, 250, 250], [0, 0, 100, 100]],
        dtype=np.float32,
    )
    scores = np.array([0.8, 0.9, 0.7, 0.6], dtype=np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 0, 2]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).tolist() == []


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
