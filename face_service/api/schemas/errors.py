"""The bodies of error answers: ours carry a text, FastAPI's validation errors a list; both
carry the request's id."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

REQUEST_ID_DESCRIPTION = (
    "the request's id, also in the X-Request-ID header and in every log line of the request"
)


class ErrorPublic(BaseModel):
    detail: str
    request_id: str = Field(description=REQUEST_ID_DESCRIPTION)


class ValidationErrorItem(BaseModel):
    loc: list[str | int] = Field(description='where: e.g. ["body", "threshold"]')
    msg: str
    type: str
    input: Any = Field(None, description="the value given (shortened), when there was one")


class ValidationErrorPublic(BaseModel):
    """FastAPI's 422 for a field that fails validation: one entry per error."""

    detail: list[ValidationErrorItem]
    request_id: str = Field(description=REQUEST_ID_DESCRIPTION)
