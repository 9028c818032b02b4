"""CORS (FACE_CORS_ORIGINS) on the real app with stub models (tests/fakes.py): off by default (no
Access-Control-* header at all, the preflight refused as before), and when set the listed origins
allowed with the API's methods and headers, the request id readable, every other origin refused;
the setting read as JSON or comma-separated, and checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import create_app
from face_service.settings import Settings
from tests.fakes import fake_services

ALLOWED = "https://kiosk.example"
OTHER = "https://evil.example"


def preflight(client: TestClient, origin: str, method: str = "POST") -> object:
    return client.options(
        "/identify",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "x-api-key, content-type, x-request-id",
        },
    )


@pytest.fixture
def cors_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, cors_origins=[ALLOWED])
    with TestClient(create_app(settings, services=fake_services)) as client:
        yield client


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path), services=fake_services)) as client:
        answer = preflight(client, ALLOWED)
        assert answer.status_code == 405  # as before CORS existed: no route answers OPTIONS
        assert not [name for name in answer.headers if name.lower().startswith("access-control")]
        simple = client.get("/identities", headers={"Origin": ALLOWED})
        assert simple.status_code == 200
        assert "access-control-allow-origin" not in simple.headers


def test_an_allowed_origin_gets_the_api(cors_client: TestClient) -> None:
    answer = preflight(cors_client, ALLOWED)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    allowed_methods = answer.headers["access-control-allow-methods"].split(", ")
    assert {"GET", "POST", "PATCH", "DELETE"} <= set(allowed_methods)
    allowed_headers = answer.headers["access-control-allow-headers"].lower()
    for header in ("x-api-key", "authorization", "content-type", "x-request-id"):
        assert header in allowed_headers
    assert "access-control-allow-credentials" not in answer.headers
    assert answer.headers["X-Request-ID"]  # the preflight is a request like any other
    simple = cors_client.get("/identities", headers={"Origin": ALLOWED})
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == ALLOWED
    exposed = simple.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed
    assert "retry-after" in exposed
    # An error answer too: a browser application can read its detail and id.
    missing = cors_client.get("/identities/nobody", headers={"Origin": ALLOWED})
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == ALLOWED


def test_another_origin_is_refused(cors_client: TestClient) -> None:
    answer = preflight(cors_client, OTHER)
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
    simple = cors_client.get("/identities", headers={"Origin": OTHER})
    assert "access-control-allow-origin" not in simple.headers
    unused = preflight(cors_client, ALLOWED, method="PUT")
    assert unused.status_code == 400  # no route takes PUT


def test_credentials_only_when_asked_for(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, cors_origins=[ALLOWED], cors_allow_credentials=True)
    with TestClient(create_app(settings, services=fake_services)) as client:
        answer = preflight(client, ALLOWED)
        assert answer.headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", []),
        (ALLOWED, [ALLOWED]),
        (f"{ALLOWED}, http://localhost:8080", [ALLOWED, "http://localhost:8080"]),
        (f'["{ALLOWED}", "http://localhost:8080"]', [ALLOWED, "http://localhost:8080"]),
        ("*", ["*"]),
    ],
)
def test_the_origins_setting_reads_json_or_commas(
    monkeypatch: pytest.MonkeyPatch, value: str, origins: list[str]
) -> None:
    monkeypatch.setenv("FACE_CORS_ORIGINS", value)
    assert Settings().cors_origins == origins


@pytest.mark.parametrize("origin", [f"{ALLOWED}/", f"{ALLOWED}/app", "kiosk.example", "ftp://a"])
def test_an_origin_that_could_never_match_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, origin: str
) -> None:
    monkeypatch.setenv("FACE_CORS_ORIGINS", origin)
    with pytest.raises(ValueError, match="CORS origin"):
        Settings()


def test_credentials_for_every_origin_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACE_CORS_ORIGINS", "*")
    monkeypatch.setenv("FACE_CORS_ALLOW_CREDENTIALS", "true")
    with pytest.raises(ValueError, match="list the origins"):
        Settings()
