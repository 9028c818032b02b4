"""``face enroll DIR``: one folder per person (folder name = identity id, an optional
person.json with name and metadata), uploaded concurrently and resumably.

What is there already is read from the service: each template's ``source`` is the file name it
was enrolled from, so a second run sends only the files whose names the identity lacks. ``face
import`` reuses the same engine with people described by an export's JSONL."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from face_client.aio import AsyncClient
from face_client.cli.common import (
    Exit,
    UsageError,
    add_auto_rotate_argument,
    bounded,
    describe,
    is_fatal,
    make_client,
    progress,
    say,
)
from face_client.errors import Conflict, FaceAPIError, NotFound, Unprocessable

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PERSON_FILE = "person.json"
# The service's identity id pattern (face_service/api/schemas/identities.py).
IDENTITY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
ALREADY = "already enrolled"
NO_PHOTO = "no photo to enroll from (--photos DIR)"
MAX_BATCH = 32  # the service's default FACE_MAX_IMAGES_PER_REQUEST


@dataclass(frozen=True)
class Photo:
    """One image to enroll: ``name`` becomes the template's source (what a later run matches
    on); its bytes are in ``path`` or ``data`` (an exported face crop), or nowhere (import
    without the photo: it can only be found present)."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    @property
    def available(self) -> bool:
        return self.path is not None or self.data is not None

    async def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return await asyncio.to_thread(self.path.read_bytes)


@dataclass
class Person:
    """Who to enroll and from which files; ``name``/``metadata`` None: not specified."""

    identity_id: str
    label: str  # how reports name the person's files (the folder)
    images: list[Photo] = field(default_factory=list)
    name: str | None = None
    metadata: dict[str, Any] | None = None
    problem: str | None = None  # the whole person is skipped, with this reason


@dataclass
class Outcome:
    """What a run did, for the report and the summary."""

    images: Counter[str] = field(default_factory=Counter)  # enrolled / already / skipped
    reasons: Counter[str] = field(default_factory=Counter)
    people: Counter[str] = field(default_factory=Counter)
    lines: list[dict[str, Any]] = field(default_factory=list)

    def image(self, person: Person, file: str, status: str, reason: str | None = None) -> None:
        """One file's outcome; a skipped one is reported at once with its reason (files
        already enrolled are reported per person, by ``already``)."""
        self.images[status] += 1
        entry: dict[str, Any] = {"identity_id": person.identity_id, "file": file, "status": status}
        if reason:
            reason = re.sub(r"'images\[\d+\]'", "file", reason)
            entry["reason"] = reason
            if status == "skipped":
                self.reasons[short_reason(reason)] += 1
        self.lines.append(entry)
        if status == "skipped":
            say(f"skipped  {person.label}/{file}: {reason}", error=True)

    def already(self, person: Person, files: list[str]) -> None:
        for file in files:
            self.image(person, file, "already", ALREADY)
        if files:
            say(f"present  {person.label}: {len(files)} file(s) {ALREADY}")

    @property
    def failed(self) -> bool:
        return bool(self.images["skipped"] or self.people["failed"])


def short_reason(reason: str) -> str:
    """Reasons grouped for the summary, without their details in parentheses."""
    return re.sub(r"\s*\(.*", "", reason).split(":")[0].strip()[:60]


def read_person_file(folder: Path) -> tuple[str | None, dict[str, Any] | None]:
    path = folder / PERSON_FILE
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected an object with 'name' and 'metadata'")
    name, metadata = data.get("name"), data.get("metadata")
    if name is not None and not isinstance(name, str):
        raise UsageError(f"{path}: 'name' must be a string")
    if metadata is not None and not isinstance(metadata, dict):
        raise UsageError(f"{path}: 'metadata' must be an object")
    return name, metadata


