"""What the client and CLI integration tests share: an API process of their own on the
session's Triton (its own gallery, so deleting everyone touches no other test), with API keys
required once the service has them, and real photos read from ../shared/faces."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from PIL import Image

from face_service.settings import REPOSITORY_ROOT
from face_service.testing.service_process import ServiceProcess

SHARED_IDENTITIES = REPOSITORY_ROOT.parent / "shared" / "faces" / "identities"
# Bootstraps the service's first admin key (FACE_ADMIN_KEY, issue 10): at least 32 characters.
ADMIN_KEY = "client-tests-admin-key-0123456789abcdef"


def person_photos(name: str) -> list[Path]:
    folder = SHARED_IDENTITIES / name
    assert folder.is_dir(), (
        f"{folder} is missing: the labelled photos live in ../shared/faces beside the repository"
    )
    return sorted(folder.glob("*.jpg"))


def blank_png(colour: tuple[int, int, int] = (120, 130, 140)) -> bytes:
    """A real PNG with no face in it."""
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def client_service(service: ServiceProcess, work_dir: Path, **env: str) -> Iterator[ServiceProcess]:
    settings = {
        "FACE_DATA_DIR": str(work_dir / "data"),
        "FACE_AUTH": "required",
        "FACE_ADMIN_KEY": ADMIN_KEY,
        **env,
    }
    with ServiceProcess(
        api_port=0, triton_url=service.triton_address, work_dir=work_dir, env=settings
    ) as running:
        yield running


TEMPLATE_IMAGE_ROUTE = "/identities/{identity_id}/templates/{template_id}/image"


def has_route(url: str, path: str) -> bool:
    return path in httpx.get(f"{url}/openapi.json", timeout=30).json()["paths"]


def has_key_routes(url: str) -> bool:
    """Whether this service has API keys (POST /keys, issue 10's auth branch)."""
    return has_route(url, "/keys")


def has_face_crops(url: str) -> bool:
    """Whether this service keeps each template's face crop (issue 11's web branch)."""
    return has_route(url, TEMPLATE_IMAGE_ROUTE)
