"""The service as a child process (``python app.py``) on ports of the caller's choosing: what the
integration tests and the benchmark scripts run against."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from face_service.settings import REPOSITORY_ROOT

# The key of Triton's control APIs (FACE_TRITON_CONTROL_KEY) that every service this process
# starts gets, unless told otherwise: a second API on the first one's Triton (FACE_TRITON_URL)
# and the tests' own Triton clients then know it.
SESSION_CONTROL_KEY = secrets.token_urlsafe(24)


@dataclass
class ServiceProcess:
    """``with ServiceProcess(api_port=0, triton_port=0, work_dir=tmp) as service: ...``

    Triton takes ``triton_port`` (HTTP) and the next two ports (gRPC, metrics), unless
    ``triton_url`` names an external one. A port of 0 is replaced by free ones (three for
    Triton), so that test runs side by side never collide. Logs go to ``work_dir``.
    ``triton_control_key``: the key of Triton's control APIs, :data:`SESSION_CONTROL_KEY`
    unless given; None lets the service make its own."""

    api_port: int
    work_dir: Path
    triton_port: int | None = None
    triton_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    triton_control_key: str | None = SESSION_CONTROL_KEY
    startup_timeout_s: float = 240.0
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if self.api_port == 0:
            self.api_port = free_ports(1)
        if self.triton_port == 0:
            self.triton_port = free_ports(3)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def triton_address(self) -> str:
        return self.triton_url or f"127.0.0.1:{self.triton_port}"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "api.log"

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "FACE_HOST": "127.0.0.1",
            "FACE_PORT": str(self.api_port),
            "FACE_TRITON_LOG_FILE": str(self.work_dir / "triton" / "triton.log"),
            "FACE_DATA_DIR": str(self.work_dir / "data"),
        }
        env.pop("FACE_TRITON_CONTROL_KEY", None)
        if self.triton_control_key is not None:
            env["FACE_TRITON_CONTROL_KEY"] = self.triton_control_key
        if self.triton_url is not None:
            env["FACE_TRITON_URL"] = self.triton_url
        elif self.triton_port is not None:
            env["FACE_TRITON_HTTP_PORT"] = str(self.triton_port)
            env["FACE_TRITON_GRPC_PORT"] = str(self.triton_port + 1)
            env["FACE_TRITON_METRICS_PORT"] = str(self.triton_port + 2)
        return {**env, **self.env}

    def start(self) -> ServiceProcess:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(REPOSITORY_ROOT / "app.py")],
                cwd=REPOSITORY_ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.wait_healthy(self.startup_timeout_s)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the service exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"the service was not healthy after {timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def triton_pids(self) -> list[int]:
        """Processes of the tritonserver this service started (found by its HTTP port)."""
        pattern = f"tritonserver.*--http-port={self.triton_port}( |$)"
        found = subprocess.run(
            ["pgrep", "-f", pattern], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in found.stdout.split()]

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGINT, then kill."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports that are free on 127.0.0.1 now."""
    for _ in range(100):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            start = first.getsockname()[1]
            try:
                for port in range(start + 1, start + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
            return start
    raise RuntimeError(f"no {count} consecutive free ports found")


@contextmanager
def service_url(url: str | None, *, api_port: int, triton_port: int) -> Iterator[str]:
    """``url`` when given; otherwise a service started for the caller's run, stopped after it."""
    if url is not None:
        yield url.rstrip("/")
        return
    with tempfile.TemporaryDirectory(prefix="face-service-") as work_dir:
        service = ServiceProcess(
            api_port=api_port, triton_port=triton_port, work_dir=Path(work_dir)
        )
        with service:
            yield service.url
