"""Faults without a real Triton: probes bounded by the health timeout, a model whose stub process
died reported not ready, the fail-fast state that cuts calls in flight short, the watchdog against
a fake Triton that freezes and thaws or calls a stub not healthy (a restart only for a dead one),
the reaper cleaning up after an owner killed with SIGKILL, and the python-backend model's exit with
its parent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from face_service.errors import ModelUnavailableError
from face_service.inference.client import TritonClient
from face_service.inference.reaper import alive, group_alive, group_runs, wait_until
from face_service.settings import REPOSITORY_ROOT, Settings
from triton_service import TritonService


class FakeTriton:
    """Answers Triton's health routes, or, while ``frozen``, never answers anything; with
    ``dead_stub`` every inference fails as Triton's python backend fails a model whose stub
    process died."""

    def __init__(self) -> None:
        self.frozen = False
        self.dead_stub = False

    async def handle(self, request: web.Request) -> web.Response:
        while self.frozen:
            await asyncio.sleep(0.05)
        if self.dead_stub and request.path.endswith("/infer"):
            message = "Stub process 'face_recognizer_0_0' is not healthy."
            return web.json_response({"error": message}, status=500)
        return web.Response(status=200)


@asynccontextmanager
async def fake_triton() -> AsyncIterator[tuple[FakeTriton, str]]:
    fake = FakeTriton()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        fake.frozen = False
        await runner.cleanup()


async def until(condition: object, timeout_s: float) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():  # type: ignore[operator]
        assert loop.time() - start < timeout_s, "condition not met in time"
        await asyncio.sleep(0.02)
    return loop.time() - start


def test_probes_and_health_answer_within_the_health_timeout() -> None:
    async def run() -> None:
        async with fake_triton() as (fake, url):
            service = TritonService(Settings(triton_url=url, health_timeout_s=0.3))
            try:
                assert (await service.health()).ready
                fake.frozen = True
                loop = asyncio.get_running_loop()
                start = loop.time()
                report = await service.health()
                assert loop.time() - start < 0.6  # one bound for all three probes, not three
                assert not report.ready
                assert report.reason == "the inference server is not ready"
                assert await service.client.server_live() is False
            finally:
                await service.client.close()

    asyncio.run(run())


def test_a_model_whose_stub_died_is_reported_not_ready() -> None:
    async def run() -> None:
        async with fake_triton() as (fake, url):
            service = TritonService(Settings(triton_url=url, health_timeout_s=0.3))
            try:
                fake.dead_stub = True
                pixels = {"pixels": np.zeros((1, 3, 112, 112), np.uint8)}
                with pytest.raises(ModelUnavailableError, match="is not healthy"):
                    await service.client.infer("face_recognizer", pixels, ["embedding"])
                assert service.client.broken_model == "face_recognizer"
                report = await service.health()
                assert not report.ready
                assert report.models == {"face_detector": True, "face_recognizer": False}
                assert report.reason == "model(s) not ready: face_recognizer"
                service.client.mark_up()  # what the watchdog does once it restarted Triton
                assert (await service.health()).ready
            finally:
                await service.client.close()

    asyncio.run(run())


def test_mark_down_ends_calls_in_flight_and_fails_new_ones_fast() -> None:
    async def run() -> None:
        async with fake_triton() as (fake, url):
            client = TritonClient(url, timeout_s=30)
            fake.frozen = True
            try:
                call = asyncio.create_task(
                    client.infer("face_detector", {"x": np.zeros((1, 3), np.float32)}, ["y"])
                )
                await asyncio.sleep(0.3)
                assert not call.done()  # waiting for the frozen server
                loop = asyncio.get_running_loop()
                start = loop.time()
                client.mark_down("the inference server has not answered for 2 s")
                with pytest.raises(ModelUnavailableError, match="has not answered for 2 s"):
                    await call
                assert loop.time() - start < 0.2
                start = loop.time()
                with pytest.raises(ModelUnavailableError, match="not available"):
                    await client.model_config("face_detector")
                assert loop.time() - start < 0.05  # no network at all
                client.mark_up()
                assert not client.down
            finally:
                await client.close()

    asyncio.run(run())


def test_watchdog_marks_a_frozen_triton_down_and_up_again() -> None:
    async def run() -> None:
        async with fake_triton() as (fake, url):
            settings = Settings(triton_url=url, health_timeout_s=0.2, triton_probe_interval_s=0.1)
            service = TritonService(settings)
            await service.start()  # external: the watchdog only, no server to restart
            try:
                fake.frozen = True
                detected = await until(lambda: service.client.down, 2.0)
                loop = asyncio.get_running_loop()
                start = loop.time()
                report = await service.health()
                assert loop.time() - start < 0.05  # known down: no probe needed
                assert not report.ready
                assert "has not answered" in (report.reason or "")
                fake.frozen = False
                back = await until(lambda: not service.client.down, 2.0)
                assert (await service.health()).ready
                assert detected < 0.6
                assert back < 0.6
            finally:
                await service.stop()

    asyncio.run(run())


class StandInServer:
    """What the watchdog asks of a local server, with the stub process's fate set by the test."""

    def __init__(self, stub_runs: bool) -> None:
        self.runs = stub_runs
        self.restarted: list[str] = []
        self.asked: list[str] = []

    def exited(self) -> bool:
        return False

    def stub_runs(self, instance: str) -> bool:
        self.asked.append(instance)
        return self.runs

    async def restart(self, client: TritonClient, timeout_s: float, why: str) -> bool:
        self.restarted.append(why)
        return True


