"""POSIX shared-memory regions for Triton inputs: a pool of regions, each used by one call at a
time, created lazily, grown on demand and unlinked on close.

A region is the POSIX object ``/dev/shm/<name>``, known to Triton by the same name. Registering
it with Triton is the client's business (:mod:`face_service.inference.client`): the pool only
asks, through ``forget``, to unregister a region it is about to destroy."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tritonclient.utils import shared_memory as shm
from tritonclient.utils.shared_memory import SharedMemoryException

# Inputs of one call share a region, each at a multiple of 64 bytes; regions come in whole MiB
# so that a recognizer batch a few crops larger than the last one needs no new region.
_SHM_ALIGNMENT = 64
_SHM_GRANULE = 1 << 20
_SHM_DIRECTORY = Path("/dev/shm")  # where glibc's shm_open keeps POSIX shared memory


@dataclass(eq=False)
class ShmRegion:
    """One POSIX shared-memory object ``/dev/shm/<name>``, known to Triton by the same name."""

    name: str
    byte_size: int
    handle: shm.SharedMemoryRegion
    registered: bool = False


class ShmPool:
    """At most ``size`` regions named ``<prefix>_<n>``; :meth:`region` checks one out for a call
    (waiting while all are in use), so that concurrent calls never share one. A call that needs
    more bytes than any free region has replaces the smallest free one. ``forget`` is awaited
    before a region is destroyed, to unregister it from Triton."""

    def __init__(
        self, prefix: str, size: int, forget: Callable[[ShmRegion], Awaitable[None]]
    ) -> None:
        self.prefix = prefix
        self._forget = forget
        self._numbers = itertools.count()
        self._slots = asyncio.Semaphore(size)
        self._free: list[ShmRegion] = []
        self._regions: dict[str, ShmRegion] = {}

    @contextlib.asynccontextmanager
    async def region(self, byte_size: int) -> AsyncIterator[ShmRegion]:
        """A region of at least ``byte_size`` bytes, for this call alone."""
        async with self._slots:
            fitting = [r for r in self._free if r.byte_size >= byte_size]
            if fitting:
                region = min(fitting, key=lambda r: r.byte_size)
                self._free.remove(region)
            else:
                if self._free:  # replace the smallest: at most `size` regions in all
                    await self._destroy(min(self._free, key=lambda r: r.byte_size))
                region = self._create(byte_size)
            try:
                yield region
            finally:
                if region.name in self._regions:  # not destroyed by close() meanwhile
                    self._free.append(region)

    async def close(self, timeout_s: float) -> None:
        """Forgets (within ``timeout_s`` in all) and unlinks every region."""
        regions = list(self._regions.values())
        self._regions.clear()
        self._free.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for region in regions:
                    await self._forget(region)
        for region in regions:
            _unlink(region.handle)

    def _create(self, byte_size: int) -> ShmRegion:
        size = max(1, -(-byte_size // _SHM_GRANULE)) * _SHM_GRANULE
        name = f"{self.prefix}_{next(self._numbers)}"
        handle = shm.create_shared_memory_region(name, f"/{name}", size, create_only=True)
        try:
            _reserve(_SHM_DIRECTORY / name, size)
        except OSError as error:
            _unlink(handle)
            raise SharedMemoryException(
                f"no room for {size} bytes in {_SHM_DIRECTORY}: {error}"
            ) from error
        region = self._regions[name] = ShmRegion(name, size, handle)
        return region

    async def _destroy(self, region: ShmRegion) -> None:
        self._free.remove(region)
        del self._regions[region.name]
        try:
            await self._forget(region)
        finally:
            _unlink(region.handle)


def shm_layout(arrays: Iterable[np.ndarray]) -> tuple[list[int], int]:
    """Offsets of the arrays in one region, and the bytes they need in all."""
    offsets, end = [], 0
    for array in arrays:
        offsets.append(end)
        end += -(-array.nbytes // _SHM_ALIGNMENT) * _SHM_ALIGNMENT
    return offsets, end


def write_arrays(region: ShmRegion, arrays: Sequence[np.ndarray], offsets: Sequence[int]) -> None:
    for array, offset in zip(arrays, offsets, strict=True):
        shm.set_shared_memory_region(region.handle, [array], offset=offset)


def _reserve(path: Path, byte_size: int) -> None:
    """Allocate the pages of a new region now: writing into a sparse one on a full /dev/shm
    (Docker's default is 64 MB) would kill this process with SIGBUS instead of raising."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, byte_size)
    finally:
        os.close(fd)


def _unlink(handle: shm.SharedMemoryRegion) -> None:
    with contextlib.suppress(FileNotFoundError):  # removed by someone else, e.g. systemd RemoveIPC
        shm.destroy_shared_memory_region(handle)
