"""How the service writes its log: one handler on the root logger (so uvicorn's loggers and every
library's go through it too), in plain text (the local default) or JSON lines
(``FACE_LOG_FORMAT=json``, python-json-logger), every line carrying the id of the request it was
written for (``request_id``, from :mod:`face_service.request_context`)."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from face_service.request_context import current_request_id

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# JSON fields: time (ISO 8601, UTC), level, logger, message, request_id, then the line's extras
# (the access line's method, route, status, ...) and exc_info when there is a traceback.
JSON_FIELDS = "%(levelname)s %(name)s %(message)s %(request_id)s"
JSON_RENAMES = {"levelname": "level", "name": "logger"}
# uvicorn's own lines carry a copy of the message with terminal colour codes: not a field.
JSON_SKIPPED = [*RESERVED_ATTRS, "color_message"]

# uvicorn's loggers; "uvicorn.access" is silenced, the service writes its own access line
# (face_service.api.request_context) with the fields uvicorn's lacks.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "uvicorn.access")


class RequestIdFilter(logging.Filter):
    """Gives every record the id of the request being handled (None outside one), unless the
    record names one already. The same for every handler, whatever its format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, with ``-`` for the id of a line written outside any request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request_id = request_id or "-"
        try:
            return super().format(record)
        finally:
            record.request_id = request_id


def log_handler(log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing to ``stream`` (stderr) in ``log_format``, request ids included."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                JSON_FIELDS,
                rename_fields=JSON_RENAMES,
                timestamp="time",
                reserved_attrs=JSON_SKIPPED,
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(TextFormatter())
    return handler


def configure_logging(log_format: LogFormat, level: str) -> None:
    """The service's logging: the root logger at ``level`` with one :func:`log_handler`,
    uvicorn's loggers sending their lines to it (run uvicorn with ``log_config=None`` so that it
    keeps them), and Python's warnings logged rather than printed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(log_handler(log_format))
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.captureWarnings(True)
