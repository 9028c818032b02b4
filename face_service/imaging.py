"""Image decoding and the geometry around the models: letterboxing for the detector and the
5-point similarity alignment to ArcFace's 112x112 template. Pure functions on numpy arrays;
images are uint8 BGR (OpenCV's order, which InsightFace's models were trained with)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from face_service.errors import ImageTooLargeError, InvalidImageError
from face_service.memory import note_decoded

# InsightFace's ArcFace template: eye centres, nose tip and mouth corners in a 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_SIZE = 112


# Bytes per pixel of Pillow's own storage of a decoded image, by mode (4 for the rest: RGB,
# RGBA, CMYK, YCbCr, LA, PA, I, F).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def decode_image(
    data: bytes,
    *,
    field: str,
    max_pixels: int,
    max_side: int | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Decodes JPEG, PNG (incl. RGBA, 16-bit), WebP, BMP, GIF, TIFF or grayscale bytes into a BGR
    uint8 array, with the EXIF orientation applied. Transparent pixels become white. See
    :func:`decode_scaled` for ``max_side`` and ``max_bytes``."""
    return decode_scaled(
        data, field=field, max_pixels=max_pixels, max_side=max_side, max_bytes=max_bytes
    ).image


class Decoded(NamedTuple):
    image: np.ndarray  # BGR uint8
    scale: float  # decoded pixels per pixel of the file: 1, or 1/2, 1/4, 1/8 for a large JPEG
    size: tuple[int, int]  # (width, height) of the file as sent, EXIF orientation applied


