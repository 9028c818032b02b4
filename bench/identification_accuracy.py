"""Open-set 1:N identification accuracy of the live service's gallery on ``../shared/faces``.

Usage (from the repository root)::

    .venv/bin/python bench/identification_accuracy.py
    .venv/bin/python bench/identification_accuracy.py --env FACE_GALLERY_EXACT_SEARCH_BELOW=0
    .venv/bin/python bench/identification_accuracy.py --output-json /tmp/identification.json

The service runs as a subprocess (API on port 3800, Triton on 8800-8802) with its gallery in a
temporary ``FACE_DATA_DIR``; ``--env KEY=VALUE`` (repeatable) is passed to every API process.

1. **One template per person**: the first photo (natural sort) of every ``identities/<name>/`` is
   enrolled with ``POST /identities``; a person whose photo is refused (no face, or no single
   subject) is skipped, and so are their other photos. Probes: every other photo of the enrolled
   people (known) and every ``distractors/*.jpg`` (unknown people).
2. **Template scoring**: a second gallery enrolls every photo of each person but the last; the
   last is the known probe, the distractors the unknown ones. Its API runs twice, with
   ``FACE_GALLERY_SCORING=max`` and ``=mean`` (same database, same Triton), to choose the
   scoring; the one-template gallery is reported on the same probes for reference.

Each probe is embedded once with ``POST /embedding`` (the service's most prominent face: the
subject) and identified with ``POST /identify/embedding`` (``top_k`` 5). A probe with no face
(422) is a false reject when known and never a false accept. For known probes:

- top-1: the top candidate is the right person, whatever its similarity;
- at a threshold (the service's default, read from the answers' ``threshold``, and a sweep):
  correct accept (match is the right person), wrong accept (match is someone else), false reject
  (no match); the three add up to 100%;
- for unknown probes: false accept rate (any match).

"CA @ FAR<=1%" is the correct-accept rate at the lowest threshold that lets at most 1% of the
unknown probes through (chosen on these probes, so optimistic). Results are given for LFW and
deepface people together and apart (the distractors are all LFW).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from identification_report import (
    TOP_K,
    Enrollment,
    Probe,
    Run,
    report,
    to_json,
)
from report import log_to_stderr
from service_http import gather_limited, image_part, post_with_retry

from face_service.settings import REPOSITORY_ROOT
from face_service.testing.service_process import ServiceProcess

DEFAULT_FACES_DIR = Path("..") / "shared" / "faces"
SERVICE_PORT = 3800
SCORING_SERVICE_PORT = 3801  # the scoring runs' API processes, on the first one's Triton
TRITON_PORT = 8800  # and the next two
REQUEST_TIMEOUT_S = 120.0
RETRIES_ON_503 = 5
DEEPFACE_PREFIX = "deepface_"
ID_INVALID = re.compile(r"[^A-Za-z0-9._:@-]")

logger = logging.getLogger("bench.identification")


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Person:
    folder: str
    identity_id: str
    photos: list[str]  # relative to the faces folder, natural order

    @property
    def subset(self) -> str:
        return "deepface" if self.folder.startswith(DEEPFACE_PREFIX) else "LFW"


def natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def identity_id_for(folder: str, taken: set[str]) -> str:
    """The folder name as an identity id: [A-Za-z0-9._:@-], alphanumeric first, unique."""
    base = ID_INVALID.sub("-", folder).lstrip("._:@-")[:120] or "person"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    taken.add(candidate)
    return candidate


def read_people(faces_dir: Path) -> list[Person]:
    taken: set[str] = set()
    people = []
    for folder in sorted((faces_dir / "identities").iterdir()):
        if not folder.is_dir():
            continue
        photos = sorted((p.name for p in folder.glob("*.jpg")), key=natural_key)
        if len(photos) >= 2:
            people.append(
                Person(
                    folder.name,
                    identity_id_for(folder.name, taken),
                    [f"identities/{folder.name}/{p}" for p in photos],
                )
            )
    return people


def read_distractors(faces_dir: Path) -> list[str]:
    return sorted(
        (f"distractors/{p.name}" for p in (faces_dir / "distractors").glob("*.jpg")),
        key=natural_key,
    )


# ---------------------------------------------------------------- HTTP


async def embed_images(
    url: str, faces_dir: Path, images: Sequence[str], concurrency: int
) -> dict[str, list[float] | str]:
    """The most prominent face's embedding per image, or the 422 reason (no face)."""
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:

        def job(image: str) -> Callable[[], Awaitable[list[float] | str]]:
            async def embed() -> list[float] | str:
                response = await post_with_retry(
                    client,
                    "/embedding",
                    RETRIES_ON_503,
                    files={"image": image_part(faces_dir / image)},
                )
                if response.status_code == 422:
                    return str(response.json().get("detail"))
                response.raise_for_status()
                return response.json()["embedding"]

            return embed

        results = await gather_limited([job(i) for i in images], concurrency, "embedded")
    return dict(zip(images, results, strict=True))


