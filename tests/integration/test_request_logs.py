"""Request ids and the log on the real service (real Triton, real models, real photos): the id a
client sends comes back and is in the access line of the service process's own log, with the
route, status and faces; with FACE_LOG_FORMAT=json every line that process writes is JSON, and
neither format holds a key or an embedding."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx

from face_service.testing.service_process import ServiceProcess

ADMIN_KEY = "integration-admin-key-for-the-log-tests-0123"


def log_lines(service: ServiceProcess, *waited_for: str, timeout_s: float = 10.0) -> list[str]:
    """The service's log lines, once each of ``waited_for`` is in them (or the timeout passed):
    the access line is written as the response ends, which the client may see first."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = service.log_file.read_text(encoding="utf-8")
        if all(part in text for part in waited_for) or time.monotonic() > deadline:
            return text.splitlines()
        time.sleep(0.05)


def test_a_client_request_id_comes_back_and_is_in_the_access_line(
    service: ServiceProcess, api: httpx.Client, photos: dict[str, Path]
) -> None:
    request_id = f"it-{uuid.uuid4().hex}"
    photo = ("players.jpg", photos["players"].read_bytes(), "image/jpeg")
    response = api.post("/extract", files={"images": photo}, headers={"X-Request-ID": request_id})
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == request_id
    faces = len(response.json()["images"][0]["faces"])
    assert faces >= 20  # players.jpg: 22 faces

    missing_id = f"it-{uuid.uuid4().hex}"
    missing = api.get("/identities/no-such-person", headers={"X-Request-ID": missing_id})
    assert missing.status_code == 404
    assert missing.json()["request_id"] == missing_id

    lines = log_lines(service, f"[{request_id}]", f"[{missing_id}]")
    [access] = [
        line for line in lines if f"[{request_id}]" in line and "face_service.access" in line
    ]
    assert "POST /extract 200 " in access
    assert f"faces={faces} " in access
    assert "client=127.0.0.1" in access
    [not_found] = [line for line in lines if f"[{missing_id}]" in line]
    assert "GET /identities/{identity_id} 404 " in not_found
    assert "no-such-person" not in not_found
    # Lines written outside any request (start-up) say so.
    assert any("Uvicorn running on" in line and "[-]" in line for line in lines)


def test_json_logs_parse_name_the_key_and_hold_no_secret(
    service: ServiceProcess, photos: dict[str, Path], tmp_path: Path
) -> None:
    settings = {
        "FACE_LOG_FORMAT": "json",
        "FACE_AUTH": "required",
        "FACE_ADMIN_KEY": ADMIN_KEY,
        "FACE_DATA_DIR": str(tmp_path / "data"),
    }
    running = ServiceProcess(
        api_port=0, triton_url=service.triton_address, work_dir=tmp_path, env=settings
    )
    with running, httpx.Client(base_url=running.url, timeout=60) as api:
        created = api.post(
            "/keys", json={"name": "kiosk", "scopes": ["read"]}, headers={"X-API-Key": ADMIN_KEY}
        )
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        photo = {"image": ("yao.jpg", photos["yaoming"].read_bytes(), "image/jpeg")}
        embedded = api.post(
            "/embedding", files=photo, headers={"X-API-Key": key, "X-Request-ID": "json-embed-1"}
        )
        assert embedded.status_code == 200, embedded.text
        assert embedded.headers["X-Request-ID"] == "json-embed-1"
        refused = api.get("/identities", headers={"Authorization": f"Bearer {key}x"})
        assert refused.status_code == 401
        refused_id = refused.headers["X-Request-ID"]
    # The process has stopped: its log is complete, shut-down lines included.
    lines = [line for line in log_lines(running) if line.strip()]
    records = [json.loads(line) for line in lines]  # a line that is not JSON fails here
    assert all({"time", "level", "logger", "message", "request_id"} <= r.keys() for r in records)
    [access] = [
        r
        for r in records
        if r["logger"] == "face_service.access" and r["request_id"] == "json-embed-1"
    ]
    assert access["method"] == "POST"
    assert access["route"] == "/embedding"
    assert access["status"] == 200
    assert access["faces"] == 1
    assert access["key_name"] == "kiosk"
    assert access["duration_ms"] > 0
    [refusal] = [
        r for r in records if r["logger"] == "face_service.access" and r["request_id"] == refused_id
    ]
    assert (refusal["route"], refusal["status"], refusal["key_name"]) == ("/identities", 401, None)
    assert any(r["logger"] == "uvicorn.error" for r in records)  # uvicorn's lines are JSON too
    text = "\n".join(lines)
    for secret in (key, key[-43:], ADMIN_KEY):
        assert secret not in text
    embedding = embedded.json()["embedding"]
    for value in embedding[:16]:
        assert len(repr(value)) < 8 or repr(value) not in text
