"""API keys end to end on the real service (API processes on the session's Triton): started with
FACE_AUTH=required and FACE_ADMIN_KEY, a read key is created over HTTP, used on real photos,
refused a write, revoked, then refused; the audit log names it all; no key text in the log file.
Then two API processes on one PostgreSQL with one FACE_AUTH_SECRET: a key made on one works on
the other, and its revocation reaches the other within the cache time."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from face_service.testing.service_process import ServiceProcess
from tests.integration.gallery_support import postgres_database

ADMIN_KEY = "integration-admin-key-0123456789abcdefghij"


def auth_service(service: ServiceProcess, work_dir: Path, **env: str) -> ServiceProcess:
    return ServiceProcess(
        api_port=0,
        triton_url=service.triton_address,
        work_dir=work_dir,
        env={"FACE_DATA_DIR": str(work_dir / "data"), "FACE_AUTH": "required", **env},
    )


def test_a_key_is_created_used_revoked_and_refused(
    service: ServiceProcess, photos: dict[str, Path], tmp_path: Path
) -> None:
    admin = {"X-API-Key": ADMIN_KEY}
    with (
        auth_service(service, tmp_path, FACE_ADMIN_KEY=ADMIN_KEY) as running,
        httpx.Client(base_url=running.url, timeout=60) as api,
    ):
        assert api.get("/health").status_code == 200
        assert api.get("/openapi.json").status_code == 200
        photo = {"image": ("yao.jpg", photos["yaoming"].read_bytes(), "image/jpeg")}
        refused = api.post("/embedding", files=photo)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")

        created = api.post("/keys", json={"name": "kiosk", "scopes": ["read"]}, headers=admin)
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        reader = {"Authorization": f"Bearer {key}"}
        embedded = api.post("/embedding", files=photo, headers=reader)
        assert embedded.status_code == 200
        assert len(embedded.json()["embedding"]) == 512
        assert api.get("/identities", headers={"X-API-Key": key}).json()["total"] == 0
        enroll = api.post(
            "/identities", files={"images": photo["image"]}, data={"identity_id": "yao"},
            headers=reader,
        )  # fmt: skip
        assert enroll.status_code == 403
        assert "'write'" in enroll.json()["detail"]

        revoked = api.delete(f"/keys/{created.json()['key_id']}", headers=admin)
        assert revoked.status_code == 200
        after = api.post("/embedding", files=photo, headers=reader)
        assert after.status_code == 401

        audit = api.get("/audit", headers=admin).json()["items"]
        assert [(e["action"], e["status"], e["principal"]) for e in audit] == [
            ("key.revoke", 200, "env-admin"),
            ("identity.create", 403, "kiosk"),
            ("key.create", 201, "env-admin"),
            ("key.create", 0, "FACE_ADMIN_KEY"),  # stored at start
        ]
        assert audit[0]["client"] == "127.0.0.1"
    log = running.log_file.read_text()
    assert "API keys are required" in log
    assert key not in log
    assert ADMIN_KEY not in log
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("gallery.sqlite3*"))
    assert key.encode() not in stored
    assert ADMIN_KEY.encode() not in stored


def test_api_processes_on_one_postgres_share_keys(
    service: ServiceProcess, postgres_url: str, tmp_path: Path
) -> None:
    with postgres_database(postgres_url) as database:
        shared = {
            "FACE_GALLERY_DATABASE_URL": database.location,
            "FACE_AUTH_SECRET": "one-secret-for-every-api-process-0123",
            "FACE_ADMIN_KEY": ADMIN_KEY,
        }
        with (
            auth_service(service, tmp_path / "a", **shared) as first,
            auth_service(service, tmp_path / "b", **shared) as second,
            httpx.Client(base_url=first.url, timeout=60) as a,
            httpx.Client(base_url=second.url, timeout=60) as b,
        ):
            admin = {"X-API-Key": ADMIN_KEY}
            created = a.post("/keys", json={"name": "shared", "scopes": ["read"]}, headers=admin)
            key = created.json()["key"]
            assert b.get("/identities", headers={"X-API-Key": key}).status_code == 200
            assert a.delete(f"/keys/{created.json()['key_id']}", headers=admin).status_code == 200
            deadline = time.monotonic() + 10
            while b.get("/identities", headers={"X-API-Key": key}).status_code != 401:
                if time.monotonic() > deadline:
                    pytest.fail("the key revoked on one process still works on the other")
                time.sleep(0.5)
            # Both processes wrote to one audit log.
            entries = b.get("/audit", headers=admin).json()["items"]
            assert [(e["action"], e["principal"]) for e in entries] == [
                ("key.revoke", "env-admin"),
                ("key.create", "env-admin"),
                ("key.create", "FACE_ADMIN_KEY"),  # by whichever process started first
            ]