async def enroll_people(
    url: str,
    faces_dir: Path,
    people: Sequence[Person],
    photos_of: Callable[[Person], list[str]],
    concurrency: int,
) -> Enrollment:
    """POST /identities per person with ``photos_of(person)``."""
    result = Enrollment()
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:

        def job(person: Person) -> Callable[[], Awaitable[None]]:
            async def enroll() -> None:
                photos = photos_of(person)
                files = [("images", image_part(faces_dir / photo)) for photo in photos]
                data = {
                    "identity_id": person.identity_id,
                    "name": person.folder.replace("_", " "),
                    "metadata": json.dumps({"folder": person.folder, "subset": person.subset}),
                }
                response = await post_with_retry(
                    client, "/identities", RETRIES_ON_503, files=files, data=data
                )
                if response.status_code == 422:
                    result.skipped_people[person.folder] = str(response.json().get("detail"))
                    return
                if response.status_code != 201:
                    raise RuntimeError(
                        f"POST /identities for {person.folder}: "
                        f"{response.status_code} {response.text[:500]}"
                    )
                body = response.json()
                result.enrolled[person.identity_id] = len(body["identity"]["templates"])
                for report in body["images"]:
                    if report["status"] != "enrolled":
                        result.skipped_images[photos[report["index"]]] = str(report["reason"])

            return enroll

        await gather_limited([job(p) for p in people], concurrency, "enrolled")
    result.seconds = time.monotonic() - started
    return result


async def identify_probes(
    url: str, probes: Sequence[Probe], embeddings: dict[str, list[float] | str], concurrency: int
) -> float:
    """Fills each probe's candidates from POST /identify/embedding; returns the service's
    default threshold (from the answers)."""
    thresholds: set[float] = set()
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:

        def job(probe: Probe) -> Callable[[], Awaitable[None]]:
            async def identify() -> None:
                embedding = embeddings[probe.image]
                probe.candidates = []
                if isinstance(embedding, str):
                    probe.face = False
                    return
                probe.face = True
                response = await post_with_retry(
                    client,
                    "/identify/embedding",
                    RETRIES_ON_503,
                    json={"embedding": embedding, "top_k": TOP_K},
                )
                response.raise_for_status()
                body = response.json()
                thresholds.add(float(body["threshold"]))
                probe.candidates = [
                    (c["identity_id"], float(c["similarity"]))
                    for c in body["faces"][0]["candidates"]
                ]

            return identify

        await gather_limited([job(p) for p in probes], concurrency, "identified")
    if len(thresholds) != 1:
        raise RuntimeError(f"expected one default threshold in the answers, got {thresholds}")
    return thresholds.pop()


# ---------------------------------------------------------------- the runs


def clone(probes: Sequence[Probe]) -> list[Probe]:
    return [Probe(p.image, p.truth, p.subset) for p in probes]


@contextlib.contextmanager
def api(
    work_dir: Path, env: dict[str, str], *, port: int, triton_url: str | None = None
) -> Iterator[ServiceProcess]:
    """An API process; its own Triton unless ``triton_url`` is given."""
    service = ServiceProcess(
        api_port=port,
        triton_port=None if triton_url else TRITON_PORT,
        triton_url=triton_url,
        work_dir=work_dir,
        env=env,
    )
    logger.info("starting the API on port %d with %s", port, env)
    with service:
        yield service


