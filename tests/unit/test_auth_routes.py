"""API keys over HTTP, on the real app with stub models (tests/fakes.py): every route family
allowed and refused per scope, the 401 and 403 answers, the open routes, the OpenAPI security
schemes, secure-by-default start-up (host and FACE_AUTH), and keys never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app import create_app
from face_service.api.auth import route_scope
from face_service.settings import Settings
from tests.fakes import EMBEDDING_WIDTH, fake_services, png

ADMIN_KEY = "operator-admin-key-for-the-tests-0123456789"
# Open without a key (no biometric data): probes, the docs and the web page with their assets
# (static mounts are not APIRoutes and need no entry).
OPEN_PATHS = {
    "/health",
    "/health/live",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/",
    "/static/redoc/redoc.standalone.js",
}
EMBEDDING = [1.0] + [0.0] * (EMBEDDING_WIDTH - 1)


def image(name: str, faces: int = 1) -> tuple[str, tuple[str, bytes, str]]:
    return name, (f"{name}.png", png(faces), "image/png")


def auth_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": tmp_path, "auth": "required", "admin_key": ADMIN_KEY}
    return Settings(**{**values, **overrides})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings(tmp_path), services=fake_services)) as client:
        yield client


def admin(client: TestClient) -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


def make_key(client: TestClient, name: str, *scopes: str) -> str:
    response = client.post(
        "/keys", json={"name": name, "scopes": list(scopes)}, headers=admin(client)
    )
    assert response.status_code == 201, response.text
    return response.json()["key"]


# (method, path, request keyword arguments, the scope it needs): every route family.
ROUTES = [
    ("POST", "/embedding", {"files": [image("image")]}, "read"),
    ("POST", "/face-similarity", {"files": [image("image_a"), image("image_b")]}, "read"),
    ("POST", "/extract", {"files": [image("images")]}, "read"),
    ("POST", "/extract", {"files": [image("images")], "data": {"store": "true"}}, "write"),
    ("POST", "/draw", {"files": [image("image")]}, "read"),
    ("POST", "/identify", {"files": [image("image")]}, "read"),
    ("POST", "/identify/embedding", {"json": {"embedding": EMBEDDING}}, "read"),
    ("POST", "/verify", {"files": [image("image")], "data": {"identity_id": "ann"}}, "read"),
    ("POST", "/verify/embedding", {"json": {"embedding": EMBEDDING, "identity_id": "ann"}}, "read"),
    ("GET", "/identities", {}, "read"),
    ("GET", "/identities/ann", {}, "read"),
    ("POST", "/identities", {"files": [image("images")], "data": {"identity_id": "bob"}}, "write"),
    ("POST", "/identities/ann/images", {"files": [image("images")]}, "write"),
    ("PATCH", "/identities/ann", {"json": {"name": "Ann B"}}, "write"),
    ("POST", "/identities/ann/merge", {"json": {"source_id": "nobody"}}, "write"),
    ("DELETE", "/identities/ann/templates/nothere", {}, "write"),
    ("DELETE", "/identities/nobody", {}, "write"),
    ("DELETE", "/identities", {"params": {"confirm": "delete-all-identities"}}, "admin"),
    ("GET", "/records", {}, "read"),
    ("GET", "/records/nothere", {}, "read"),
    ("DELETE", "/records/nothere", {}, "write"),
    ("POST", "/keys", {"json": {"name": "new", "scopes": ["read"]}}, "admin"),
    ("GET", "/keys", {}, "admin"),
    ("DELETE", "/keys/nothere", {}, "admin"),
    ("GET", "/audit", {}, "admin"),
]
LEVELS = ("read", "write", "admin")


def test_each_scope_is_allowed_and_refused_on_every_route_family(client: TestClient) -> None:
    enrolled = client.post(
        "/identities", files=[image("images")], data={"identity_id": "ann"}, headers=admin(client)
    )
    assert enrolled.status_code == 201
    keys = {scope: make_key(client, f"k-{scope}", scope) for scope in LEVELS}
    for method, path, kwargs, needed in ROUTES:
        refused = client.request(method, path, **kwargs)
        assert refused.status_code == 401, (method, path, refused.text)
        for held in LEVELS:
            response = client.request(method, path, headers={"X-API-Key": keys[held]}, **kwargs)
            if LEVELS.index(held) >= LEVELS.index(needed):
                assert response.status_code not in (401, 403), (method, path, held, response.text)
            else:
                assert response.status_code == 403, (method, path, held)
                assert f"lacks the {needed!r} scope" in response.json()["detail"]
                assert f"'k-{held}'" in response.json()["detail"]
        if (method, path) == ("DELETE", "/identities"):  # put ann back for the routes after
            client.post(
                "/identities",
                files=[image("images")],
                data={"identity_id": "ann"},
                headers=admin(client),
            )


def test_401_and_403_answers_say_what_is_wrong(client: TestClient) -> None:
    missing = client.get("/identities")
    assert missing.status_code == 401
    assert "X-API-Key" in missing.json()["detail"]
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="face-service"'
    wrong = client.get("/identities", headers={"X-API-Key": "fsk_0123456789ab_" + "a" * 43})
    assert wrong.status_code == 401
    assert wrong.json() == {
        "detail": "the API key is not valid",
        "request_id": wrong.headers["X-Request-ID"],
    }
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    reader = make_key(client, "reader", "read")
    forbidden = client.delete("/identities/x", headers={"Authorization": f"Bearer {reader}"})
    assert forbidden.status_code == 403
    assert forbidden.json() == {
        "detail": "the API key 'reader' lacks the 'write' scope this request needs",
        "request_id": forbidden.headers["X-Request-ID"],
    }
    assert 'error="insufficient_scope", scope="write"' in forbidden.headers["WWW-Authenticate"]
    # Bearer and X-API-Key are the same key.
    assert (
        client.get("/identities", headers={"Authorization": f"Bearer {reader}"}).status_code == 200
    )
    assert (
        client.get("/identities", headers={"Authorization": f"Basic {reader}"}).status_code == 401
    )


def test_the_open_routes_need_no_key(client: TestClient) -> None:
    for path in sorted(OPEN_PATHS):
        assert client.get(path).status_code == 200, path


def test_every_route_but_the_open_ones_requires_a_scope(client: TestClient) -> None:
    """A route added without require_scope fails here: secure by default."""
    for route in client.app.routes:
        if isinstance(route, APIRoute):
            scope = route_scope(route.dependant)
            assert (scope is None) == (route.path in OPEN_PATHS), route.path


def test_the_openapi_document_declares_both_schemes_on_every_protected_operation(
    client: TestClient,
) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"] == {
        "APIKey": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "An API key (`face-service-keys create`, or POST /keys)",
        },
        "Bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "The same API key as a bearer token",
        },
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in OPEN_PATHS:
                assert "security" not in operation, (method, path)
            else:
                assert operation["security"] == [{"APIKey": []}, {"Bearer": []}], (method, path)
                assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_keys_are_created_listed_without_secrets_and_revoked(client: TestClient) -> None:
    created = client.post(
        "/keys", json={"name": "desk", "scopes": ["write"]}, headers=admin(client)
    ).json()
    text = created["key"]
    assert created["scopes"] == ["write"]
    assert created["revoked_at"] is None
    listed = client.get("/keys", headers=admin(client))
    assert text not in listed.text
    assert sorted(item["name"] for item in listed.json()["items"]) == ["desk", "env-admin"]
    assert all("key" not in item for item in listed.json()["items"])
    duplicate = client.post(
        "/keys", json={"name": "desk", "scopes": ["read"]}, headers=admin(client)
    )
    assert duplicate.status_code == 409
    bad = client.post("/keys", json={"name": "a b", "scopes": ["root"]}, headers=admin(client))
    assert bad.status_code == 422
    assert client.get("/identities", headers={"X-API-Key": text}).status_code == 200
    revoked = client.delete(f"/keys/{created['key_id']}", headers=admin(client))
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    after = client.get("/identities", headers={"X-API-Key": text})
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]
    assert client.delete("/keys/nothere", headers=admin(client)).status_code == 404
    everything = client.get("/keys", params={"revoked": "true"}, headers=admin(client)).json()
    assert len(everything["items"]) == 2
    assert any(i["revoked_at"] for i in everything["items"])


def test_deleting_everyone_needs_admin_and_the_exact_confirmation(client: TestClient) -> None:
    writer = {"X-API-Key": make_key(client, "writer", "write")}
    client.post("/identities", files=[image("images")], data={"identity_id": "a"}, headers=writer)
    confirm = {"confirm": "delete-all-identities"}
    assert client.delete("/identities", params=confirm, headers=writer).status_code == 403
    for value in (None, "true", "1", "yes", "DELETE-ALL-IDENTITIES"):
        params = {} if value is None else {"confirm": value}
        refused = client.delete("/identities", params=params, headers=admin(client))
        assert refused.status_code == 400, value
        assert "confirm=delete-all-identities" in refused.json()["detail"]
    assert client.get("/identities", headers=writer).json()["total"] == 1
    done = client.delete("/identities", params=confirm, headers=admin(client))
    assert done.json() == {"deleted": 1}


def test_logs_never_hold_a_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(auth_settings(tmp_path), services=fake_services)) as client:
        text = make_key(client, "logged", "read")
        client.get("/identities", headers={"X-API-Key": text})
        client.delete("/identities/x", headers={"X-API-Key": text})  # 403, logged and audited
        client.get("/identities", headers={"X-API-Key": text + "wrong"})  # 401
        client.post("/identities/x/merge", json={"source_id": "y"}, headers={"X-API-Key": text})
    secret_part = text.split("_", 2)[2]  # the secret may hold "_" itself
    assert caplog.records  # something was logged
    assert text not in caplog.text
    assert secret_part not in caplog.text
    assert ADMIN_KEY not in caplog.text


def test_auto_beyond_loopback_requires_keys_and_says_how_to_make_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, host="0.0.0.0", auth="auto")
    with TestClient(create_app(settings, services=fake_services)) as client:
        assert client.get("/identities").status_code == 401
        assert client.post("/identify/embedding", json={"embedding": EMBEDDING}).status_code == 401
        assert client.get("/health").status_code == 200
    assert "none exists yet" in caplog.text
    assert "face-service-keys create" in caplog.text


def test_auto_on_loopback_needs_no_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, host="127.0.0.1", auth="auto")
    with TestClient(create_app(settings, services=fake_services)) as client:
        assert client.get("/identities").status_code == 200


def test_disabled_auth_is_a_loud_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(data_dir=tmp_path, host="0.0.0.0", auth="disabled")
    with TestClient(create_app(settings, services=fake_services)) as client:
        assert client.get("/identities").status_code == 200
    [warning] = [r for r in caplog.records if "AUTHENTICATION IS DISABLED" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "biometric data" in warning.getMessage()
    assert "0.0.0.0" in warning.getMessage()


def test_a_short_operator_admin_key_stops_the_start(tmp_path: Path) -> None:
    app = create_app(auth_settings(tmp_path, admin_key="short"), services=fake_services)
    with pytest.raises(ValueError, match="FACE_ADMIN_KEY must be at least 32"), TestClient(app):
        pass


def test_the_service_listens_where_the_settings_say_loopback_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``python app.py`` (scripts/serve.sh) binds FACE_HOST, 127.0.0.1 unless told."""
    import app

    for name in ("FACE_HOST", "FACE_AUTH"):
        monkeypatch.delenv(name, raising=False)
    bound: dict[str, object] = {}
    monkeypatch.setattr(app.uvicorn, "run", lambda _app, **options: bound.update(options))
    monkeypatch.setattr(app, "get_settings", lambda: Settings(_env_file=None))
    # The process's logging is left alone (test_request_logs checks configure_logging).
    monkeypatch.setattr(app, "configure_logging", lambda *arguments: None)
    app.main()
    assert bound["host"] == "127.0.0.1"
