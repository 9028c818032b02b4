"""Faults detected and healed, on real service instances of their own under a bounded load:
a frozen Triton (SIGSTOP) resumed or killed and restarted, a Triton killed with SIGKILL, and an
API killed with SIGKILL leaving no process and no /dev/shm region behind. Every answer under
load is 200 or 503 (with Retry-After), /health answers within its bound, and the service is back
within 10 s. Each test logs its figures (``--log-cli-level=WARNING`` shows them)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from face_service.testing.service_process import ServiceProcess
from tests.integration.fault_support import (
    HealthWatch,
    Load,
    instance_leftovers,
    process_alive,
    service_stubs,
    wait_for,
)

logger = logging.getLogger("tests.faults")

HEALTH_TIMEOUT_S = 1.0
UNRESPONSIVE_S = 5.0
# /health's bound: its probe timeout plus the HTTP round trip on a loaded 2-core machine.
HEALTH_BOUND_S = HEALTH_TIMEOUT_S + 1.0
BACK_WITHIN_S = 10.0
FAULT_SETTINGS = {
    "FACE_HEALTH_TIMEOUT_S": str(HEALTH_TIMEOUT_S),
    "FACE_TRITON_PROBE_INTERVAL_S": "0.5",
    "FACE_TRITON_UNRESPONSIVE_S": str(UNRESPONSIVE_S),
    "FACE_TRITON_REQUEST_TIMEOUT_S": "30",
}


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One service for the Triton faults (each test starts from a healthy one)."""
    work_dir = tmp_path_factory.mktemp("faults")
    with ServiceProcess(
        api_port=0, triton_port=0, work_dir=work_dir, env=FAULT_SETTINGS, startup_timeout_s=120
    ) as service:
        yield service


@pytest.fixture
def photo(photos: dict[str, Path]) -> bytes:
    return photos["yaoming"].read_bytes()


def report(figures: str) -> None:
    logger.warning("%s", figures.strip())


def triton_pid(service: ServiceProcess) -> int:
    [pid] = service.triton_pids()
    return pid


def check_answers(load: Load, back: float) -> None:
    statuses = load.statuses()
    assert set(statuses) <= {200, 503}, statuses
    assert all(a.retry_after for a in load.answers if a.status == 503)
    assert any(a.status == 200 for a in load.after(back)), "no 200 after recovery"


def test_frozen_triton_is_detected_and_resumes_after_sigcont(
    instance: ServiceProcess, photo: bytes
) -> None:
    instance.wait_healthy(60)
    pid = triton_pid(instance)
    watch = HealthWatch(instance.url)
    with Load(instance.url, photo) as load:
        time.sleep(1.5)
        stopped = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            detected = watch.until(503, timeout_s=UNRESPONSIVE_S)
            time.sleep(1.5)  # the watchdog marks it down too: requests fail fast meanwhile
        finally:
            resumed = time.monotonic()
            os.kill(pid, signal.SIGCONT)
        back = watch.until(200, timeout_s=BACK_WITHIN_S)
        time.sleep(1.5)
    report(
        f"\nSIGSTOP then SIGCONT: detected after {detected - stopped:.2f} s, back "
        f"{back - resumed:.2f} s after SIGCONT, /health slowest {watch.slowest_s:.2f} s, "
        f"answers {dict(load.statuses())}, slowest 503 "
        f"{max((a.seconds for a in load.answers if a.status == 503), default=0):.2f} s"
    )
    assert triton_pid(instance) == pid  # resumed, not restarted
    assert detected - stopped < UNRESPONSIVE_S
    assert back - resumed < BACK_WITHIN_S
    assert watch.slowest_s < HEALTH_BOUND_S
    check_answers(load, back)


def test_frozen_triton_is_killed_and_restarted(instance: ServiceProcess, photo: bytes) -> None:
    instance.wait_healthy(60)
    pid = triton_pid(instance)
    stubs = service_stubs(instance.process.pid)  # type: ignore[union-attr]
    assert len(stubs) == 2
    watch = HealthWatch(instance.url)
    with Load(instance.url, photo) as load:
        time.sleep(1.5)
        stopped = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            detected = watch.until(503, timeout_s=UNRESPONSIVE_S)
            killed = wait_for(lambda: not process_alive(pid), UNRESPONSIVE_S + 5, "killed")
        finally:
            if process_alive(pid):
                os.kill(pid, signal.SIGCONT)
        back = watch.until(200, timeout_s=BACK_WITHIN_S)
        time.sleep(1.5)
    failed = [a for a in load.answers if a.status == 503]
    report(
        f"\nSIGSTOP, kept stopped: detected after {detected - stopped:.2f} s, killed after "
        f"{killed - stopped:.2f} s, back {back - killed:.2f} s after the kill, /health slowest "
        f"{watch.slowest_s:.2f} s, answers {dict(load.statuses())}, slowest 503 "
        f"{max((a.seconds for a in failed), default=0):.2f} s"
    )
    assert triton_pid(instance) != pid
    assert not any(process_alive(stub) for stub in stubs)  # the old stubs went with it
    assert len(service_stubs(instance.process.pid)) == 2  # type: ignore[union-attr]
    assert detected - stopped < UNRESPONSIVE_S
    assert killed - stopped < UNRESPONSIVE_S + 3
    assert back - killed < BACK_WITHIN_S
    assert watch.slowest_s < HEALTH_BOUND_S
    # Requests caught by the freeze end when it is detected, not after the request timeout.
    assert max((a.seconds for a in failed), default=0) < UNRESPONSIVE_S + 3
    check_answers(load, back)


def test_killed_triton_is_restarted_under_load(instance: ServiceProcess, photo: bytes) -> None:
    instance.wait_healthy(60)
    pid = triton_pid(instance)
    watch = HealthWatch(instance.url)
    with Load(instance.url, photo) as load:
        time.sleep(1.5)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        detected = watch.until(503, timeout_s=5)
        back = watch.until(200, timeout_s=BACK_WITHIN_S)
        time.sleep(1.5)
    report(
        f"\nSIGKILL of tritonserver: /health 503 after {detected - killed:.2f} s, back "
        f"{back - killed:.2f} s after the kill, /health slowest {watch.slowest_s:.2f} s, "
        f"answers {dict(load.statuses())}"
    )
    assert triton_pid(instance) != pid
    assert back - killed < BACK_WITHIN_S
    assert watch.slowest_s < HEALTH_BOUND_S
    check_answers(load, back)


def test_api_sigkill_leaves_no_process_and_no_shared_memory(tmp_path: Path, photo: bytes) -> None:
    service = ServiceProcess(
        api_port=0, triton_port=0, work_dir=tmp_path, env=FAULT_SETTINGS, startup_timeout_s=120
    )
    with service:
        assert service.process is not None
        api_pid = service.process.pid
        with Load(service.url, photo, threads=2) as load:
            time.sleep(2.0)
            before = instance_leftovers(service, api_pid)
            killed = time.monotonic()
            service.process.kill()
            service.process.wait()
            gone = wait_for(
                lambda: not any(instance_leftovers(service, api_pid).values()),
                10,
                f"leftovers of API {api_pid}: {instance_leftovers(service, api_pid)}",
            )
    report(
        f"\nAPI SIGKILL under load: before {before}, all gone {gone - killed:.2f} s after, "
        f"answers {dict(load.statuses())}"
    )
    assert len(before["tritonserver"]) == 1
    assert len(before["stubs"]) == 2
    assert before["shm"]  # the API's input regions and the python backend's
    assert gone - killed < 5
