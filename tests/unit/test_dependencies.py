"""The route dependencies hand out what the lifespan put on the app's state."""

from __future__ import annotations

import asyncio
import inspect
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
    expected = {
        dependencies.get_pipeline: "p",
        dependencies.get_enrollment: "e",
        dependencies.get_admission: "a",
        dependencies.get_identification: "i",
        dependencies.get_gallery: "the gallery",
        dependencies.get_triton: "t",
        dependencies.get_app_settings: "s",
    }
    for dependency, value in expected.items():
        # async: FastAPI runs a plain def dependency in a worker thread, a hop per dependency
        # and request for a lookup of an attribute
        assert inspect.iscoroutinefunction(dependency)
        assert asyncio.run(dependency(request)) == value