def scan(root: Path, outcome: Outcome) -> list[Person]:
    """The people under ``root``; files that cannot be enrolled are reported skipped here."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    people = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            say(f"skipped  {entry.name}: not in a person folder", error=True)
            outcome.reasons["not in a person folder"] += 1
            outcome.images["skipped"] += 1
            continue
        person = Person(identity_id=entry.name, label=entry.name)
        if not IDENTITY_ID.match(entry.name):
            person.problem = (
                "folder name is not a valid identity id (letters, digits and ._:@- only, "
                "starting with a letter or digit, at most 128)"
            )
        else:
            person.name, person.metadata = read_person_file(entry)
        for file in sorted(entry.iterdir()):
            if file.name.startswith(".") or file.name == PERSON_FILE:
                continue
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                person.images.append(Photo(file.name, path=file))
            elif person.problem is None:
                kind = (
                    "a folder"
                    if file.is_dir()
                    else f"not an image file ({file.suffix or 'no suffix'})"
                )
                outcome.image(person, file.name, "skipped", kind)
        people.append(person)
    return people


class Enroller:
    def __init__(self, client: AsyncClient, args: argparse.Namespace, outcome: Outcome) -> None:
        self.client = client
        self.dry_run: bool = args.dry_run
        self.auto_rotate: bool | None = getattr(args, "auto_rotate", None)
        self.batch = max(1, min(args.batch_size, MAX_BATCH))
        self.outcome = outcome
        self.requests = asyncio.Semaphore(max(1, args.concurrency))
        self.bar = progress(args, 0, "img")

    async def call(self, method: Any, *arguments: Any, **keywords: Any) -> Any:
        async with self.requests:
            return await method(*arguments, **keywords)

    async def person(self, person: Person) -> None:
        try:
            await self._person(person)
        except FaceAPIError as error:
            if is_fatal(error):
                raise
            self.outcome.people["failed"] += 1
            say(f"failed   {person.label}: {describe(error)}", error=True)

    async def _person(self, person: Person) -> None:
        if person.problem:
            self.outcome.people["failed"] += 1
            for file in person.images:
                self.outcome.image(person, file.name, "skipped", person.problem)
            return
        try:
            existing = await self.call(self.client.get_identity, person.identity_id)
        except NotFound:
            existing = None
        present = {t.source for t in existing.templates} if existing else set()
        missing = [file for file in person.images if file.name not in present]
        self.outcome.already(person, [f.name for f in person.images if f.name in present])
        if existing is not None:
            await self.update(person, existing)
        for photo in missing:
            if not photo.available:
                self.outcome.image(person, photo.name, "skipped", NO_PHOTO)
        missing = [photo for photo in missing if photo.available]
        if not missing:
            if existing is None:
                self.outcome.people["failed"] += 1
                say(f"failed   {person.label}: no images to enroll from", error=True)
            else:
                self.outcome.people["unchanged"] += 1
            return
        if self.dry_run:
            verb = "would add" if existing else "would enroll"
            say(f"{verb} {person.label}: {', '.join(f.name for f in missing)}")
            self.outcome.people["added to" if existing else "created"] += 1
            self.outcome.images["would enroll"] += len(missing)
            return
        self.bar.total += len(missing)
        self.bar.refresh()
        created = existing is not None
        enrolled = 0
        for start in range(0, len(missing), self.batch):
            batch = missing[start : start + self.batch]
            enrolled_now, created = await self.upload(person, batch, created)
            enrolled += enrolled_now
            self.bar.update(len(batch))
        if enrolled:
            self.outcome.people["added to" if existing else "created"] += 1
        else:
            self.outcome.people["unchanged" if existing else "failed"] += 1

    async def upload(self, person: Person, batch: list[Photo], created: bool) -> tuple[int, bool]:
        """One request for ``batch``: creates the identity unless ``created``; returns how many
        images were enrolled and whether the identity exists now."""
        images = [(photo.name, await photo.read()) for photo in batch]
        try:
            if created:
                result = await self.call(
                    self.client.add_images,
                    person.identity_id,
                    images,
                    auto_rotate=self.auto_rotate,
                )
            else:
                result = await self.call(
                    self.client.enroll,
                    images,
                    identity_id=person.identity_id,
                    name=person.name,
                    metadata=person.metadata,
                    auto_rotate=self.auto_rotate,
                )
        except Conflict:  # created meanwhile by someone else: add to it
            return await self.upload(person, batch, True)
        except Unprocessable as error:  # no usable face in any image of the batch
            reasons = batch_reasons(error.detail, len(batch))
            for file, reason in zip(batch, reasons, strict=True):
                self.outcome.image(person, file.name, "skipped", reason)
            return 0, created
        for report in result.images:
            file = batch[report.index].name
            if report.status == "enrolled":
                self.outcome.image(person, file, "enrolled")
            else:
                self.outcome.image(person, file, "skipped", report.reason or report.status)
        return sum(r.status == "enrolled" for r in result.images), True

    async def update(self, person: Person, existing: Any) -> None:
        changes: dict[str, Any] = {}
        if person.name is not None and person.name != existing.name:
            changes["name"] = person.name
        if person.metadata is not None and person.metadata != existing.metadata:
            changes["metadata"] = person.metadata
        if not changes:
            return
        say(f"{'would update' if self.dry_run else 'updated'} {person.label}: {', '.join(changes)}")
        self.outcome.people["updated"] += 1
        if not self.dry_run:
            await self.call(self.client.update_identity, person.identity_id, **changes)


def batch_reasons(detail: str, count: int) -> list[str]:
    """The service's 422 says 'no usable face in any image (images[0]: why; images[1]: why)':
    each image's own reason when it can be read from it, else the whole message."""
    found = dict(re.findall(r"images\[(\d+)\]: (.*?)(?=; images\[\d+\]: |\)$|$)", detail))
    return [found.get(str(index), detail) for index in range(count)]


def summary(outcome: Outcome, *, dry_run: bool) -> str:
    people = (
        ", ".join(f"{count} {kind}" for kind, count in sorted(outcome.people.items())) or "none"
    )
    images = outcome.images
    parts = [
        f"{images['would enroll' if dry_run else 'enrolled']} "
        f"{'to enroll' if dry_run else 'enrolled'}",
        f"{images['already']} already enrolled",
        f"{images['skipped']} skipped",
    ]
    text = f"{'dry run: ' if dry_run else ''}people: {people}; images: {', '.join(parts)}"
    if outcome.reasons:
        reasons = outcome.reasons.most_common()
        text += "\nskipped by reason: " + "; ".join(f"{r} ({n})" for r, n in reasons)
    return text


async def enroll_people(people: list[Person], args: argparse.Namespace, outcome: Outcome) -> Exit:
    async with make_client(args) as client:
        enroller = Enroller(client, args, outcome)
        try:
            await bounded(people, enroller.person, args.concurrency)
        finally:
            enroller.bar.close()
    if args.report:
        with open(args.report, "w", encoding="utf-8") as report:
            for line in outcome.lines:
                report.write(json.dumps(line) + "\n")
    say(summary(outcome, dry_run=args.dry_run))
    return Exit.ITEMS_FAILED if outcome.failed else Exit.OK


async def run(args: argparse.Namespace) -> Exit:
    outcome = Outcome()
    people = scan(Path(args.dir), outcome)
    return await enroll_people(people, args, outcome)


def add_enroll_arguments(parser: argparse.ArgumentParser) -> None:
    add_auto_rotate_argument(parser)
    parser.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight at once (default 4)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help=f"images per request, 1..{MAX_BATCH} (default 8)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be enrolled; change nothing"
    )
    parser.add_argument(
        "--report", metavar="FILE", help="write every image's outcome as JSONL to FILE"
    )
