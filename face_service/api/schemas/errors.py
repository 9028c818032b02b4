"""The body of every error answer."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorPublic(BaseModel):
    detail: str
