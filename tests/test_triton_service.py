"""Config generation (parsed back through Triton's protobuf), the server wrapper and the client."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from face_service.errors import ModelConfigError, ModelRepositoryError, ModelUnavailableError
from face_service.settings import Settings
from face_service.testing.service_process import ServiceProcess
from triton_service import (
    METADATA_PREFIX,
    OnnxModelSpec,
    ServingOptions,
    TensorSpec,
    TritonClient,
    TritonServer,
    TritonService,
    build_model_config,
    detect_backend,
    mc,
    model_serving_options,
    parse_config,
    read_onnx_spec,
    serialize_config,
    write_model_configs,
)

OPTIONS = ServingOptions(
    backend="python",
    max_batch_size=16,
    instances=2,
    intra_op_threads=3,
    inter_op_threads=1,
    max_queue_delay_us=500,
)


def recognizer_spec(**metadata: str) -> OnnxModelSpec:
    return OnnxModelSpec(
        inputs=(TensorSpec("input.1", mc.TYPE_FP32, (-1, 3, 112, 112)),),
        outputs=(TensorSpec("516", mc.TYPE_FP32, (-1, 512)),),
        metadata=metadata,
    )


def test_batchable_model_gets_dynamic_batching_without_the_batch_dim() -> None:
    spec = recognizer_spec(**{METADATA_PREFIX + "similarity_threshold": "0.3", "other": "x"})
    config = parse_config(serialize_config(build_model_config("fr_model", spec, OPTIONS)))
    assert config.name == "fr_model"
    assert config.backend == "python"
    assert config.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input.1", mc.TYPE_FP32, [3, 112, 112])
    ]
    assert [(o.name, list(o.dims)) for o in config.output] == [("516", [512])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (mc.ModelInstanceGroup.KIND_CPU, 2)
    ]
    assert config.parameters["intra_op_thread_count"].string_value == "3"
    assert config.parameters["inter_op_thread_count"].string_value == "1"
    assert config.parameters["onnx_model_filename"].string_value == "model.onnx"
    assert config.parameters[METADATA_PREFIX + "similarity_threshold"].string_value == "0.3"
    assert "other" not in config.parameters
    assert not config.default_model_filename  # the python backend needs model.py


def test_onnxruntime_backend_names_the_onnx_file() -> None:
    options = ServingOptions(**{**OPTIONS.__dict__, "backend": "onnxruntime"})
    config = build_model_config("fr_model", recognizer_spec(), options)
    assert config.backend == "onnxruntime"
    assert config.default_model_filename == "model.onnx"
    assert "onnx_model_filename" not in config.parameters


def test_model_with_a_fixed_first_dim_is_not_batched() -> None:
    spec = OnnxModelSpec(
        inputs=(TensorSpec("x", mc.TYPE_FP32, (1, 3, -1, -1)),),
        outputs=(TensorSpec("score", mc.TYPE_FP32, (-1, 1)),),
        metadata={},
    )
    config = build_model_config("det", spec, OPTIONS)
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [1, 3, -1, -1]
    assert list(config.output[0].dims) == [-1, 1]
    assert not config.HasField("dynamic_batching")


def test_declared_unbatched_layout_wins_over_shapes() -> None:
    spec = OnnxModelSpec(
        inputs=(TensorSpec("x", mc.TYPE_FP32, (-1, 3, -1, -1)),),
        outputs=(TensorSpec("score", mc.TYPE_FP32, (-1, 1)),),
        metadata={METADATA_PREFIX + "batched": "false"},
    )
    assert not spec.batchable
    assert build_model_config("det", spec, OPTIONS).max_batch_size == 0


def test_unknown_backend_is_refused() -> None:
    options = ServingOptions(**{**OPTIONS.__dict__, "backend": "tensorrt"})
    with pytest.raises(ModelConfigError, match="'tensorrt'"):
        build_model_config("fr_model", recognizer_spec(), options)


def write_tiny_onnx(path: Path, elem_type: int = TensorProto.FLOAT) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", elem_type, ["batch", 4])],
        [helper.make_tensor_value_info("y", elem_type, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.metadata_props.add(key=METADATA_PREFIX + "role", value="test")
    onnx.save(model, str(path))


def test_read_onnx_spec_reads_names_dims_and_metadata(tmp_path: Path) -> None:
    write_tiny_onnx(tmp_path / "m.onnx")
    spec = read_onnx_spec(tmp_path / "m.onnx")
    assert spec.inputs == (TensorSpec("x", mc.TYPE_FP32, (-1, 4)),)
    assert spec.outputs == (TensorSpec("y", mc.TYPE_FP32, (-1, 4)),)
    assert spec.metadata == {METADATA_PREFIX + "role": "test"}
    assert spec.batchable


def test_read_onnx_spec_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelRepositoryError, match=r"bad\.onnx"):
        read_onnx_spec(tmp_path / "bad.onnx")
    with pytest.raises(ModelRepositoryError, match=r"missing\.onnx"):
        read_onnx_spec(tmp_path / "missing.onnx")
    write_tiny_onnx(tmp_path / "strings.onnx", TensorProto.STRING)
    with pytest.raises(ModelConfigError, match="tensor 'x'"):
        read_onnx_spec(tmp_path / "strings.onnx")


def test_write_model_configs_for_both_backends(tmp_path: Path) -> None:
    for name in ("face_detector", "fr_model"):
        (tmp_path / name / "1").mkdir(parents=True)
        write_tiny_onnx(tmp_path / name / "1" / "model.onnx")
    options = model_serving_options(
        Settings(triton_instances=1, triton_intra_op_threads=2), "python"
    )
    configs = write_model_configs(tmp_path, options)
    assert set(configs) == {"face_detector", "fr_model"}
    assert parse_config((tmp_path / "fr_model" / "config.pbtxt").read_text()) == configs["fr_model"]
    assert (tmp_path / "fr_model" / "1" / "model.py").is_file()
    assert configs["fr_model"].max_batch_size == 32
    assert configs["face_detector"].max_batch_size == 4
    write_model_configs(tmp_path, model_serving_options(Settings(), "onnxruntime"))
    assert not (tmp_path / "fr_model" / "1" / "model.py").exists()
    assert 'backend: "onnxruntime"' in (tmp_path / "fr_model" / "config.pbtxt").read_text()


def test_write_model_configs_without_models_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ModelRepositoryError, match=r"extract_insightface_models\.py"):
        write_model_configs(tmp_path, model_serving_options(Settings(), "python"))


def test_detect_backend(tmp_path: Path) -> None:
    assert detect_backend(None) == "python"
    assert detect_backend(tmp_path) == "python"
    (tmp_path / "onnxruntime").mkdir()
    assert detect_backend(tmp_path) == "onnxruntime"


def test_threads_are_sized_for_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert Settings(triton_instances=2).intra_op_threads() == 4
    assert Settings(triton_instances=16).intra_op_threads() == 1
    assert Settings(triton_intra_op_threads=3).intra_op_threads() == 3


def test_server_arguments_bind_to_loopback_and_name_every_port(tmp_path: Path) -> None:
    server = TritonServer(
        model_repository=tmp_path / "repo",
        backend_directory=tmp_path / "backends",
        binary=tmp_path / "tritonserver",
        library_paths=[tmp_path / "libs", tmp_path / "python"],
        bind_address="127.0.0.1",
        http_port=8100,
        grpc_port=8101,
        metrics_port=8102,
        log_file=tmp_path / "triton.log",
    )
    arguments = server.arguments()
    assert arguments[0] == str(tmp_path / "tritonserver")
    for expected in (
        f"--model-repository={tmp_path / 'repo'}",
        "--http-address=127.0.0.1",
        "--http-port=8100",
        "--grpc-port=8101",
        "--metrics-port=8102",
        "--grpc-address=127.0.0.1",
    ):
        assert expected in arguments
    env = server.environment()
    assert env["LD_LIBRARY_PATH"].split(":")[:2] == [
        str(tmp_path / "libs"),
        str(tmp_path / "python"),
    ]
    assert server.url == "127.0.0.1:8100"


def test_client_of_an_unreachable_triton_raises_model_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed

    async def call() -> None:
        client = TritonClient(f"127.0.0.1:{port}", timeout_s=5)
        try:
            assert await client.server_ready() is False
            with pytest.raises(ModelUnavailableError, match="'fr_model' is not available"):
                await client.infer("fr_model", {"x": np.zeros((1, 3), np.float32)}, ["y"])
            with pytest.raises(ModelUnavailableError, match="'fr_model' is not available"):
                await client.model_config("fr_model")
        finally:
            await client.close()

    asyncio.run(call())


@pytest.mark.integration
def test_generated_configs_are_what_triton_serves(service: ServiceProcess) -> None:
    async def call() -> tuple[mc.ModelConfig, np.ndarray]:
        client = TritonClient(service.triton_address, timeout_s=30)
        try:
            config = await client.model_config("fr_model")
            crops = np.random.default_rng(0).integers(0, 256, (3, 3, 112, 112), dtype=np.uint8)
            output = await client.infer("fr_model", {"pixels": crops}, [config.output[0].name])
            return config, output[config.output[0].name]
        finally:
            await client.close()

    config, embeddings = asyncio.run(call())
    assert config.max_batch_size == 32
    assert config.parameters[METADATA_PREFIX + "pack"].string_value == "buffalo_s"
    assert embeddings.shape == (3, 512)
    assert np.all(np.isfinite(embeddings))
    # Three different inputs give three different embeddings: nothing is served from a batch slot.
    assert not np.allclose(embeddings[0], embeddings[1])


@pytest.mark.integration
def test_triton_dies_with_the_api_process_even_on_sigkill(tmp_path: Path) -> None:
    api = ServiceProcess(api_port=0, triton_port=0, work_dir=tmp_path, startup_timeout_s=120)
    with api:
        assert len(api.triton_pids()) == 1
        assert api.process is not None
        api.process.kill()
        api.process.wait()
        deadline = time.monotonic() + 15
        while api.triton_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert api.triton_pids() == []


def test_shm_region_names_differ_between_clients_and_name_the_process() -> None:
    async def call() -> tuple[str, str]:
        first = TritonClient("127.0.0.1:1", timeout_s=5, transport="shm")
        second = TritonClient("127.0.0.1:1", timeout_s=5, transport="shm")
        await first.close()
        await second.close()
        return first.shm_prefix, second.shm_prefix

    first, second = asyncio.run(call())
    assert first != second
    assert first.startswith(f"face_{os.getpid()}_")
    assert second.startswith(f"face_{os.getpid()}_")


@pytest.mark.parametrize(
    ("environment", "transport"),
    [
        ({}, "shm"),  # the local server
        ({"FACE_TRITON_URL": "127.0.0.1:8000"}, "shm"),
        ({"FACE_TRITON_URL": "localhost:8000"}, "shm"),
        ({"FACE_TRITON_URL": "triton.internal:8000"}, "binary"),
        ({"FACE_TRITON_URL": "10.1.2.3:8000"}, "binary"),
        ({"FACE_TRITON_URL": "10.1.2.3:8000", "FACE_TRITON_TRANSPORT": "shm"}, "shm"),
        ({"FACE_TRITON_TRANSPORT": "binary"}, "binary"),
    ],
)
def test_service_client_transport_follows_where_triton_is(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], transport: str
) -> None:
    async def chosen() -> str:
        service = TritonService(Settings())
        await service.client.close()
        return service.client.transport

    monkeypatch.delenv("FACE_TRITON_TRANSPORT", raising=False)
    monkeypatch.delenv("FACE_TRITON_URL", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert asyncio.run(chosen()) == transport


def shm_files(prefix: str) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(prefix)]


def test_shm_region_without_room_in_dev_shm_is_an_error_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # Without the reservation, writing into the sparse region would end this process (SIGBUS).
    monkeypatch.setattr(os, "posix_fallocate", full)

    async def call() -> str:
        client = TritonClient("127.0.0.1:1", timeout_s=5, transport="shm")
        try:
            with pytest.raises(ModelUnavailableError, match="no room for 1048576 bytes"):
                await client.infer("fr_model", {"x": np.zeros((1, 3), np.float32)}, ["y"])
        finally:
            await client.close()
        return client.shm_prefix

    assert shm_files(asyncio.run(call())) == []


async def model_io(client: TritonClient, model: str) -> tuple[str, list[str], bool]:
    """The model's input name, output names, and whether it takes uint8 pixels."""
    config = await client.model_config(model)
    pixels = config.input[0].data_type == mc.TYPE_UINT8
    return config.input[0].name, [output.name for output in config.output], pixels


