"""The Docker image, replayed without a Docker engine (tests/integration/docker_support.py): laid
out and owned as Docker/Dockerfile makes it, started by its entry point as its unprivileged user
with its environment, it must answer /health, keep an enrollment in its data volume, bring back
a Triton that was killed or froze (instead of exiting), and stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from face_service.gallery import open_gallery
from face_service.settings import REPOSITORY_ROOT, Settings
from tests.integration.docker_support import (
    Dockerfile,
    ReplayedImage,
    temporary_root,
)

ADMIN_KEY = secrets.token_hex(32)


@pytest.fixture(scope="module")
def image() -> Iterator[ReplayedImage]:
    dockerfile = Dockerfile.read(REPOSITORY_ROOT / "Docker" / "Dockerfile")
    with temporary_root("face-docker-replay-") as root:
        replayed = ReplayedImage(dockerfile, root / "image")
        replayed.root.mkdir()
        replayed.build()
        replayed.start(ADMIN_KEY)
        try:
            yield replayed
        finally:
            replayed.stop()


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, image: ReplayedImage
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout_s:.0f} s:\n{image.log_tail()}")


def health(image: ReplayedImage) -> int:
    try:
        return httpx.get(f"{image.url}/health", timeout=5).status_code
    except httpx.TransportError:
        return 0


def enroll(image: ReplayedImage, photo: Path, identity_id: str, key: str | None) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    files = [("images", ("photo.jpg", photo.read_bytes(), "image/jpeg"))]
    return httpx.post(
        f"{image.url}/identities",
        files=files,
        data={"identity_id": identity_id},
        headers=headers,
        timeout=120,
    )


def test_the_image_runs_as_its_user_and_keeps_the_gallery_in_its_volume(
    image: ReplayedImage, photos: dict[str, Path]
) -> None:
    uid, _ = image.dockerfile.uid_gid()
    assert uid != 0, "the image must not run as root"
    image.wait_healthy()  # the HEALTHCHECK's request: no key although keys are required
    assert enroll(image, photos["yaoming"], "yao", key=None).status_code == 401
    enrolled = enroll(image, photos["yaoming"], "yao", key=ADMIN_KEY)
    assert enrolled.status_code == 201, enrolled.text
    [volume] = image.dockerfile.volumes
    data = image.host(volume)
    assert image.dockerfile.env["FACE_DATA_DIR"] == volume
    gallery = data / "gallery.sqlite3"
    assert gallery.stat().st_uid == uid
    assert (data / "auth_secret").stat().st_uid == uid
    # The code stays root's and unchanged by the service.
    workdir = image.host(image.dockerfile.workdir)
    assert all(p.stat().st_uid == 0 for p in [workdir, *workdir.rglob("*")])
    assert not (workdir / "data").exists()


def test_a_killed_triton_is_restarted_and_the_container_keeps_running(
    image: ReplayedImage, photos: dict[str, Path]
) -> None:
    image.wait_healthy()
    [first] = image.tritonservers()
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: health(image) == 503, 30, "/health did not say 503", image)
    wait_for(lambda: health(image) == 200, 180, "/health did not come back to 200", image)
    assert image.process is not None
    assert image.process.poll() is None  # the container did not exit
    [second] = image.tritonservers()
    assert second != first
    assert "restarting (1)" in image.log_tail(200_000)
    again = enroll(image, photos["yaoming"], "yao-again", key=ADMIN_KEY)
    assert again.status_code == 201, again.text


def test_a_frozen_triton_is_killed_and_restarted(image: ReplayedImage) -> None:
    """SIGSTOP: Triton still exists but answers nothing; after FACE_TRITON_UNRESPONSIVE_S (10 s,
    the image's default) the watchdog kills its group and starts a new one."""
    image.wait_healthy()
    [frozen] = image.tritonservers()
    os.kill(frozen, signal.SIGSTOP)
    wait_for(lambda: health(image) == 503, 30, "/health did not say 503", image)
    wait_for(lambda: health(image) == 200, 180, "/health did not come back to 200", image)
    assert image.process is not None
    assert image.process.poll() is None
    [second] = image.tritonservers()
    assert second != frozen
    assert "has not answered its liveness probe" in image.log_tail(200_000)


def test_sigterm_stops_the_api_then_triton_and_the_enrollments_stay(image: ReplayedImage) -> None:
    assert image.process is not None
    image.process.send_signal(signal.SIGTERM)
    # uvicorn shuts the app down, then ends itself by the same signal (Docker reports 143).
    assert image.process.wait(60) in (0, -signal.SIGTERM), image.log_tail()
    assert "Application shutdown complete." in image.log_tail()
    assert image.tritonservers() == []
    data = image.host(image.dockerfile.volumes[0])
    gallery = open_gallery(Settings(data_dir=data, gallery_database_url=None), dimension=512)
    try:
        identities = {gallery.get_identity(identity_id=i).identity_id for i in ("yao", "yao-again")}
    finally:
        gallery.close()
    assert identities == {"yao", "yao-again"}
