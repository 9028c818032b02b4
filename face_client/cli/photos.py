"""``face identify``, ``face compare`` and ``face extract``: photos in, results out (readable
lines, or JSON Lines for scripts)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import IO, Any

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
from face_client.errors import FaceAPIError
from face_client.models import IdentifiedFace


def existing_files(paths: list[str]) -> list[Path]:
    files = [Path(p) for p in paths]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    return files


def box(values: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in values) + "]" if values else "[]"


def face_line(number: int, face: IdentifiedFace) -> str:
    if face.match is not None:
        who = f"{face.match.name or face.match.identity_id} ({face.match.identity_id})"
        return f"  face {number} {box(face.bbox)}: {who} similarity {face.match.similarity:.3f}"
    best = face.candidates[0] if face.candidates else None
    hint = f" (closest: {best.identity_id} {best.similarity:.3f})" if best else ""
    return f"  face {number} {box(face.bbox)}: unknown{hint}"


class InOrder:
    """Prints answers in the order of the arguments, each as soon as those before it are."""

    def __init__(self) -> None:
        self.ready: dict[int, tuple[str, bool]] = {}
        self.next = 0

    def put(self, index: int, text: str, *, error: bool = False) -> None:
        self.ready[index] = (text, error)
        while self.next in self.ready:
            line, is_error = self.ready.pop(self.next)
            say(line, error=is_error)
            self.next += 1


async def identify(args: argparse.Namespace) -> Exit:
    files = existing_files(args.photos)
    failed = 0
    printer = InOrder()

    async def one(item: tuple[int, Path]) -> None:
        nonlocal failed
        index, file = item
        data = await asyncio.to_thread(file.read_bytes)
        try:
            result = await client.identify(
                (file.name, data),
                top_k=args.top_k,
                threshold=args.threshold,
                auto_rotate=args.auto_rotate,
            )
        except FaceAPIError as error:
            if is_fatal(error):
                raise
            failed += 1
            if args.json:
                printer.put(index, json.dumps({"file": str(file), "error": describe(error)}))
            else:
                printer.put(index, f"{file}: {describe(error)}", error=True)
            return
        if args.json:
            printer.put(index, json.dumps({"file": str(file), **result.model_dump(mode="json")}))
            return
        count = len(result.faces)
        lines = [f"{file}: {count} face{'s' if count != 1 else ''}"]
        lines += [face_line(n, face) for n, face in enumerate(result.faces, 1)]
        printer.put(index, "\n".join(lines))

    async with make_client(args) as client:
        await bounded(enumerate(files), one, args.concurrency)
    return Exit.ITEMS_FAILED if failed else Exit.OK


async def compare(args: argparse.Namespace) -> Exit:
    first, second = existing_files([args.a, args.b])
    async with make_client(args) as client:
        try:
            result = await client.face_similarity(
                first, second, threshold=args.threshold, auto_rotate=args.auto_rotate
            )
        except FaceAPIError as error:
            if is_fatal(error) or error.status not in (400, 413, 415, 422):
                raise
            say(f"{describe(error)}", error=True)
            return Exit.ITEMS_FAILED
    if args.json:
        say(json.dumps(result.model_dump(mode="json")))
    else:
        relation = ">=" if result.same_person else "<"
        verdict = "same person" if result.same_person else "different people"
        say(
            f"{verdict}: similarity {result.similarity:.3f} {relation} "
            f"threshold {result.threshold:.3f}"
        )
    return Exit.OK


def open_output(target: str) -> IO[str]:
    if target == "-":
        return sys.stdout
    try:
        return open(target, "w", encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {target}: {error}") from error


async def extract(args: argparse.Namespace) -> Exit:
    files = existing_files(args.photos)
    options: dict[str, Any] = {
        "return_embedding": not args.no_embedding,
        "return_face_crops": args.crops,
    }
    if args.limit_faces is not None:
        options["limit_faces"] = args.limit_faces
    if args.min_face_size is not None:
        options["min_face_size"] = args.min_face_size
    if args.auto_rotate is not None:
        options["auto_rotate"] = args.auto_rotate
    failed = 0
    out = open_output(args.jsonl)
    bar = progress(args, len(files), "img")

    async def one(file: Path) -> None:
        nonlocal failed
        data = await asyncio.to_thread(file.read_bytes)
        try:
            result = await client.extract([(file.name, data)], store=args.store, **options)
            line = {"file": str(file), **result.images[0].model_dump(mode="json")}
        except FaceAPIError as error:
            if is_fatal(error):
                raise
            line = {"file": str(file), "status": "error", "error": describe(error)}
        if line["status"] != "ok":
            failed += 1
            say(f"{file}: {line['error']}", error=True)
        # Written (and flushed) as each answer arrives: a long run can be followed or cut short.
        out.write(json.dumps(line) + "\n")
        out.flush()
        bar.update(1)

    try:
        async with make_client(args) as client:
            await bounded(files, one, args.concurrency)
    finally:
        bar.close()
        if out is not sys.stdout:
            out.close()
    say(f"{len(files) - failed} of {len(files)} images extracted", error=args.jsonl == "-")
    return Exit.ITEMS_FAILED if failed else Exit.OK


def add_arguments(commands: Any, common: argparse.ArgumentParser) -> None:
    command = commands.add_parser(
        "identify", parents=[common], help="who is in each photo (1:N against the gallery)"
    )
    command.add_argument("photos", nargs="+", metavar="PHOTO")
    command.add_argument("--top-k", type=int, default=5, help="candidates per face (default 5)")
    command.add_argument("--threshold", type=float, help="default: the service's")
    command.add_argument("--json", action="store_true", help="one JSON line per photo")
    command.add_argument("--concurrency", type=int, default=4, help="requests at once")
    add_auto_rotate_argument(command)
    command.set_defaults(run=identify)

    command = commands.add_parser(
        "compare", parents=[common], help="are two photos of the same person? (1:1)"
    )
    command.add_argument("a", metavar="A")
    command.add_argument("b", metavar="B")
    command.add_argument("--threshold", type=float, help="default: the service's")
    command.add_argument("--json", action="store_true", help="the answer as JSON")
    add_auto_rotate_argument(command)
    command.set_defaults(run=compare)

    command = commands.add_parser(
        "extract", parents=[common], help="every face of each photo, as JSON Lines"
    )
    command.add_argument("photos", nargs="+", metavar="PHOTO")
    command.add_argument("--jsonl", required=True, metavar="OUT", help="output file, - for stdout")
    command.add_argument("--crops", action="store_true", help="include aligned face crops")
    command.add_argument("--no-embedding", action="store_true", help="leave embeddings out")
    command.add_argument("--limit-faces", type=int, help="only the N largest faces")
    command.add_argument("--min-face-size", type=int, help="pixels, shorter side of the box")
    command.add_argument("--store", action="store_true", help="save detection records")
    command.add_argument("--concurrency", type=int, default=4, help="requests at once")
    add_auto_rotate_argument(command)
    command.set_defaults(run=extract)
