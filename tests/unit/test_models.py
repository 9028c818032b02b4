"""The models on Triton without Triton: a stub client hands out configs and answers, so that
what the detector and the recognizer read from a config, refuse, send and return is checked in
milliseconds (the real thing: test_pipeline.py's parity tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from face_service.errors import ModelConfigError
from face_service.inference.client import TritonClient
from face_service.inference.detector import FaceDetector
from face_service.inference.models import model_input
from face_service.inference.recognizer import FaceRecognizer

STRIDES = (8, 16, 32)


class StubClient:
    """Hands out one config and answers every call with ``answer(inputs)``."""

    def __init__(self, config: mc.ModelConfig, answer: Any = None) -> None:
        self.config = config
        self.answer = answer
        self.calls: list[dict[str, np.ndarray]] = []

    async def model_config(self, model: str) -> mc.ModelConfig:
        assert model == self.config.name
        return self.config

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        self.calls.append(dict(inputs))
        answer = self.answer(dict(inputs))
        return {name: answer[name] for name in outputs}


def client(config: mc.ModelConfig, answer: Any = None) -> TritonClient:
    return cast(TritonClient, StubClient(config, answer))


def detector_config(data_type: int = mc.TYPE_UINT8, max_batch_size: int = 4) -> mc.ModelConfig:
    config = mc.ModelConfig(name="face_detector", max_batch_size=max_batch_size)
    config.input.add(name="pixels", data_type=data_type, dims=[3, -1, -1])
    for group, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in STRIDES:
            config.output.add(name=f"{group}_{stride}", data_type=mc.TYPE_FP32, dims=[-1, width])
    return config


def recognizer_config(data_type: int = mc.TYPE_UINT8, width: int = 512) -> mc.ModelConfig:
    config = mc.ModelConfig(name="face_recognizer", max_batch_size=32)
    config.input.add(name="pixels", data_type=data_type, dims=[3, 112, 112])
    config.output.add(name="embedding", data_type=mc.TYPE_FP32, dims=[width])
    return config


def test_model_input_is_uint8_rgb_channels_first() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = 10  # blue
    image[..., 2] = 30  # red
    blob = model_input([image, image])
    assert blob.shape == (2, 3, 2, 3)
    assert blob.dtype == np.uint8
    assert blob.flags["C_CONTIGUOUS"]
    assert (blob[:, 0] == 30).all()
    assert (blob[:, 2] == 10).all()
    # Any pixels, views of larger images included: numpy's reversed, transposed copy.
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (120, 130, 3), np.uint8)[4:116, 9:121] for _ in range(3)]
    expected = np.ascontiguousarray(np.stack(images)[..., ::-1].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(model_input(images), expected)


@pytest.mark.parametrize(
    ("model", "config"),
    [
        (FaceDetector, detector_config(mc.TYPE_FP32)),
        (FaceRecognizer, recognizer_config(mc.TYPE_FP32)),
    ],
)
def test_float_input_is_a_repository_to_install_again(model: type, config: mc.ModelConfig) -> None:
    with pytest.raises(ModelConfigError, match=r"TYPE_FP32.*extract_insightface_models\.py"):
        asyncio.run(model(client(config)).load())


def test_detector_refuses_outputs_that_are_not_scrfd() -> None:
    config = detector_config()
    config.output[0].dims[-1] = 2
    with pytest.raises(ModelConfigError, match="face_detector: output 'score_8'"):
        asyncio.run(FaceDetector(client(config)).load())


def test_detector_sends_pixels_and_maps_faces_back_to_the_image() -> None:
    size = 64

    def answer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(inputs["pixels"])
        outputs = {}
        for stride in STRIDES:
            count = (size // stride) ** 2 * 2
            score = np.zeros((batch, count, 1), np.float32)
            score[:, 11 if stride == 16 else 0, 0] = 0.9 if stride == 16 else 0.1
            outputs[f"score_{stride}"] = score
            outputs[f"bbox_{stride}"] = np.tile(np.float32([1, 2, 3, 4]), (batch, count, 1))
            outputs[f"kps_{stride}"] = np.tile(np.arange(10, dtype=np.float32), (batch, count, 1))
        return outputs

    stub = StubClient(detector_config(), answer)
    detector = FaceDetector(cast(TritonClient, stub))
    # 32x32 images on a 64 canvas: scale 2, so canvas pixels halve back into image pixels.
    images = [np.full((32, 32, 3), 50, np.uint8)] * 5
    found = asyncio.run(detector.predict(images, input_size=size, threshold=0.5, nms_threshold=0.4))
    assert [len(faces) for faces in found] == [1] * 5
    # Batches of at most max_batch_size, uint8 pixels.
    assert [call["pixels"].shape for call in stub.calls] == [(4, 3, 64, 64), (1, 3, 64, 64)]
    assert stub.calls[0]["pixels"].dtype == np.uint8
    [face] = found[0]
    # Anchor 11 at stride 16 is cell 5 = (16, 16) on the canvas.
    np.testing.assert_allclose(face.bbox, np.float32([16 - 16, 16 - 32, 16 + 48, 16 + 64]) / 2)
    assert face.det_score == pytest.approx(0.9)
    np.testing.assert_allclose(face.landmarks[1], [(16 + 2 * 16) / 2, (16 + 3 * 16) / 2])


def test_recognizer_dimension_comes_from_its_config() -> None:
    recognizer = FaceRecognizer(client(recognizer_config(width=256)))
    assert recognizer.dimension is None
    asyncio.run(recognizer.load())
    assert recognizer.dimension == 256


def test_recognizer_without_a_declared_width_learns_it_from_a_first_embedding() -> None:
    stub = StubClient(
        recognizer_config(width=-1),
        lambda inputs: {"embedding": np.ones((len(inputs["pixels"]), 128), np.float32)},
    )
    recognizer = FaceRecognizer(cast(TritonClient, stub))
    asyncio.run(recognizer.load())
    assert recognizer.dimension == 128
    [probe] = stub.calls
    assert probe["pixels"].shape == (1, 3, 112, 112)
    assert probe["pixels"].dtype == np.uint8


def test_recognizer_embeddings_are_normalised_and_must_have_the_declared_width() -> None:
    def answer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"embedding": np.full((len(inputs["pixels"]), 4), 2.0, np.float32)}

    crops = [np.zeros((112, 112, 3), np.uint8)] * 3
    embeddings, norms = asyncio.run(
        FaceRecognizer(client(recognizer_config(width=4), answer)).predict(crops)
    )
    assert embeddings.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0)
    np.testing.assert_allclose(norms, 4.0)
    with pytest.raises(ModelConfigError, match="width 4, while its config says 8"):
        asyncio.run(FaceRecognizer(client(recognizer_config(width=8), answer)).predict(crops))
