"""What the pipeline is asked (:class:`AnalysisOptions`) and what it answers per image
(:class:`AnalyzedImage`, with the request's :class:`Timings`).

The options are defined once, here: the API's /extract and /draw bodies extend this model with
fields of their own. The detector's options default to the service's settings
(FACE_DETECTOR_INPUT_SIZE, FACE_DET_THRESHOLD, FACE_NMS_THRESHOLD, FACE_AUTO_ROTATE): validated
under :func:`settings_context`, an option left out takes the running service's value; without
that context, the settings' own defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic.fields import FieldInfo

from face_service.errors import FaceServiceError
from face_service.faces import DetectionOptions, Face
from face_service.settings import Settings

# An input of a batch: its bytes, or the error that kept it from being read (too large, not an
# image type), which is reported in that image's own entry.
ImageInput = bytes | FaceServiceError

SETTINGS_CONTEXT = "settings"
# Each detector option and the setting that gives its default.
SETTING_OF_OPTION = {
    "max_size": "detector_input_size",
    "canvas": "detector_canvas",
    "min_canvas_size": "detector_min_input_size",
    "det_threshold": "det_threshold",
    "nms_threshold": "nms_threshold",
    "auto_rotate": "auto_rotate",
    "min_quality": "min_quality",
}
# The one description of the auto_rotate option, on every route that takes a photo.
AUTO_ROTATE_DESCRIPTION = (
    "when the photo looks turned (no face, a low best score, eyes not above the mouth), also "
    "detect on it turned 90, 180 and 270 degrees and keep the orientation whose faces score "
    "best; boxes stay in the photo's own pixels and `rotation` says the turn; default "
    "FACE_AUTO_ROTATE (on)"
)
# The one description of the min_quality option, on every route that takes a photo.
MIN_QUALITY_DESCRIPTION = (
    "reject faces whose embedding_norm (the embedding's length before normalisation: low for "
    "blurred, tiny or damaged faces) is below this, with a 422 naming both values, rather than "
    "compare them; 0 keeps every face; default FACE_MIN_QUALITY (0)"
)


def settings_context(settings: Settings) -> dict[str, Settings]:
    """The validation context under which options left out take ``settings``' values."""
    return {SETTINGS_CONTEXT: settings}


def like_setting(setting: str, description: str) -> Any:
    """An option with the setting's constraints, and its default where no settings are given."""
    return FieldInfo.merge_field_infos(Settings.model_fields[setting], description=description)


class AnalysisOptions(BaseModel):
    """What to find in each image and what to return of each face."""

    model_config = ConfigDict(extra="forbid")

    max_size: int = like_setting(
        "detector_input_size", "detector input long side; default FACE_DETECTOR_INPUT_SIZE"
    )
    canvas: Literal["fit", "fixed"] = like_setting(
        "detector_canvas",
        "'fit': the smallest square canvas (multiple of 32) holding the image, between "
        "min_canvas_size and max_size (a larger image: shrunk to max_size, on a canvas trimmed "
        "to its short side where the models run on CPU); 'fixed': always max_size. Default "
        "FACE_DETECTOR_CANVAS",
    )
    min_canvas_size: int = like_setting(
        "detector_min_input_size",
        "smallest detector canvas side with canvas 'fit'; default FACE_DETECTOR_MIN_INPUT_SIZE",
    )
    det_threshold: float = like_setting(
        "det_threshold", "minimum detection score; default FACE_DET_THRESHOLD"
    )
    nms_threshold: float = like_setting(
        "nms_threshold", "IoU above which overlapping boxes merge; default FACE_NMS_THRESHOLD"
    )
    limit_faces: int = Field(0, ge=0, le=1000, description="0: all faces, else the N largest")
    min_face_size: int = Field(
        0, ge=0, le=10000, description="pixels, on the shorter side of the box"
    )
    return_embedding: bool = True
    return_landmarks: bool = True
    return_face_crops: bool = Field(False, description="aligned 112x112 crops as base64 JPEG")
    embed_only: bool = Field(
        False, description="inputs are aligned 112x112 face crops: no detection"
    )
    auto_rotate: bool = like_setting("auto_rotate", AUTO_ROTATE_DESCRIPTION)
    min_quality: float = like_setting("min_quality", MIN_QUALITY_DESCRIPTION)

    @model_validator(mode="before")
    @classmethod
    def service_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        settings = (info.context or {}).get(SETTINGS_CONTEXT)
        if settings is None or not isinstance(data, dict):
            return data
        defaults = {option: getattr(settings, name) for option, name in SETTING_OF_OPTION.items()}
        return {**defaults, **data}

    def detection(self) -> DetectionOptions:
        return DetectionOptions(
            input_size=self.max_size,
            threshold=self.det_threshold,
            nms_threshold=self.nms_threshold,
            canvas=self.canvas,
            min_input_size=self.min_canvas_size,
        )


@dataclass
class AnalyzedImage:
    """One input through the pipeline: the decoded image, the faces chosen from it, or why it
    has none (``error``: it could not be read, or had no face to choose)."""

    name: str  # how messages name the input: 'image', 'images[2]'
    image: np.ndarray | None = None  # decoded, EXIF orientation applied
    # Size of the image as sent; while the pipeline runs, of ``image`` (see ``scale``).
    width: int = 0
    height: int = 0
    # Decoded pixels per pixel of the file (< 1 for a large JPEG decoded at reduced scale):
    # faces are found and aligned in ``image``, and reported in the file's pixels.
    scale: float = 1.0
    file_size: tuple[int, int] = (0, 0)  # (width, height) of the file as sent
    channels: int = 0  # of the file as sent: 1 grayscale, 3 colour, 4 with alpha
    faces: list[Face] = field(default_factory=list)
    faces_detected: int = 0  # how many faces the detector found, before choosing
    crops: list[np.ndarray] = field(default_factory=list)  # aligned, one per face, if kept
    rotation: int = 0  # clockwise degrees that made the faces upright
    error: FaceServiceError | None = None
    took_ms: float = 0.0

    def faces_in_decoded_pixels(self) -> list[Face]:
        """The faces in the pixels of the decoded ``image`` (to draw on it), after the pipeline
        has reported them in the file's."""
        return [
            replace(face, bbox=face.bbox * self.scale, landmarks=face.landmarks * self.scale)
            for face in self.faces
        ]

    @property
    def usable(self) -> bool:
        """Decoded, and no stage has failed it: the later stages work on it."""
        return self.image is not None and self.error is None


@dataclass
class Timings:
    """Milliseconds each stage took for the whole batch."""

    decode: float = 0.0
    detect: float = 0.0
    embed: float = 0.0
    total: float = 0.0


def raise_first_error(images: Sequence[AnalyzedImage]) -> None:
    """For callers that need every image: an image that could not be read is reported before
    one that had no face to choose."""
    for image in images:
        if image.image is None and image.error is not None:
            raise image.error
    for image in images:
        if image.error is not None:
            raise image.error
