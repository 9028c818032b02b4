"""Triton Inference Server for the app: the local ``tritonserver`` process and the facade that
puts configs, server and client together.

- :class:`TritonServer` runs a local ``tritonserver`` (the nvidia-pytriton wheel's, or the
  installation that ``FACE_TRITONSERVER`` names, as in the Docker image), with the flags of
  :mod:`face_service.inference.server_arguments`, as the leader of its own process group; it
  waits for readiness, captures its log, kills the group and restarts it, and stops it with
  SIGINT, then kill.
- :class:`TritonService` is what the app's lifespan holds: it writes the model configs
  (:mod:`face_service.inference.model_config`), starts the local server (and its reaper,
  :mod:`face_service.inference.reaper`) unless ``FACE_TRITON_URL`` names an external one, owns
  the :class:`~face_service.inference.client.TritonClient`, runs the watchdog (liveness probes,
  fail-fast while down, restarts) and reports health within a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from face_service.errors import TritonServerError
from face_service.inference.client import TritonClient
from face_service.inference.model_config import (
    detect_backend,
    model_serving_options,
    read_serving_summaries,
    write_model_configs,
)
from face_service.inference.names import MODEL_NAMES
from face_service.inference.python_backend import (
    prepare_python_backend,
    python_library_dir,
    pytriton_server_paths,
)
from face_service.inference.reaper import Reaper, group_runs, remove_regions, wait_group
from face_service.inference.reaper import spawn as spawn_reaper
from face_service.inference.server_arguments import server_arguments
from face_service.settings import Settings

logger = logging.getLogger(__name__)
# An error line of Triton's log (glog: E, month and day); on a machine without CUDA every start
# prints one about CUDA, which says nothing about a failure.
TRITON_ERROR_LINE = re.compile(r"E\d{4} (?!.*CudaDriverHelper has not been initialized)")


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills Triton if the API process dies, even by
    SIGKILL, so that no orphan keeps the ports and the models' memory."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class TritonServer:
    """A local ``tritonserver`` process (the leader of its own process group, with its
    python-backend stubs), restarted by :meth:`restart` and stopped by :meth:`stop`."""

    def __init__(
        self,
        *,
        binary: Path,
        arguments: Sequence[str],
        url: str,
        log_file: Path,
        library_paths: Sequence[Path] = (),
        backend_shm_prefix: str | None = None,
        reaper: Reaper | None = None,
    ) -> None:
        self.binary = binary
        self.flags = tuple(arguments)  # from server_arguments(), without the binary
        self.url = url  # host:port of its HTTP endpoint
        self.log_file = log_file
        self.library_paths = tuple(library_paths)
        # The python backend's /dev/shm regions start with it (server_arguments): removed after
        # a kill, when nobody else would.
        self.backend_shm_prefix = backend_shm_prefix
        self.reaper = reaper
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # where this start's lines begin in the (appended) log file
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
            self._log_offset = log.tell()
            # A new session: tritonserver leads a process group that its stubs join, so that
            # the whole group can be killed (watchdog, reaper) without touching the API.
            self._process = subprocess.Popen(
                self.arguments(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        if self.reaper is not None:
            self.reaper.watch(self._process.pid)
        logger.info("started tritonserver pid %d, log in %s", self._process.pid, self.log_file)

    def exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    def stub_runs(self, instance: str) -> bool:
        """Whether the python-backend stub of model instance ``instance`` (e.g.
        ``face_recognizer_0_0``, an argument of its process) runs in this server's group."""
        return self._process is not None and group_runs(self._process.pid, instance)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` of this start's log, after its error lines that came before them.

        A model that fails to load says why in one error line (``E1204 ...``); the model table
        and the unloading that follow push it out of any short tail, which then shows only
        "failed to load all models"."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        every = text.splitlines()
        tail = every[-lines:]
        errors = [line for line in every[: -lines or None] if TRITON_ERROR_LINE.match(line)]
        return "\n".join([*errors[-10:], *(["..."] if errors else []), *tail])

    async def start(self, client: TritonClient, timeout_s: float) -> None:
        self.start_process()
        try:
            await self.wait_ready(client, timeout_s)
        except BaseException:
            await self.stop()
            raise

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

    async def kill(self) -> None:
        """SIGKILL to the whole group (a stopped or deadlocked server included), then the python
        backend's regions, which a killed server leaves behind."""
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        await asyncio.to_thread(wait_group, process.pid, 5.0)
        if self.backend_shm_prefix:
            remove_regions([self.backend_shm_prefix])

    async def restart(self, client: TritonClient, timeout_s: float, why: str) -> bool:
        """Kills what is left of the server and starts a new one: whether it became ready. A
        failed attempt is killed too, so that the next one starts from nothing."""
        self.restarts += 1
        logger.error("tritonserver %s; restarting (%d)\n%s", why, self.restarts, self.log_tail(10))
        await self.kill()
        try:
            self.start_process()
            await self.wait_ready(client, timeout_s)
        except TritonServerError:
            logger.exception("tritonserver restart %d failed", self.restarts)
            await self.kill()
            return False
        logger.info("tritonserver is ready again after restart %d", self.restarts)
        return True

    async def stop(self, timeout_s: float = 15.0) -> None:
        """SIGINT (Triton unloads its models and ends its stubs), then SIGKILL to the group."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(process.wait, timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver ignored SIGINT for %.0f s; killing it", timeout_s)
        await self.kill()
        if self.reaper is not None:
            self.reaper.watch(0)


@dataclass(frozen=True)
class HealthReport:
    ready: bool
    triton: bool
    models: dict[str, bool]
    reason: str | None
    # Per model: backend, runtime and precision, as the generated configs serve it.
    serving: dict[str, dict[str, str]] = field(default_factory=dict)


class TritonService:
    """Owns the model repository's configs, the local server (unless external) and the client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: TritonServer | None = None
        url = settings.triton_url
        if url is None:
            url = f"{settings.triton_bind_address}:{settings.triton_http_port}"
        # The header value of Triton's control APIs: the setting, else a new one for the server
        # this process starts (an external Triton without restrictions ignores the header).
        control_key = settings.triton_control_key
        if control_key is None and settings.triton_url is None:
            control_key = secrets.token_urlsafe(24)
        self.client = TritonClient(
            url,
            timeout_s=settings.triton_request_timeout_s,
            transport=self.transport(url),
            probe_timeout_s=settings.health_timeout_s,
            control_key=control_key,
        )
        self.reaper: Reaper | None = None
        self._serving: dict[str, dict[str, str]] = {}
        self._monitor: asyncio.Task[None] | None = None

    def transport(self, url: str) -> Literal["binary", "shm"]:
        """Shared memory needs Triton on this host; over a network only the HTTP body works."""
        if self.settings.triton_transport != "auto":
            return self.settings.triton_transport
        if self.settings.device == "gpu":
            # On the H200 machine (14 API processes, C=256, 2026-12-02) inputs in the HTTP body
            # gave 743-823 one-face images/s at 12.4-13.9 ms of API CPU a request, shared memory
            # 642 at 16.8 ms: there the API's CPU is the wall (README "On a GPU").
            return "binary"
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

    def local_installation(self) -> tuple[Path, Path | None, list[Path]]:
        """The binary, the backend folder to pass (None: the server's own) and the library
        folders of the local server: a Triton installation named by ``FACE_TRITONSERVER`` (its
        backends beside it, e.g. onnxruntime in the official container), else the
        nvidia-pytriton wheel's server with a python backend for the running Python."""
        settings = self.settings
        if settings.tritonserver is not None:
            binary = settings.tritonserver
            if not (binary.is_file() and os.access(binary, os.X_OK)):
                raise TritonServerError(f"FACE_TRITONSERVER={binary} is not an executable file")
            return binary, None, []
        binary, libraries = pytriton_server_paths()
        backend_directory = prepare_python_backend(settings.triton_log_file.parent / "backends")
        return binary, backend_directory, [libraries, python_library_dir()]

    def prepare_local_server(self) -> TritonServer:
        settings = self.settings
        binary, backend_directory, library_paths = self.local_installation()
        backend = settings.triton_backend
        if backend == "auto":
            installed = backend_directory or binary.resolve().parent.parent / "backends"
            backend = detect_backend(installed, settings.cpu_runtime)
        try:
            write_model_configs(settings.model_repository, model_serving_options(settings, backend))
        except OSError as error:
            # A repository mounted read-only (EROFS) or not ours (EACCES) keeps the configs it
            # was made with; a missing model is a ModelRepositoryError and still stops the start.
            logger.warning("configs in %s left as they are: %s", settings.model_repository, error)
        self._serving = read_serving_summaries(settings.model_repository)
        for name, serving in self._serving.items():
            logger.info("%s: %s", name, ", ".join(f"{k} {v}" for k, v in serving.items()))
        # The python backend's regions carry this process's prefix too, so that the reaper
        # finds them after a crash.
        backend_shm_prefix = f"{self.client.shm_prefix}_backend_"
        arguments = server_arguments(
            settings,
            address=settings.triton_bind_address,
            backend_directory=backend_directory,
            control_key=self.client.control_key,
            backend_shm_prefix=backend_shm_prefix,
        )
        self.reaper = spawn_reaper([self.client.shm_prefix])
        return TritonServer(
            binary=binary,
            arguments=arguments,
            url=self.client.url,
            log_file=settings.triton_log_file,
            library_paths=library_paths,
            backend_shm_prefix=backend_shm_prefix,
            reaper=self.reaper,
        )

    async def start(self) -> None:
        if self.external:
            logger.info("using the external Triton at %s", self.client.url)
        else:
            try:
                self.server = self.prepare_local_server()
                await self.server.start(self.client, self.settings.triton_startup_timeout_s)
            except BaseException:
                self._close_reaper()
                await self.client.close()  # else aiohttp warns of an unclosed session
                raise
        self._monitor = asyncio.create_task(self.watch())

    async def watch(self) -> None:
        """The watchdog: every ``triton_probe_interval_s`` a liveness probe (within
        ``health_timeout_s``). A probe that fails marks Triton down (requests fail fast); a local
        server that has exited, or has not answered for ``triton_unresponsive_s``, or one of
        whose models lost its stub process (TritonClient.broken_model: Triton does not start it
        again), is killed (its whole process group) and restarted. Triton is marked up once it
        is ready again. A stub that Triton called "not healthy" while its process still runs
        only missed Triton's 1 s wait for its health lock (a busy or stalled machine): that is
        logged, not restarted for, as a restart fails every request for seconds."""
        settings, client, server = self.settings, self.client, self.server
        loop = asyncio.get_running_loop()
        silent_since: float | None = None
        failed_restarts = 0
        while True:
            await asyncio.sleep(settings.triton_probe_interval_s)
            why = None
            if server is not None and server.exited():
                why = f"exited with {server.returncode}"
                client.mark_down("the inference server stopped; restarting it")
            else:
                probe_started = loop.time()
                if await client.server_live():
                    silent_since = None
                    broken, stub = client.broken_model, client.broken_stub
                    if broken is not None and server is not None and stub is not None:
                        if server.stub_runs(stub):
                            logger.warning(
                                "Triton called model %r's stub process %s not healthy while it "
                                "runs: it missed Triton's 1 s wait (busy machine); not restarting",
                                broken,
                                stub,
                            )
                            client.clear_broken()
                            continue
                        why = f"the process that runs model {broken!r} died"
                        client.mark_down(f"{why}; restarting the inference server")
                    else:
                        if client.down and await client.server_ready():
                            client.mark_up()
                        continue
                silent_since = probe_started if silent_since is None else silent_since
                silent_s = loop.time() - silent_since
                client.mark_down(f"the inference server has not answered for {silent_s:.0f} s")
                if server is not None and silent_s >= settings.triton_unresponsive_s:
                    why = f"has not answered its liveness probe for {silent_s:.1f} s"
            if server is None or why is None:
                continue
            silent_since = None
            ready = await server.restart(client, settings.triton_startup_timeout_s, why)
            if ready:
                failed_restarts = 0
                client.mark_up()
            else:
                failed_restarts += 1
                await asyncio.sleep(min(30.0, 2.0 * failed_restarts))

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        # Close our keep-alive connections first: Triton waits for open connections on SIGINT.
        await self.client.close()
        if self.server is not None:
            await self.server.stop(self.settings.stop_grace_s)
        self._close_reaper()

    def _close_reaper(self) -> None:
        if self.reaper is not None:
            self.reaper.close()

    @property
    def restarts(self) -> int:
        """Times the watchdog has restarted the local Triton (0 for an external one)."""
        return self.server.restarts if self.server is not None else 0

    async def statistics(self) -> list[dict]:
        """Triton's per-model statistics (for /metrics), within the probe timeout."""
        return await self.client.statistics()

    async def health(self) -> HealthReport:
        """Readiness within ``health_timeout_s``: at once while the watchdog knows Triton is
        down, else the server and both models are asked at the same time."""
        if self.client.down:
            models = dict.fromkeys(MODEL_NAMES, False)
            return HealthReport(False, False, models, self.client.down_reason, self.serving())
        triton, *ready = await asyncio.gather(
            self.client.server_ready(), *(self.client.model_ready(name) for name in MODEL_NAMES)
        )
        models = {
            name: triton and up and name != self.client.broken_model
            for name, up in zip(MODEL_NAMES, ready, strict=True)
        }
        reason = None
        if not triton:
            reason = "the inference server is not ready"
        elif not all(models.values()):
            missing = ", ".join(name for name, ready in models.items() if not ready)
            reason = f"model(s) not ready: {missing}"
        return HealthReport(
            ready=reason is None,
            triton=triton,
            models=models,
            reason=reason,
            serving=self.serving(),
        )

    def serving(self) -> dict[str, dict[str, str]]:
        """Backend, runtime and precision per model, from the configs in the model repository
        (written by this process for its own server, by Docker/start.sh for an external one)."""
        if not self._serving:
            self._serving = read_serving_summaries(self.settings.model_repository)
        return self._serving
