"""The child-process wrapper used by the integration tests and the benchmarks."""

from __future__ import annotations

from pathlib import Path

from face_service.testing.service_process import ServiceProcess, service_url


def test_environment_names_every_port_and_the_log(tmp_path: Path) -> None:
    env = ServiceProcess(
        api_port=3500, triton_port=8500, work_dir=tmp_path, env={"X": "1"}
    ).environment()
    assert env["FACE_PORT"] == "3500"
    assert (env["FACE_TRITON_HTTP_PORT"], env["FACE_TRITON_GRPC_PORT"]) == ("8500", "8501")
    assert env["FACE_TRITON_METRICS_PORT"] == "8502"
    assert env["FACE_TRITON_LOG_FILE"] == str(tmp_path / "triton" / "triton.log")
    assert env["X"] == "1"
    assert "FACE_TRITON_URL" not in env


def test_external_triton_sets_the_url_and_no_ports(tmp_path: Path) -> None:
    service = ServiceProcess(api_port=3500, triton_url="10.0.0.5:8000", work_dir=tmp_path)
    env = service.environment()
    assert env["FACE_TRITON_URL"] == "10.0.0.5:8000"
    assert service.triton_address == "10.0.0.5:8000"
    assert service.url == "http://127.0.0.1:3500"


def test_service_url_passes_a_given_url_through() -> None:
    with service_url("http://example:3000/", api_port=1, triton_port=2) as url:
        assert url == "http://example:3000"
