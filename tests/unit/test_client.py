"""The Triton client: errors of an unreachable server, and inputs through shared memory (region
names, a full /dev/shm, parity with binary HTTP, concurrency, re-registration, cleanup)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket

import numpy as np
import pytest

from face_service.errors import ModelUnavailableError
from face_service.inference.client import TritonClient


def test_client_of_an_unreachable_triton_raises_model_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed

    async def call() -> None:
        client = TritonClient(f"127.0.0.1:{port}", timeout_s=5)
        try:
            assert await client.server_ready() is False
            with pytest.raises(ModelUnavailableError, match="'face_recognizer' is not available"):
                await client.infer("face_recognizer", {"x": np.zeros((1, 3), np.float32)}, ["y"])
            with pytest.raises(ModelUnavailableError, match="'face_recognizer' is not available"):
                await client.model_config("face_recognizer")
        finally:
            await client.close()

    asyncio.run(call())


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
                await client.infer("face_recognizer", {"x": np.zeros((1, 3), np.float32)}, ["y"])
        finally:
            await client.close()
        return client.shm_prefix

    assert shm_files(asyncio.run(call())) == []
