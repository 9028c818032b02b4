"""Faces as the service passes them around, and the pure rules that pick among them: which face is
the subject of a photo, which faces a request asked for, whether a photo looks turned, how
similar two embeddings are.

Plain data and arithmetic on numpy arrays: nothing here talks to Triton or reads a request, so
that every package can use a :class:`Face` without importing the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from face_service.imaging import ARCFACE_SIZE, ARCFACE_TEMPLATE

# How strongly the most prominent face is pulled towards the image centre (see prominence).
CENTRE_WEIGHT = 2.0
# When a photo is likely turned (likely_turned), measured with SCRFD-500M at 640 on 171 LFW photos
# and the same photos turned: upright, the best face scored 0.71 or more but for 2 (1st
# percentile 0.706); turned 180 degrees, SCRFD found 91 faces, 90 of them below 0.70 (it draws
# their landmarks as if upright, so only the score gives them away); turned 90 or 270, it missed
# 86 faces and scored 197 of the 256 it found below 0.70.
UPRIGHT_MIN_SCORE = 0.7
# The eyes-to-mouth direction of an upright face points down within 12 degrees (99th percentile,
# the same photos); turned 90 or 270 degrees, the median was 67-71 degrees, and 225 of 256 faces
# were past 45.
UPRIGHT_MAX_TILT_DEGREES = 45.0
# A photo whose lead face (lead_face) embeds with a norm below this is searched in the other
# orientations even when its landmarks look upright: SCRFD draws an upside-down face's landmarks
# as if upright, and scored 13 of 200 such LFW faces 0.70-0.76, but ArcFace embedded them with
# norms of 12.2-16.8 (24 on average turned the right way up), while 149 upright LFW photos'
# faces had norms of 18.8 or more (1st percentile 19.0): 2-4 of them pay for the search.
ORIENTATION_NORM_TRIGGER = 19.0
# The orientation whose lead face has the largest embedding norm is kept; the photo as sent must
# be beaten by this much, so that a damaged upright photo (low norms all round) is not turned.
AS_SENT_NORM_MARGIN = 1.0


@dataclass
class Face:
    bbox: np.ndarray  # [x1, y1, x2, y2] in image pixels
    det_score: float
    landmarks: np.ndarray  # (5, 2): eyes, nose, mouth corners
    embedding: np.ndarray | None = None  # (D,), L2-normalised
    embedding_norm: float | None = None  # the norm before normalisation
    rotation: int = 0  # clockwise degrees the photo was turned to find this face upright

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))


@dataclass(frozen=True)
class DetectionOptions:
    input_size: int  # detector canvas side (with canvas "fit": the largest)
    threshold: float  # minimum detection score
    nms_threshold: float  # IoU above which the weaker of two boxes is dropped
    canvas: str = "fixed"  # "fit": each image's own canvas, see imaging.fitted_letterbox
    min_input_size: int = 64  # with canvas "fit": the smallest canvas side


def prominence(face: Face, width: int, height: int) -> float:
    """How much a face is the subject of its photo: area - 2 * (distance of the box centre
    from the image centre)^2, InsightFace's own ranking; both terms grow with the image's
    scale, so rankings do not depend on it."""
    x1, y1, x2, y2 = face.bbox
    offset = ((x1 + x2) / 2 - width / 2) ** 2 + ((y1 + y2) / 2 - height / 2) ** 2
    return face.area - CENTRE_WEIGHT * offset


def most_prominent(faces: Sequence[Face], width: int, height: int) -> Face:
    """The face a person photographing it meant: the largest, pulled towards the centre.
    Plain "largest" picked a bystander at the edge in 2 of 600 LFW pairs (bench/accuracy.py)."""
    if not faces:
        raise ValueError("no faces to choose from")
    return max(faces, key=lambda face: prominence(face, width, height))


def face_size(face: Face) -> float:
    """The shorter side of the face's box, in pixels."""
    x1, y1, x2, y2 = face.bbox
    return float(min(x2 - x1, y2 - y1))


