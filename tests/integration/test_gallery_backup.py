"""The embedded gallery's online backup as the README gives it (Operating it): SQLite's backup API
run from the command line while the service runs and writes, then a restore after a loss: the
service stopped, the backup put in place of gallery.sqlite3 (its stale -wal and -shm files
removed), started again: the same identities and templates, and they are identified again."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from face_service.testing.service_process import ServiceProcess
from tests.integration.face_client_support import person_photos

# The README's command, word for word (python there is the service's Python).
BACKUP_COMMAND = (
    "import sqlite3, sys; "
    "sqlite3.connect(sys.argv[1]).backup(d := sqlite3.connect(sys.argv[2])); d.close()"
)
PEOPLE = {"calista": "Calista_Flockhart", "cameron": "Cameron_Diaz"}


def photo_part(field: str, path: Path) -> dict[str, tuple[str, bytes, str]]:
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def gallery_api(service: ServiceProcess, work_dir: Path) -> ServiceProcess:
    return ServiceProcess(
        api_port=0,
        triton_url=service.triton_address,
        work_dir=work_dir,
        env={"FACE_DATA_DIR": str(work_dir / "data")},
    )


def identities(api: httpx.Client) -> dict[str, int]:
    """identity id -> number of templates."""
    page = api.get("/identities", params={"limit": 100}).json()
    return {item["identity_id"]: len(item["templates"]) for item in page["items"]}


def test_an_online_backup_restores_to_the_same_identities(
    service: ServiceProcess, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    backup = tmp_path / "backup" / "gallery.sqlite3"
    backup.parent.mkdir()
    with (
        gallery_api(service, tmp_path) as running,
        httpx.Client(base_url=running.url, timeout=120) as api,
    ):
        for identity_id, person in PEOPLE.items():
            enrolled = api.post(
                "/identities",
                files=[
                    ("images", photo_part("images", p)["images"]) for p in person_photos(person)[:2]
                ],
                data={"identity_id": identity_id},
            )
            assert enrolled.status_code == 201, enrolled.text
        before = identities(api)
        assert before == {"calista": 2, "cameron": 2}

        # Online: the service holds the file open (WAL mode: recent commits may still be in the
        # -wal file, which a copy of gallery.sqlite3 alone would miss).
        done = subprocess.run(
            [sys.executable, "-c", BACKUP_COMMAND, str(data / "gallery.sqlite3"), str(backup)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert api.delete("/identities/calista").status_code == 204  # lost after the backup
        assert identities(api) == {"cameron": 2}

    for stale in ("gallery.sqlite3-wal", "gallery.sqlite3-shm"):
        (data / stale).unlink(missing_ok=True)
    shutil.copyfile(backup, data / "gallery.sqlite3")
    with (
        gallery_api(service, tmp_path) as restored,
        httpx.Client(base_url=restored.url, timeout=120) as api,
    ):
        assert identities(api) == before
        probe = person_photos(PEOPLE["calista"])[-1]  # a photo that was not enrolled
        assert probe not in person_photos(PEOPLE["calista"])[:2]
        found = api.post("/identify", files=photo_part("image", probe)).json()
        assert [face["match"]["identity_id"] for face in found["faces"]] == ["calista"]
