"""The audit log over HTTP (real app, stub models, SQLite gallery): every write recorded with who,
what, which ids, when, from where and the status; GET /audit pages and filters; no embedding or
image ever in it; refused writes (403) recorded, requests without a key (401) not."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import create_app
from face_service.settings import Settings
from tests.fakes import fake_services, png
from tests.unit.test_auth_routes import ADMIN_KEY, auth_settings, image, make_key


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings(tmp_path), services=fake_services)) as client:
        yield client


def audit(client: TestClient, **params: object) -> dict:
    response = client.get("/audit", params=params, headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code == 200, response.text
    return response.json()


def test_every_write_is_recorded_with_who_what_which_when_where_and_status(
    client: TestClient, tmp_path: Path
) -> None:
    writer = {"X-API-Key": make_key(client, "desk", "write")}
    started = datetime.now(UTC)
    enrolled = client.post(
        "/identities",
        files=[image("images"), image("images")],
        data={"identity_id": "ann"},
        headers=writer,
    ).json()
    templates = [entry["template_id"] for entry in enrolled["images"]]
    client.post("/identities", files=[image("images")], data={"identity_id": "bob"}, headers=writer)
    client.post("/identities/ann/images", files=[image("images")], headers=writer)
    client.patch("/identities/ann", json={"name": "Ann"}, headers=writer)
    client.post("/identities/ann/merge", json={"source_id": "bob"}, headers=writer)
    client.delete(f"/identities/ann/templates/{templates[0]}", headers=writer)
    stored = client.post(
        "/extract", files=[image("images", 2)], data={"store": "true"}, headers=writer
    ).json()
    record_id = stored["images"][0]["record_id"]
    client.delete(f"/records/{record_id}", headers=writer)
    client.delete("/identities/nobody", headers=writer)  # 404: recorded too
    client.delete("/identities/ann", headers=writer)
    client.delete(
        "/identities", params={"confirm": "delete-all-identities"}, headers={"X-API-Key": ADMIN_KEY}
    )
    # Reads are not written down.
    client.get("/identities", headers=writer)
    client.post("/extract", files=[image("images")], headers=writer)

    page = audit(client)
    entries = list(reversed(page["items"]))  # oldest first
    assert [(e["action"], e["status"]) for e in entries] == [
        ("key.create", 0),  # FACE_ADMIN_KEY, stored at start
        ("key.create", 201),
        ("identity.create", 201),
        ("identity.create", 201),
        ("identity.add_images", 200),
        ("identity.update", 200),
        ("identity.merge", 200),
        ("template.delete", 200),
        ("record.create", 200),
        ("record.delete", 204),
        ("identity.delete", 404),
        ("identity.delete", 204),
        ("identity.delete_all", 200),
    ]
    assert page["total"] == 13
    assert entries[0]["principal"] == "FACE_ADMIN_KEY"
    assert entries[1]["principal"] == "env-admin"
    assert {e["principal"] for e in entries[2:-1]} == {"desk"}
    assert entries[2]["targets"] == {"identity_id": "ann", "template_ids": templates}
    assert entries[6]["targets"] == {"identity_id": "ann", "source_id": "bob"}
    assert entries[7]["targets"] == {"identity_id": "ann", "template_id": templates[0]}
    assert entries[8]["targets"] == {"record_ids": [record_id]}
    assert entries[9]["targets"] == {"record_id": record_id}
    assert entries[-1]["targets"] == {"deleted": 0}
    for entry in entries[1:]:
        assert entry["client"] == "testclient"  # TestClient's address
        assert started - timedelta(seconds=5) <= datetime.fromisoformat(entry["at"])
        assert entry["key_id"]
        assert entry["path"].startswith(("/identities", "/extract", "/records", "/keys"))

    # Filters and pages.
    assert audit(client, principal="env-admin")["total"] == 2
    assert audit(client, principal="FACE_ADMIN_KEY")["total"] == 1
    assert [e["status"] for e in audit(client, action="identity.delete")["items"]] == [204, 404]
    assert audit(client, target="bob")["total"] == 2  # enrolled, then merged away
    assert audit(client, target="bo")["total"] == 0  # ids match whole
    assert audit(client, since=datetime.now(UTC).isoformat())["total"] == 0
    assert audit(client, until=started.isoformat())["total"] == 2  # the keys, made before
    second = audit(client, offset=1, limit=2)
    assert [e["seq"] for e in second["items"]] == [page["items"][1]["seq"], page["items"][2]["seq"]]


def test_the_audit_log_never_holds_an_embedding_or_an_image(
    client: TestClient, tmp_path: Path
) -> None:
    writer = {"X-API-Key": make_key(client, "desk", "write")}
    client.post("/identities", files=[image("images")], data={"identity_id": "ann"}, headers=writer)
    stored = client.post(
        "/extract",
        files=[image("images", 2)],
        data={"store": "true", "return_face_crops": "true"},
        headers=writer,
    ).json()
    assert stored["images"][0]["faces"][0]["embedding"]  # the request did carry embeddings
    with sqlite3.connect(tmp_path / "gallery.sqlite3") as conn:
        rows = conn.execute("SELECT * FROM audit_log").fetchall()
    assert len(rows) == 4
    text = json.dumps(rows)
    assert "embedding" not in text
    assert "crop" not in text
    assert max(len(str(value)) for row in rows for value in row) < 200
    for row in rows:
        for value in row:
            assert not isinstance(value, bytes)
    for value in json.loads(rows[-1][9]).values():  # targets: ids only
        assert all(isinstance(item, str) for item in value)
    assert png(1)[:8].hex() not in text


def test_refused_writes_are_recorded_and_keyless_ones_are_not(client: TestClient) -> None:
    reader = {"X-API-Key": make_key(client, "viewer", "read")}
    assert client.delete("/identities/ann", headers=reader).status_code == 403
    assert (
        client.post(
            "/extract", files=[image("images")], data={"store": "true"}, headers=reader
        ).status_code
        == 403
    )
    assert client.delete("/identities/ann").status_code == 401
    assert client.delete("/identities/ann", headers={"X-API-Key": "nonsense"}).status_code == 401
    entries = audit(client)["items"]
    assert [(e["action"], e["status"], e["principal"]) for e in entries[:2]] == [
        ("record.create", 403, "viewer"),
        ("identity.delete", 403, "viewer"),
    ]
    assert audit(client)["total"] == 4  # and the keys' creation


def test_the_audit_log_is_admin_only_and_bounded(client: TestClient) -> None:
    writer = {"X-API-Key": make_key(client, "desk", "write")}
    assert client.get("/audit", headers=writer).status_code == 403
    assert client.get("/audit").status_code == 401
    too_far = client.get("/audit", params={"offset": 2**63}, headers={"X-API-Key": ADMIN_KEY})
    assert too_far.status_code == 422
    assert (
        client.get("/audit", params={"limit": 1001}, headers={"X-API-Key": ADMIN_KEY}).status_code
        == 422
    )


def test_writes_are_recorded_without_a_name_when_auth_is_off(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, host="127.0.0.1", auth="auto")
    with TestClient(create_app(settings, services=fake_services)) as client:
        client.post("/identities", files=[image("images")], data={"identity_id": "ann"})
        [entry] = client.get("/audit").json()["items"]
    assert (entry["action"], entry["principal"], entry["status"]) == ("identity.create", None, 201)
