"""The CPU runtimes behind the python backend: the service on OpenVINO (the default) and on
onnxruntime answer alike, and /health says which runtime and precision serve each model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from face_service.inference.model_config import resolve_precision
from face_service.testing.service_process import ServiceProcess

MODELS = ("face_detector", "face_recognizer")


@pytest.fixture(scope="module")
def onnxruntime_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    running = ServiceProcess(
        api_port=0,
        triton_port=0,
        work_dir=tmp_path_factory.mktemp("onnxruntime-service"),
        env={"FACE_CPU_RUNTIME": "onnxruntime", "FACE_TRITON_REQUEST_TIMEOUT_S": "10"},
    )
    with running, httpx.Client(base_url=running.url, timeout=60) as client:
        yield client


def serving(api: httpx.Client) -> dict[str, dict[str, str]]:
    response = api.get("/health")
    assert response.status_code == 200
    return response.json()["serving"]


def test_health_shows_runtime_and_precision_of_each_model(
    api: httpx.Client, onnxruntime_api: httpx.Client
) -> None:
    for client, runtime in ((api, "openvino"), (onnxruntime_api, "onnxruntime")):
        assert serving(client) == {
            name: {
                "backend": "python",
                "runtime": runtime,
                "precision": resolve_precision(runtime, "auto", name),
            }
            for name in MODELS
        }


@pytest.mark.parametrize("photo", ["yaoming", "players"])
def test_openvino_and_onnxruntime_agree(
    api: httpx.Client, onnxruntime_api: httpx.Client, photos: dict[str, Path], photo: str
) -> None:
    def embed(client: httpx.Client) -> dict:
        files = {"image": (f"{photo}.jpg", photos[photo].read_bytes(), "image/jpeg")}
        response = client.post("/embedding", files=files)
        assert response.status_code == 200
        return response.json()

    openvino, onnxruntime = embed(api), embed(onnxruntime_api)
    assert openvino["faces_detected"] == onnxruntime["faces_detected"]
    np.testing.assert_allclose(openvino["face"]["bbox"], onnxruntime["face"]["bbox"], atol=0.5)
    a = np.asarray(openvino["embedding"])
    b = np.asarray(onnxruntime["embedding"])
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999