def decode_scaled(
    data: bytes,
    *,
    field: str,
    max_pixels: int,
    max_side: int | None = None,
    max_bytes: int | None = None,
) -> Decoded:
    """The image as :func:`decode_image` gives it, the scale it was decoded at (decoded pixels
    per pixel of the file) and the file's own size (EXIF orientation applied). A JPEG whose
    long side passes ``max_side`` is decoded at 1/2, 1/4 or 1/8 scale by its own DCT (Pillow's
    draft mode), never below ``max_side``; other formats at full size. Before any pixel is
    decoded, the memory that decoding and conversion will take is estimated and refused (413)
    beyond ``max_bytes``."""
    if not data:
        raise InvalidImageError(f"{field!r} is empty")
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; PIL's bomb warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{field!r} has {width}x{height} = {width * height} pixels; "
                    f"the limit is {max_pixels}"
                )
            long_side = max(width, height)
            if max_side and image.format == "JPEG" and long_side > max_side:
                image.draft(
                    image.mode,
                    (-(-width * max_side // long_side), -(-height * max_side // long_side)),
                )
            scale = image.size[0] / width
            decoded_size = image.size
            needed = decode_bytes(image)
            if max_bytes and needed > max_bytes:
                raise ImageTooLargeError(
                    f"{field!r} ({width}x{height}, {image.mode}) needs about {needed >> 20} MiB "
                    f"to decode; the limit is {max_bytes >> 20} MiB"
                )
            note_decoded(image.size[0] * image.size[1])
            straight = _decode_jpeg_straight(data, image, scale)
            if straight is not None:
                if straight.shape[:2] != decoded_size[::-1]:  # turned by its EXIF orientation
                    width, height = height, width
                return Decoded(straight, scale, (width, height))
            image.load()
            # In place: otherwise Pillow copies every image, turned or not.
            ImageOps.exif_transpose(image, in_place=True)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{field!r} is too large to decode: {error}") from error
    except UnidentifiedImageError as error:
        raise InvalidImageError(
            f"{field!r} is not an image in a supported format (JPEG, PNG, WebP, BMP, GIF, TIFF)"
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidImageError(f"{field!r} is a corrupt or truncated image: {error}") from error
    if image.size != decoded_size:  # turned by its EXIF orientation
        width, height = height, width
    return Decoded(_to_bgr(image), scale, (width, height))


# EXIF orientation -> the same turn as Pillow's ImageOps.exif_transpose, on a numpy image.
_EXIF_ORIENTATION = 0x0112
_EXIF_TURNS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda image: image[:, ::-1],
    3: lambda image: image[::-1, ::-1],
    4: lambda image: image[::-1],
    5: lambda image: image.transpose(1, 0, 2),
    6: lambda image: cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),
    7: lambda image: image.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda image: cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _decode_jpeg_straight(data: bytes, image: Image.Image, scale: float) -> np.ndarray | None:
    """A colour or grayscale JPEG decoded by libjpeg-turbo straight into BGR at the scale
    Pillow's draft mode chose (``image``: opened, drafted, not loaded), turned by its EXIF
    orientation as Pillow reads it; None where Pillow must decode it.

    Pillow decodes into its own 4-byte pixels, which then take a conversion to BGR: 2-2.6x the
    CPU (players.jpg, 1237x800: 11.4 vs 4.3 ms; t1.jpg 11.9 vs 6.5; yaoming.jpg 0.50 vs 0.35;
    fastest of 60), for identical pixels. Pillow keeps what it does better: CMYK and other
    modes, and decoding a damaged file as far as it can. simplejpeg's strict mode refuses any
    file libjpeg warns about, and those go to Pillow; OpenCV's decoder would accept them with
    libjpeg's warning printed on stderr, outside the JSON log."""
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return None
    width, height = image.size  # after draft mode: the size at this scale
    try:
        decoded = simplejpeg.decode_jpeg(
            data,
            colorspace="BGR",
            min_factor=round(1 / scale),
            min_width=width,
            min_height=height,
            strict=True,
        )
    except ValueError:
        return None
    if decoded.shape != (height, width, 3):
        return None
    turn = _EXIF_TURNS.get(image.getexif().get(_EXIF_ORIENTATION, 1))
    return decoded if turn is None else np.ascontiguousarray(turn(decoded))


def decode_bytes(image: Image.Image) -> int:
    """Peak bytes that decoding ``image`` (opened, not loaded) and converting it to BGR take:
    Pillow's storage, the intermediate :func:`_to_bgr` makes for its mode, and the result."""
    pixels = image.size[0] * image.size[1]
    stored = _STORED_BYTES.get(image.mode, 4)
    if image.mode in _WIDE_GRAY:
        intermediate = 4 + 1  # float32 scaling, then 8-bit gray
    elif _has_alpha(image):
        intermediate = 4 + (0 if image.mode == "RGBA" else 4)  # white canvas (+ RGBA copy)
    else:
        intermediate = 0 if image.mode == "RGB" else 4  # the RGB conversion
    return pixels * (stored + intermediate + 3)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


def image_channels(data: bytes) -> int:
    """Channels of an encoded image as stored (1 gray, 2 gray+alpha, 3 colour, 4 with alpha),
    read from its header."""
    with Image.open(io.BytesIO(data)) as image:
        return len(image.getbands())


def _to_bgr(image: Image.Image) -> np.ndarray:
    """BGR uint8 with as few full-size copies as the mode allows (see :func:`decode_bytes`)."""
    if image.mode in _WIDE_GRAY:
        # 16-bit (or 32-bit integer) grayscale: scale to 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float32)
        if image.mode == "F":
            gray = np.clip(array, 0, 255).astype(np.uint8)
        else:
            peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
            gray = np.clip(np.rint(array * (255.0 / peak)), 0, 255).astype(np.uint8)
        del array
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if _has_alpha(image):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba)
        image = canvas
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return _bgr_by_strips(image)


# Bytes converted at a time: tobytes() of a whole image holds its chunks and their join at once
# (twice the result); by strips of about this size, only one strip is held beside the result.
_STRIP_BYTES = 4 * 1024 * 1024


def _bgr_by_strips(image: Image.Image) -> np.ndarray:
    width, height = image.size
    bgr = np.empty((height, width, 3), np.uint8)
    rows = max(1, _STRIP_BYTES // (width * 4))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        strip = image.crop((0, top, width, bottom)).tobytes("raw", "BGR")
        bgr[top:bottom] = np.frombuffer(strip, np.uint8).reshape(bottom - top, width, 3)
    return bgr


@dataclass(frozen=True)
class Letterbox:
    """An image resized into the top-left corner of a canvas, keeping its aspect ratio."""

    canvas: np.ndarray
    scale: float  # canvas pixels per original pixel


def letterbox(image: np.ndarray, size: int, *, trim: bool = False) -> Letterbox:
    """The same resize as InsightFace's SCRFD (so that results match it): the long side becomes
    ``size``, the rest of the canvas is black. The canvas is ``size`` square, or with ``trim``
    as short as the resized image allows along its short side (a multiple of 32, SCRFD's
    coarsest stride): InsightFace's result on that canvas as ``det_size``."""
    height, width = image.shape[:2]
    new_height, new_width = _resized(height, width, size)
    shape = letterbox_shape(height, width, size) if trim else (size, size)
    canvas = np.zeros((*shape, 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = cv2.resize(image, (new_width, new_height))
    return Letterbox(canvas=canvas, scale=new_height / height)


def _resized(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of an image resized so that its long side is ``size``, as InsightFace
    rounds them."""
    if height / width > 1.0:
        return size, max(int(size / (height / width)), 1)
    return max(int(size * (height / width)), 1), size


def _multiple_of_32(length: int) -> int:
    return -(-length // 32) * 32


def fitted_canvas_side(height: int, width: int, max_side: int, min_side: int) -> int:
    """The detector canvas for an image: the smallest multiple of 32 (SCRFD's coarsest stride)
    that holds its long side, but at least ``min_side`` and at most ``max_side``."""
    return min(max_side, max(min_side, _multiple_of_32(max(height, width))))


def fitted_canvas_shape(
    height: int, width: int, max_side: int, min_side: int, *, trim: bool
) -> tuple[int, int]:
    """(height, width) of the canvas :func:`fitted_letterbox` puts an image of this size on."""
    side = fitted_canvas_side(height, width, max_side, min_side)
    if not trim or max(height, width) <= max_side:
        return side, side
    return letterbox_shape(height, width, side)


def letterbox_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The trimmed canvas :func:`letterbox` makes for an image of this size."""
    new_height, new_width = _resized(height, width, size)
    return _multiple_of_32(new_height), _multiple_of_32(new_width)


def fits_as_is(height: int, width: int, max_side: int, min_side: int) -> bool:
    """Whether :func:`fitted_letterbox` takes an image of this size as it is (a copy onto its
    canvas, no resize): its long side is within the canvas bounds."""
    return min(min_side, max_side) <= max(height, width) <= max_side


def fitted_letterbox(
    image: np.ndarray, max_side: int, min_side: int, *, trim: bool = False
) -> Letterbox:
    """The image on the canvas :func:`fitted_canvas_side` chooses: as it is when it fits (no
    resize), else resized as :func:`letterbox` does (shrunk to ``max_side``, or enlarged to
    ``min_side``: SCRFD needs a face of ~16 canvas pixels).

    ``trim``: an image shrunk to ``max_side`` gets a canvas only as deep as it is along its
    short side (a multiple of 32), not a square: a 4:3 photo then costs the detector 3/4 of
    the square's arithmetic (measured 2 cores, OpenVINO fp32, one thread: SCRFD 640x640 22.7 ms,
    416x640 16.4 ms). Smaller images keep square canvases, the shapes compiled at load
    (python_runtimes.OpenvinoRuntime: at 256x256 a shape not compiled for runs 2.5x slower,
    at 640 as fast)."""
    height, width = image.shape[:2]
    side = fitted_canvas_side(height, width, max_side, min_side)
    if not fits_as_is(height, width, max_side, min_side):
        return letterbox(image, side, trim=trim and max(height, width) > max_side)
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    canvas[:height, :width] = image
    return Letterbox(canvas=canvas, scale=1.0)


def pad_to_square(
    image: np.ndarray, factor: float, max_side: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Centres the image on a black square canvas ``factor`` times its long side; returns the
    canvas and the (x, y) offset of the image in it. SCRFD misses faces that fill the frame.
    See :func:`pad_to_bounded_square` for a canvas of bounded size."""
    canvas, offset, _ = pad_to_bounded_square(image, factor, max_side)
    return canvas, offset


def pad_to_bounded_square(
    image: np.ndarray, factor: float, max_side: int | None = None
) -> tuple[np.ndarray, tuple[int, int], float]:
    """As :func:`pad_to_square`, and with ``max_side`` the canvas is never larger than that:
    the image is first shrunk (area averaging) so it fits. Returns the canvas, the image's
    offset in it and the scale (canvas pixels per image pixel), so that a point p found on the
    canvas is ``(p - offset) / scale`` in the image. A 60000x800 image would otherwise make a
    120000-pixel square canvas: 40 GiB."""
    height, width = image.shape[:2]
    side = round(max(height, width) * factor)
    scale = 1.0
    if max_side and side > max_side:
        scale = max_side / side
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        height, width = image.shape[:2]
        side = max_side
    x0, y0 = (side - width) // 2, (side - height) // 2
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    canvas[y0 : y0 + height, x0 : x0 + width] = image
    return canvas, (x0, y0), scale


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, translation) that maps
    ``source`` points onto ``target`` points: what scikit-image's Umeyama (1991) estimate gives,
    in the closed form of the plane. With centred points, scale x rotation is the 2x2 matrix
    [[a, -b], [b, a]] that minimises the squared error, a and b being the dot and cross products
    of source and target over the source's spread: 40 us a face instead of 117 us for the SVDs
    (the same matrices to 1e-15, mirrored and collinear point sets included)."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2:
        raise ValueError(f"point sets must both be (N, 2), got {source.shape} and {target.shape}")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    (sx, sy), (tx, ty) = (source - source_mean).T, (target - target_mean).T
    spread = float(sx @ sx + sy @ sy)
    if spread == 0.0:
        raise ValueError("degenerate point set: all points coincide")
    a, b = float(sx @ tx + sy @ ty) / spread, float(sx @ ty - sy @ tx) / spread
    linear = np.array([[a, -b], [b, a]])
    return np.hstack([linear, (target_mean - linear @ source_mean)[:, None]])


def align_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace crop for one face's five landmarks."""
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    if max(image.shape[:2]) >= _WARP_MAX_SIDE:
        image, matrix = _warp_window(image, matrix)
    return cv2.warpAffine(image, matrix, (ARCFACE_SIZE, ARCFACE_SIZE), borderValue=0.0)


# OpenCV's warpAffine refuses sources with a side of 32767 pixels or more (SHRT_MAX).
_WARP_MAX_SIDE = 32767


def _warp_window(image: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` that the crop's 112x112 square maps back onto (with a margin for
    interpolation), and the matrix moved to it: what a very wide or tall image needs."""
    inverse = cv2.invertAffineTransform(matrix)
    square = np.array([[0, 0], [ARCFACE_SIZE, 0], [0, ARCFACE_SIZE], [ARCFACE_SIZE] * 2])
    corners = square @ inverse[:, :2].T + inverse[:, 2]
    height, width = image.shape[:2]
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int) - 2, 0, [width - 1, height - 1])
    x1, y1 = np.clip(
        np.ceil(corners.max(axis=0)).astype(int) + 2, [x0 + 1, y0 + 1], [width, height]
    )
    moved = matrix.copy()
    moved[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    return image[y0:y1, x0:x1], moved


_CV2_ROTATIONS = {
    90: cv2.ROTATE_90_CLOCKWISE,
    180: cv2.ROTATE_180,
    270: cv2.ROTATE_90_COUNTERCLOCKWISE,
}


def rotate_clockwise(image: np.ndarray, degrees: int) -> np.ndarray:
    """The image turned clockwise by 90, 180 or 270 degrees."""
    return cv2.rotate(image, _CV2_ROTATIONS[degrees])


def unrotate_points(points: np.ndarray, degrees: int, width: int, height: int) -> np.ndarray:
    """Maps (..., 2) points found in an image turned clockwise by ``degrees`` back to the
    original ``width`` x ``height`` image."""
    x, y = points[..., 0], points[..., 1]
    if degrees == 90:
        original = (y, height - x)
    elif degrees == 180:
        original = (width - x, height - y)
    elif degrees == 270:
        original = (width - y, x)
    else:
        raise ValueError(f"rotation must be 90, 180 or 270 degrees, not {degrees}")
    return np.stack(original, axis=-1)


def unrotate_box(box: np.ndarray, degrees: int, width: int, height: int) -> np.ndarray:
    """An [x1, y1, x2, y2] box found in a rotated image, as a box of the original image."""
    corners = unrotate_points(box.reshape(2, 2), degrees, width, height)
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """JPEG without chroma subsampling: face crops stay close enough to re-embed them."""
    options = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, 0x111111]
    ok, encoded = cv2.imencode(".jpg", image, options)
    if not ok:
        raise ValueError("OpenCV could not encode the image as JPEG")
    return encoded.tobytes()


def shrink_to_side(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The image with its long side at most ``side`` (resized as :func:`letterbox` does, so the
    detector sees the same pixels), and the scale (new pixels per original pixel). The
    orientation search turns this rather than the photo: turning a 48-Mpx photo three times
    cost more than detecting on it."""
    height, width = image.shape[:2]
    if max(height, width) <= side:
        return image, 1.0
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size), size[1] / height
