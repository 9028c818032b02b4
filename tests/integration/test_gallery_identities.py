"""The gallery's identities and templates, on every backend (the ``store`` fixture): create,
get, list, update, delete, add and delete templates, merge."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from face_service.errors import IdentityExistsError, IdentityNotFoundError, TemplateNotFoundError
from face_service.gallery import NO_TEMPLATE_SIMILARITY, Gallery
from tests.integration.gallery_support import axis, enroll, is_utc, is_uuid_hex


def test_create_then_get_returns_the_same_identity(gallery: Gallery) -> None:
    before = datetime.now(UTC)
    created = gallery.create_identity(
        identity_id=None,
        name="Alice",
        metadata={"team": "red", "level": 3, "tags": ["a", "b"]},
        embeddings=np.stack([axis(0), axis(1)]),
        sources=["alice1.jpg", None],
    )
    assert is_uuid_hex(created.identity_id)
    assert created.name == "Alice"
    assert created.metadata == {"team": "red", "level": 3, "tags": ["a", "b"]}
    assert [t.source for t in created.templates] == ["alice1.jpg", None]
    assert all(is_uuid_hex(t.template_id) for t in created.templates)
    assert is_utc(created.created_at)
    assert is_utc(created.updated_at)
    assert before <= created.created_at <= datetime.now(UTC)
    fetched = gallery.get_identity(identity_id=created.identity_id)
    assert fetched == created
    assert not hasattr(fetched.templates[0], "embedding")
    assert gallery.count() == (1, 2)


def test_a_given_id_is_kept_and_a_taken_id_is_refused_without_writing(gallery: Gallery) -> None:
    enroll(gallery, axis(0), identity_id="alice", name="Alice")
    with pytest.raises(IdentityExistsError) as raised:
        enroll(gallery, axis(1), axis(2), identity_id="alice", name="Other")
    assert raised.value.status_code == 409
    assert gallery.count() == (1, 1)
    assert gallery.get_identity(identity_id="alice").name == "Alice"
    assert [m.identity_id for m in gallery.search(axis(1), top_k=5)] == ["alice"]
    assert gallery.search(axis(1), top_k=5)[0].similarity == pytest.approx(0.0, abs=1e-6)


def test_an_identity_may_start_without_templates(gallery: Gallery) -> None:
    identity_id = enroll(gallery, name="Nobody")
    assert gallery.get_identity(identity_id=identity_id).templates == []
    assert gallery.count() == (1, 0)
    assert gallery.search(axis(0), top_k=3) == []
    assert gallery.similarity(axis(0), identity_id=identity_id) == NO_TEMPLATE_SIMILARITY


def test_list_pages_in_creation_order_and_filters_names_case_insensitively(
    gallery: Gallery,
) -> None:
    names = ["Alice", "alicia", "Bob", None, "ÉLODIE", "Malik"]
    ids = [enroll(gallery, axis(i), name=name) for i, name in enumerate(names)]
    page, total = gallery.list_identities(offset=0, limit=2, name_contains=None)
    assert total == 6
    assert [i.identity_id for i in page] == ids[:2]
    assert [len(i.templates) for i in page] == [1, 1]
    page, total = gallery.list_identities(offset=2, limit=3, name_contains=None)
    assert (total, [i.identity_id for i in page]) == (6, ids[2:5])
    page, total = gallery.list_identities(offset=5, limit=10, name_contains=None)
    assert (total, [i.name for i in page]) == (6, ["Malik"])
    assert gallery.list_identities(offset=10, limit=10, name_contains=None) == ([], 6)

    page, total = gallery.list_identities(offset=0, limit=10, name_contains="ALI")
    assert (total, [i.name for i in page]) == (3, ["Alice", "alicia", "Malik"])
    page, total = gallery.list_identities(offset=1, limit=1, name_contains="ali")
    assert (total, [i.name for i in page]) == (3, ["alicia"])
    page, total = gallery.list_identities(offset=0, limit=10, name_contains="élo")
    assert (total, [i.name for i in page]) == (1, ["ÉLODIE"])
    assert gallery.list_identities(offset=0, limit=10, name_contains="zz") == ([], 0)
    assert gallery.list_identities(offset=0, limit=0, name_contains=None) == ([], 6)
    with pytest.raises(ValueError, match="offset"):
        gallery.list_identities(offset=-1, limit=10, name_contains=None)


def test_update_sets_only_what_is_given(gallery: Gallery) -> None:
    identity_id = enroll(gallery, axis(0), name="Alice", metadata={"a": 1})
    created = gallery.get_identity(identity_id=identity_id)

    renamed = gallery.update_identity(identity_id=identity_id, name="Alicia")
    assert (renamed.name, renamed.metadata) == ("Alicia", {"a": 1})
    assert renamed.updated_at > created.updated_at
    assert renamed.created_at == created.created_at
    assert renamed.templates == created.templates

    retagged = gallery.update_identity(identity_id=identity_id, metadata={"b": [1, 2]})
    assert (retagged.name, retagged.metadata) == ("Alicia", {"b": [1, 2]})

    unnamed = gallery.update_identity(identity_id=identity_id, name=None)
    assert (unnamed.name, unnamed.metadata) == (None, {"b": [1, 2]})
    assert gallery.get_identity(identity_id=identity_id) == unnamed
    assert gallery.search(axis(0), top_k=1)[0].name is None

    with pytest.raises(IdentityNotFoundError) as raised:
        gallery.update_identity(identity_id="missing", name="x")
    assert raised.value.status_code == 404


def test_delete_identity_and_delete_all(gallery: Gallery) -> None:
    first = enroll(gallery, axis(0), axis(1))
    second = enroll(gallery, axis(2))
    enroll(gallery, axis(3))
    record = gallery.save_record(filename="a.jpg", width=1, height=1, channels=3, faces=[])

    gallery.delete_identity(identity_id=first)
    with pytest.raises(IdentityNotFoundError):
        gallery.get_identity(identity_id=first)
    with pytest.raises(IdentityNotFoundError):
        gallery.delete_identity(identity_id=first)
    assert gallery.count() == (2, 2)
    assert gallery.search(axis(2), top_k=10)[0].identity_id == second
    assert first not in {m.identity_id for m in gallery.search(axis(0), top_k=10)}

    assert gallery.delete_all() == 2
    assert gallery.count() == (0, 0)
    assert gallery.search(axis(2), top_k=10) == []
    assert gallery.list_identities(offset=0, limit=10, name_contains=None) == ([], 0)
    assert gallery.delete_all() == 0
    assert gallery.get_record(record_id=record.record_id) == record  # records are kept
    # The gallery still works after being emptied.
    third = enroll(gallery, axis(4))
    assert gallery.search(axis(4), top_k=1)[0].identity_id == third


def test_templates_are_added_in_order_and_deleted(gallery: Gallery) -> None:
    identity_id = enroll(gallery, axis(0), sources=["first.jpg"])
    other = enroll(gallery, axis(9))
    first = gallery.get_identity(identity_id=identity_id).templates[0]

    added = gallery.add_templates(
        identity_id=identity_id,
        embeddings=np.stack([axis(1), axis(2)]),
        sources=["second.jpg", None],
    )
    assert [t.source for t in added.templates] == ["first.jpg", "second.jpg", None]
    assert added.templates[0] == first
    assert len({t.template_id for t in added.templates}) == 3
    assert gallery.count() == (2, 4)
    assert gallery.similarity(axis(2), identity_id=identity_id) == pytest.approx(1.0, abs=1e-6)

    second = added.templates[1].template_id
    after = gallery.delete_template(identity_id=identity_id, template_id=second)
    assert [t.source for t in after.templates] == ["first.jpg", None]
    assert gallery.similarity(axis(1), identity_id=identity_id) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(TemplateNotFoundError) as raised:
        gallery.delete_template(identity_id=identity_id, template_id=second)
    assert raised.value.status_code == 404
    other_template = gallery.get_identity(identity_id=other).templates[0].template_id
    with pytest.raises(TemplateNotFoundError):
        gallery.delete_template(identity_id=identity_id, template_id=other_template)
    with pytest.raises(IdentityNotFoundError):
        gallery.delete_template(identity_id="missing", template_id=other_template)
    with pytest.raises(IdentityNotFoundError):
        gallery.add_templates(identity_id="missing", embeddings=axis(0)[None], sources=[None])
    assert gallery.count() == (2, 3)

    # The last templates go; the identity stays, without templates, and no longer matches.
    for template in after.templates:
        gallery.delete_template(identity_id=identity_id, template_id=template.template_id)
    assert gallery.get_identity(identity_id=identity_id).templates == []
    assert gallery.similarity(axis(0), identity_id=identity_id) == NO_TEMPLATE_SIMILARITY
    assert [m.identity_id for m in gallery.search(axis(0), top_k=10)] == [other]
    assert gallery.count() == (2, 1)


def test_merge_moves_templates_and_deletes_the_source(gallery: Gallery) -> None:
    target = enroll(gallery, axis(0), axis(1), name="Target")
    source = enroll(gallery, axis(2), name="Source")
    bystander = enroll(gallery, axis(3))
    source_templates = gallery.get_identity(identity_id=source).templates
    target_templates = gallery.get_identity(identity_id=target).templates

    merged = gallery.merge(target_id=target, source_id=source)
    assert (merged.identity_id, merged.name) == (target, "Target")
    assert {t.template_id for t in merged.templates} == {
        t.template_id for t in target_templates + source_templates
    }
    assert set(source_templates) <= set(merged.templates)  # ids and creation times kept
    with pytest.raises(IdentityNotFoundError):
        gallery.get_identity(identity_id=source)
    assert gallery.count() == (2, 4)
    best = gallery.search(axis(2), top_k=5)[0]
    assert (best.identity_id, best.name) == (target, "Target")
    assert best.similarity == pytest.approx(1.0, abs=1e-6)

    with pytest.raises(ValueError, match="itself"):
        gallery.merge(target_id=target, source_id=target)
    with pytest.raises(IdentityNotFoundError):
        gallery.merge(target_id=target, source_id=source)
    with pytest.raises(IdentityNotFoundError):
        gallery.merge(target_id="missing", source_id=bystander)
    assert gallery.count() == (2, 4)
    assert len(gallery.get_identity(identity_id=bystander).templates) == 1
