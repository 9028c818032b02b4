"""The ``face`` command line against the real service: enroll a folder of real photos (one
without a face, one that is not an image, a file of another kind, a person with no usable
photo), a second run adds nothing, a dry run changes nothing, identify, compare, extract to
JSON Lines, list, export and re-import; each exit code asserted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from face_client import Client
from face_client.cli import main
from face_service.settings import REPOSITORY_ROOT
from face_service.testing.service_process import ServiceProcess
from tests.integration.face_client_support import (
    ADMIN_KEY,
    blank_png,
    client_service,
    has_face_crops,
    has_key_routes,
    person_photos,
)

PEOPLE = ("Amanda_Beard", "Andrew_Cuomo", "Ali_Naimi")


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def cli_service(
    service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    with client_service(service, tmp_path_factory.mktemp("face-cli")) as running:
        yield running


@pytest.fixture(scope="module")
def face(cli_service: ServiceProcess) -> Iterator[Client]:
    with Client(cli_service.url, api_key=ADMIN_KEY, timeout_s=120) as client:
        yield client


def run(service: ServiceProcess, *args: str, key: str | None = ADMIN_KEY) -> Run:
    """``face ARGS`` as a user runs it: a new process, the address and key from the
    environment, no terminal (so no progress bar)."""
    env = {**os.environ, "FACE_URL": service.url}
    env.pop("FACE_API_KEY", None)
    if key is not None:
        env["FACE_API_KEY"] = key
    done = subprocess.run(
        [sys.executable, "-m", "face_client.cli", *args],
        cwd=REPOSITORY_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def people_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR/<identity_id>/ of real photos (copied from ../shared/faces into a temporary folder),
    with a person.json, a photo with no face, a .jpg that is not an image, a .txt, and a
    person whose only photo has no face."""
    root = tmp_path_factory.mktemp("people")
    for name in PEOPLE:
        (root / name).mkdir()
        for photo in person_photos(name):
            shutil.copy(photo, root / name / photo.name)
    (root / "Amanda_Beard" / "person.json").write_text(
        json.dumps({"name": "Amanda Beard", "metadata": {"sport": "swimming"}})
    )
    (root / "Andrew_Cuomo" / "wall.png").write_bytes(blank_png())
    (root / "Ali_Naimi" / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "Ali_Naimi" / "notes.txt").write_text("not a photo")
    (root / "Nobody").mkdir()
    (root / "Nobody" / "wall.png").write_bytes(blank_png((30, 60, 90)))
    return root


def templates(face: Client) -> dict[str, list[str]]:
    return {
        i.identity_id: sorted(t.source or "" for t in i.templates) for i in face.iter_identities()
    }


