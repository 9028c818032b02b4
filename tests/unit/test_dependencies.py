"""The route dependencies hand out what the lifespan put on the app's state."""

from __future__ import annotations

from types import SimpleNamespace

from face_service.api import deps as dependencies


def test_dependencies_read_the_app_state() -> None:
    state = SimpleNamespace(
        pipeline="p",
        enrollment="e",
        admission="a",
        identification="i",
        gallery="the gallery",
        triton="t",
        settings="s",
    )
    request = SimpleNamespace(app=SimpleNamespace(state=state))
    assert dependencies.get_pipeline(request) == "p"
    assert dependencies.get_enrollment(request) == "e"
    assert dependencies.get_admission(request) == "a"
    assert dependencies.get_identification(request) == "i"
    assert dependencies.get_gallery(request) == "the gallery"
    assert dependencies.get_triton(request) == "t"
    assert dependencies.get_app_settings(request) == "s"
