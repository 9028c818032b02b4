"""Giving memory back to the operating system after requests that decoded large images.

Pillow decodes into blocks that glibc serves from its heaps (below its 32 MiB mmap threshold),
and freed heap memory stays in the process: one 7000x7000 PNG left the API ~650 MB larger for
good. After a request that decoded at least :data:`TRIM_AFTER_PIXELS`, ``malloc_trim(0)``
returns the free pages (a few milliseconds, in a worker thread).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from contextvars import ContextVar

logger = logging.getLogger("face_service")

# 4 Mpx: about 12 MiB as BGR; smaller images leave too little behind to be worth a trim.
TRIM_AFTER_PIXELS = 4_000_000

# Pixels decoded by the current request: a mutable box, so that worker threads (which run in a
# copy of the request's context) add to the request's own count.
_decoded_pixels: ContextVar[list[int] | None] = ContextVar("decoded_pixels", default=None)


def note_decoded(pixels: int) -> None:
    """Called by the decoder for each image it decodes."""
    box = _decoded_pixels.get()
    if box is not None:
        box[0] += pixels


def start_counting() -> list[int]:
    box = [0]
    _decoded_pixels.set(box)
    return box


def _load_malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_malloc_trim = _load_malloc_trim()


def trim() -> bool:
    """Returns the heap's free pages to the system; False where the C library cannot."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


async def trim_after(box: list[int]) -> None:
    if box[0] >= TRIM_AFTER_PIXELS:
        await asyncio.to_thread(trim)
