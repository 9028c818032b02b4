"""What the fault tests share: a bounded load of /embedding requests in threads that records
every answer, a /health poller that times each answer, and the processes and /dev/shm regions
that belong to one service instance."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from face_service.testing.service_process import ServiceProcess


@dataclass(frozen=True)
class Answer:
    started: float  # time.monotonic()
    seconds: float
    status: int  # 0: no HTTP answer at all (connection refused, timeout)
    retry_after: str | None


@dataclass
class Load:
    """``threads`` clients posting one photo to /embedding back to back until :meth:`stop`, each
    request bounded by ``timeout_s``."""

    url: str
    image: bytes
    threads: int = 3
    timeout_s: float = 20.0
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        files = {"image": ("photo.jpg", self.image, "image/jpeg")}
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post("/embedding", files=files)
                    status, retry = response.status_code, response.headers.get("Retry-After")
                except httpx.HTTPError:
                    status, retry = 0, None
                self.answers.append(Answer(started, time.monotonic() - started, status, retry))
                if status != 200:
                    time.sleep(0.05)  # what a client does on 503: not a tight loop

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout_s + 5)

    def statuses(self) -> Counter[int]:
        return Counter(answer.status for answer in self.answers)

    def after(self, moment: float) -> list[Answer]:
        return [answer for answer in self.answers if answer.started >= moment]


def health(url: str, timeout_s: float = 10.0) -> tuple[int, float]:
    """/health's status and how long it took to answer."""
    started = time.monotonic()
    try:
        status = httpx.get(f"{url}/health", timeout=timeout_s).status_code
    except httpx.HTTPError:
        status = 0
    return status, time.monotonic() - started


@dataclass
class HealthWatch:
    """Polls /health until a condition holds, keeping the longest answer time seen."""

    url: str
    slowest_s: float = 0.0
    polls: int = 0

    def until(self, status: int, timeout_s: float) -> float:
        """The moment /health first answered ``status``; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got, seconds = health(self.url)
            self.polls += 1
            self.slowest_s = max(self.slowest_s, seconds)
            if got == status:
                return time.monotonic()
            time.sleep(0.1)
        raise AssertionError(f"/health did not answer {status} within {timeout_s} s")


def wait_for(condition: object, timeout_s: float, what: str) -> float:
    """Polls ``condition()`` every 50 ms; the moment it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pgrep(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split() if process_alive(int(pid))]


def instance_leftovers(service: ServiceProcess, api_pid: int) -> dict[str, list]:
    """This instance's tritonserver, python-backend stubs (their regions carry the API's pid in
    their names) and /dev/shm regions, if any."""
    prefix = f"face_{api_pid}_"
    return {
        "tritonserver": [pid for pid in service.triton_pids() if process_alive(pid)],
        "stubs": pgrep(f"triton_python_backend_stub .* {prefix}"),
        "shm": sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix)),
    }


def service_stubs(api_pid: int) -> list[int]:
    return pgrep(f"triton_python_backend_stub .* face_{api_pid}_")
