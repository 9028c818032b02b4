"""Face counts of the group photos in ``../shared/faces/group`` under every service
configuration of bench/latency.py (runtime, precision, detector canvas): the accuracy gate's
"every group photo's face count unchanged" for a change of runtime, precision or canvas.

Usage (from the repository root)::

    .venv/bin/python bench/group_counts.py                    # all configurations
    .venv/bin/python bench/group_counts.py --services "openvino fp32 fixed,openvino bf16 fit"

Each configuration's service is started on free ports and sent every photo once through
``POST /extract`` (default options); the table shows the faces each found, the expected count of
``group_photos.csv`` where it states one, and whether every configuration agrees with the first.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import httpx
from latency import CONFIGURATIONS, parse_services, service_clients

GROUP_DIR = Path("..") / "shared" / "faces"


def face_count(client: httpx.Client, path: Path) -> int:
    response = client.post("/extract", files=[("images", (path.name, path.read_bytes()))])
    response.raise_for_status()
    [image] = response.json()["images"]
    return len(image["faces"]) if image["status"] == "ok" else 0


def expected_counts() -> dict[str, str]:
    with (GROUP_DIR / "group_photos.csv").open(newline="") as file:
        return {row["file"]: row["expected_faces"] for row in csv.DictReader(file)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=parse_services, default=list(CONFIGURATIONS))
    arguments = parser.parse_args(argv)
    arguments.url = None
    photos = sorted((GROUP_DIR / "group").glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no photos in {GROUP_DIR / 'group'}: run from the repository root")
    expected = expected_counts()
    with service_clients(arguments) as clients:
        counts = {
            label: [face_count(client, photo) for photo in photos]
            for label, client in clients.items()
        }
    labels = list(counts)
    sys.stdout.write("photo\texpected\t" + "\t".join(labels) + "\tsame\n")
    changed = 0
    for index, photo in enumerate(photos):
        row = [counts[label][index] for label in labels]
        same = len(set(row)) == 1
        changed += not same
        stated = expected.get(f"group/{photo.name}", "") or "-"
        cells = "\t".join(str(count) for count in row)
        sys.stdout.write(f"{photo.name}\t{stated}\t{cells}\t{'yes' if same else 'NO'}\n")
    sys.stdout.write(f"\n{len(photos)} photos, {changed} with a count that differs\n")


if __name__ == "__main__":
    main()
