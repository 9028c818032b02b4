"""The pipeline coordinator with stub models (tests/fakes.py): batching, per-image errors, the
padded retry, options, crops. Parity with InsightFace on the real Triton:
tests/integration/test_pipeline.py."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from face_service.errors import (
    ImageTooLargeError,
    InvalidImageError,
    LowQualityFaceError,
    NoFaceError,
    TooManyFacesError,
)
from face_service.faces import Face, looks_turned, most_upright
from face_service.imaging import ARCFACE_TEMPLATE, unrotate_box, unrotate_points
from face_service.settings import Settings
from pipeline import drop_poor_faces
from tests.fakes import fake_pipeline, png

# ---------------------------------------------------------------- the coordinator, without Triton


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
    # One detector call for the two readable images.
    assert [count for count, _ in pipeline.detector.calls] == [2]  # type: ignore[attr-defined]
    # One recognizer batch for all five faces: the two images' lead faces (the orientation
    # check: their norms say whether the images are upright) with the three others kept.
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
    fit = {"canvas": "fit", "min_input_size": Settings().detector_min_input_size}
    assert options == [
        {**fit, "input_size": 320, "threshold": 0.9, "nms_threshold": 0.3},
        {**fit, "input_size": 320, "threshold": 0.5, "nms_threshold": 0.3},
    ]


def test_an_image_without_faces_is_retried_on_a_padded_canvas() -> None:
    pipeline = fake_pipeline()
    [image], _ = asyncio.run(pipeline.analyze([png(0)], pipeline.options(auto_rotate=False)))
    assert image.faces == []
    assert [count for count, _ in pipeline.detector.calls] == [1, 1]  # type: ignore[attr-defined]


def test_an_image_without_faces_is_searched_in_every_orientation_by_default() -> None:
    pipeline = fake_pipeline()
    [image], _ = asyncio.run(pipeline.analyze([png(0)]))
    assert (image.faces, image.rotation) == ([], 0)
    # Upright and padded, then each of the three turns and its padded retry.
    assert [count for count, _ in pipeline.detector.calls] == [1] * 8  # type: ignore[attr-defined]


def test_an_upright_looking_image_is_not_searched() -> None:
    pipeline = fake_pipeline()
    [image], _ = asyncio.run(pipeline.analyze([png(2)]))
    assert (len(image.faces), image.rotation) == (2, 0)
    assert [count for count, _ in pipeline.detector.calls] == [1]  # type: ignore[attr-defined]


def test_a_face_found_turned_is_reported_in_the_pixels_of_the_image_as_sent() -> None:
    """The fake finds one face only where the bottom-left block comes to the top-left corner:
    turned 90 degrees clockwise. The search turns a copy shrunk to the detector input (640)."""
    image = np.full((1000, 2000, 3), 128, np.uint8)
    image[:20, :20] = 0
    image[:20, -20:] = 0
    image[-20:, -20:] = 0
    image[-100:, :100] = 1
    data = cv2.imencode(".png", image)[1].tobytes()
    pipeline = fake_pipeline()
    [analyzed], _ = asyncio.run(pipeline.analyze([data]))
    assert analyzed.rotation == 90
    [face] = analyzed.faces
    assert face.rotation == 90
    # The fake's box [0, 0, 100, 100] in the 640x320 copy turned to 320x640, back in 2000x1000.
    scale = 320 / 1000
    expected = unrotate_box(np.array([0, 0, 100, 100], np.float32), 90, 640, 320) / scale
    np.testing.assert_allclose(face.bbox, expected, rtol=1e-5)
    np.testing.assert_allclose(face.bbox, [0, 687.5, 312.5, 1000], rtol=1e-5)
    np.testing.assert_allclose(
        face.landmarks, unrotate_points(ARCFACE_TEMPLATE, 90, 640, 320) / scale, rtol=1e-5
    )


def test_auto_rotate_off_keeps_the_upright_answer() -> None:
    image = np.full((120, 160, 3), 128, np.uint8)
    image[:2, :2] = image[:2, -2:] = image[-2:, -2:] = 0
    image[-2:, :2] = 1
    data = cv2.imencode(".png", image)[1].tobytes()
    pipeline = fake_pipeline(Settings(auto_rotate=False))
    [analyzed], _ = asyncio.run(pipeline.analyze([data]))
    assert (analyzed.faces, analyzed.rotation) == ([], 0)
    [turned], _ = asyncio.run(pipeline.analyze([data], pipeline.options(auto_rotate=True)))
    assert (len(turned.faces), turned.rotation) == (1, 90)


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


def test_more_faces_than_a_request_may_embed_is_a_422_before_any_is_embedded() -> None:
    pipeline = fake_pipeline(Settings(max_faces_per_request=4))
    with pytest.raises(TooManyFacesError, match="5 faces to embed in this request; at most 4"):
        asyncio.run(pipeline.analyze([png(2), png(3)]))
    # Only the lead faces (at most one an image) were embedded, for the orientation check.
    assert pipeline.recognizer.batches == [2]  # type: ignore[attr-defined]
    images, _ = asyncio.run(pipeline.analyze([png(2), png(3)], pipeline.options(limit_faces=2)))
    assert [len(image.faces) for image in images] == [2, 2]
    # Within the limit, the kept faces go with the leads: one call of 2 leads + 2 others.
    assert pipeline.recognizer.batches == [2, 4]  # type: ignore[attr-defined]


def test_min_quality_rejects_faces_whose_embedding_norm_is_below_it() -> None:
    pipeline = fake_pipeline()  # every stub norm is 20
    [(face, _)] = asyncio.run(pipeline.prominent_faces([(png(2), "image")], min_quality=19.5))
    assert face.embedding_norm == 20.0
    with pytest.raises(
        LowQualityFaceError, match=r"'image'.*embedding_norm 20.00 .*min_quality 25"
    ):
        asyncio.run(pipeline.prominent_faces([(png(2), "image")], min_quality=25))
    strict = fake_pipeline(Settings(min_quality=25))
    images, _ = asyncio.run(strict.analyze([png(2)]))
    assert isinstance(images[0].error, LowQualityFaceError)


def test_drop_poor_faces_keeps_the_good_faces_and_their_crops() -> None:
    pipeline = fake_pipeline()
    images, _ = asyncio.run(pipeline.analyze([png(3)], pipeline.options(return_face_crops=True)))
    [image] = images
    for face, norm in zip(image.faces, (22.0, 9.0, 31.0), strict=True):
        face.embedding_norm = norm
    crops = list(image.crops)
    drop_poor_faces(images, 20.0)
    assert [face.embedding_norm for face in image.faces] == [22.0, 31.0]
    assert [id(crop) for crop in image.crops] == [id(crops[0]), id(crops[2])]
    drop_poor_faces(images, 40.0)
    assert (image.faces, str(image.error)) == (
        [],
        "the face in 'images[0]' is too poor to compare: embedding_norm 31.00 is below "
        "min_quality 40",
    )


def face(norm: float | None, *, score: float = 0.8, sideways: bool = False) -> Face:
    landmarks = ARCFACE_TEMPLATE[:, ::-1].copy() if sideways else ARCFACE_TEMPLATE.copy()
    return Face(np.array([0, 0, 112, 112], np.float32), score, landmarks, embedding_norm=norm)


def test_an_upright_looking_face_with_a_low_norm_is_searched() -> None:
    """SCRFD draws an upside-down face's landmarks as if upright and may score it 0.7 or more:
    only the embedding's norm gives it away."""
    assert not looks_turned([face(24.0)])
    assert looks_turned([face(15.0)])
    assert looks_turned([face(24.0, score=0.5)])
    assert looks_turned([face(24.0, sideways=True)])


def test_the_orientation_kept_is_the_one_whose_lead_face_has_the_largest_norm() -> None:
    # Upside down as sent (norm 15), upright turned 180 (24); sideways faces never lead.
    found = {0: [face(15.0)], 90: [face(30.0, sideways=True)], 180: [face(24.0)], 270: []}
    assert most_upright(found) == 180
    # A damaged upright photo: a turn must beat the photo as sent by AS_SENT_NORM_MARGIN (1).
    assert most_upright({0: [face(16.0)], 90: [face(16.8)], 180: [], 270: []}) == 0
    # No lead face anywhere: the highest summed score, as sent on a tie.
    sideways = {0: [face(None, score=0.6, sideways=True)], 90: [], 180: [], 270: []}
    assert most_upright(sideways) == 0
    sideways[270] = [face(None, score=0.9, sideways=True)]
    assert most_upright(sideways) == 270
