"""The Triton client: errors of an unreachable server, and inputs through shared memory (region
names, a full /dev/shm, parity with binary HTTP, concurrency, re-registration, cleanup)."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from face_service.errors import ModelUnavailableError
from face_service.inference.client import TritonClient
from face_service.testing.service_process import ServiceProcess
from tests.integration.embedding_rows import assert_rows_are_their_own


def shm_files(prefix: str) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(prefix)]


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


@pytest.mark.parametrize(
    ("model", "shape"), [("face_detector", (1, 3, 640, 640)), ("face_recognizer", (3, 3, 112, 112))]
)
def test_shm_transport_gives_the_outputs_of_binary(
    service: ServiceProcess, model: str, shape: tuple[int, ...]
) -> None:
    async def call() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        binary = TritonClient(service.triton_address, timeout_s=30)
        shared = TritonClient(
            service.triton_address,
            timeout_s=30,
            transport="shm",
            control_key=service.triton_control_key,
        )
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


@pytest.mark.parametrize("pool_size", [8, 3])
def test_concurrent_shm_calls_each_get_their_own_result(
    service: ServiceProcess, pool_size: int
) -> None:
    async def call() -> tuple[list[np.ndarray], list[np.ndarray], str, int]:
        binary = TritonClient(service.triton_address, timeout_s=30)
        shared = TritonClient(
            service.triton_address,
            timeout_s=30,
            transport="shm",
            control_key=service.triton_control_key,
            shm_pool_size=pool_size,
        )
        try:
            name, [output], pixels = await model_io(binary, "face_recognizer")
            # Distinct inputs of different sizes: regions are created, reused and grown.
            batches = [random_input((n, 3, 112, 112), pixels, seed=n) for n in range(1, 9)]
            expected = [
                (await binary.infer("face_recognizer", {name: b}, [output]))[output]
                for b in batches
            ]
            results = await asyncio.gather(
                *(shared.infer("face_recognizer", {name: b}, [output]) for b in batches)
            )
            regions = len(shm_files(shared.shm_prefix))
        finally:
            await shared.close()
            await binary.close()
        return expected, [result[output] for result in results], shared.shm_prefix, regions

    expected, actual, prefix, regions = asyncio.run(call())
    assert 1 <= regions <= pool_size
    assert_rows_are_their_own(actual, expected)
    assert shm_files(prefix) == []


def test_shm_regions_are_registered_again_after_triton_forgets_them_and_freed_on_close(
    service: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    async def call() -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str]]:
        other = TritonClient(
            service.triton_address, timeout_s=30, control_key=service.triton_control_key
        )
        shared = TritonClient(
            service.triton_address,
            timeout_s=30,
            transport="shm",
            control_key=service.triton_control_key,
        )
        # Triton's shared-memory API takes the service's key (server_arguments.py).
        headers = other._control_headers()
        try:
            name, [output], pixels = await model_io(other, "face_recognizer")
            crops = random_input((2, 3, 112, 112), pixels, seed=3)
            first = (await shared.infer("face_recognizer", {name: crops}, [output]))[output]
            regions = shm_files(shared.shm_prefix)
            # What a restarted Triton looks like: it knows none of the client's regions.
            for region in regions:
                await other._client.unregister_system_shared_memory(region, headers=headers)
            again = (await shared.infer("face_recognizer", {name: crops}, [output]))[output]
        finally:
            await shared.close()
        try:
            status = await other._client.get_system_shared_memory_status(headers=headers)
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


def test_shm_with_a_triton_that_cannot_map_the_region_says_so(
    service: ServiceProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Triton on another host (or without this /dev/shm) cannot open the client's regions.
    monkeypatch.setattr(
        "face_service.inference.shared_memory._reserve", lambda path, byte_size: path.unlink()
    )

    async def call() -> str:
        client = TritonClient(
            service.triton_address,
            timeout_s=30,
            transport="shm",
            control_key=service.triton_control_key,
        )
        try:
            name, outputs, pixels = await model_io(client, "face_recognizer")
            with pytest.raises(ModelUnavailableError, match="FACE_TRITON_TRANSPORT=binary"):
                await client.infer(
                    "face_recognizer", {name: random_input((1, 3, 112, 112), pixels, 4)}, outputs
                )
        finally:
            await client.close()
        return client.shm_prefix

    assert shm_files(asyncio.run(call())) == []
