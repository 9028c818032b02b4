"""The pipeline's options and per-image results: defaults from the service's settings, and the
order in which a caller that needs every image reports their errors."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from face_service.analysis import (
    AnalysisOptions,
    AnalyzedImage,
    raise_first_error,
    settings_context,
)
from face_service.errors import InvalidImageError, NoFaceError
from face_service.settings import Settings


def test_options_left_out_take_the_service_settings() -> None:
    settings = Settings(detector_input_size=320, det_threshold=0.9, nms_threshold=0.3)
    options = AnalysisOptions.model_validate({"limit_faces": 2}, context=settings_context(settings))
    assert (options.max_size, options.det_threshold, options.nms_threshold) == (320, 0.9, 0.3)
    assert options.limit_faces == 2
    detection = options.detection()
    assert (detection.input_size, detection.threshold, detection.nms_threshold) == (320, 0.9, 0.3)
    given = AnalysisOptions.model_validate(
        {"max_size": 640, "det_threshold": 0.5}, context=settings_context(settings)
    )
    assert (given.max_size, given.det_threshold, given.nms_threshold) == (640, 0.5, 0.3)


def test_without_settings_the_options_default_to_the_settings_defaults() -> None:
    defaults = Settings.model_construct()
    options = AnalysisOptions()
    assert options.max_size == defaults.detector_input_size
    assert options.det_threshold == defaults.det_threshold
    assert options.nms_threshold == defaults.nms_threshold


def test_options_are_constrained_like_their_settings() -> None:
    for field, value in [("max_size", 100), ("det_threshold", 1.0), ("nms_threshold", 0)]:
        with pytest.raises(ValidationError):
            AnalysisOptions.model_validate({field: value})
    with pytest.raises(ValidationError, match="Extra inputs"):
        AnalysisOptions.model_validate({"typo": 1})


def test_an_unreadable_image_is_reported_before_one_without_a_face() -> None:
    no_face = AnalyzedImage("image_a", image=np.zeros((4, 4, 3), np.uint8))
    no_face.error = NoFaceError("image_a")
    unreadable = AnalyzedImage("image_b", error=InvalidImageError("'image_b' is empty"))
    with pytest.raises(InvalidImageError, match="image_b"):
        raise_first_error([no_face, unreadable])
    with pytest.raises(NoFaceError):
        raise_first_error([no_face, AnalyzedImage("image_c")])
    raise_first_error([AnalyzedImage("fine")])
