"""What every command shares: the exit codes, the client from --url/--api-key (or FACE_URL,
FACE_API_KEY), which errors end the whole run, bounded concurrency and the progress bar."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable
from enum import IntEnum
from typing import Any, TypeVar

from tqdm import tqdm

from face_client.aio import AsyncClient
from face_client.errors import AuthError, ConnectionFailed, FaceAPIError, RateLimited, Unavailable
from face_client.retry import RetryPolicy

T = TypeVar("T")


class Exit(IntEnum):
    """The exit codes, for scripts: see ``face --help``."""

    OK = 0
    ITEMS_FAILED = 1  # the run finished, but some photos/people failed or were skipped
    USAGE = 2  # bad arguments, a missing file or folder, an unreadable person.json/JSONL
    UNAVAILABLE = 3  # the service cannot be reached, or answers 503/429 after the retries
    AUTH = 4  # 401 (no or bad API key) or 403 (the key lacks the scope)
    API_ERROR = 5  # any other refusal of the request as a whole (e.g. 404, 500)


EXIT_CODES_HELP = """exit codes:
  0  success
  1  finished, but some items (photos, people, lines) failed or were skipped: see the report
  2  usage: bad arguments, a missing file or folder, an unreadable person.json or JSONL line
  3  the service cannot be reached, or stayed unavailable (503/429) through the retries
  4  authentication: no or invalid API key (401), or the key lacks the scope (403)
  5  the service refused the request for another reason (e.g. 404, 500)"""


class UsageError(Exception):
    """Bad input from the user: exit 2."""


def exit_code(error: BaseException) -> Exit:
    if isinstance(error, UsageError):
        return Exit.USAGE
    if isinstance(error, AuthError):
        return Exit.AUTH
    if isinstance(error, ConnectionFailed | Unavailable | RateLimited):
        return Exit.UNAVAILABLE
    return Exit.API_ERROR


def is_fatal(error: BaseException) -> bool:
    """Errors that no other item would escape either: stop the run rather than fail each."""
    return isinstance(error, AuthError | ConnectionFailed | Unavailable | RateLimited)


def add_connection_arguments(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top parser and on each command, so that both `face --url U list` and
    # `face list --url U` work; the command's copy does not overwrite a value given before it.
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--url",
        default=default,
        help="the service's address (default: $FACE_URL, else http://127.0.0.1:3000)",
    )
    parser.add_argument(
        "--api-key", default=default, help="API key (default: $FACE_API_KEY)", metavar="KEY"
    )
    parser.add_argument(
        "--timeout", type=float, default=default, help="seconds per request (default 60)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=default,
        help="attempts per request on 503/429, honouring Retry-After (default 4)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", default=default, help="no progress bar"
    )


def add_auto_rotate_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--auto-rotate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="search the other orientations of photos that look turned (default: the service's"
        " FACE_AUTO_ROTATE)",
    )


def make_client(args: argparse.Namespace) -> AsyncClient:
    retries = getattr(args, "retries", None)
    policy = RetryPolicy() if retries is None else RetryPolicy(attempts=max(1, retries))
    return AsyncClient(args.url, api_key=args.api_key, timeout_s=args.timeout, retry=policy)


def progress(args: argparse.Namespace, total: int, unit: str) -> tqdm[Any]:
    # disable=None: no bar when stderr is not a terminal (scripts, CI logs).
    disable = True if getattr(args, "no_progress", False) else None
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True)


def say(message: str, *, error: bool = False) -> None:
    """A line that does not break the progress bar."""
    tqdm.write(message, file=sys.stderr if error else sys.stdout)


async def bounded(
    items: Iterable[T], work: Callable[[T], Awaitable[None]], concurrency: int
) -> None:
    """``work`` on every item, at most ``concurrency`` at once. A fatal error (is_fatal) or a
    bug cancels the rest and is raised as itself, not as an ExceptionGroup."""
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(item: T) -> None:
        async with limit:
            await work(item)

    try:
        async with asyncio.TaskGroup() as group:
            for item in items:
                group.create_task(one(item))
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None


def describe(error: FaceAPIError) -> str:
    return error.detail if error.status is None else f"{error.detail} (HTTP {error.status})"
