"""The local server wrapper (its command line and environment, its death with the API process)
and the facade's choice of transport."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from face_service.errors import TritonServerError
from face_service.inference.reaper import group_alive
from face_service.inference.server_arguments import server_arguments
from face_service.settings import Settings
from triton_service import TritonServer, TritonService


def test_server_arguments_bind_to_loopback_and_name_every_port(tmp_path: Path) -> None:
    settings = Settings(
        model_repository=tmp_path / "repo",
        triton_http_port=8100,
        triton_grpc_port=8101,
        triton_metrics_port=8102,
    )
    server = TritonServer(
        binary=tmp_path / "tritonserver",
        arguments=server_arguments(
            settings, address="127.0.0.1", backend_directory=tmp_path / "backends"
        ),
        url="127.0.0.1:8100",
        log_file=tmp_path / "triton.log",
        library_paths=[tmp_path / "libs", tmp_path / "python"],
    )
    arguments = server.arguments()
    assert arguments[0] == str(tmp_path / "tritonserver")
    for expected in (
        f"--model-repository={tmp_path / 'repo'}",
        "--http-address=127.0.0.1",
        "--http-port=8100",
        "--grpc-port=8101",
        "--metrics-port=8102",
        "--grpc-address=127.0.0.1",
    ):
        assert expected in arguments
    env = server.environment()
    assert env["LD_LIBRARY_PATH"].split(":")[:2] == [
        str(tmp_path / "libs"),
        str(tmp_path / "python"),
    ]
    assert server.url == "127.0.0.1:8100"


@pytest.mark.parametrize(
    ("environment", "transport"),
    [
        ({}, "shm"),  # the local server
        ({"FACE_TRITON_URL": "127.0.0.1:8000"}, "shm"),
        ({"FACE_TRITON_URL": "localhost:8000"}, "shm"),
        ({"FACE_TRITON_URL": "triton.internal:8000"}, "binary"),
        ({"FACE_TRITON_URL": "10.1.2.3:8000"}, "binary"),
        ({"FACE_TRITON_URL": "10.1.2.3:8000", "FACE_TRITON_TRANSPORT": "shm"}, "shm"),
        ({"FACE_TRITON_TRANSPORT": "binary"}, "binary"),
        ({"FACE_DEVICE": "gpu"}, "binary"),  # measured faster there
        ({"FACE_DEVICE": "gpu", "FACE_TRITON_TRANSPORT": "shm"}, "shm"),
    ],
)
def test_service_client_transport_follows_where_triton_is(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], transport: str
) -> None:
    async def chosen() -> str:
        service = TritonService(Settings())
        await service.client.close()
        return service.client.transport

    monkeypatch.delenv("FACE_TRITON_TRANSPORT", raising=False)
    monkeypatch.delenv("FACE_TRITON_URL", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert asyncio.run(chosen()) == transport


def test_kill_and_stop_end_the_whole_process_group_and_the_backend_regions(
    tmp_path: Path,
) -> None:
    # A stand-in tritonserver that ignores SIGINT and SIGTERM, with a child (a "stub") that
    # ignores them too.
    binary = tmp_path / "tritonserver"
    binary.write_text("#!/bin/sh\ntrap '' TERM INT\nsleep 120 &\nsleep 120\n")
    binary.chmod(0o755)
    prefix = f"face_test_server_{os.getpid()}_backend_"
    region = Path("/dev/shm") / f"{prefix}0"

    async def run() -> None:
        server = TritonServer(
            binary=binary,
            arguments=[],
            url="127.0.0.1:1",
            log_file=tmp_path / "triton.log",
            backend_shm_prefix=prefix,
        )
        for end in (server.kill(), server.stop(timeout_s=0.5)):
            region.write_bytes(b"x")
            server.start_process()
            pid = server.pid
            assert pid is not None
            await asyncio.sleep(0.2)
            assert group_alive(pid)
            await asyncio.wait_for(end, timeout=10)
            assert server.exited()
            assert not group_alive(pid)
            assert not region.exists()

    try:
        asyncio.run(run())
    finally:
        region.unlink(missing_ok=True)


def test_an_installed_triton_serves_from_its_own_backends(tmp_path: Path) -> None:
    """FACE_TRITONSERVER (the Docker image's /opt/tritonserver/bin/tritonserver): the server's
    own backend folder, no python-backend stub or libraries of the wheel, and the configs for
    the native onnxruntime backend found beside the binary."""
    from face_service.inference.model_config import parse_config
    from face_service.inference.names import MODEL_NAMES
    from tests.unit.test_start_script import write_model

    binary = tmp_path / "tritonserver" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (tmp_path / "tritonserver" / "backends" / "onnxruntime").mkdir(parents=True)
    models = tmp_path / "models"
    for name in MODEL_NAMES:
        write_model(models / name / "1" / "model.onnx")
    settings = Settings(
        tritonserver=binary, model_repository=models, triton_log_file=tmp_path / "triton.log"
    )

    async def prepared() -> TritonServer:
        service = TritonService(settings)
        try:
            return service.prepare_local_server()
        finally:
            service._close_reaper()
            await service.client.close()

    server = asyncio.run(prepared())
    assert server.binary == binary
    assert server.library_paths == ()
    assert not any(flag.startswith("--backend-directory") for flag in server.flags)
    for name in MODEL_NAMES:
        config = parse_config((models / name / "config.pbtxt").read_text())
        assert config.backend == "onnxruntime"


def test_an_installed_triton_that_is_not_executable_is_named(tmp_path: Path) -> None:
    settings = Settings(tritonserver=tmp_path / "missing", model_repository=tmp_path)

    async def prepared() -> None:
        service = TritonService(settings)
        try:
            service.prepare_local_server()
        finally:
            await service.client.close()

    with pytest.raises(TritonServerError, match=r"FACE_TRITONSERVER=.*missing is not"):
        asyncio.run(prepared())


def test_a_failed_start_names_the_error_that_a_short_tail_would_lose(tmp_path: Path) -> None:
    # A stand-in tritonserver that fails as one does when a model does not load: the reason in
    # one error line, then the model table and the unloading, then "failed to load all models".
    log_file = tmp_path / "triton.log"
    log_file.write_text("E1203 00:00:00.0 1 model_lifecycle.cc:642] an earlier start's error\n")
    binary = tmp_path / "tritonserver"
    binary.write_text(
        "#!/bin/sh\n"
        "echo 'E1204 04:51:13.6 1 server.cc:241] \"CudaDriverHelper has not been initialized.\"'\n"
        "echo \"E1204 04:55:59.4 1 model_lifecycle.cc:642] failed to load 'face_recognizer'\"\n"
        'for i in $(seq 60); do echo "I1204 04:56:00.0 1 server.cc:345] line $i"; done\n'
        "echo 'error: creating server: Internal - failed to load all models'\n"
        "exit 1\n"
    )
    binary.chmod(0o755)
    server = TritonServer(binary=binary, arguments=[], url="127.0.0.1:1", log_file=log_file)

    async def start() -> None:
        server.start_process()
        while not server.exited():  # so that wait_ready never asks the (absent) client
            await asyncio.sleep(0.05)
        with pytest.raises(TritonServerError) as raised:
            await server.wait_ready(None, timeout_s=10)  # type: ignore[arg-type]
        message = str(raised.value)
        assert "failed to load 'face_recognizer'" in message
        assert message.rstrip().endswith("failed to load all models")
        assert "CudaDriverHelper" not in message
        assert "an earlier start's error" not in message
        assert "line 30" not in message
        assert "line 60" in message

    asyncio.run(start())
