"""Fixtures both tiers use. The tiers: tests/unit (no Triton, no database: seconds) and
tests/integration (the real Triton with the real models, a real PostgreSQL; its own conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.photos import wheel_photos


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """Real photos shipped in the wheels, by name."""
    return wheel_photos()