@pytest.mark.parametrize("stub_runs", [True, False])
def test_watchdog_restarts_for_a_dead_stub_only(stub_runs: bool) -> None:
    """Triton's python backend says "Stub process ... is not healthy" both for a stub process
    that died and for one that missed its 1 s wait for the stub's health lock (a busy machine);
    only the first is worth a restart, which fails every request for seconds."""

    async def run() -> None:
        async with fake_triton() as (fake, url):
            settings = Settings(triton_url=url, health_timeout_s=0.2, triton_probe_interval_s=0.05)
            service = TritonService(settings)
            server = StandInServer(stub_runs)
            service.server = server  # type: ignore[assignment]
            await service.start()
            try:
                fake.dead_stub = True
                pixels = {"pixels": np.zeros((1, 3, 112, 112), np.uint8)}
                with pytest.raises(ModelUnavailableError, match="is not healthy"):
                    await service.client.infer("face_recognizer", pixels, ["embedding"])
                fake.dead_stub = False
                await until(lambda: service.client.broken_model is None, 2.0)
                assert server.asked[0] == "face_recognizer_0_0"
                if stub_runs:
                    assert server.restarted == []
                else:
                    assert server.restarted == [
                        "the process that runs model 'face_recognizer' died"
                    ]
                assert (await service.health()).ready
            finally:
                service.server = None
                await service.stop()

    asyncio.run(run())


def test_group_runs_finds_a_live_process_by_argument_and_not_a_dead_one() -> None:
    marker = f"face-test-marker-{os.getpid()}"
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", marker], start_new_session=True
    )
    try:
        assert wait_until(lambda: group_runs(process.pid, marker), 5.0)
        assert not group_runs(process.pid, marker + "-other")
        process.kill()
        # Killed and not yet reaped (a zombie) already counts as gone.
        assert wait_until(lambda: not group_runs(process.pid, marker), 5.0)
    finally:
        process.kill()
        process.wait()


REAPED_OWNER = """
import sys, time
from face_service.inference.reaper import spawn
reaper = spawn([sys.argv[1]], grace_s=float(sys.argv[3]))
reaper.watch(int(sys.argv[2]))
print(reaper.process.pid, flush=True)
time.sleep(120)
"""


def reaped_owner(prefix: str, pgid: int, grace_s: float) -> tuple[subprocess.Popen[str], int]:
    """A process that starts a reaper watching ``pgid`` (as the API does), and the reaper's
    pid."""
    owner = subprocess.Popen(
        [sys.executable, "-c", REAPED_OWNER, prefix, str(pgid), str(grace_s)],
        cwd=REPOSITORY_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    return owner, int(owner.stdout.readline())


@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_reaper_stops_the_group_and_removes_regions_when_its_owner_is_killed(
    ignores_sigterm: bool,
) -> None:
    trap = "trap '' TERM; " if ignores_sigterm else ""
    # A stand-in for tritonserver and a stub: a shell leading its own group, and its child.
    group = subprocess.Popen(["sh", "-c", f"{trap}sleep 120 & wait"], start_new_session=True)
    prefix = f"face_test_reaper_{os.getpid()}_{int(ignores_sigterm)}_"
    region = Path("/dev/shm") / f"{prefix}0"
    other = Path("/dev/shm") / f"face_test_reaper_other_{os.getpid()}"
    region.write_bytes(b"x" * 4096)
    other.write_bytes(b"y")
    try:
        owner, reaper = reaped_owner(prefix, group.pid, grace_s=1.0)
        time.sleep(0.3)
        assert alive(group.pid)
        assert alive(reaper)
        start = time.monotonic()
        owner.kill()
        owner.wait()
        group.wait(timeout=5)
        deadline = time.monotonic() + 5
        while (region.exists() or alive(reaper)) and time.monotonic() < deadline:
            time.sleep(0.05)
        took = time.monotonic() - start
        assert not region.exists()
        assert other.exists()  # another instance's region stays
        assert not alive(reaper)
        assert not group_alive(group.pid)  # the child too
        assert took < (2.5 if ignores_sigterm else 1.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group.pid, signal.SIGKILL)
        region.unlink(missing_ok=True)
        other.unlink(missing_ok=True)


STUB = """
import os, time
from face_service.inference.python_stub import exit_with_parent
exit_with_parent(0.1)
print(os.getpid(), flush=True)
time.sleep(120)
"""

PARENT = """
import subprocess, sys, time
stub = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
print(stub.stdout.readline().strip(), flush=True)
time.sleep(120)
"""


def test_python_model_process_exits_when_its_parent_dies() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, STUB], cwd=REPOSITORY_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    stub = int(parent.stdout.readline())
    assert alive(stub)
    parent.kill()  # as tritonserver is when its API dies
    parent.wait()
    deadline = time.monotonic() + 3
    while alive(stub) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(stub)
