"""Admission control: a bounded number of requests run inference at once and a bounded number
wait for a slot; the rest are refused at once with 503 and Retry-After, so that a burst neither
piles up without limit nor makes every request slow. The queued and running requests are gauges
of face_service.metrics (rejections are counted where errors become answers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from face_service import metrics
from face_service.errors import ServiceBusyError


class AdmissionLimiter:
    def __init__(self, *, concurrency: int, queue: int) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting = 0
        self._running = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self._waiting >= self.queue:
            raise ServiceBusyError(
                f"the service is busy: {self.concurrency} requests running and {self._waiting} "
                "waiting; retry shortly"
            )
        self._waiting += 1
        metrics.ADMISSION_QUEUED.inc()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            metrics.ADMISSION_QUEUED.dec()
        self._running += 1
        metrics.ADMISSION_RUNNING.inc()
        try:
            yield
        finally:
            self._running -= 1
            metrics.ADMISSION_RUNNING.dec()
            self._slots.release()
