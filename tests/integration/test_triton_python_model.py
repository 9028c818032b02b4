"""The generic python-backend model: requests that Triton batches together come back apart,
each with its own answer."""

from __future__ import annotations

import asyncio

import numpy as np

from face_service.inference.client import TritonClient
from face_service.testing.service_process import ServiceProcess
from tests.integration.embedding_rows import assert_rows_are_their_own


def test_concurrent_requests_get_their_own_results(service: ServiceProcess) -> None:
    rng = np.random.default_rng(7)
    batches = [
        rng.integers(0, 256, (size, 3, 112, 112), dtype=np.uint8) for size in (1, 3, 2, 1, 4, 2)
    ]

    async def run() -> tuple[list[np.ndarray], list[np.ndarray]]:
        client = TritonClient(service.triton_address, timeout_s=60)
        try:

            async def embed(batch: np.ndarray) -> np.ndarray:
                return (await client.infer("face_recognizer", {"pixels": batch}, ["516"]))["516"]

            alone = [await embed(batch) for batch in batches]
            together = await asyncio.gather(*(embed(batch) for batch in batches))
            return alone, list(together)
        finally:
            await client.close()

    alone, together = asyncio.run(run())
    for joined, batch in zip(together, batches, strict=True):
        assert joined.shape == (len(batch), 512)
    assert_rows_are_their_own(together, alone)


def test_detector_images_of_different_sizes_in_one_batch_window(service: ServiceProcess) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (1, 3, side, side), dtype=np.uint8) for side in (320, 640, 320)]
    names = ["score_8", "bbox_16", "kps_32"]

    async def run() -> list[dict[str, np.ndarray]]:
        client = TritonClient(service.triton_address, timeout_s=60)
        try:
            return list(
                await asyncio.gather(
                    *(client.infer("face_detector", {"pixels": i}, names) for i in images)
                )
            )
        finally:
            await client.close()

    results = asyncio.run(run())
    for image, result in zip(images, results, strict=True):
        side = image.shape[-1]
        assert result["score_8"].shape == (1, (side // 8) ** 2 * 2, 1)
        assert result["bbox_16"].shape == (1, (side // 16) ** 2 * 2, 4)
        assert result["kps_32"].shape == (1, (side // 32) ** 2 * 2, 10)
