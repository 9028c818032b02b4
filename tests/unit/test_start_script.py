"""Docker/start.sh without Docker: laid out as in the image (/app), with a stand-in tritonserver
installed as in the official container (<prefix>/bin/tritonserver beside <prefix>/backends/
onnxruntime) that records its flags: alone (`start.sh triton`) it rewrites the configs through
the package and runs tritonserver with exactly the flags the local server gets
(face_service.inference.server_arguments); all in one it runs the API, which starts that server
itself (FACE_TRITONSERVER) with the same flags. tests/integration/test_docker_image.py starts the
whole image for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from face_service.inference.model_config import parse_config
from face_service.inference.names import MODEL_NAMES
from face_service.inference.server_arguments import server_arguments
from face_service.settings import REPOSITORY_ROOT, Settings

FAKE_TRITONSERVER = """#!/usr/bin/env bash
printf '%s\\0' "$@" > "$FAKE_ARGUMENTS"
exit "${FAKE_STATUS:-0}"
"""


@dataclass
class Image:
    app: Path
    models: Path
    recorded: Path
    env: dict[str, str]

    def run(self, *arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.app / "start.sh"), *arguments],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def flags(self) -> list[str]:
        return self.recorded.read_text().split("\0")[:-1]


def write_model(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, ["batch", 4])],
    )
    path.parent.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.fixture
def image(tmp_path: Path) -> Image:
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(REPOSITORY_ROOT / "Docker" / "start.sh", app / "start.sh")
    for name in ("face_service", "app.py", "extract_insightface_models.py"):
        (app / name).symlink_to(REPOSITORY_ROOT / name)
    models = tmp_path / "models"
    for name in MODEL_NAMES:
        write_model(models / name / "1" / "model.onnx")
    fake = tmp_path / "tritonserver" / "bin" / "tritonserver"
    fake.parent.mkdir(parents=True)
    (tmp_path / "tritonserver" / "backends" / "onnxruntime").mkdir(parents=True)
    fake.write_text(FAKE_TRITONSERVER)
    fake.chmod(0o755)
    recorded = tmp_path / "flags"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "FACE_PYTHON": sys.executable,
        "FACE_TRITONSERVER": str(fake),
        "FACE_MODEL_REPOSITORY": str(models),
        "FACE_TRITON_HTTP_PORT": "8123",
        "FACE_TRITON_EXTRA_ARGS": "--log-verbose=1",
        "FACE_DATA_DIR": str(tmp_path / "data"),
        "FACE_TRITON_LOG_FILE": str(tmp_path / "data" / "triton.log"),
        "FAKE_ARGUMENTS": str(recorded),
    }
    return Image(app, models, recorded, env)


def expected_flags(image: Image, address: str, control_key: str | None = None) -> list[str]:
    settings = Settings(
        model_repository=image.models, triton_http_port=8123, triton_extra_args="--log-verbose=1"
    )
    return server_arguments(settings, address=address, control_key=control_key)


def control_key(flags: list[str]) -> str:
    [restriction] = [flag for flag in flags if flag.startswith("--http-restricted-api=")]
    return restriction.rsplit("=", 1)[1]


def test_triton_alone_gets_the_flags_of_server_arguments_and_fresh_configs(image: Image) -> None:
    started = image.run("triton")
    assert started.returncode == 0, started.stderr
    assert image.flags() == expected_flags(image, "0.0.0.0")
    assert image.flags()[-1] == "--log-verbose=1"
    for name in MODEL_NAMES:
        config = parse_config((image.models / name / "config.pbtxt").read_text())
        assert config.backend == "onnxruntime"  # the image's Triton has the native backend
        assert not (image.models / name / "1" / "model.py").exists()


def test_all_in_one_runs_the_api_which_starts_the_installed_triton_on_loopback(
    image: Image,
) -> None:
    started = image.run(FAKE_STATUS="3")
    # The API started FACE_TRITONSERVER itself; it exited before it was ready, so did the API.
    assert started.returncode != 0
    assert "tritonserver exited while starting" in started.stderr
    # Triton's control APIs take a fresh key, never logged, unless FACE_TRITON_CONTROL_KEY is set.
    key = control_key(image.flags())
    assert len(key) >= 32
    assert key not in started.stderr
    # The python backend's region prefix is the API process's own (random): not compared.
    flags = [f for f in image.flags() if not f.startswith("--backend-config=python,")]
    assert flags == expected_flags(image, "127.0.0.1", control_key=key)
    image.run(FAKE_STATUS="3")
    assert control_key(image.flags()) != key
    image.run(FAKE_STATUS="3", FACE_TRITON_CONTROL_KEY="k" * 20)
    assert control_key(image.flags()) == "k" * 20
    # The installation's backends decide the configs: the native onnxruntime one here.
    for name in MODEL_NAMES:
        config = parse_config((image.models / name / "config.pbtxt").read_text())
        assert config.backend == "onnxruntime"


def test_with_an_external_triton_the_script_starts_none(image: Image) -> None:
    # A port the settings refuse ends the API at once, after start.sh has chosen its mode.
    started = image.run(FACE_TRITON_URL="127.0.0.1:9", FACE_PORT="0")
    assert "using that Triton, starting none here" in started.stderr
    assert "port" in started.stderr  # the settings' own message: the API did start
    assert not image.recorded.exists()


def test_unknown_arguments_stop_the_script(image: Image) -> None:
    started = image.run("serve")
    assert started.returncode == 2
    assert "unknown argument 'serve'" in started.stderr
    assert not image.recorded.exists()


def test_settings_that_make_no_flags_stop_the_script(image: Image) -> None:
    started = image.run("triton", FACE_TRITON_HTTP_PORT="0")
    assert started.returncode == 2
    assert "could not build tritonserver's arguments" in started.stderr
    assert "triton_http_port" in started.stderr  # the settings' own message
    assert not image.recorded.exists()


def test_defaults_of_the_script_are_those_of_the_settings() -> None:
    script = (REPOSITORY_ROOT / "Docker" / "start.sh").read_text()
    settings = Settings(_env_file=None)
    assert f'"${{FACE_PYTHON:-{settings.python}}}"' in script
    # The settings' default is the nvidia-pytriton wheel's server; the image names its own.
    assert settings.tritonserver is None
    dockerfile = (REPOSITORY_ROOT / "Docker" / "Dockerfile").read_text()
    assert "FACE_TRITONSERVER=/opt/tritonserver/bin/tritonserver" in dockerfile


def test_model_pack_setting_installs_that_pack_before_triton_starts(image: Image) -> None:
    started = image.run("triton", FACE_MODEL_PACK="buffalo_s")
    assert started.returncode == 0, started.stderr
    assert "installing model pack buffalo_s" in started.stderr
    for name in MODEL_NAMES:
        config = parse_config((image.models / name / "config.pbtxt").read_text())
        assert config.backend == "onnxruntime"
        assert config.parameters["face_service.pack"].string_value == "buffalo_s"
    assert image.flags() == expected_flags(image, "0.0.0.0")
