"""Triton Inference Server for the app: the local ``tritonserver`` process and the facade that
puts configs, server and client together.

- :class:`TritonServer` runs a local ``tritonserver`` (the binary of the nvidia-pytriton wheel),
  with the flags of :mod:`face_service.inference.server_arguments`; it waits for readiness,
  captures its log, restarts it when it dies and stops it with SIGINT, then kill.
- :class:`TritonService` is what the app's lifespan holds: it writes the model configs
  (:mod:`face_service.inference.model_config`), starts the local server unless
  ``FACE_TRITON_URL`` names an external one, owns the
  :class:`~face_service.inference.client.TritonClient` and reports health.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from face_service.errors import TritonServerError
from face_service.inference.client import TritonClient
from face_service.inference.model_config import (
    detect_backend,
    model_serving_options,
    write_model_configs,
)
from face_service.inference.names import MODEL_NAMES
from face_service.inference.python_backend import (
    prepare_python_backend,
    python_library_dir,
    pytriton_server_paths,
)
from face_service.inference.server_arguments import server_arguments
from face_service.settings import Settings

logger = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills Triton if the API process dies, even by
    SIGKILL, so that no orphan keeps the ports and the models' memory."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class TritonServer:
    """A local ``tritonserver`` process, kept alive until :meth:`stop`."""

    def __init__(
        self,
        *,
        binary: Path,
        arguments: Sequence[str],
        url: str,
        log_file: Path,
        library_paths: Sequence[Path] = (),
    ) -> None:
        self.binary = binary
        self.flags = tuple(arguments)  # from server_arguments(), without the binary
        self.url = url  # host:port of its HTTP endpoint
        self.log_file = log_file
        self.library_paths = tuple(library_paths)
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def arguments(self) -> list[str]:
        return [str(self.binary), *self.flags]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.library_paths:
            env["LD_LIBRARY_PATH"] = ":".join(
                [*(str(p) for p in self.library_paths), *filter(None, [env.get("LD_LIBRARY_PATH")])]
            )
        # The python backend stub embeds an interpreter that finds its prefix through `python3`
        # on PATH: put this virtual environment first so that the models see its packages.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def start_process(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                self.arguments(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        logger.info("started tritonserver pid %d, log in %s", self._process.pid, self.log_file)

    def exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, client: TritonClient, timeout_s: float) -> None:
        self._stopping = False
        self.start_process()
        try:
            await self.wait_ready(client, timeout_s)
        except BaseException:
            await self.stop()
            raise
        self._watchdog = asyncio.create_task(self._watch(client, timeout_s))

    async def wait_ready(self, client: TritonClient, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self.exited():
                raise TritonServerError(f"tritonserver exited while starting:\n{self.log_tail()}")
            if await client.server_ready():
                return
            await asyncio.sleep(0.25)
        raise TritonServerError(
            f"tritonserver was not ready after {timeout_s:.0f} s:\n{self.log_tail()}"
        )

    async def _watch(self, client: TritonClient, timeout_s: float) -> None:
        while not self._stopping:
            await asyncio.sleep(1.0)
            if self._stopping or not self.exited():
                continue
            code = self._process.returncode if self._process else None
            logger.error("tritonserver exited with %s; restarting\n%s", code, self.log_tail(10))
            self.restarts += 1
            try:
                self.start_process()
                await self.wait_ready(client, timeout_s)
                logger.info("tritonserver is ready again after restart %d", self.restarts)
            except TritonServerError:
                logger.exception("tritonserver restart failed; retrying")
                await asyncio.sleep(min(30.0, 2.0 * self.restarts))

    async def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("tritonserver ignored SIGINT for %.0f s; killing it", timeout_s)
            process.kill()
            await asyncio.to_thread(process.wait)


@dataclass(frozen=True)
class HealthReport:
    ready: bool
    triton: bool
    models: dict[str, bool]
    reason: str | None


class TritonService:
    """Owns the model repository's configs, the local server (unless external) and the client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: TritonServer | None = None
        url = settings.triton_url
        if url is None:
            url = f"{settings.triton_bind_address}:{settings.triton_http_port}"
        self.client = TritonClient(
            url, timeout_s=settings.triton_request_timeout_s, transport=self.transport(url)
        )

    def transport(self, url: str) -> Literal["binary", "shm"]:
        """Shared memory needs Triton on this host; over a network only the HTTP body works."""
        if self.settings.triton_transport != "auto":
            return self.settings.triton_transport
        host = urlsplit(f"//{url}").hostname or ""
        local = (
            self.settings.triton_url is None
            or host in ("localhost", "::1")
            or host.startswith("127.")
        )
        return "shm" if local else "binary"

    @property
    def external(self) -> bool:
        return self.settings.triton_url is not None

    def prepare_local_server(self) -> TritonServer:
        settings = self.settings
        binary, libraries = pytriton_server_paths()
        backend_directory = prepare_python_backend(settings.triton_log_file.parent / "backends")
        backend = settings.triton_backend
        if backend == "auto":
            backend = detect_backend(backend_directory)
        write_model_configs(settings.model_repository, model_serving_options(settings, backend))
        arguments = server_arguments(
            settings, address=settings.triton_bind_address, backend_directory=backend_directory
        )
        return TritonServer(
            binary=binary,
            arguments=arguments,
            url=self.client.url,
            log_file=settings.triton_log_file,
            library_paths=[libraries, python_library_dir()],
        )

    async def start(self) -> None:
        if self.external:
            logger.info("using the external Triton at %s", self.client.url)
            return
        self.server = self.prepare_local_server()
        await self.server.start(self.client, self.settings.triton_startup_timeout_s)

    async def stop(self) -> None:
        # Close our keep-alive connections first: Triton waits for open connections on SIGINT.
        await self.client.close()
        if self.server is not None:
            await self.server.stop()

    async def health(self) -> HealthReport:
        triton = await self.client.server_ready()
        models = {name: triton and await self.client.model_ready(name) for name in MODEL_NAMES}
        reason = None
        if not triton:
            reason = "Triton is not ready"  # no address: /health is open to anyone
        elif not all(models.values()):
            missing = ", ".join(name for name, ready in models.items() if not ready)
            reason = f"model(s) not ready: {missing}"
        return HealthReport(ready=reason is None, triton=triton, models=models, reason=reason)
