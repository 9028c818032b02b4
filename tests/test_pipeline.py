"""Pipeline: the coordinator with a stub detector and recognizer, and parity with InsightFace's
own FaceAnalysis on the same ONNX files through the real Triton (anchor decoding and NMS:
test_scrfd.py; face choice: test_faces.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import vectron_dir

from face_service.analysis import AnalyzedImage
from face_service.errors import ImageTooLargeError, InvalidImageError, NoFaceError
from face_service.faces import Face, cosine_similarity
from face_service.imaging import ARCFACE_TEMPLATE
from face_service.inference.client import TritonClient
from face_service.settings import Settings
from face_service.testing.service_process import ServiceProcess
from pipeline import FacePipeline

# ---------------------------------------------------------------- parity with InsightFace


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def analyze_over_triton(service: ServiceProcess, photo: Path) -> AnalyzedImage:
    async def analyze() -> AnalyzedImage:
        client = TritonClient(service.triton_address, timeout_s=30)
        try:
            pipeline = FacePipeline(client, Settings())
            [image], _ = await pipeline.analyze([photo.read_bytes()], names=["image"])
            return image
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


# ---------------------------------------------------------------- the coordinator, without Triton


class FakeDetector:
    """Finds ``image[0, 0, 0]`` faces in each image (a pixel value as the face count), each a
    box around ArcFace's template points, and records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict]] = []

    async def predict(self, images: list[np.ndarray], **options: object) -> list[list[Face]]:
        self.calls.append((len(images), options))
        return [
            [
                Face(
                    bbox=np.array([10 * i, 0, 10 * i + 100, 100], np.float32),
                    det_score=0.9 - 0.1 * i,
                    landmarks=ARCFACE_TEMPLATE + 10 * i,
                )
                for i in range(int(image[0, 0, 0]))
            ]
            for image in images
        ]


class FakeRecognizer:
    def __init__(self) -> None:
        self.batches: list[int] = []

    async def predict(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(len(crops))
        vectors = np.eye(len(crops), 8, dtype=np.float32)
        return vectors, np.full(len(crops), 20.0, np.float32)


def png(faces: int, width: int = 160, height: int = 120) -> bytes:
    image = np.full((height, width, 3), 128, np.uint8)
    image[0, 0] = faces
    return cv2.imencode(".png", image)[1].tobytes()


def fake_pipeline(settings: Settings | None = None) -> FacePipeline:
    # No Triton: the fakes replace both models, so the client is never used.
    pipeline = FacePipeline(None, settings or Settings())  # type: ignore[arg-type]
    pipeline.detector = FakeDetector()  # type: ignore[assignment]
    pipeline.recognizer = FakeRecognizer()  # type: ignore[assignment]
    return pipeline


def test_analyze_reports_each_image_and_batches_detection_and_embedding() -> None:
    pipeline = fake_pipeline()
    too_large = ImageTooLargeError("'images[2]' has 99 bytes; the limit is 1")
    images, timings = asyncio.run(
        pipeline.analyze([png(2), b"not an image", too_large, png(3)], pipeline.options())
    )
    assert [len(image.faces) for image in images] == [2, 0, 0, 3]
    assert "'images[1]' is not an image" in str(images[1].error)
    assert images[2].error is too_large
    assert (images[0].width, images[0].height, images[0].channels) == (160, 120, 3)
    # One detector call for the two readable images; one recognizer batch for all five faces.
    assert [count for count, _ in pipeline.detector.calls] == [2]  # type: ignore[attr-defined]
    assert pipeline.recognizer.batches == [5]  # type: ignore[attr-defined]
    assert all(face.embedding is not None for face in images[3].faces)
    assert images[3].faces[0].embedding_norm == 20.0
    assert timings.total >= timings.embed


def test_detection_options_left_out_come_from_the_settings() -> None:
    pipeline = fake_pipeline(
        Settings(detector_input_size=320, det_threshold=0.9, nms_threshold=0.3)
    )
    asyncio.run(pipeline.analyze([png(1)]))
    asyncio.run(pipeline.analyze([png(1)], pipeline.options(det_threshold=0.5)))
    options = [options for _, options in pipeline.detector.calls]  # type: ignore[attr-defined]
    assert options == [
        {"input_size": 320, "threshold": 0.9, "nms_threshold": 0.3},
        {"input_size": 320, "threshold": 0.5, "nms_threshold": 0.3},
    ]


def test_an_image_without_faces_is_retried_on_a_padded_canvas() -> None:
    pipeline = fake_pipeline()
    [image], _ = asyncio.run(pipeline.analyze([png(0)]))
    assert image.faces == []
    assert [count for count, _ in pipeline.detector.calls] == [1, 1]  # type: ignore[attr-defined]


def test_limit_and_crops_and_embed_only() -> None:
    pipeline = fake_pipeline()
    options = pipeline.options(limit_faces=1, return_face_crops=True)
    [image], _ = asyncio.run(pipeline.analyze([png(3)], options))
    assert len(image.faces) == 1
    assert image.faces_detected == 3
    assert [crop.shape for crop in image.crops] == [(112, 112, 3)]
    crops = [cv2.imencode(".png", image.crops[0])[1].tobytes(), png(1)]
    embedded, _ = asyncio.run(pipeline.analyze(crops, pipeline.options(embed_only=True)))
    assert len(embedded[0].faces) == 1
    assert embedded[0].faces[0].embedding is not None
    assert "embed_only expects aligned 112x112 face crops" in str(embedded[1].error)
    assert pipeline.recognizer.batches[-1] == 1  # type: ignore[attr-defined]


def test_prominent_faces_fails_on_an_unreadable_image_first() -> None:
    pipeline = fake_pipeline()
    [(face, count)] = asyncio.run(pipeline.prominent_faces([(png(2), "image")]))
    assert count == 2
    assert face.embedding is not None
    with pytest.raises(InvalidImageError, match="'image_b' is not an image"):
        asyncio.run(pipeline.prominent_faces([(png(0), "image_a"), (b"junk", "image_b")]))
    with pytest.raises(NoFaceError, match="image_a"):
        asyncio.run(pipeline.prominent_faces([(png(0), "image_a"), (png(1), "image_b")]))
