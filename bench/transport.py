"""Input transport to Triton: binary HTTP against POSIX system shared memory.

Usage::

    python bench/transport.py                               # starts the service itself
    python bench/transport.py --iterations 100 --warmup 10
    python bench/transport.py --triton-url 127.0.0.1:8000   # a Triton already running on this host
    python bench/transport.py --model-repository /tmp/other_repository

It times ``TritonClient.infer`` (the service's own client: inputs sent as binary HTTP or
written into shared memory, outputs always binary HTTP) straight against Triton, with no API
in between, for

- the detector with one 640x640 image (1x3x640x640), what every request sends,
- the detector with four images (4x3x640x640, its max batch size),
- the recognizer with 32 aligned crops (32x3x112x112, its max batch size),

in the input data type the served model declares: float32 (4.9 MB per 640x640 image, 4.8 MB per
32 crops) for a repository that normalises in the client, uint8 pixels (a quarter of that) for
one whose models normalise inside.

Both transports have their own client, open for the whole run. After a warm-up of both, every
iteration runs every case with both transports, alternating which one goes first, so that
machine noise (2 shared cores here, other processes included) hits both equally. The inputs are
random: inference time does not depend on the values, and the outputs of both transports are
checked to be the same. With few iterations p99 is close to the maximum.

Without ``--triton-url`` the service is started as ``python app.py`` from the repository root on
port 3600 (its Triton on 8600-8602, logs in a temporary folder; ``--model-repository`` sets its
``FACE_MODEL_REPOSITORY``) and stopped after the run; only its Triton is used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from face_service.inference.client import TritonClient
from face_service.inference.names import DETECTOR_MODEL, RECOGNIZER_MODEL
from face_service.testing.service_process import SESSION_CONTROL_KEY, ServiceProcess

SERVICE_PORT = 3600
TRITON_PORT = 8600  # and the next two
TRANSPORTS = ("binary", "shm")


@dataclass
class Case:
    label: str
    model: str
    shape: tuple[int, ...]
    input_name: str = ""
    outputs: list[str] = field(default_factory=list)
    tensor: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    times_ms: dict[str, list[float]] = field(
        default_factory=lambda: {transport: [] for transport in TRANSPORTS}
    )


CASES = (
    ("detector 1x3x640x640", DETECTOR_MODEL, (1, 3, 640, 640)),
    ("detector 4x3x640x640", DETECTOR_MODEL, (4, 3, 640, 640)),
    ("recognizer 32x3x112x112", RECOGNIZER_MODEL, (32, 3, 112, 112)),
)


@contextmanager
def triton_address(url: str | None, model_repository: Path | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    env = {} if model_repository is None else {"FACE_MODEL_REPOSITORY": str(model_repository)}
    with tempfile.TemporaryDirectory(prefix="face-transport-") as work_dir:
        service = ServiceProcess(
            api_port=SERVICE_PORT, triton_port=TRITON_PORT, work_dir=Path(work_dir), env=env
        )
        with service:
            yield service.triton_address


async def timed(client: TritonClient, case: Case) -> tuple[float, dict[str, np.ndarray]]:
    start = time.perf_counter()
    outputs = await client.infer(case.model, {case.input_name: case.tensor}, case.outputs)
    return (time.perf_counter() - start) * 1000.0, outputs


async def measure(address: str, iterations: int, warmup: int) -> list[Case]:
    # Shared memory is registered through Triton's control API: the key of a Triton started
    # here, or FACE_TRITON_CONTROL_KEY's for one given by --url.
    key = os.environ.get("FACE_TRITON_CONTROL_KEY", SESSION_CONTROL_KEY)
    clients = {
        t: TritonClient(address, timeout_s=60, transport=t, control_key=key) for t in TRANSPORTS
    }
    rng = np.random.default_rng(0)
    cases = [Case(label, model, shape) for label, model, shape in CASES]
    try:
        for case in cases:
            config = await clients["binary"].model_config(case.model)
            case.input_name = config.input[0].name
            case.outputs = [output.name for output in config.output]
            if config.input[0].data_type == mc.TYPE_UINT8:
                case.tensor = rng.integers(0, 256, case.shape, dtype=np.uint8)
            else:
                case.tensor = rng.standard_normal(case.shape).astype(np.float32)
            case.label += f" {case.tensor.dtype} ({case.tensor.nbytes / 1e6:.1f} MB)"
            results = [(await timed(clients[t], case))[1] for t in TRANSPORTS]
            for name in case.outputs:
                np.testing.assert_allclose(results[1][name], results[0][name], rtol=1e-5, atol=1e-6)
        for iteration in range(warmup + iterations):
            order = TRANSPORTS if iteration % 2 == 0 else TRANSPORTS[::-1]
            for case in cases:
                for transport in order:
                    elapsed_ms, _ = await timed(clients[transport], case)
                    if iteration >= warmup:
                        case.times_ms[transport].append(elapsed_ms)
    finally:
        for client in clients.values():
            await client.close()
    return cases


def table(cases: list[Case]) -> str:
    lines = [
        "| case | binary p50 / p99 | shm p50 / p99 | shm / binary p50 | shm / binary p99 |",
        "|---|---|---|---|---|",
    ]
    for case in cases:
        binary = np.percentile(case.times_ms["binary"], [50, 99])
        shm = np.percentile(case.times_ms["shm"], [50, 99])
        lines.append(
            f"| {case.label} | {binary[0]:.1f} / {binary[1]:.1f} | {shm[0]:.1f} / {shm[1]:.1f} "
            f"| {shm[0] / binary[0]:.2f} | {shm[1] / binary[1]:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--triton-url", help="host:port of a Triton on this host")
    parser.add_argument("--model-repository", type=Path, help="for the service started here")
    args = parser.parse_args()
    with triton_address(args.triton_url, args.model_repository) as address:
        cases = asyncio.run(measure(address, args.iterations, args.warmup))
    sys.stdout.write(
        f"Triton at {address}, {os.cpu_count()} cores, {args.iterations} iterations per case and "
        f"transport after {args.warmup} warm-up, milliseconds per TritonClient.infer; outputs of "
        "both transports equal\n\n"
    )
    sys.stdout.write(table(cases) + "\n")


if __name__ == "__main__":
    main()
