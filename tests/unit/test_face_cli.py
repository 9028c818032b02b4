"""The ``face`` CLI's pieces that need no service: exit codes per error, how a folder of people
is read (what is skipped before any upload, and why), and the per-image reasons read out of
the service's 'no usable face' answer. The commands themselves run against the real service in
tests/integration/test_face_cli.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from face_client import errors
from face_client.cli import main, parser
from face_client.cli.common import Exit, UsageError, exit_code
from face_client.cli.enroll import Outcome, batch_reasons, scan, short_reason
from face_client.cli.gallery import read_export


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("bad"), Exit.USAGE),
        (errors.Unauthorized("no key", status=401), Exit.AUTH),
        (errors.Forbidden("scope", status=403), Exit.AUTH),
        (errors.ConnectionFailed("refused"), Exit.UNAVAILABLE),
        (errors.Unavailable("busy", status=503), Exit.UNAVAILABLE),
        (errors.RateLimited("slow down", status=429), Exit.UNAVAILABLE),
        (errors.NotFound("gone", status=404), Exit.API_ERROR),
        (errors.ServerError("bug", status=500), Exit.API_ERROR),
    ],
)
def test_exit_codes(error: Exception, code: Exit) -> None:
    assert exit_code(error) == code


def test_the_exit_codes_are_the_documented_numbers() -> None:
    assert [int(code) for code in Exit] == [0, 1, 2, 3, 4, 5]


def test_an_unreachable_service_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:9", "--retries", "1", "list"]) == 3
    assert "cannot be reached" in capsys.readouterr().err


def test_bad_arguments_are_exit_2() -> None:
    with pytest.raises(SystemExit) as usage:
        main(["enroll"])
    assert usage.value.code == 2


def test_scan_reads_people_and_reports_what_cannot_be_enrolled(tmp_path: Path) -> None:
    (tmp_path / "ada").mkdir()
    (tmp_path / "ada" / "1.jpg").write_bytes(b"x")
    (tmp_path / "ada" / "2.PNG").write_bytes(b"x")
    (tmp_path / "ada" / "notes.txt").write_text("x")
    (tmp_path / "ada" / ".DS_Store").write_text("x")
    (tmp_path / "ada" / "person.json").write_text(
        json.dumps({"name": "Ada", "metadata": {"team": "x"}})
    )
    (tmp_path / "bad name!").mkdir()
    (tmp_path / "bad name!" / "1.jpg").write_bytes(b"x")
    (tmp_path / "loose.jpg").write_bytes(b"x")
    outcome = Outcome()
    people = scan(tmp_path, outcome)
    ada, bad = sorted(people, key=lambda p: p.identity_id)
    assert (ada.identity_id, ada.name, ada.metadata) == ("ada", "Ada", {"team": "x"})
    assert [p.name for p in ada.images] == ["1.jpg", "2.PNG"]
    assert bad.problem is not None
    assert "not a valid identity id" in bad.problem
    assert outcome.lines == [
        {
            "identity_id": "ada",
            "file": "notes.txt",
            "status": "skipped",
            "reason": "not an image file (.txt)",
        }
    ]
    assert outcome.reasons == {"not in a person folder": 1, "not an image file": 1}


def test_a_bad_person_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "ada").mkdir()
    (tmp_path / "ada" / "person.json").write_text('{"name": 3}')
    with pytest.raises(UsageError, match="'name' must be a string"):
        scan(tmp_path, Outcome())


def test_each_image_gets_its_own_reason_from_a_422() -> None:
    detail = (
        "no usable face in any image (images[0]: no face found; "
        "images[1]: 'images[1]' is not an image in a supported format (JPEG, PNG))"
    )
    assert batch_reasons(detail, 2) == [
        "no face found",
        "'images[1]' is not an image in a supported format (JPEG, PNG)",
    ]
    assert batch_reasons("something else", 2) == ["something else", "something else"]
    assert short_reason("file is not an image in a supported format (JPEG, PNG)") == (
        "file is not an image in a supported format"
    )


def test_an_export_is_read_back_into_photos_crops_or_names(tmp_path: Path) -> None:
    (tmp_path / "photos" / "ada").mkdir(parents=True)
    (tmp_path / "photos" / "ada" / "1.jpg").write_bytes(b"photo")
    templates = [
        {"template_id": "t1", "source": "1.jpg", "face_jpeg": None},
        {"template_id": "t2", "source": "2.jpg", "face_jpeg": base64.b64encode(b"crop").decode()},
        {"template_id": "t3", "source": "3.jpg"},
        {"template_id": "t4", "source": None},
    ]
    line = {"identity_id": "ada", "name": "Ada", "metadata": {"a": 1}, "templates": templates}
    export = tmp_path / "gallery.jsonl"
    export.write_text(json.dumps(line) + "\n")
    [person] = read_export(export, tmp_path / "photos", Outcome())
    assert (person.name, person.metadata) == ("Ada", {"a": 1})
    assert [(p.name, p.path is not None, p.data) for p in person.images] == [
        ("1.jpg", True, None),
        ("2.jpg", False, b"crop"),
        ("3.jpg", False, None),
        ("t4.jpg", False, None),
    ]
    assert [p.available for p in person.images] == [True, True, False, False]
    export.write_text('{"name": "no id"}\n')
    with pytest.raises(UsageError, match="not an exported identity"):
        read_export(export, None, Outcome())


@pytest.mark.parametrize(
    "command", [["identify", "p.jpg"], ["compare", "a", "b"], ["extract", "p", "--jsonl", "-"]]
)
def test_photo_commands_take_auto_rotate_or_leave_it_to_the_service(command: list[str]) -> None:
    values = [parser().parse_args([*command, *flag]).auto_rotate for flag in FLAGS]
    assert values == [True, False, None]


FLAGS = (["--auto-rotate"], ["--no-auto-rotate"], [])


def test_enroll_takes_auto_rotate() -> None:
    assert parser().parse_args(["enroll", "dir", "--no-auto-rotate"]).auto_rotate is False
    assert parser().parse_args(["enroll", "dir"]).auto_rotate is None
