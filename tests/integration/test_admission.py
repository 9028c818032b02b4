"""Admission control: a bounded number run, a bounded number wait, the rest get 503 at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from face_service.testing.service_process import ServiceProcess


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
