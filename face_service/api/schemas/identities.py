"""Bodies of the identity routes: enroll, add images, update, list, merge."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from face_service.analysis import AUTO_ROTATE_DESCRIPTION
from face_service.api.json_limits import check_json_value, parse_json
from face_service.api.schemas.faces import FacePublic
from face_service.gallery import Identity

IDENTITY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
MAX_NAME_LENGTH = 200
MAX_METADATA_BYTES = 16 * 1024


def check_name(name: str | None) -> str | None:
    if name is None:
        return None
    if not name.strip():
        raise ValueError("name must not be blank")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("name must not contain control characters")
    return name


def check_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata within its bounds: depth, finite numbers (a NaN would be stored as null), size.
    A bound passed raises ValueError, which validation reports under ``metadata``."""
    check_json_value(metadata)
    size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return metadata


class IdentityCreateForm(BaseModel):
    """Form fields of POST /identities (besides the images)."""

    model_config = ConfigDict(extra="forbid")

    identity_id: str | None = Field(
        None, pattern=IDENTITY_ID_PATTERN, description="left empty: a new random id"
    )
    name: str | None = Field(None, max_length=MAX_NAME_LENGTH, examples=["Ada Lovelace"])
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="a JSON object", examples=[{"team": "research"}]
    )
    auto_rotate: bool | None = Field(None, description=AUTO_ROTATE_DESCRIPTION)

    @field_validator("metadata", mode="before")
    @classmethod
    def parse_metadata(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = parse_json(value) if value.strip() else {}
            except json.JSONDecodeError as error:
                raise ValueError(f"metadata is not valid JSON: {error}") from error
        if not isinstance(value, dict):
            raise ValueError("metadata must be a JSON object")
        return check_metadata(value)

    @field_validator("name")
    @classmethod
    def valid_name(cls, value: str | None) -> str | None:
        return check_name(value)


class IdentityUpdate(BaseModel):
    """PATCH /identities/{id}: the fields given are changed; ``name: null`` clears the name."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Ada"}]})

    name: str | None = Field(None, max_length=MAX_NAME_LENGTH)
    metadata: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def valid_name(cls, value: str | None) -> str | None:
        return check_name(value)

    @field_validator("metadata")
    @classmethod
    def small_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_metadata(value)


class MergeCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"source_id": "yao-ming"}]}
    )

    source_id: str = Field(pattern=IDENTITY_ID_PATTERN)


class TemplatePublic(BaseModel):
    template_id: str
    source: str | None
    created_at: datetime


class IdentityPublic(BaseModel):
    identity_id: str
    name: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    templates: list[TemplatePublic]

    @classmethod
    def from_identity(cls, identity: Identity) -> IdentityPublic:
        return cls(
            identity_id=identity.identity_id,
            name=identity.name,
            metadata=identity.metadata,
            created_at=identity.created_at,
            updated_at=identity.updated_at,
            templates=[
                TemplatePublic(template_id=t.template_id, source=t.source, created_at=t.created_at)
                for t in identity.templates
            ],
        )


class ImageReport(BaseModel):
    index: int
    filename: str | None
    status: str = Field(description="'enrolled' or 'skipped'")
    reason: str | None = None
    template_id: str | None = None
    face: FacePublic | None = None


class EnrollmentPublic(BaseModel):
    identity: IdentityPublic
    images: list[ImageReport]


class IdentityPagePublic(BaseModel):
    items: list[IdentityPublic]
    total: int
    offset: int
    limit: int


class DeletedPublic(BaseModel):
    deleted: int
