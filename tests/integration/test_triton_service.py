"""The local server wrapper (its command line and environment, its death with the API process)
and the facade's choice of transport."""

from __future__ import annotations

import time
from pathlib import Path

from face_service.testing.service_process import ServiceProcess


def test_triton_dies_with_the_api_process_even_on_sigkill(tmp_path: Path) -> None:
    api = ServiceProcess(api_port=0, triton_port=0, work_dir=tmp_path, startup_timeout_s=120)
    with api:
        assert len(api.triton_pids()) == 1
        assert api.process is not None
        api.process.kill()
        api.process.wait()
        deadline = time.monotonic() + 15
        while api.triton_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert api.triton_pids() == []
