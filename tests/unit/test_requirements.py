"""The requirement files install what they promise: every line of requirements.txt,
requirements-dev.txt and requirements-gpu.txt parses as a requirement pinned with ``==`` (or
includes another of these files), no package is pinned twice, and the GPU file adds the torch
path's packages to the service's own."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from face_service.settings import REPOSITORY_ROOT

FILES = ("requirements.txt", "requirements-dev.txt", "requirements-gpu.txt")


def read_pins(name: str) -> dict[str, str]:
    """Package -> pinned version of one file and the files it includes (``-r``)."""
    pins: dict[str, str] = {}
    for number, raw in enumerate((REPOSITORY_ROOT / name).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            included = line.removeprefix("-r ").strip()
            assert included in FILES, f"{name}:{number} includes an unknown file {included}"
            for package, version in read_pins(included).items():
                assert package not in pins, f"{package} pinned twice (through {included})"
                pins[package] = version
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert [s.operator for s in specifiers] == ["=="], f"{name}:{number} is not pinned: {raw}"
        package = canonicalize_name(requirement.name)
        assert package not in pins, f"{name}:{number} pins {package} again"
        pins[package] = specifiers[0].version
    return pins


@pytest.mark.parametrize("name", FILES)
def test_every_requirement_is_pinned_once(name: str) -> None:
    pins = read_pins(name)
    assert pins
    assert all(version[0].isdigit() for version in pins.values())


def test_gpu_requirements_add_the_torch_path_to_the_service() -> None:
    service = read_pins("requirements.txt")
    gpu = read_pins("requirements-gpu.txt")
    assert {key: gpu[key] for key in service} == service  # the service's pins, unchanged
    added = set(gpu) - set(service)
    assert added == {"torch", "torchvision", "onnx2torch"}
    assert gpu["onnx2torch"] == "1.5.15"


def test_the_gpu_file_is_where_the_readme_says() -> None:
    readme = (REPOSITORY_ROOT / "README.md").read_text()
    assert "pip install -r requirements-gpu.txt" in readme