def random_input(shape: tuple[int, ...], pixels: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if pixels:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("model", "shape"), [("face_detector", (1, 3, 640, 640)), ("fr_model", (3, 3, 112, 112))]
)
def test_shm_transport_gives_the_outputs_of_binary(
    service: ServiceProcess, model: str, shape: tuple[int, ...]
) -> None:
    async def call() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        binary = TritonClient(service.triton_address, timeout_s=30)
        shared = TritonClient(service.triton_address, timeout_s=30, transport="shm")
        try:
            name, outputs, pixels = await model_io(binary, model)
            tensor = random_input(shape, pixels, seed=1)
            expected = await binary.infer(model, {name: tensor}, outputs)
            return expected, await shared.infer(model, {name: tensor}, outputs)
        finally:
            await shared.close()
            await binary.close()

    expected, actual = asyncio.run(call())
    assert actual.keys() == expected.keys()
    for name, array in expected.items():
        assert actual[name].shape == array.shape
        np.testing.assert_allclose(actual[name], array, rtol=1e-5, atol=1e-6)


@pytest.mark.integration
@pytest.mark.parametrize("pool_size", [8, 3])
def test_concurrent_shm_calls_each_get_their_own_result(
    service: ServiceProcess, pool_size: int
) -> None:
    async def call() -> tuple[list[np.ndarray], list[np.ndarray], str, int]:
        binary = TritonClient(service.triton_address, timeout_s=30)
        shared = TritonClient(
            service.triton_address, timeout_s=30, transport="shm", shm_pool_size=pool_size
        )
        try:
            name, [output], pixels = await model_io(binary, "fr_model")
            # Distinct inputs of different sizes: regions are created, reused and grown.
            batches = [random_input((n, 3, 112, 112), pixels, seed=n) for n in range(1, 9)]
            expected = [
                (await binary.infer("fr_model", {name: b}, [output]))[output] for b in batches
            ]
            results = await asyncio.gather(
                *(shared.infer("fr_model", {name: b}, [output]) for b in batches)
            )
            regions = len(shm_files(shared.shm_prefix))
        finally:
            await shared.close()
            await binary.close()
        return expected, [result[output] for result in results], shared.shm_prefix, regions

    expected, actual, prefix, regions = asyncio.run(call())
    assert 1 <= regions <= pool_size
    for want, got in zip(expected, actual, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert shm_files(prefix) == []


@pytest.mark.integration
def test_shm_regions_are_registered_again_after_triton_forgets_them_and_freed_on_close(
    service: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    async def call() -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str]]:
        other = TritonClient(service.triton_address, timeout_s=30)
        shared = TritonClient(service.triton_address, timeout_s=30, transport="shm")
        try:
            name, [output], pixels = await model_io(other, "fr_model")
            crops = random_input((2, 3, 112, 112), pixels, seed=3)
            first = (await shared.infer("fr_model", {name: crops}, [output]))[output]
            regions = shm_files(shared.shm_prefix)
            # What a restarted Triton looks like: it knows none of the client's regions.
            for region in regions:
                await other._client.unregister_system_shared_memory(region)
            again = (await shared.infer("fr_model", {name: crops}, [output]))[output]
        finally:
            await shared.close()
        try:
            status = await other._client.get_system_shared_memory_status()
        finally:
            await other.close()
        registered = [region["name"] for region in status if region["name"] in regions]
        return first, again, regions, registered, shm_files(shared.shm_prefix)

    first, again, regions, registered, files = asyncio.run(call())
    np.testing.assert_allclose(again, first, rtol=1e-5, atol=1e-6)
    assert "registering it again" in caplog.text
    assert regions  # the client did use shared memory ...
    assert files == []  # ... and close() unlinked it
    assert registered == []  # and unregistered it from Triton


@pytest.mark.integration
def test_shm_with_a_triton_that_cannot_map_the_region_says_so(
    service: ServiceProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Triton on another host (or without this /dev/shm) cannot open the client's regions.
    monkeypatch.setattr("triton_service._reserve", lambda path, byte_size: path.unlink())

    async def call() -> str:
        client = TritonClient(service.triton_address, timeout_s=30, transport="shm")
        try:
            name, outputs, pixels = await model_io(client, "fr_model")
            with pytest.raises(ModelUnavailableError, match="FACE_TRITON_TRANSPORT=binary"):
                await client.infer(
                    "fr_model", {name: random_input((1, 3, 112, 112), pixels, 4)}, outputs
                )
        finally:
            await client.close()
        return client.shm_prefix

    assert shm_files(asyncio.run(call())) == []
