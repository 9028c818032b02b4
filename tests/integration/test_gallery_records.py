"""Detection records on every backend: saved, found by filename, read and deleted."""

from __future__ import annotations

import pytest

from face_service.errors import RecordNotFoundError
from face_service.gallery import Gallery, RecordFace
from tests.integration.gallery_support import is_utc, is_uuid_hex


def test_records_are_saved_found_and_deleted(gallery: Gallery) -> None:
    face = RecordFace(
        bbox=[1.5, 2.0, 30.25, 40.0],
        det_score=0.875,
        landmarks=[[1.0, 2.0], [3.0, 4.0]],
        embedding=[0.5, -0.25, 0.125],
    )
    first = gallery.save_record(
        filename="Holiday/Beach.JPG", width=640, height=480, channels=3, faces=[face]
    )
    second = gallery.save_record(filename="beach2.png", width=10, height=20, channels=1, faces=[])
    third = gallery.save_record(filename="office.jpg", width=1, height=1, channels=3, faces=[])
    assert is_uuid_hex(first.record_id)
    assert is_utc(first.created_at)
    assert first.faces == [face]
    assert gallery.get_record(record_id=first.record_id) == first

    assert gallery.find_records(filename_contains="BEACH", offset=0, limit=10) == (
        [first, second],
        2,
    )
    assert gallery.find_records(filename_contains="beach", offset=1, limit=10) == ([second], 2)
    assert gallery.find_records(filename_contains=None, offset=0, limit=2) == (
        [first, second],
        3,
    )
    assert gallery.find_records(filename_contains="nothing", offset=0, limit=2) == ([], 0)

    gallery.delete_record(record_id=second.record_id)
    with pytest.raises(RecordNotFoundError) as raised:
        gallery.get_record(record_id=second.record_id)
    assert raised.value.status_code == 404
    with pytest.raises(RecordNotFoundError):
        gallery.delete_record(record_id=second.record_id)
    assert gallery.find_records(filename_contains=None, offset=0, limit=10) == (
        [first, third],
        2,
    )