def evaluate(args: argparse.Namespace, work_dir: Path) -> dict[str, object]:
    faces_dir: Path = args.faces_dir
    people = read_people(faces_dir)
    distractors = read_distractors(faces_dir)
    unknown = [Probe(d, None, "LFW") for d in distractors]
    images = [photo for person in people for photo in person.photos] + distractors
    logger.info(
        "%d people (%d photos), %d distractors",
        len(people),
        len(images) - len(distractors),
        len(distractors),
    )
    base_env = dict(args.env)
    runs: dict[str, Run] = {}

    single_env = {**base_env, "FACE_DATA_DIR": str(work_dir / "single" / "data")}
    with api(work_dir / "single", single_env, port=SERVICE_PORT) as main:
        started = time.monotonic()
        embeddings = asyncio.run(embed_images(main.url, faces_dir, images, args.concurrency))
        embed_seconds = time.monotonic() - started

        # 1. one template per person
        single = asyncio.run(
            enroll_people(main.url, faces_dir, people, lambda p: p.photos[:1], args.concurrency)
        )
        probes = [
            Probe(photo, p.identity_id, p.subset)
            for p in people
            if p.identity_id in single.enrolled
            for photo in p.photos[1:]
        ] + clone(unknown)
        threshold = asyncio.run(identify_probes(main.url, probes, embeddings, 4))
        runs["single"] = Run("1 template (first photo)", single, probes, threshold)

        # 2. every photo but the last, scored max then mean, on the same database and Triton
        multi_dir = work_dir / "multi"
        multi: Enrollment | None = None
        for scoring in ("max", "mean"):
            env = {
                **base_env,
                "FACE_DATA_DIR": str(multi_dir / "data"),
                "FACE_GALLERY_SCORING": scoring,
            }
            with api(
                multi_dir / scoring, env, port=SCORING_SERVICE_PORT, triton_url=main.triton_address
            ) as service:
                if multi is None:
                    multi = asyncio.run(
                        enroll_people(
                            service.url,
                            faces_dir,
                            people,
                            lambda p: p.photos[:-1],
                            args.concurrency,
                        )
                    )
                probes = [
                    Probe(p.photos[-1], p.identity_id, p.subset)
                    for p in people
                    if p.identity_id in multi.enrolled
                ] + clone(unknown)
                threshold = asyncio.run(identify_probes(service.url, probes, embeddings, 4))
            runs[scoring] = Run(f"all but the last photo, {scoring}", multi, probes, threshold)

    no_face = {i: e for i, e in embeddings.items() if isinstance(e, str)}
    return {"runs": runs, "no_face": no_face, "embed_seconds": embed_seconds, "images": images}


# ---------------------------------------------------------------- main


def parse_env(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, val


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--faces-dir",
        type=Path,
        default=DEFAULT_FACES_DIR,
        help="labelled photos (identities/, distractors/); relative paths are from the repository",
    )
    parser.add_argument(
        "--env",
        type=parse_env,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for every API process (repeatable), e.g. FACE_GALLERY_HNSW_EF_SEARCH=200;"
        " FACE_GALLERY_SCORING is set by the scoring runs",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="image requests in flight")
    parser.add_argument("--output-json", type=Path, help="also write metrics and every probe here")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if not args.faces_dir.is_absolute():
        args.faces_dir = (REPOSITORY_ROOT / args.faces_dir).resolve()
    if not (args.faces_dir / "identities").is_dir():
        parser.error(f"{args.faces_dir / 'identities'} not found")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    log_to_stderr()
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="face-identification-") as work_dir:
        result = evaluate(args, Path(work_dir))
    sys.stdout.write(report(result, args))
    if args.output_json:
        args.output_json.write_text(json.dumps(to_json(result), indent=2) + "\n")
        logger.info("wrote %s", args.output_json)


if __name__ == "__main__":
    main()