def report(path: Path) -> dict[str, dict[str, str]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {f"{line['identity_id']}/{line['file']}": line for line in lines}


def test_the_console_script_is_declared_and_resolves() -> None:
    project = tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["face"] == "face_client.cli:main"
    assert "face_client*" in project["tool"]["setuptools"]["packages"]["find"]["include"]
    requirements = (REPOSITORY_ROOT / "requirements.txt").read_text().splitlines()
    assert {line.split("==")[0] for line in requirements if "==" in line} >= {"httpx", "tqdm"}
    assert callable(main)


def test_usage_errors_exit_2(cli_service: ServiceProcess, tmp_path: Path) -> None:
    assert run(cli_service, "enroll", str(tmp_path / "missing")).code == 2
    assert run(cli_service, "identify", str(tmp_path / "missing.jpg")).code == 2
    assert run(cli_service, "no-such-command").code == 2
    bad = tmp_path / "bad"
    (bad / "someone").mkdir(parents=True)
    (bad / "someone" / "person.json").write_text("{not json")
    refused = run(cli_service, "enroll", str(bad))
    assert refused.code == 2
    assert "person.json: not valid JSON" in refused.err
    helped = run(cli_service, "--help")
    assert helped.code == 0
    assert "4  authentication" in helped.out


def test_an_unreachable_service_exits_3(cli_service: ServiceProcess, people_dir: Path) -> None:
    unreachable = run(cli_service, "--url", "http://127.0.0.1:9", "list")
    assert unreachable.code == 3
    assert "cannot be reached" in unreachable.err
    assert run(cli_service, "enroll", str(people_dir), "--url", "http://127.0.0.1:9").code == 3


def test_enroll_dry_run_then_enroll_then_a_second_run_adds_nothing(
    cli_service: ServiceProcess, face: Client, people_dir: Path, tmp_path: Path
) -> None:
    dry = run(cli_service, "enroll", str(people_dir), "--dry-run")
    assert dry.code == 1  # notes.txt is skipped already when the folder is read
    assert "would enroll Amanda_Beard: 1.jpg, 2.jpg" in dry.out
    assert face.list_identities().total == 0

    first = run(
        cli_service, "enroll", str(people_dir), "--concurrency", "3", "--batch-size", "4",
        "--report", str(tmp_path / "first.jsonl"),
    )  # fmt: skip
    assert first.code == 1, first.err  # some images were skipped
    outcome = report(tmp_path / "first.jsonl")
    skipped = {k: v["reason"] for k, v in outcome.items() if v["status"] == "skipped"}
    assert skipped == {
        "Andrew_Cuomo/wall.png": "no face found",
        "Ali_Naimi/broken.jpg": skipped["Ali_Naimi/broken.jpg"],
        "Ali_Naimi/notes.txt": "not an image file (.txt)",
        "Nobody/wall.png": "no face found",
    }
    assert "not an image in a supported format" in skipped["Ali_Naimi/broken.jpg"]
    for file, reason in skipped.items():
        assert f"skipped  {file}: {reason}" in first.err
    expected = {name: sorted(p.name for p in person_photos(name)) for name in PEOPLE}
    assert templates(face) == expected
    amanda = face.get_identity("Amanda_Beard")
    assert (amanda.name, amanda.metadata) == ("Amanda Beard", {"sport": "swimming"})
    enrolled = sum(len(v) for v in expected.values())
    assert f"images: {enrolled} enrolled, 0 already enrolled, 4 skipped" in first.out
    assert "3 created, 1 failed" in first.out  # Nobody has no usable photo

    second = run(cli_service, "enroll", str(people_dir), "--report", str(tmp_path / "2.jsonl"))
    assert second.code == 1  # the same four files are still not enrollable
    assert templates(face) == expected  # nothing duplicated
    assert f"images: 0 enrolled, {enrolled} already enrolled, 4 skipped" in second.out
    statuses = {v["status"] for k, v in report(tmp_path / "2.jsonl").items() if k not in skipped}
    assert statuses == {"already"}

    # A new photo and a changed person.json: only those are sent; without bad files, exit 0.
    clean = tmp_path / "clean"
    shutil.copytree(people_dir, clean, ignore=shutil.ignore_patterns("wall.png", "broken.jpg"))
    (clean / "Ali_Naimi" / "notes.txt").unlink()
    shutil.rmtree(clean / "Nobody")
    shutil.copy(person_photos("Amanda_Beard")[0], clean / "Andrew_Cuomo" / "amanda-as-cuomo.jpg")
    (clean / "Andrew_Cuomo" / "person.json").write_text(json.dumps({"name": "Andrew Cuomo"}))
    third = run(cli_service, "enroll", str(clean))
    assert third.code == 0, third.err
    assert "updated Andrew_Cuomo: name" in third.out
    assert f"images: 1 enrolled, {enrolled} already enrolled, 0 skipped" in third.out
    assert face.get_identity("Andrew_Cuomo").name == "Andrew Cuomo"
    face.delete_template(
        "Andrew_Cuomo",
        next(
            t.template_id
            for t in face.get_identity("Andrew_Cuomo").templates
            if t.source == "amanda-as-cuomo.jpg"
        ),
    )


def test_identify_compare_extract_list(
    cli_service: ServiceProcess, face: Client, people_dir: Path, tmp_path: Path
) -> None:
    if face.list_identities().total == 0:
        assert run(cli_service, "enroll", str(people_dir)).code == 1
    amanda, cuomo = person_photos("Amanda_Beard"), person_photos("Andrew_Cuomo")
    blank = tmp_path / "wall.png"
    blank.write_bytes(blank_png())

    found = run(cli_service, "identify", str(amanda[1]), str(cuomo[0]))
    assert found.code == 0, found.err
    assert "Amanda Beard (Amanda_Beard) similarity" in found.out
    assert "(Andrew_Cuomo) similarity" in found.out
    assert found.out.index("Amanda Beard") < found.out.index("Andrew_Cuomo")  # argument order
    as_json = run(cli_service, "identify", str(amanda[1]), str(blank), "--json")
    assert as_json.code == 0  # an image without faces is an answer: 0 faces
    lines = [json.loads(line) for line in as_json.out.splitlines()]
    assert [len(line["faces"]) >= 1 for line in lines] == [True, False]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert run(cli_service, "identify", str(amanda[1]), str(broken)).code == 1

    same = run(cli_service, "compare", str(amanda[0]), str(amanda[1]))
    assert same.code == 0
    assert same.out.startswith("same person: similarity ")
    different = run(cli_service, "compare", str(amanda[0]), str(cuomo[0]), "--json")
    assert json.loads(different.out)["same_person"] is False
    no_face = run(cli_service, "compare", str(amanda[0]), str(blank))
    assert no_face.code == 1
    assert "no face found in 'image_b'" in no_face.err

    out = tmp_path / "faces.jsonl"
    photos = [str(p) for p in amanda] + [str(broken)]
    extracted = run(cli_service, "extract", *photos, "--jsonl", str(out), "--concurrency", "2")
    assert extracted.code == 1  # one image could not be read
    lines = {line["file"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert set(lines) == set(photos)
    assert lines[str(broken)]["status"] == "error"
    assert all(len(lines[str(p)]["faces"][0]["embedding"]) == 512 for p in amanda)

    listing = run(cli_service, "list")
    assert listing.code == 0
    assert any(line.split()[:2] == ["Amanda_Beard", "2"] for line in listing.out.splitlines())
    assert "1-3 of 3" in listing.out


def test_export_and_reimport_round_trip(
    cli_service: ServiceProcess, face: Client, people_dir: Path, tmp_path: Path
) -> None:
    if face.list_identities().total == 0:
        assert run(cli_service, "enroll", str(people_dir)).code == 1
    before = {i.identity_id: i for i in face.iter_identities()}
    exported = tmp_path / "gallery.jsonl"
    assert run(cli_service, "export", str(exported)).code == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert {line["identity_id"] for line in lines} == set(before)
    assert all(line["templates"][0]["source"] for line in lines)

    for identity_id in before:
        face.delete_identity(identity_id)
    without_photos = run(cli_service, "import", str(exported))
    assert without_photos.code == 1  # the templates need their photos
    assert face.list_identities().total == 0

    restored = run(cli_service, "import", str(exported), "--photos", str(people_dir))
    assert restored.code == 0, restored.err
    after = {i.identity_id: i for i in face.iter_identities()}
    assert set(after) == set(before)
    for identity_id, identity in before.items():
        again = after[identity_id]
        assert (again.name, again.metadata) == (identity.name, identity.metadata)
        sources = sorted(t.source or "" for t in again.templates)
        assert sources == sorted(t.source or "" for t in identity.templates)
    again = run(cli_service, "import", str(exported), "--photos", str(people_dir))
    assert again.code == 0
    assert templates(face) == {
        k: sorted(t.source or "" for t in v.templates) for k, v in after.items()
    }


def test_export_with_faces_reimports_without_the_photos(
    cli_service: ServiceProcess, face: Client, people_dir: Path, tmp_path: Path
) -> None:
    assert has_face_crops(cli_service.url), "the service has no face-crop route"
    if face.list_identities().total == 0:
        assert run(cli_service, "enroll", str(people_dir)).code == 1
    before = templates(face)
    exported = tmp_path / "gallery-faces.jsonl"
    assert run(cli_service, "export", str(exported), "--faces").code == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert all(t["face_jpeg"] for line in lines for t in line["templates"])
    for identity_id in before:
        face.delete_identity(identity_id)

    restored = run(cli_service, "import", str(exported))  # no --photos: from the crops
    assert restored.code == 0, restored.err
    assert templates(face) == before
    # Re-enrolled from 112x112 crops, the templates still recognise the original photos.
    for name in before:
        photo = person_photos(name)[0]
        assert face.verify(photo, name).verified, name


def test_a_wrong_api_key_exits_4(cli_service: ServiceProcess) -> None:
    assert has_key_routes(cli_service.url), "the service has no key routes"
    refused = run(cli_service, "list", key="not-a-valid-key")
    assert refused.code == 4
    assert "HTTP 401" in refused.err
    assert run(cli_service, "list", key=None).code == 4
