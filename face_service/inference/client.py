"""The async HTTP client of any Triton, local or external: readiness, model configs and
inference, with inputs as binary HTTP tensors or in system shared memory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal

import aiohttp
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException
from tritonclient.utils.shared_memory import SharedMemoryException

from face_service.errors import ModelUnavailableError
from face_service.inference.names import TRITON_CONTROL_HEADER
from face_service.inference.shared_memory import ShmPool, ShmRegion, shm_layout, write_arrays

logger = logging.getLogger(__name__)

_TRITON_ERRORS = (aiohttp.ClientError, InferenceServerException, TimeoutError, OSError)
# Triton's answer (404) for a region it does not know, e.g. after a restart.
_UNKNOWN_REGION = "Unable to find shared memory region"
# Triton's answer (500) for every request of a model whose python-backend stub process died, e.g.
# "Stub process 'face_recognizer_0_0' is not healthy."; it never starts the stub again itself.
# The same words come when the stub merely did not free its health lock within Triton's 1 s wait
# (a busy or stalled machine): the watchdog tells the two apart by the process (triton_service).
_DEAD_STUB = re.compile(r"Stub process '([^']*)' is not healthy")
# aiohttp asks for gzip by default; Triton then compresses ~1 MB of detector outputs per call and
# the client inflates them on the event loop: 3x slower than plain binary tensors on loopback.
_NO_COMPRESSION = {"Accept-Encoding": "identity"}


class TritonClient:
    """Async HTTP client. Every failure to reach Triton or a model is raised as
    :class:`ModelUnavailableError` so that the API answers 503.

    Outputs always come back as binary HTTP tensors. Inputs travel as binary HTTP
    (``transport="binary"``) or through POSIX system shared memory (``"shm"``): the client
    writes them into a region that Triton maps, and the request carries only its name. ``shm``
    needs Triton on the same host, sharing ``/dev/shm`` (same container, or ``--ipc=host``),
    running as a user that may open the API's regions (created with mode 0600).

    Each shm call checks a region out of a pool of at most ``shm_pool_size``
    (:class:`~face_service.inference.shared_memory.ShmPool`), waiting within the request timeout
    while all are in use. Regions are named ``face_<pid>_<random>_<n>`` so that several API
    processes on one Triton never collide. Triton forgets registrations when it restarts: a call
    that meets an unknown region registers it again and retries once. :meth:`close` unregisters
    and unlinks every region.

    Probes (:meth:`server_live`, :meth:`server_ready`, :meth:`model_ready`) wait at most
    ``probe_timeout_s``, not the request timeout, so that /health and the watchdog answer in
    bounded time. The watchdog (triton_service.py) calls :meth:`mark_down` when Triton stops
    answering: calls in flight end at once and new ones fail fast with
    :class:`ModelUnavailableError` until :meth:`mark_up`. ``control_key`` is sent in the
    ``face-triton-key`` header on the calls that a restricted Triton guards (shared memory).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        transport: Literal["binary", "shm"] = "binary",
        shm_pool_size: int = 8,
        probe_timeout_s: float = 2.0,
        control_key: str | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.probe_timeout_s = min(probe_timeout_s, timeout_s)
        self.transport = transport
        self.control_key = control_key
        self.down_reason: str | None = None  # set while Triton is known to be down
        # A model whose python-backend stub process died (killed, out of memory): Triton keeps
        # it "ready" and fails each of its requests, so the watchdog restarts the server.
        # broken_stub: the stub's instance name (its process carries it as an argument).
        self.broken_model: str | None = None
        self.broken_stub: str | None = None
        # The deadlines of the calls in flight: mark_down() moves them to now.
        self._in_flight: set[asyncio.Timeout] = set()
        self.shm_prefix = f"face_{os.getpid()}_{secrets.token_hex(4)}"
        self._client = InferenceServerClient(url, conn_timeout=timeout_s)
        self._shm = ShmPool(self.shm_prefix, shm_pool_size, self._unregister)

    async def close(self) -> None:
        await self._shm.close(self.timeout_s)
        await self._client.close()

    @property
    def down(self) -> bool:
        return self.down_reason is not None

    def mark_down(self, reason: str) -> None:
        """Triton is known not to answer: calls in flight end now, new ones fail fast."""
        if self.down_reason is None:
            logger.error("Triton is down: %s; requests fail fast until it is back", reason)
        self.down_reason = reason
        now = asyncio.get_running_loop().time()
        for deadline in list(self._in_flight):
            if not deadline.expired():
                deadline.reschedule(now)

    def mark_up(self) -> None:
        if self.down_reason is not None:
            logger.info("Triton is back: requests go through again")
        self.down_reason = None
        self.clear_broken()

    def clear_broken(self) -> None:
        self.broken_model = self.broken_stub = None

    def _fail_fast(self) -> None:
        if self.down_reason is not None:
            raise ModelUnavailableError(f"Triton is not available: {self.down_reason}")

    def _control_headers(self) -> dict[str, str] | None:
        return None if self.control_key is None else {TRITON_CONTROL_HEADER: self.control_key}

    async def server_live(self) -> bool:
        """Whether Triton answers its liveness probe within the probe timeout."""
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                return bool(await self._client.is_server_live())
        except _TRITON_ERRORS:
            return False

    async def server_ready(self) -> bool:
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                return bool(await self._client.is_server_ready())
        except _TRITON_ERRORS:
            return False

    async def model_ready(self, model: str) -> bool:
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                return bool(await self._client.is_model_ready(model))
        except _TRITON_ERRORS:
            return False

    async def statistics(self) -> list[dict]:
        """Triton's own per-model statistics (``/v2/models/stats``: counts, and cumulative
        queue and compute nanoseconds), within the probe timeout; ModelUnavailableError when
        Triton is down or does not answer in time."""
        self._fail_fast()
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                answer = await self._client.get_inference_statistics()
        except _TRITON_ERRORS as error:
            raise ModelUnavailableError(
                f"Triton's statistics are not available: {error}"
            ) from error
        return list(answer.get("model_stats", []))

    @contextlib.asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        """The request timeout, which :meth:`mark_down` cuts short."""
        self._fail_fast()
        async with asyncio.timeout(self.timeout_s) as deadline:
            self._in_flight.add(deadline)
            try:
                yield
            finally:
                self._in_flight.discard(deadline)

    async def model_config(self, model: str) -> mc.ModelConfig:
        try:
            async with self._deadline():
                config = await self._client.get_model_config(model)
        except TimeoutError as error:
            self._fail_fast()
            raise ModelUnavailableError(
                f"model {model!r} did not answer within {self.timeout_s:.0f} s"
            ) from error
        except _TRITON_ERRORS as error:
            raise ModelUnavailableError(f"model {model!r} is not available: {error}") from error
        return json_format.ParseDict(config, mc.ModelConfig(), ignore_unknown_fields=True)

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        requested = [InferRequestedOutput(name, binary_data=True) for name in outputs]
        try:
            async with self._deadline():
                if self.transport == "shm":
                    result = await self._infer_shm(model, inputs, requested)
                else:
                    result = await self._infer(model, _binary_inputs(inputs), requested)
        except TimeoutError as error:
            self._fail_fast()  # cut short by mark_down: say so rather than "did not answer"
            raise ModelUnavailableError(
                f"model {model!r} did not answer within {self.timeout_s:.0f} s"
            ) from error
        except (*_TRITON_ERRORS, SharedMemoryException) as error:
            if dead := _DEAD_STUB.search(str(error)):
                self.broken_model, self.broken_stub = model, dead.group(1)
            raise ModelUnavailableError(f"model {model!r} is not available: {error}") from error
        if self.broken_model == model:
            # It answers again: its stub was only slow, or others restarted an external Triton.
            self.clear_broken()
        return {name: result.as_numpy(name) for name in outputs}

    async def _infer(
        self, model: str, inputs: list[InferInput], requested: list[InferRequestedOutput]
    ) -> InferResult:
        # A fresh dict: the client writes this request's Inference-Header-Content-Length into it.
        headers = dict(_NO_COMPRESSION)
        return await self._client.infer(model, inputs, outputs=requested, headers=headers)

    async def _infer_shm(
        self, model: str, inputs: Mapping[str, np.ndarray], requested: list[InferRequestedOutput]
    ) -> InferResult:
        arrays = list(inputs.values())
        offsets, byte_size = shm_layout(arrays)
        async with self._shm.region(byte_size) as region:
            write_arrays(region, arrays, offsets)
            infer_inputs = []
            for (name, array), offset in zip(inputs.items(), offsets, strict=True):
                infer_input = InferInput(name, list(array.shape), _triton_dtype(array))
                infer_inputs.append(
                    infer_input.set_shared_memory(region.name, array.nbytes, offset)
                )
            if not region.registered:
                await self._register(region)
            try:
                return await self._infer(model, infer_inputs, requested)
            except InferenceServerException as error:
                if _UNKNOWN_REGION not in str(error.message()):
                    raise
                logger.warning(
                    "Triton forgot region %s (restarted?): registering it again", region.name
                )
                await self._register(region)
                return await self._infer(model, infer_inputs, requested)

    async def _register(self, region: ShmRegion) -> None:
        # Unregistering first (a no-op for an unknown name) also covers a registration that
        # Triton completed after this client gave up waiting for it.
        region.registered = False
        headers = self._control_headers()
        await self._client.unregister_system_shared_memory(region.name, headers=headers)
        try:
            await self._client.register_system_shared_memory(
                region.name, f"/{region.name}", region.byte_size, headers=headers
            )
        except InferenceServerException as error:
            raise ModelUnavailableError(
                f"Triton at {self.url} cannot map shared memory region {region.name!r}: "
                f"{error}. transport shm needs Triton on this host, sharing /dev/shm; "
                "set FACE_TRITON_TRANSPORT=binary otherwise"
            ) from error
        region.registered = True

    async def _unregister(self, region: ShmRegion) -> None:
        """What the pool awaits before it destroys a region; Triton's errors are no reason to
        keep the region."""
        if region.registered:
            with contextlib.suppress(*_TRITON_ERRORS):
                await self._client.unregister_system_shared_memory(
                    region.name, headers=self._control_headers()
                )


def _binary_inputs(inputs: Mapping[str, np.ndarray]) -> list[InferInput]:
    infer_inputs = []
    for name, array in inputs.items():
        infer_input = InferInput(name, list(array.shape), _triton_dtype(array))
        infer_input.set_data_from_numpy(array, binary_data=True)
        infer_inputs.append(infer_input)
    return infer_inputs


def _triton_dtype(array: np.ndarray) -> str:
    return {np.float32: "FP32", np.float16: "FP16", np.uint8: "UINT8", np.int64: "INT64"}[
        array.dtype.type
    ]
