"""The ``face`` command line, built on face_client.AsyncClient: bulk enrollment from folders,
identify, compare, extract to JSON Lines, and gallery list/export/import. ``main`` is the
console script declared in pyproject.toml."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from face_client.cli import enroll, gallery, photos
from face_client.cli.common import (
    EXIT_CODES_HELP,
    Exit,
    UsageError,
    add_connection_arguments,
    exit_code,
    make_client,
    say,
)
from face_client.errors import FaceAPIError


async def health(args: argparse.Namespace) -> Exit:
    async with make_client(args) as client:
        report = await client.health()
    say(f"{report.status}" + (f": {report.reason}" if report.reason else ""))
    return Exit.OK if report.ready else Exit.UNAVAILABLE


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="face",
        description="Command line for the face recognition service.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(top, top=True)
    common = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(common, top=False)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    command = commands.add_parser(
        "enroll",
        parents=[common],
        help="enroll a folder of people (one subfolder each), resumable",
        description=(
            "DIR/<identity_id>/*.jpg|png|...: one folder per person, its name the identity id; "
            'an optional DIR/<identity_id>/person.json {"name": ..., "metadata": {...}}. '
            "A second run sends only the files whose names the identity's templates lack."
        ),
    )
    command.add_argument("dir", metavar="DIR")
    enroll.add_enroll_arguments(command)
    command.set_defaults(run=enroll.run)

    photos.add_arguments(commands, common)
    gallery.add_arguments(commands, common)

    command = commands.add_parser("health", parents=[common], help="is the service ready?")
    command.set_defaults(run=health)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on bad usage
    try:
        return int(asyncio.run(args.run(args)))
    except (UsageError, FaceAPIError) as error:
        message = error.detail if isinstance(error, FaceAPIError) else str(error)
        status = getattr(error, "status", None)
        suffix = f" (HTTP {status})" if status else ""
        sys.stderr.write(f"face: error: {message}{suffix}\n")
        return int(exit_code(error))
    except BrokenPipeError:
        # The reader went away (`face export - | head`): stop quietly, as a killed pipe does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        sys.stderr.write("face: interrupted\n")
        return 130
