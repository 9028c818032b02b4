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
import mimetypes
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from report import log_to_stderr

from face_service.settings import REPOSITORY_ROOT
from face_service.testing.service_process import ServiceProcess

DEFAULT_FACES_DIR = Path("..") / "shared" / "faces"
SERVICE_PORT = 3800
SCORING_SERVICE_PORT = 3801  # the scoring runs' API processes, on the first one's Triton
TRITON_PORT = 8800  # and the next two
REQUEST_TIMEOUT_S = 120.0
RETRIES_ON_503 = 5
TOP_K = 5
TARGET_FAR = 0.01
SWEEP = np.round(np.arange(0.20, 0.5001, 0.02), 2)
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


@dataclass
class Probe:
    image: str
    truth: str | None  # the identity id, or None for an unknown person
    subset: str
    face: bool = True
    candidates: list[tuple[str, float]] = field(default_factory=list)  # (identity_id, similarity)


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


def image_part(faces_dir: Path, image: str) -> tuple[str, bytes, str]:
    path = faces_dir / image
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, path.read_bytes(), content_type


async def post_with_retry(
    client: httpx.AsyncClient, endpoint: str, **kwargs: object
) -> httpx.Response:
    """POSTs, retrying while the service answers 503 (busy, or a model unavailable)."""
    for _ in range(RETRIES_ON_503):
        response = await client.post(endpoint, **kwargs)  # type: ignore[arg-type]
        if response.status_code != 503:
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return await client.post(endpoint, **kwargs)  # type: ignore[arg-type]


async def gather_limited(
    jobs: Sequence[Callable[[], object]], concurrency: int, what: str
) -> list[object]:
    """Runs the coroutine factories ``jobs``, ``concurrency`` at a time, logging progress."""
    limit = asyncio.Semaphore(concurrency)
    done = 0

    async def run(job: Callable[[], object]) -> object:
        nonlocal done
        async with limit:
            result = await job()  # type: ignore[misc]
        done += 1
        if done % 100 == 0 or done == len(jobs):
            logger.info("%s: %d/%d", what, done, len(jobs))
        return result

    return list(await asyncio.gather(*(run(job) for job in jobs)))


async def embed_images(
    url: str, faces_dir: Path, images: Sequence[str], concurrency: int
) -> dict[str, list[float] | str]:
    """The most prominent face's embedding per image, or the 422 reason (no face)."""
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:

        def job(image: str) -> Callable[[], object]:
            async def embed() -> list[float] | str:
                response = await post_with_retry(
                    client, "/embedding", files={"image": image_part(faces_dir, image)}
                )
                if response.status_code == 422:
                    return str(response.json().get("detail"))
                response.raise_for_status()
                return response.json()["embedding"]

            return embed

        results = await gather_limited([job(i) for i in images], concurrency, "embedded")
    return dict(zip(images, results, strict=True))  # type: ignore[arg-type]


