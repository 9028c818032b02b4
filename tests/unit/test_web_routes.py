"""What the service serves to people, without Triton: the web page and its assets, Swagger UI
and ReDoc on local assets only (no CDN), and the face thumbnails that enrollment stores (or,
with FACE_GALLERY_STORE_FACE_CROPS off, does not)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import create_app
from face_service.settings import Settings
from tests.fakes import fake_services, png


def app_client(tmp_path: Path, **settings: object) -> Iterator[TestClient]:
    with TestClient(
        create_app(Settings(data_dir=tmp_path, **settings), services=fake_services)
    ) as client:
        yield client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from app_client(tmp_path)


def local_assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_the_web_page_and_its_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = local_assets(page.text)
    assert "/web/app.js" in assets
    assert "/web/style.css" in assets
    for asset in assets:
        assert asset.startswith("/"), asset  # nothing from another host
        assert client.get(asset).status_code == 200, asset


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_use_only_the_services_own_assets(client: TestClient, path: str) -> None:
    html = client.get(path).text
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts
    assert "cdn" not in html
    assert "fonts.googleapis" not in html
    for script in scripts:
        body = client.get(script)
        assert body.status_code == 200
        assert len(body.content) > 500_000  # the whole bundle
        assert "cdn.redoc.ly" not in body.text


def enroll(client: TestClient) -> dict:
    response = client.post(
        "/identities",
        files=[
            ("images", ("a.png", png(1), "image/png")),
            ("images", ("b.png", png(1), "image/png")),
        ],
        data={"name": "Ada"},
    )
    assert response.status_code == 201
    return response.json()["identity"]


def test_each_template_has_its_face_thumbnail(client: TestClient) -> None:
    identity = enroll(client)
    base = f"/identities/{identity['identity_id']}/templates"
    for template in identity["templates"]:
        image = client.get(f"{base}/{template['template_id']}/image")
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/jpeg"
        assert image.content.startswith(b"\xff\xd8")
        assert 500 < len(image.content) < 20_000
    missing = client.get(f"{base}/nope/image")
    assert missing.status_code == 404
    assert missing.json() == {
        "detail": f"identity {identity['identity_id']!r} has no template 'nope'",
        "request_id": missing.headers["X-Request-ID"],
    }


def test_no_thumbnails_when_the_setting_is_off(tmp_path: Path) -> None:
    for client in app_client(tmp_path, gallery_store_face_crops=False):
        identity = enroll(client)
        template = identity["templates"][0]["template_id"]
        response = client.get(f"/identities/{identity['identity_id']}/templates/{template}/image")
        assert response.status_code == 404
        assert "no stored face crop" in response.json()["detail"]
