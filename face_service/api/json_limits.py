"""Bounds on what clients send: JSON nesting depth, finite numbers, and text that every store
can hold. Every JSON document the API reads (request bodies, the ``metadata`` form field) goes
through :func:`parse_json`, so that a document nested a thousand deep is a 422 naming where,
not a RecursionError; ``NaN`` or ``Infinity`` is a 422, not a value stored as ``null`` or
echoed into an invalid answer; and a NUL character is a 422, not a PostgreSQL error."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

# Deeper than any document the API takes (metadata is a free-form object; 32 levels is far
# beyond what a person's record needs) and far below Python's recursion limit.
MAX_JSON_DEPTH = 32

# A JSON string (unrolled so that it runs at C speed on long base64 strings), or a structural
# character: enough to follow nesting without parsing.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?|[\[\]{},]')


class JSONLimitError(ValueError):
    """A JSON document beyond the service's bounds; ``path`` says where, as a field path."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        where = format_path(path)
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path


def format_path(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path[:12]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text + ("..." if len(path) > 12 else "")


def parse_json(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> object:
    """``json.loads`` within the bounds: raises ``json.JSONDecodeError`` for invalid JSON and
    :class:`JSONLimitError` for a document nested deeper than ``max_depth`` or holding a
    number that is not finite (``NaN``, ``Infinity``, ``1e999``)."""
    try:
        value = json.loads(text)  # NaN and Infinity parse, and are refused below, with a path
    except RecursionError:
        raise JSONLimitError(_deep_path(text, max_depth), _too_deep(max_depth)) from None
    check_json_value(value, max_depth=max_depth)
    return value


def check_json_value(value: object, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """The same bounds on a value already parsed (iteratively: no recursion to exhaust)."""
    stack: list[tuple[object, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            name = "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
            raise JSONLimitError(path, f"{name} is not allowed; numbers must be finite")
        if isinstance(item, str):
            check_text(item, path)
        if isinstance(item, dict | list):
            if len(path) >= max_depth:
                raise JSONLimitError(path, _too_deep(max_depth))
            if isinstance(item, dict):
                for key in item:
                    check_text(key, path)
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((child, (*path, key)) for key, child in pairs)


def check_text(text: str, path: tuple[str | int, ...] = ()) -> None:
    """Text that every store can hold: no NUL character (PostgreSQL's text cannot) and no
    unpaired surrogate (``"\\ud800"`` in JSON; no UTF-8 encoding exists for it)."""
    if "\x00" in text:
        raise JSONLimitError(path, "text must not contain NUL characters")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise JSONLimitError(path, "text must not contain unpaired surrogates") from None


def _too_deep(max_depth: int) -> str:
    return f"nested more than {max_depth} levels deep"


def _deep_path(text: str | bytes, max_depth: int) -> tuple[str | int, ...]:
    """Where a document too deep for ``json.loads`` first passes ``max_depth``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    path: list[str | int] = []
    for token in _tokens(text):
        if token in ("{", "["):
            if len(path) >= max_depth:
                break
            path.append(0 if token == "[" else "")
        elif token in ("}", "]"):
            if path:
                path.pop()
        elif token == "," and path and isinstance(path[-1], int):
            path[-1] += 1
        elif token.startswith("key:") and path:
            path[-1] = token[4:]
    return tuple(path)


def _tokens(text: str) -> Iterator[str]:
    for match in _TOKENS.finditer(text):
        if match.group(1) is not None:  # a string followed by ':' is an object's key
            yield "key:" + match.group(0)[: -len(match.group(1))].strip()[1:-1]
        elif not match.group(0).startswith('"'):
            yield match.group(0)


class BoundedJSONRequest(Request):
    """A request whose ``json()`` applies :func:`parse_json`."""

    async def json(self) -> object:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class BoundedJSONRoute(APIRoute):
    """The route class of every router: a route that declares a JSON body reads it through
    :func:`parse_json` before FastAPI does, so that a bound passed is a 422 naming the field
    (``["body", "metadata", "a", ...]``); FastAPI then uses the parsed document."""

    def get_route_handler(self):
        handler = super().get_route_handler()
        reads_json = self.body_field is not None

        async def bounded(request: Request):
            bounded_request = BoundedJSONRequest(request.scope, request.receive)
            if reads_json and "json" in bounded_request.headers.get("content-type", ""):
                try:
                    await bounded_request.json()
                except JSONLimitError as error:
                    raise RequestValidationError(
                        [{"type": "value_error", "loc": ("body", *error.path), "msg": str(error)}]
                    ) from error
                except (json.JSONDecodeError, UnicodeDecodeError):
                    pass  # FastAPI reads it again and reports it as it always does
            return await handler(bounded_request)

        return bounded


async def reject_unstorable_url_text(request: Request) -> None:
    """An app-wide dependency: path and query values with a NUL character (``%00``) are a 422
    naming the parameter, not a database error."""
    for location, values in (("path", request.path_params), ("query", request.query_params)):
        for name, value in values.items():
            if isinstance(value, str) and "\x00" in value:
                raise RequestValidationError(
                    [
                        {
                            "type": "value_error",
                            "loc": (location, name),
                            "msg": "text must not contain NUL characters",
                        }
                    ]
                )
