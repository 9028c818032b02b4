"""Chooses the photos that travel to the GPU machine with bench/gpu_run.sh and copies them into
the pack folder (``.gpu/faces``, git-ignored), within what is left of the 64 MiB that one call
of the device tool carries (the checkout and the rest of the pack count too).

Usage (bench/gpu_pack.sh runs it)::

    python bench/gpu_pack.py --faces-dir ../shared/faces --pack .gpu --budget-bytes 17000000

Every LFW photo of ``pairs.csv`` travels (the one-face load and the LFW accuracy figures), and the
group photos but the collage ``dlib_bald_guys.jpg`` (650 KB of one photo). deepface's photos are
large (11.3 MB for 52): when they do not all fit, the ones with the most bytes per pair they
appear in are left out, one by one, and with them their pairs; the pack's ``pairs.csv`` holds the
pairs whose photos travel, and the choice is printed. Photos are copied into the ignored pack at
run-prep time only, never into the repository.
"""

from __future__ import annotations

import argparse
import collections
import csv
import shutil
import sys
from pathlib import Path

DEEPFACE_PREFIX = "identities/deepface_"
# One collage of many faces (a face-clustering test of dlib's): 43 % of the group photos' bytes.
LEFT_OUT_GROUP = ("dlib_bald_guys.jpg",)


def choose(faces_dir: Path, budget: int) -> tuple[list[dict[str, str]], list[str], list[str]]:
    """The pairs that travel, the photos (paths relative to faces_dir) and the deepface photos
    left out, for at most ``budget`` bytes of photos."""
    with (faces_dir / "pairs.csv").open(newline="") as file:
        pairs = list(csv.DictReader(file))
    group = [
        f"group/{p.name}"
        for p in sorted((faces_dir / "group").glob("*.jpg"))
        if p.name not in LEFT_OUT_GROUP
    ]
    photos = {name for pair in pairs for name in (pair["img_a"], pair["img_b"])}
    size = {name: (faces_dir / name).stat().st_size for name in [*photos, *group]}
    uses = collections.Counter(name for pair in pairs for name in (pair["img_a"], pair["img_b"]))
    total = sum(size.values())
    left_out: list[str] = []
    deepface = sorted(
        (name for name in photos if name.startswith(DEEPFACE_PREFIX)),
        key=lambda name: (-size[name] / uses[name], name),
    )
    for name in deepface:
        if total <= budget:
            break
        left_out.append(name)
        total -= size[name]
    if total > budget:
        raise SystemExit(f"the photos need {total} bytes even without deepface's; {budget} left")
    kept = [p for p in pairs if p["img_a"] not in left_out and p["img_b"] not in left_out]
    names = sorted({n for p in kept for n in (p["img_a"], p["img_b"])} | set(group))
    return kept, names, left_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces-dir", type=Path, required=True)
    parser.add_argument("--pack", type=Path, required=True)
    parser.add_argument("--budget-bytes", type=int, required=True)
    arguments = parser.parse_args()
    pairs, names, left_out = choose(arguments.faces_dir, arguments.budget_bytes)
    target = arguments.pack / "faces"
    shutil.rmtree(target, ignore_errors=True)
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(arguments.faces_dir / name, target / name)
    with (target / "pairs.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(pairs[0]))
        writer.writeheader()
        writer.writerows(pairs)
    deepface = [p for p in pairs if p["img_a"].startswith(DEEPFACE_PREFIX)]
    sys.stdout.write(
        f"photos: {len(names)} ({sum((target / n).stat().st_size for n in names)} bytes); "
        f"pairs: {len(pairs)} ({len(pairs) - len(deepface)} LFW, {len(deepface)} deepface); "
        f"left out: {', '.join(left_out) or 'none'}, group/{', group/'.join(LEFT_OUT_GROUP)}\n"
    )


if __name__ == "__main__":
    main()
