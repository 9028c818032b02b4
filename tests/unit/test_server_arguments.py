"""tritonserver's flags: built once from the settings, extra flags last, and printed for
Docker/start.sh exactly as the local server gets them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from face_service.inference.server_arguments import main, server_arguments
from face_service.settings import REPOSITORY_ROOT, Settings


def test_every_address_and_port_comes_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        model_repository=tmp_path,
        triton_http_port=9000,
        triton_grpc_port=9001,
        triton_metrics_port=9002,
    )
    arguments = server_arguments(settings, address="0.0.0.0")
    assert arguments[0] == f"--model-repository={tmp_path}"
    for expected in (
        "--http-address=0.0.0.0",
        "--http-port=9000",
        "--grpc-address=0.0.0.0",
        "--grpc-port=9001",
        "--metrics-address=0.0.0.0",
        "--metrics-port=9002",
        "--strict-readiness=true",
        "--exit-on-error=true",
    ):
        assert expected in arguments
    # The server's own backends unless a folder is given (the local server's python backend).
    assert not any(a.startswith("--backend-directory") for a in arguments)
    with_backends = server_arguments(settings, address="0.0.0.0", backend_directory=tmp_path)
    assert f"--backend-directory={tmp_path}" in with_backends


def test_extra_arguments_come_last_split_like_a_shell() -> None:
    settings = Settings(triton_extra_args="--log-verbose=1  --model-control-mode='none'")
    arguments = server_arguments(settings, address="127.0.0.1")
    assert arguments[-2:] == ["--log-verbose=1", "--model-control-mode=none"]
    assert arguments.index("--log-verbose=0") < arguments.index("--log-verbose=1")
    assert server_arguments(Settings(), address="127.0.0.1")[-1] == "--exit-timeout-secs=10"


def test_command_line_prints_the_same_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("face_service.inference.server_arguments.get_settings", Settings)
    assert main(["--address", "0.0.0.0"]) == 0
    assert capsys.readouterr().out.splitlines() == server_arguments(Settings(), address="0.0.0.0")
    assert main(["--address", "1.2.3.4", "--null"]) == 0
    printed = capsys.readouterr().out
    assert printed.endswith("\0")
    assert printed.split("\0")[:-1] == server_arguments(Settings(), address="1.2.3.4")


def test_module_runs_as_a_script_with_settings_from_the_environment() -> None:
    # From the checkout's root, as Docker/start.sh runs it (-m puts the working folder first).
    found = subprocess.run(
        [sys.executable, "-m", "face_service.inference.server_arguments", "-0", "--address", "::"],
        env={"FACE_TRITON_HTTP_PORT": "8123", "FACE_TRITON_EXTRA_ARGS": "--log-info=false"},
        capture_output=True,
        text=True,
        check=True,
        cwd=REPOSITORY_ROOT,
    )
    flags = found.stdout.split("\0")[:-1]
    assert "--http-address=::" in flags
    assert "--http-port=8123" in flags
    assert flags[-1] == "--log-info=false"


def test_control_apis_are_restricted_to_the_key_over_http_and_grpc(tmp_path: Path) -> None:
    key = "k" * 32
    arguments = server_arguments(
        Settings(), address="127.0.0.1", control_key=key, backend_shm_prefix="face_1_ab_backend_"
    )
    apis = "shared-memory,model-repository,trace,logging"
    assert f"--http-restricted-api={apis}:face-triton-key={key}" in arguments
    assert f"--grpc-restricted-protocol={apis}:face-triton-key={key}" in arguments
    assert "--backend-config=python,shm-region-prefix-name=face_1_ab_backend_" in arguments
    # No key given: the setting's (Docker/start.sh), else no restriction.
    from_settings = server_arguments(Settings(triton_control_key="s" * 20), address="::")
    assert f"--http-restricted-api={apis}:face-triton-key={'s' * 20}" in from_settings
    plain = server_arguments(Settings(), address="::")
    assert not any("restricted" in a or "shm-region-prefix" in a for a in plain)


@pytest.mark.parametrize("key", ["short", "x" * 20 + ":a=b", "x" * 20 + ",y"])
def test_control_key_setting_rejects_values_that_would_break_the_flag(key: str) -> None:
    with pytest.raises(ValueError, match="triton_control_key"):
        Settings(triton_control_key=key)