def select_faces(faces: Sequence[Face], *, min_face_size: int, limit: int) -> list[Face]:
    """Faces at least ``min_face_size`` pixels on their shorter side; with ``limit``, only the
    ``limit`` largest of them. Detection order (best score first) is kept."""
    kept = [face for face in faces if face_size(face) >= min_face_size]
    if limit and len(kept) > limit:
        largest = set(sorted(range(len(kept)), key=lambda i: kept[i].area, reverse=True)[:limit])
        kept = [face for i, face in enumerate(kept) if i in largest]
    return kept


def orientation_score(faces: Sequence[Face]) -> float:
    """How upright an image's faces look: SCRFD finds fewer faces, less surely, in a turned
    photo, so the orientation with the highest summed score is the upright one."""
    return sum(face.det_score for face in faces)


def tilt_degrees(face: Face) -> float:
    """Angle between the face's eyes-to-mouth direction (from the midpoint of the eyes to that
    of the mouth corners) and straight down the image: about 0 for an upright face, 90 for one
    lying on its side."""
    eyes = (face.landmarks[0] + face.landmarks[1]) / 2
    mouth = (face.landmarks[3] + face.landmarks[4]) / 2
    across, down = mouth - eyes
    return float(abs(np.degrees(np.arctan2(across, down))))


def looks_upright(face: Face) -> bool:
    """Whether the detector saw this face upright: scored surely, eyes above the mouth."""
    return face.det_score >= UPRIGHT_MIN_SCORE and tilt_degrees(face) <= UPRIGHT_MAX_TILT_DEGREES


def likely_turned(faces: Sequence[Face]) -> bool:
    """Whether a photo in which the detector found ``faces`` is likely sideways or upside down,
    so that the other orientations are worth trying: no face, or its best face not upright.
    Upright photos seldom are (2 of 171 LFW photos), so most do not pay the 4x detection."""
    if not faces:
        return True
    return not looks_upright(max(faces, key=lambda face: face.det_score))


def lead_face(faces: Sequence[Face]) -> Face | None:
    """The face whose embedding norm says how upright a photo is: the best-scored face with its
    eyes above its mouth (tilt within UPRIGHT_MAX_TILT_DEGREES); None when no face is."""
    level = [face for face in faces if tilt_degrees(face) <= UPRIGHT_MAX_TILT_DEGREES]
    return max(level, key=lambda face: face.det_score) if level else None


def whole_crop_face() -> Face:
    """The face of an aligned crop (embed_only): the whole crop, landmarks on the template."""
    return Face(
        bbox=np.array([0, 0, ARCFACE_SIZE, ARCFACE_SIZE], dtype=np.float32),
        det_score=1.0,
        landmarks=ARCFACE_TEMPLATE.copy(),
    )


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def looks_turned(faces: Sequence[Face]) -> bool:
    """Worth searching the other orientations: likely_turned, or the lead face embeds
    with a norm below ORIENTATION_NORM_TRIGGER (an upside-down face SCRFD scored well)."""
    lead = lead_face(faces)
    if likely_turned(faces) or lead is None or lead.embedding_norm is None:
        return True
    return lead.embedding_norm < ORIENTATION_NORM_TRIGGER


def most_upright(found: dict[int, list[Face]]) -> int:
    """The turn, of those in ``found`` (0: as sent), whose lead face has the largest embedding
    norm, 0 ahead by AS_SENT_NORM_MARGIN; with no lead face anywhere, the highest summed score."""
    norms = {}
    for degrees, faces in found.items():
        lead = lead_face(faces)
        if lead is not None and lead.embedding_norm is not None:
            norms[degrees] = lead.embedding_norm + (AS_SENT_NORM_MARGIN if degrees == 0 else 0.0)
    if norms:
        return max(norms, key=lambda degrees: norms[degrees])
    scores = {degrees: orientation_score(faces) for degrees, faces in found.items()}
    return max(scores, key=lambda degrees: (scores[degrees], degrees == 0))
