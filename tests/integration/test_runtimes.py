"""The CPU runtimes behind the python backend: the service on OpenVINO (the default) and on
onnxruntime answer alike, /health says which runtime and precision serve each model, and model
instances that compile into one cache folder at once all load."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from face_service.inference.model_config import (
    model_path,
    read_onnx_spec,
    resolve_precision,
)
from face_service.inference.names import RECOGNIZER_MODEL
from face_service.settings import Settings
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


def compile_recognizer(model_file: Path, output: str, cache: str, results: Any) -> None:
    from face_service.inference.python_runtimes import OpenvinoRuntime

    try:
        runtime = OpenvinoRuntime(
            model_file,
            {
                "cache_directory": cache,
                "intra_op_thread_count": "1",
                "static_shapes": "1x3x112x112",
            },
            [output],
        )
        crop = np.full((1, 3, 112, 112), 128, np.uint8)
        results.put(runtime.run({runtime.input_name: crop})[0])
    except Exception as error:  # noqa: BLE001 - the failure itself, for the assertion's message
        results.put(repr(error))


def test_instances_compiling_into_one_cache_folder_at_once_all_load(tmp_path: Path) -> None:
    # Two instances of one model (FACE_TRITON_INSTANCES=2) start together and compile the same
    # blob into the data folder's OpenVINO cache; unguarded, about one such start in three failed
    # ("cannot set permissions: No such file or directory [<cache>/<hash>.blob]").
    model_file = model_path(Settings().model_repository, RECOGNIZER_MODEL)
    [output] = [tensor.name for tensor in read_onnx_spec(model_file).outputs]
    spawn = multiprocessing.get_context("spawn")
    for round_number in range(4):
        cache = tmp_path / f"cache-{round_number}"
        results = spawn.Queue()
        processes = [
            spawn.Process(target=compile_recognizer, args=(model_file, output, str(cache), results))
            for _ in range(3)
        ]
        for process in processes:
            process.start()
        outputs = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        failures = [output for output in outputs if isinstance(output, str)]
        assert not failures, failures
        assert all(np.array_equal(output, outputs[0]) for output in outputs)
        assert outputs[0].shape == (1, 512)
