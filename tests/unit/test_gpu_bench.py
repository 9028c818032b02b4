"""The GPU run's helpers in bench/: which photos travel within the pack's budget
(bench/gpu_pack.py) and how bench/gpu.py names the wall (bench/gpu_report.py)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

from face_service.settings import REPOSITORY_ROOT


def bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPOSITORY_ROOT / "bench" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def faces_dir(tmp_path: Path) -> Path:
    """LFW photos of 1 kB, deepface photos of 10 and 3 kB, a group photo of 2 kB."""
    files = {
        "identities/A/1.jpg": 1000,
        "identities/A/2.jpg": 1000,
        "identities/deepface_B/1.jpg": 10_000,
        "identities/deepface_B/2.jpg": 3000,
        "identities/deepface_C/1.jpg": 3000,
        "group/g.jpg": 2000,
        "group/dlib_bald_guys.jpg": 5000,
    }
    for name, size in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * size)
    rows = [
        ("identities/A/1.jpg", "identities/A/2.jpg", "1"),
        ("identities/deepface_B/1.jpg", "identities/deepface_B/2.jpg", "1"),
        ("identities/deepface_B/2.jpg", "identities/deepface_C/1.jpg", "0"),
    ]
    with (tmp_path / "pairs.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["img_a", "img_b", "same"])
        writer.writerows(rows)
    return tmp_path


def test_everything_travels_when_it_fits_but_the_collage(tmp_path: Path) -> None:
    pack = bench_module("gpu_pack")
    pairs, names, left_out = pack.choose(faces_dir(tmp_path), budget=20_000)
    assert len(pairs) == 3
    assert left_out == []
    assert "group/g.jpg" in names
    assert "group/dlib_bald_guys.jpg" not in names


def test_the_deepface_photo_of_most_bytes_per_pair_goes_first(tmp_path: Path) -> None:
    pack = bench_module("gpu_pack")
    # 20 kB of photos; B/1 (10 kB, one pair) is the costliest per pair.
    pairs, names, left_out = pack.choose(faces_dir(tmp_path), budget=12_000)
    assert left_out == ["identities/deepface_B/1.jpg"]
    assert [(p["img_a"], p["img_b"]) for p in pairs] == [
        ("identities/A/1.jpg", "identities/A/2.jpg"),
        ("identities/deepface_B/2.jpg", "identities/deepface_C/1.jpg"),
    ]
    assert "identities/deepface_B/1.jpg" not in names


def level(images_s: float, api: float, machine: float, gpu: float | None) -> dict:
    return {
        "concurrency": 64,
        "images_s": images_s,
        "gpu_util": gpu,
        "cores": {"api": api, "triton": 1.0, "clients": 1.0, "machine": machine},
    }


def test_the_wall_is_named_from_the_busiest_resource() -> None:
    report = bench_module("gpu_report")
    cpu = report.wall([level(100, 3, 4, 30), level(600, 12, 15, 40)], cores=16)
    assert "C=64, 600 img/s" in cpu
    assert "20.0 ms CPU per request" in cpu
    assert "the CPU" in cpu
    assert "API processes hold most (80%)" in cpu
    assert "the GPU" in report.wall([level(900, 5, 8, 95)], cores=16)
    assert "neither" in report.wall([level(300, 5, 8, 40)], cores=16)
    assert "GPU n/a" in report.wall([level(300, 5, 8, None)], cores=16)
