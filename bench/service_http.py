"""HTTP helpers the accuracy benchmarks share: an uploaded photo as a multipart part, a POST
that waits out the service's 503s (busy, or a model not loaded yet) as its Retry-After says,
and a bounded number of requests in flight with progress in the log."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

logger = logging.getLogger("bench.service_http")


def image_part(path: Path) -> tuple[str, bytes, str]:
    """The multipart ``files`` entry for the photo at ``path``."""
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, path.read_bytes(), content_type


async def post_with_retry(
    client: httpx.AsyncClient, endpoint: str, retries: int, **kwargs: Any
) -> httpx.Response:
    """POSTs, asking again up to ``retries`` times while the service answers 503."""
    for _ in range(retries):
        response = await client.post(endpoint, **kwargs)
        if response.status_code != 503:
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return await client.post(endpoint, **kwargs)


async def gather_limited(
    jobs: Sequence[Callable[[], Awaitable[T]]], concurrency: int, what: str
) -> list[T]:
    """Runs the coroutine factories ``jobs``, ``concurrency`` at a time, in order of their
    results, logging every hundredth and the last as ``what: done/total``."""
    limit = asyncio.Semaphore(concurrency)
    done = 0

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        nonlocal done
        async with limit:
            result = await job()
        done += 1
        if done % 100 == 0 or done == len(jobs):
            logger.info("%s: %d/%d", what, done, len(jobs))
        return result

    return list(await asyncio.gather(*(run(job) for job in jobs)))
