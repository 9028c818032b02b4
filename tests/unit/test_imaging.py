"""Image decoding edge cases, letterboxing and the similarity alignment (unit tests)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.transform import SimilarityTransform

from face_service import imaging
from face_service.errors import ImageTooLargeError, InvalidImageError
from face_service.imaging import (
    ARCFACE_TEMPLATE,
    align_face,
    decode_image,
    decode_scaled,
    encode_jpeg,
    fits_as_is,
    fitted_canvas_shape,
    fitted_canvas_side,
    fitted_letterbox,
    letterbox,
    pad_to_bounded_square,
    pad_to_square,
    rotate_clockwise,
    similarity_transform,
    unrotate_box,
    unrotate_points,
)

LIMIT = 50_000_000


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def rgb_test_image() -> Image.Image:
    """Left half red, right half blue, 40x20."""
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:] = (0, 0, 255)
    return Image.fromarray(array)


@pytest.mark.parametrize(
    ("format", "options"), [("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True}), ("TIFF", {})]
)
def test_lossless_formats_decode_to_bgr(format: str, options: dict) -> None:
    decoded = decode_image(
        encode(rgb_test_image(), format, **options), field="image", max_pixels=LIMIT
    )
    assert decoded.shape == (20, 40, 3)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[0, 0], [0, 0, 255])  # red, in BGR order
    np.testing.assert_array_equal(decoded[0, 39], [255, 0, 0])  # blue


def test_jpeg_decodes_close_to_the_original() -> None:
    decoded = decode_image(
        encode(rgb_test_image(), "JPEG", quality=95), field="image", max_pixels=LIMIT
    )
    assert np.abs(decoded[10, 5].astype(int) - [0, 0, 255]).max() < 20


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = Image.fromarray(np.full((10, 10), 77, np.uint8), mode="L")
    decoded = decode_image(encode(gray, "PNG"), field="image", max_pixels=LIMIT)
    assert decoded.shape == (10, 10, 3)
    np.testing.assert_array_equal(decoded[5, 5], [77, 77, 77])


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    array = np.full((8, 8), 32768, np.uint16)
    decoded = decode_image(encode(Image.fromarray(array), "PNG"), field="image", max_pixels=LIMIT)
    np.testing.assert_array_equal(decoded[0, 0], [128, 128, 128])


def test_transparent_pixels_become_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:, :2] = (0, 255, 0, 255)  # opaque green
    rgba[:, 2:] = (0, 0, 0, 0)  # fully transparent
    decoded = decode_image(
        encode(Image.fromarray(rgba, "RGBA"), "PNG"), field="image", max_pixels=LIMIT
    )
    np.testing.assert_array_equal(decoded[0, 0], [0, 255, 0])
    np.testing.assert_array_equal(decoded[0, 3], [255, 255, 255])


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(rgb_test_image(), "JPEG", quality=95, exif=exif.tobytes())
    decoded = decode_image(data, field="image", max_pixels=LIMIT)
    assert decoded.shape == (40, 20, 3)
    # The red left half is now on top.
    assert decoded[2, 10, 2] > 200
    assert decoded[37, 10, 0] > 200


def test_garbage_empty_and_truncated_bytes_are_invalid() -> None:
    with pytest.raises(InvalidImageError, match="'photo' is not an image in a supported format"):
        decode_image(b"hello", field="photo", max_pixels=LIMIT)
    with pytest.raises(InvalidImageError, match="'photo' is empty"):
        decode_image(b"", field="photo", max_pixels=LIMIT)
    data = encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "PNG"
    )
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], field="photo", max_pixels=LIMIT)


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = encode(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(ImageTooLargeError, match="300x200 = 60000 pixels; the limit is 59999"):
        decode_image(data, field="image", max_pixels=59_999)
    assert decode_image(data, field="image", max_pixels=60_000).shape == (200, 300, 3)


def test_letterbox_keeps_aspect_ratio_in_the_top_left_corner() -> None:
    image = np.full((100, 200, 3), 200, np.uint8)
    boxed = letterbox(image, 640)
    assert boxed.canvas.shape == (640, 640, 3)
    assert boxed.scale == pytest.approx(3.2)
    assert boxed.canvas[319, 639, 0] == 200
    assert boxed.canvas[320, 0, 0] == 0
    tall = letterbox(np.full((300, 100, 3), 9, np.uint8), 640)
    assert tall.scale == pytest.approx(640 / 300)
    assert tall.canvas[639, 212, 0] == 9
    assert tall.canvas[0, 214, 0] == 0


@pytest.mark.parametrize(
    ("height", "width", "side"),
    [
        (250, 250, 256),  # an LFW photo: 6x less canvas than 640x640
        (287, 233, 288),
        (256, 100, 256),  # a multiple of 32 already
        (100, 80, 160),  # below the floor
        (800, 1237, 640),  # beyond the largest canvas
        (20, 639, 640),
    ],
)
def test_fitted_canvas_is_the_smallest_multiple_of_32_within_the_bounds(
    height: int, width: int, side: int
) -> None:
    assert fitted_canvas_side(height, width, 640, 160) == side


@pytest.mark.parametrize(
    ("height", "width", "shape"),
    [
        (800, 1237, (416, 640)),  # players.jpg: 640x413 on a 416-deep canvas, 65% of the square
        (665, 500, (640, 512)),  # portrait: 481 wide -> 512
        (886, 1280, (448, 640)),
        (250, 250, (256, 256)),  # fits: the square canvases compiled at load
        (300, 600, (608, 608)),  # fits too (long side within 640): square, as it is
        (641, 100, (640, 128)),
    ],
)
def test_trimmed_canvas_of_a_photo_larger_than_the_limit_ends_at_its_short_side(
    height: int, width: int, shape: tuple[int, int]
) -> None:
    boxed = fitted_letterbox(np.full((height, width, 3), 7, np.uint8), 640, 160, trim=True)
    assert boxed.canvas.shape[:2] == shape
    assert fitted_canvas_shape(height, width, 640, 160, trim=True) == shape
    assert fitted_canvas_shape(height, width, 640, 160, trim=False) == (max(shape), max(shape))
    # The photo keeps InsightFace's resize: its long side fills the canvas, the rest is black.
    new_height, new_width = round(height * boxed.scale), round(width * boxed.scale)
    assert (boxed.canvas[: new_height - 1, : new_width - 1] == 7).all()
    assert not boxed.canvas[new_height + 1 :].any()
    assert not boxed.canvas[:, new_width + 1 :].any()
    # Untrimmed (a GPU model's warmed squares): the same resize on the square.
    square = fitted_letterbox(np.full((height, width, 3), 7, np.uint8), 640, 160)
    assert square.canvas.shape[0] == square.canvas.shape[1] == max(shape)
    assert square.scale == boxed.scale


def test_fitted_letterbox_pads_a_photo_that_fits_and_resizes_one_that_does_not() -> None:
    photo = np.full((250, 200, 3), 7, np.uint8)
    boxed = fitted_letterbox(photo, 640, 160)
    assert boxed.canvas.shape == (256, 256, 3)
    assert boxed.scale == 1.0
    assert (boxed.canvas[:250, :200] == 7).all()
    assert not boxed.canvas[250:].any()
    assert not boxed.canvas[:, 200:].any()
    large = fitted_letterbox(np.full((1000, 500, 3), 7, np.uint8), 640, 160)
    assert large.canvas.shape == (640, 640, 3)
    assert large.scale == pytest.approx(0.64)
    small = fitted_letterbox(np.full((50, 100, 3), 7, np.uint8), 640, 160)
    assert small.canvas.shape == (160, 160, 3)
    assert small.scale == pytest.approx(1.6)
    assert (small.canvas[:80, :160] == 7).all()
    # fits_as_is says which of them were taken as they are (the detector letterboxes those inline)
    assert [fits_as_is(h, w, 640, 160) for h, w in ((250, 200), (1000, 500), (50, 100))] == [
        True,
        False,
        False,
    ]
    assert fits_as_is(640, 160, 640, 160)
    assert not fits_as_is(641, 10, 640, 160)


def test_pad_to_square_centres_the_image() -> None:
    canvas, (x0, y0) = pad_to_square(np.full((50, 100, 3), 7, np.uint8), 2.0)
    assert canvas.shape == (200, 200, 3)
    assert (x0, y0) == (50, 75)
    assert canvas[75, 50, 0] == 7
    assert canvas[74, 50, 0] == 0


def test_similarity_transform_matches_scikit_image() -> None:
    rng = np.random.default_rng(1)
    sources = [rng.uniform(0, 500, (5, 2)) for _ in range(20)]
    for source in sources + [source[:, ::-1] for source in sources[:5]]:  # and mirrored
        reference = SimilarityTransform()
        reference.estimate(source, ARCFACE_TEMPLATE)
        np.testing.assert_allclose(
            similarity_transform(source, ARCFACE_TEMPLATE), reference.params[:2], atol=1e-9
        )


def test_similarity_transform_of_collinear_points_is_the_least_squares_one() -> None:
    # A rank-1 covariance: scikit-image's SVDs lose a few digits there (translation off by
    # ~1e-6), the closed form does not; its squared error is never the larger one.
    rng = np.random.default_rng(2)
    for _ in range(10):
        source = np.outer(rng.normal(0, 9, 5), rng.normal(0, 1, 2)) + 40
        reference = SimilarityTransform()
        reference.estimate(source, ARCFACE_TEMPLATE)
        matrix = similarity_transform(source, ARCFACE_TEMPLATE)
        np.testing.assert_allclose(matrix, reference.params[:2], rtol=1e-5)

        def squared_error(m: np.ndarray, source: np.ndarray = source) -> float:
            return float(((source @ m[:, :2].T + m[:, 2] - ARCFACE_TEMPLATE) ** 2).sum())

        assert squared_error(matrix) <= squared_error(reference.params[:2]) * (1 + 1e-12)


def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = np.deg2rad(30), 2.5, np.array([10.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = np.array([[0, 0], [1, 0], [0, 1], [3, 2]], dtype=float)
    target = scale * source @ rotation.T + shift
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix, np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.zeros((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        similarity_transform(np.zeros((5, 3)), ARCFACE_TEMPLATE)


def test_align_face_maps_landmarks_onto_the_template() -> None:
    image = np.zeros((400, 400, 3), np.uint8)
    landmarks = ARCFACE_TEMPLATE * 2 + 100  # the face twice as large, shifted
    for x, y in landmarks:
        cv2.circle(image, (round(x), round(y)), 3, (255, 255, 255), -1)
    crop = align_face(image, landmarks)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert crop[round(y), round(x)].max() > 200
    assert crop[5, 5].max() == 0


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_points_found_in_a_rotated_image_map_back_to_the_original(degrees: int) -> None:
    image = np.zeros((60, 100, 3), np.uint8)
    image[10, 70] = 255  # a marked pixel at x=70, y=10
    turned = rotate_clockwise(image, degrees)
    y, x = np.argwhere(turned[:, :, 0] == 255)[0]
    # Pixel centres: the mark covers [x, x+1) x [y, y+1) in the turned image.
    centre = unrotate_points(np.array([x + 0.5, y + 0.5]), degrees, 100, 60)
    np.testing.assert_allclose(centre, [70.5, 10.5])
    box = unrotate_box(np.array([x, y, x + 1, y + 1], np.float32), degrees, 100, 60)
    np.testing.assert_allclose(box, [70, 10, 71, 11])


def test_rotation_must_be_a_right_angle() -> None:
    with pytest.raises(ValueError, match="not 45"):
        unrotate_points(np.zeros(2), 45, 10, 10)


def test_encode_jpeg_round_trips() -> None:
    image = np.full((20, 30, 3), (10, 200, 90), np.uint8)
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(image), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (20, 30, 3)
    assert np.abs(decoded.astype(int) - image).max() <= 3


def test_align_face_in_a_very_wide_image_matches_the_window() -> None:
    """Past OpenCV's 32767-pixel warp limit the crop is taken from a window around the face;
    it is the same crop as from the image itself."""
    rng = np.random.default_rng(0)
    face = rng.integers(0, 255, (300, 300, 3), np.uint8)
    wide = np.zeros((300, 40000, 3), np.uint8)
    wide[:, 30000:30300] = face
    landmarks = ARCFACE_TEMPLATE * 2 + np.array([40, 50], np.float32)
    expected = align_face(face, landmarks)
    crop = align_face(wide, landmarks + np.array([30000, 0], np.float32))
    assert np.abs(crop.astype(int) - expected.astype(int)).max() <= 1


def test_pad_to_bounded_square_keeps_points_mappable() -> None:
    image = np.full((800, 60000, 3), 9, np.uint8)
    canvas, (x0, y0), scale = pad_to_bounded_square(image, 2.0, 4096)
    assert canvas.shape == (4096, 4096, 3)
    assert scale == pytest.approx(4096 / 120000)
    # The image's far corner lands on the canvas where (p - offset) / scale says.
    assert (np.array([60000, 800]) * scale + [x0, y0]).round().tolist() == [x0 + 2048, y0 + 27]
    assert canvas[y0 + 5, x0 + 5, 0] == 9


def test_large_jpegs_decode_at_reduced_scale_and_memory_is_estimated() -> None:
    image = np.full((2000, 9000, 3), 90, np.uint8)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    decoded, scale, size = decode_scaled(data, field="image", max_pixels=LIMIT, max_side=4096)
    assert size == (9000, 2000)
    # 1/2, the largest reduction that keeps the long side at 4096 or more.
    assert decoded.shape == (1000, 4500, 3)
    assert scale == 0.5
    full, scale, _ = decode_scaled(data, field="image", max_pixels=LIMIT)
    assert (full.shape, scale) == ((2000, 9000, 3), 1.0)
    with pytest.raises(ImageTooLargeError, match="needs about 120 MiB to decode; the limit is 100"):
        decode_scaled(data, field="image", max_pixels=LIMIT, max_bytes=100 << 20)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_straight_jpeg_decoding_equals_pillows_at_every_orientation_and_scale(
    mode: str, orientation: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(orientation)
    pixels = cv2.GaussianBlur(rng.integers(0, 255, (151, 229, 3), np.uint8), (5, 5), 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(pixels).convert(mode), "JPEG", quality=90, exif=exif.tobytes())
    taken: list[bool] = []
    straight = imaging._decode_jpeg_straight

    def spy(*args: object) -> np.ndarray | None:
        result = straight(*args)
        taken.append(result is not None)
        return result

    for max_side in (None, 100, 50, 25):  # full size, 1/2, 1/4, 1/8
        monkeypatch.setattr(imaging, "_decode_jpeg_straight", spy)
        fast = decode_scaled(data, field="image", max_pixels=LIMIT, max_side=max_side)
        monkeypatch.setattr(imaging, "_decode_jpeg_straight", lambda *args: None)
        pillow = decode_scaled(data, field="image", max_pixels=LIMIT, max_side=max_side)
        assert (fast.scale, fast.size) == (pillow.scale, pillow.size)
        np.testing.assert_array_equal(fast.image, pillow.image)
    assert taken == [True] * 4


def test_damaged_and_cmyk_jpegs_are_left_to_pillow() -> None:
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], field="photo", max_pixels=LIMIT)
    # Damaged entropy data, complete file: libjpeg warns, Pillow decodes what it can.
    damaged = bytearray(data)
    damaged[len(data) // 2 : len(data) // 2 + 40] = bytes(40)
    image = Image.open(io.BytesIO(bytes(damaged)))
    assert imaging._decode_jpeg_straight(bytes(damaged), image, 1.0) is None
    assert decode_image(bytes(damaged), field="photo", max_pixels=LIMIT).shape == (64, 64, 3)
    cmyk = encode(
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).convert("CMYK"), "JPEG"
    )
    assert decode_image(cmyk, field="photo", max_pixels=LIMIT).shape == (8, 8, 3)