@dataclass
class Enrollment:
    enrolled: dict[str, int] = field(default_factory=dict)  # identity id -> templates
    skipped_people: dict[str, str] = field(default_factory=dict)  # folder -> reason
    skipped_images: dict[str, str] = field(default_factory=dict)  # image -> reason
    seconds: float = 0.0


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

        def job(person: Person) -> Callable[[], object]:
            async def enroll() -> None:
                photos = photos_of(person)
                files = [("images", image_part(faces_dir, photo)) for photo in photos]
                data = {
                    "identity_id": person.identity_id,
                    "name": person.folder.replace("_", " "),
                    "metadata": json.dumps({"folder": person.folder, "subset": person.subset}),
                }
                response = await post_with_retry(client, "/identities", files=files, data=data)
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

        def job(probe: Probe) -> Callable[[], object]:
            async def identify() -> None:
                embedding = embeddings[probe.image]
                probe.candidates = []
                if isinstance(embedding, str):
                    probe.face = False
                    return
                probe.face = True
                response = await post_with_retry(
                    client, "/identify/embedding", json={"embedding": embedding, "top_k": TOP_K}
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


# ---------------------------------------------------------------- metrics


@dataclass
class Rates:
    known: int
    known_no_face: int
    unknown: int
    unknown_no_face: int
    top1: float
    rank5: float
    threshold: float
    correct_accept: float
    wrong_accept: float
    false_reject: float
    false_accept: float  # of the unknown probes


def rates(probes: Sequence[Probe], threshold: float) -> Rates:
    known = [p for p in probes if p.truth is not None]
    unknown = [p for p in probes if p.truth is None]

    def top(p: Probe) -> tuple[str | None, float]:
        return p.candidates[0] if p.candidates else (None, -2.0)

    def share(flags: list[bool]) -> float:
        return float(np.mean(flags)) if flags else float("nan")

    return Rates(
        known=len(known),
        known_no_face=sum(not p.face for p in known),
        unknown=len(unknown),
        unknown_no_face=sum(not p.face for p in unknown),
        top1=share([top(p)[0] == p.truth for p in known]),
        rank5=share([p.truth in {c[0] for c in p.candidates} for p in known]),
        threshold=threshold,
        correct_accept=share([top(p)[0] == p.truth and top(p)[1] >= threshold for p in known]),
        wrong_accept=share([top(p)[0] != p.truth and top(p)[1] >= threshold for p in known]),
        false_reject=share([top(p)[1] < threshold for p in known]),
        false_accept=share([top(p)[1] >= threshold for p in unknown]),
    )


def far_threshold(probes: Sequence[Probe], far: float = TARGET_FAR) -> float:
    """The lowest threshold that accepts at most ``far`` of the unknown probes."""
    scores = np.sort([p.candidates[0][1] for p in probes if p.truth is None and p.candidates])[::-1]
    unknown = sum(p.truth is None for p in probes)
    allowed = int(np.floor(far * unknown + 1e-9))
    if allowed >= len(scores):
        return -1.0
    return float(np.nextafter(scores[allowed], np.inf))


def subsets(probes: Sequence[Probe]) -> dict[str, list[Probe]]:
    """all / LFW / deepface; the unknown probes (LFW distractors) go with all and LFW."""
    return {
        "all": list(probes),
        "LFW": [p for p in probes if p.subset == "LFW"],
        "deepface": [p for p in probes if p.subset == "deepface"],
    }


# ---------------------------------------------------------------- report


def pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        return "  ".join(
            [first, *(str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]
        )

    return [line(header), "-" * len(line(header)), *(line(r) for r in rows)]


def metric_rows(columns: dict[str, list[Probe]], threshold: float) -> list[list[str]]:
    at = {name: rates(probes, threshold) for name, probes in columns.items()}
    far_at = {name: far_threshold(probes) for name, probes in columns.items()}
    ca_at_far = {
        name: rates(probes, far_at[name]).correct_accept if far_at[name] > -1 else float("nan")
        for name, probes in columns.items()
    }
    values = list(at.values())

    def counted(share: float, total: int) -> str:
        return "-" if np.isnan(share) else f"{pct(share)} ({round(share * total)})"

    return [
        ["known probes (no face)", *(f"{r.known} ({r.known_no_face})" for r in values)],
        ["unknown probes (no face)", *(f"{r.unknown} ({r.unknown_no_face})" for r in values)],
        ["top-1 accuracy", *(pct(r.top1) for r in values)],
        [f"in top {TOP_K}", *(pct(r.rank5) for r in values)],
        [
            f"at threshold {threshold:.2f}: correct accept",
            *(counted(r.correct_accept, r.known) for r in values),
        ],
        ["  wrong accept", *(counted(r.wrong_accept, r.known) for r in values)],
        ["  false reject", *(counted(r.false_reject, r.known) for r in values)],
        ["  unknown: false accept (FAR)", *(counted(r.false_accept, r.unknown) for r in values)],
        [f"CA @ FAR<={100 * TARGET_FAR:.0f}%", *(pct(v) for v in ca_at_far.values())],
        ["  at threshold", *(f"{far_at[n]:.3f}" if far_at[n] > -1 else "-" for n in columns)],
    ]


def sweep_rows(columns: dict[str, list[Probe]]) -> tuple[list[str], list[list[str]]]:
    header = ["thr"]
    for name in columns:
        header += [f"{name} CA", "WA", "FR", "FAR"]
    rows = []
    for threshold in SWEEP:
        row = [f"{threshold:.2f}"]
        for probes in columns.values():
            r = rates(probes, float(threshold))
            row += [pct(r.correct_accept), pct(r.wrong_accept), pct(r.false_reject)]
            row.append(pct(r.false_accept))
        rows.append(row)
    return header, rows


def enrollment_lines(title: str, enrollment: Enrollment) -> list[str]:
    templates = sum(enrollment.enrolled.values())
    lines = [
        f"{title}: {len(enrollment.enrolled)} people enrolled ({templates} templates) in "
        f"{enrollment.seconds:.0f} s; skipped: {len(enrollment.skipped_people)} people, "
        f"{len(enrollment.skipped_images)} more images"
    ]
    lines += [f"  skipped {f}: {r}" for f, r in sorted(enrollment.skipped_people.items())]
    lines += [f"  image skipped {i}: {r}" for i, r in sorted(enrollment.skipped_images.items())]
    return lines


# ---------------------------------------------------------------- the runs


@dataclass
class Run:
    name: str
    enrollment: Enrollment
    probes: list[Probe]
    threshold: float


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


def report(result: dict[str, object], args: argparse.Namespace) -> str:
    runs: dict[str, Run] = result["runs"]  # type: ignore[assignment]
    no_face: dict[str, str] = result["no_face"]  # type: ignore[assignment]
    images: list[str] = result["images"]  # type: ignore[assignment]
    single, by_max, by_mean = runs["single"], runs["max"], runs["mean"]
    threshold = single.threshold
    lines = [
        f"Open-set identification, {args.faces_dir}",
        f"{len(images)} images embedded with POST /embedding in "
        f"{float(result['embed_seconds']):.0f} s; no face in {len(no_face)}"  # type: ignore[arg-type]
        + "".join(f"\n  {i}: {r}" for i, r in sorted(no_face.items())),
        f"service threshold (from /identify/embedding): {threshold:.3f}"
        + (f"; --env {' '.join(f'{k}={v}' for k, v in args.env)}" if args.env else ""),
        "",
        "== 1. one template per person (first photo); probes: every other photo + distractors",
        *enrollment_lines("enrollment", single.enrollment),
        "",
        *table(["", "all", "LFW", "deepface"], metric_rows(subsets(single.probes), threshold)),
        "",
        "threshold sweep (all people; CA correct accept, WA wrong accept, FR false reject of",
        "known probes; FAR: unknown probes accepted)",
        *table(*sweep_rows({"1-template": single.probes})),
        "",
        "== 2. template scoring: every photo but the last enrolled; probes: the last photo +",
        "distractors (the one-template gallery on the same probes for reference)",
        *enrollment_lines("enrollment", by_max.enrollment),
        "",
    ]
    # The same known probes in the three columns: people enrolled in both galleries.
    common = set(single.enrollment.enrolled) & set(by_max.enrollment.enrolled)
    last_photo = {p.image for p in by_max.probes if p.truth is not None}

    def keep(probes: list[Probe]) -> list[Probe]:
        return [
            p for p in probes if p.truth is None or (p.truth in common and p.image in last_photo)
        ]

    columns = {
        "1 template": keep(single.probes),
        "multi, max": keep(by_max.probes),
        "multi, mean": keep(by_mean.probes),
    }
    for subset in ("all", "LFW", "deepface"):
        lines.append(f"-- {subset}")
        lines += table(
            ["", *columns],
            metric_rows({n: subsets(p)[subset] for n, p in columns.items()}, by_max.threshold),
        )
        lines.append("")
    lines += [
        "threshold sweep, multi-template gallery (all people)",
        *table(*sweep_rows({"max": columns["multi, max"], "mean": columns["multi, mean"]})),
        "",
    ]
    lines.append(
        f"SCORING COMPARISON (multi-template gallery, all people, {len(columns['multi, max'])} "
        "probes):"
    )
    for name, run in (("max", by_max), ("mean", by_mean)):
        probes = columns[f"multi, {name}"]
        r = rates(probes, run.threshold)
        at_far = far_threshold(probes)
        lines.append(
            f"  {name:<4}: top-1 {pct(r.top1)}; at threshold {run.threshold:.2f}: correct accept "
            f"{pct(r.correct_accept)} ({round(r.correct_accept * r.known)}/{r.known}), "
            f"FAR {pct(r.false_accept)} ({round(r.false_accept * r.unknown)}/{r.unknown}); "
            f"CA @ FAR<=1% {pct(rates(probes, at_far).correct_accept)} (thr {at_far:.3f})"
        )
    reference = rates(columns["multi, max"], by_max.threshold)
    lines += [
        f"  (one probe is {pct(1 / max(1, reference.known))} of the known, "
        f"{pct(1 / max(1, reference.unknown))} of the unknown: differences of a few probes are "
        "within noise)",
        "",
    ]
    return "\n".join(lines)


def to_json(result: dict[str, object]) -> dict[str, object]:
    runs: dict[str, Run] = result["runs"]  # type: ignore[assignment]
    out: dict[str, object] = {"no_face": result["no_face"], "runs": {}}
    for key, run in runs.items():
        out["runs"][key] = {  # type: ignore[index]
            "name": run.name,
            "threshold": run.threshold,
            "enrollment": asdict(run.enrollment),
            "at_threshold": {
                name: asdict(rates(p, run.threshold)) for name, p in subsets(run.probes).items()
            },
            "sweep": [asdict(rates(run.probes, float(t))) for t in SWEEP],
            "probes": [asdict(p) for p in run.probes],
        }
    return out


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
