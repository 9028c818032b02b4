"""Admission control: a bounded number run, a bounded number wait, the rest get 503 at once."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from face_service.api.admission import AdmissionLimiter
from face_service.errors import ServiceBusyError
from face_service.testing.service_process import ServiceProcess


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
    assert limiter.rejected == 1
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


@pytest.mark.integration
def test_a_burst_beyond_the_limits_gets_503_and_the_rest_is_served(
    service: ServiceProcess, photos: dict[str, Path], tmp_path: Path
) -> None:
    limited = ServiceProcess(
        api_port=0,
        triton_url=service.triton_address,
        work_dir=tmp_path,
        env={"FACE_MAX_CONCURRENT_REQUESTS": "1", "FACE_MAX_QUEUED_REQUESTS": "1"},
    )
    data = photos["players"].read_bytes()

    def call(_: int) -> httpx.Response:
        with httpx.Client(base_url=limited.url, timeout=120) as client:
            return client.post("/extract", files=[("images", ("p.jpg", data, "image/jpeg"))])

    with limited, ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(call, range(8)))
        codes = sorted(response.status_code for response in responses)
        assert codes.count(200) >= 2
        assert codes.count(503) >= 1
        assert set(codes) == {200, 503}
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["Retry-After"] == "1"
        assert "the service is busy" in busy.json()["detail"]
        assert all(
            len(r.json()["images"][0]["faces"]) == 22 for r in responses if r.status_code == 200
        )
        assert call(0).status_code == 200
