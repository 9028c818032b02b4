"""Admission control: a bounded number run, a bounded number wait, the rest get 503 at once."""

from __future__ import annotations

import asyncio

import pytest

from face_service.api.admission import AdmissionLimiter
from face_service.errors import ServiceBusyError


def test_running_waiting_and_refused() -> None:
    async def scenario() -> tuple[list[str], AdmissionLimiter]:
        limiter = AdmissionLimiter(concurrency=2, queue=1)
        release = asyncio.Event()
        events: list[str] = []

        async def request(name: str) -> None:
            try:
                async with limiter.slot():
                    events.append(f"start {name}")
                    await release.wait()
            except ServiceBusyError:
                events.append(f"busy {name}")

        tasks = [asyncio.create_task(request(name)) for name in "abcd"]
        await asyncio.sleep(0.05)
        assert (limiter.running, limiter.waiting) == (2, 1)
        release.set()
        await asyncio.gather(*tasks)
        return events, limiter

    events, limiter = asyncio.run(scenario())
    assert events[:3] == ["start a", "start b", "busy d"]
    assert "start c" in events
    assert sum(event.startswith("busy") for event in events) == 1
    assert (limiter.running, limiter.waiting) == (0, 0)


def test_a_failed_request_gives_its_slot_back() -> None:
    async def scenario() -> int:
        limiter = AdmissionLimiter(concurrency=1, queue=0)
        with pytest.raises(RuntimeError):
            async with limiter.slot():
                raise RuntimeError("inference failed")
        async with limiter.slot():
            return limiter.running

    assert asyncio.run(scenario()) == 1


def test_busy_error_is_503_with_retry_after() -> None:
    assert ServiceBusyError.status_code == 503
    assert ServiceBusyError.retry_after_s == 1
