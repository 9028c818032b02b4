"""Templates' face crops (thumbnails) in both gallery backends: stored with create_identity and
add_templates, read back per template, gone with the template, the identity and delete_all,
kept through a merge; a template without one reads None."""

from __future__ import annotations

import pytest

from face_service.errors import TemplateNotFoundError
from face_service.gallery import Gallery
from tests.integration.gallery_support import axis, enroll


def test_face_crops_follow_their_templates(gallery: Gallery) -> None:
    alice = enroll(gallery, axis(0), axis(1), face_crops=[b"\xff\xd8alice0", None])
    first, second = gallery.get_identity(identity_id=alice).templates
    assert gallery.face_crop(identity_id=alice, template_id=first.template_id) == b"\xff\xd8alice0"
    assert gallery.face_crop(identity_id=alice, template_id=second.template_id) is None

    grown = gallery.add_templates(
        identity_id=alice, embeddings=axis(2)[None], sources=["c.jpg"], face_crops=[b"third"]
    )
    third = grown.templates[-1].template_id
    assert gallery.face_crop(identity_id=alice, template_id=third) == b"third"

    bob = enroll(gallery, axis(3), face_crops=[b"bob"])
    bob_template = gallery.get_identity(identity_id=bob).templates[0].template_id
    with pytest.raises(TemplateNotFoundError):  # another identity's template
        gallery.face_crop(identity_id=alice, template_id=bob_template)
    gallery.merge(target_id=alice, source_id=bob)
    assert gallery.face_crop(identity_id=alice, template_id=bob_template) == b"bob"

    gallery.delete_template(identity_id=alice, template_id=first.template_id)
    with pytest.raises(TemplateNotFoundError):
        gallery.face_crop(identity_id=alice, template_id=first.template_id)
    gallery.delete_identity(identity_id=alice)
    carol = enroll(gallery, axis(4), face_crops=[b"carol"])
    assert gallery.delete_all() == 1
    assert carol
    with pytest.raises(TemplateNotFoundError):
        gallery.face_crop(identity_id=alice, template_id=third)


def test_face_crops_must_be_one_per_template(gallery: Gallery) -> None:
    with pytest.raises(ValueError, match="2 face crops for 1 templates"):
        enroll(gallery, axis(0), face_crops=[b"a", b"b"])
    assert gallery.count() == (0, 0)  # checked before anything is written
