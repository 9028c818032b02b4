"""SCRFD maths: anchor centres, distances, decoding, NMS, and the grouping of outputs by their last
dimension that the detector and the installer share."""

from __future__ import annotations

import numpy as np
import pytest

from face_service.inference.scrfd import (
    MAX_NMS_CANDIDATES,
    ScrfdLayoutError,
    anchor_centers,
    decode_scrfd,
    distance_to_box,
    distance_to_points,
    group_outputs,
    nms,
)


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


def test_outputs_are_grouped_by_last_dimension_in_model_order() -> None:
    names = [f"{group}_{stride}" for group in ("score", "bbox", "kps") for stride in (8, 16, 32)]
    widths = {"score": 1, "bbox": 4, "kps": 10}
    # Groups interleaved (score_8, bbox_8, kps_8, score_16, ...), strides in order.
    shuffled = sorted(names, key=lambda name: int(name.split("_")[1]))
    outputs = group_outputs((name, widths[name.split("_")[0]]) for name in shuffled)
    assert outputs.scores == ("score_8", "score_16", "score_32")
    assert outputs.boxes == ("bbox_8", "bbox_16", "bbox_32")
    assert outputs.points == ("kps_8", "kps_16", "kps_32")
    assert outputs.names == [*outputs.scores, *outputs.boxes, *outputs.points]


@pytest.mark.parametrize(
    ("last_dims", "message"),
    [
        ([("score_8", 1), ("bbox_8", 4), ("kps_8", 10)], "expected 3 outputs each"),
        ([("landmarks", 212)], "'landmarks' has last dimension 212"),
        ([("dynamic", -1)], "'dynamic' has last dimension -1"),
        ([("symbolic", "A")], "'symbolic' has last dimension A"),
    ],
)
def test_outputs_that_are_not_scrfd_are_refused(
    last_dims: list[tuple[str, object]], message: str
) -> None:
    with pytest.raises(ScrfdLayoutError, match=message):
        group_outputs(last_dims)


def test_nms_looks_at_the_best_scoring_candidates_only() -> None:
    # 5000 disjoint boxes, all above any threshold: only the best max_candidates are considered.
    boxes = np.array([[10 * i, 0, 10 * i + 5, 5] for i in range(5000)], dtype=np.float32)
    scores = np.linspace(0.01, 0.99, 5000).astype(np.float32)
    kept = nms(boxes, scores, 0.4, max_candidates=100)
    assert kept.tolist() == list(range(4999, 4899, -1))
    assert len(nms(boxes, scores, 0.4)) == MAX_NMS_CANDIDATES
