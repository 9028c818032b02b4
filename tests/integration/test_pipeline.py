"""Parity of the pipeline, on the real Triton, with InsightFace's own FaceAnalysis on the same
ONNX files (the coordinator with stub models: tests/unit/test_pipeline.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest
from insightface.app.common import Face as InsightFace

from face_service.analysis import AnalyzedImage
from face_service.faces import cosine_similarity
from face_service.imaging import ARCFACE_TEMPLATE, fitted_canvas_shape
from face_service.inference.client import TritonClient
from face_service.settings import Settings
from face_service.testing.service_process import ServiceProcess
from pipeline import FacePipeline
from tests.photos import vectron_dir

# ---------------------------------------------------------------- parity with InsightFace


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def analyze_over_triton(service: ServiceProcess, photo: Path, **options: object) -> AnalyzedImage:
    async def analyze() -> AnalyzedImage:
        client = TritonClient(service.triton_address, timeout_s=30)
        try:
            pipeline = FacePipeline.on_triton(client, Settings())
            [image], _ = await pipeline.analyze(
                [photo.read_bytes()], pipeline.options(**options), names=["image"]
            )
            return image
        finally:
            await client.close()

    return asyncio.run(analyze())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """InsightFace's FaceAnalysis on exactly the two ONNX files the service serves."""
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


def reference_faces(reference, image: np.ndarray, shape: tuple[int, int]) -> list:
    """FaceAnalysis's detection on a canvas of ``shape`` (height, width), every face embedded."""
    boxes, points = reference.det_model.detect(image, input_size=(shape[1], shape[0]))
    faces = []
    for box, landmarks in zip(boxes, points, strict=True):
        face = InsightFace(bbox=box[:4], kps=landmarks, det_score=box[4])
        reference.models["recognition"].get(image, face)
        faces.append(face)
    return faces


@pytest.mark.parametrize("canvas", ["fixed", "fit"])
@pytest.mark.parametrize("photo", ["players", "t1", "gdp", "yaoming"])
def test_parity_with_insightface_face_analysis(
    service: ServiceProcess, reference, photos: dict[str, Path], photo: str, canvas: str
) -> None:
    """The same faces, boxes, scores, landmarks and embeddings as FaceAnalysis on the canvas
    the service chose: InsightFace's own 640, or the one fitted to the photo (trimmed to the
    photo's short side for one larger than 640: players, t1, gdp). FaceAnalysis resizes every
    photo to fill its canvas, where the fitted canvas takes a photo that fits as it is (a resize
    of 287 to 288 pixels already moves an embedding to cosine 0.993), so it gets the photo
    already padded to that canvas."""
    image = cv2.imread(str(photos[photo]))
    shape = (640, 640)
    if canvas == "fit":
        minimum = Settings().detector_min_input_size
        shape = fitted_canvas_shape(*image.shape[:2], 640, minimum, trim=True)
        if max(image.shape[:2]) <= max(shape):
            image = cv2.copyMakeBorder(
                image,
                0,
                shape[0] - image.shape[0],
                0,
                shape[1] - image.shape[1],
                cv2.BORDER_CONSTANT,
            )
    expected = reference_faces(reference, image, shape)
    assert expected, "the reference found no face"
    found = analyze_over_triton(service, photos[photo], canvas=canvas, max_size=640).faces
    assert len(found) == len(expected)
    for reference_face in expected:
        ious = [box_iou(reference_face.bbox, face.bbox) for face in found]
        match = found[int(np.argmax(ious))]
        assert max(ious) >= 0.95
        assert abs(match.det_score - reference_face.det_score) < 0.01
        np.testing.assert_allclose(match.landmarks, reference_face.kps, atol=1.0)
        assert cosine_similarity(match.embedding, reference_face.embedding) >= 0.995


def test_padded_retry_finds_the_frame_filling_face_that_insightface_misses(
    service: ServiceProcess, reference, photos: dict[str, Path]
) -> None:

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
