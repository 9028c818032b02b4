"""tritonserver's command-line flags, built in this one place from the settings and the address
to listen on: the local server (triton_service.TritonServer) and Docker/start.sh both use them.

    python -m face_service.inference.server_arguments --address 0.0.0.0 [--null]

prints them one per line (``--null``: each ended by a NUL byte, for ``mapfile -d ''``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from face_service.inference.names import TRITON_CONTROL_HEADER, TRITON_RESTRICTED_APIS
from face_service.settings import Settings, get_settings


def server_arguments(
    settings: Settings,
    *,
    address: str,
    backend_directory: Path | None = None,
    control_key: str | None = None,
    backend_shm_prefix: str | None = None,
) -> list[str]:
    """The flags (without the binary) of a tritonserver that serves ``settings.model_repository``
    on ``address``; ``backend_directory`` where the server's built-in one is not wanted.

    ``control_key`` (else ``settings.triton_control_key``) restricts Triton's control APIs
    (shared-memory registration, model repository, trace, logging) over HTTP and gRPC to
    requests that carry it in the ``face-triton-key`` header; inference, health, metadata and
    statistics stay open. ``backend_shm_prefix`` names the python backend's /dev/shm regions, so
    that whoever cleans up after a killed server knows which are its own."""
    arguments = [f"--model-repository={settings.model_repository}"]
    if backend_directory is not None:
        arguments.append(f"--backend-directory={backend_directory}")
    control_key = control_key or settings.triton_control_key
    if control_key is not None:
        apis = ",".join(TRITON_RESTRICTED_APIS)
        arguments += [
            f"--http-restricted-api={apis}:{TRITON_CONTROL_HEADER}={control_key}",
            f"--grpc-restricted-protocol={apis}:{TRITON_CONTROL_HEADER}={control_key}",
        ]
    if backend_shm_prefix is not None:
        arguments.append(f"--backend-config=python,shm-region-prefix-name={backend_shm_prefix}")
    arguments += [
        f"--http-address={address}",
        f"--http-port={settings.triton_http_port}",
        f"--grpc-address={address}",
        f"--grpc-port={settings.triton_grpc_port}",
        f"--metrics-address={address}",
        f"--metrics-port={settings.triton_metrics_port}",
        "--allow-metrics=true",
        # The models run on CPU instances; GPU metrics would only poll the driver.
        "--allow-gpu-metrics=false",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--log-verbose=0",
        # Our own client closes its connections first; others get a short grace period.
        "--exit-timeout-secs=10",
    ]
    # Last, so that they win over the defaults above (tritonserver keeps a flag's last value).
    arguments += shlex.split(settings.triton_extra_args)
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prints tritonserver's flags for the settings.")
    parser.add_argument("--address", required=True, help="the address tritonserver listens on")
    parser.add_argument("--backend-directory", type=Path, default=None)
    parser.add_argument("-0", "--null", action="store_true", help="end each flag with NUL")
    arguments = parser.parse_args(argv)
    flags = server_arguments(
        get_settings(), address=arguments.address, backend_directory=arguments.backend_directory
    )
    end = "\0" if arguments.null else "\n"
    sys.stdout.write("".join(flag + end for flag in flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
