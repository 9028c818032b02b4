"""Every route of the API as a request description and the parser of its answer, written once
for both clients (Client and AsyncClient only send them)."""

from __future__ import annotations

import base64
import json
import mimetypes
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Generic, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

import face_client.models as models

T = TypeVar("T")

# A path, raw bytes, (filename, bytes), or an open binary file.
ImageSource = str | os.PathLike[str] | bytes | tuple[str, bytes] | IO[bytes]


class DetectionOptions(TypedDict, total=False):
    """/extract and /draw options; left out, the service's settings apply."""

    max_size: int
    det_threshold: float
    nms_threshold: float
    limit_faces: int
    min_face_size: int
    return_embedding: bool
    return_landmarks: bool
    return_face_crops: bool
    embed_only: bool
    auto_rotate: bool


class Unset:
    """Marks an argument left out (PATCH: ``name=None`` clears the name, unset keeps it)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()
Upload = tuple[str, tuple[str, bytes, str]]


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, str] | None = None
    files: list[Upload] | None = None
    # Statuses whose body is an answer, not an error (/health's 503 says what is not ready).
    accept: frozenset[int] = field(default_factory=frozenset)
    retry: bool = True


def read_image(source: ImageSource) -> tuple[str, bytes]:
    """(filename, bytes) of an image argument. Files are read whole so that a retry can send
    them again."""
    if isinstance(source, bytes):
        return "image", source
    if isinstance(source, tuple):
        return source[0], source[1]
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path.name, path.read_bytes()
    name = getattr(source, "name", None)
    return (Path(name).name if isinstance(name, str) else "image"), source.read()


def content_type(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename)
    # Anything else goes as bytes for the service to decode (or report unreadable).
    return guessed if guessed and guessed.startswith("image/") else "application/octet-stream"


def upload(field_name: str, source: ImageSource) -> Upload:
    filename, data = read_image(source)
    return field_name, (filename, data, content_type(filename))


def form(values: dict[str, Any]) -> dict[str, str]:
    """Form fields as the service reads them: booleans as true/false, objects as JSON, None
    left out (the service's default)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, dict | list):
            out[key] = json.dumps(value)
        else:
            out[key] = str(value)
    return out


def model(cls: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    return lambda response: cls.model_validate(response.json())


def no_content(_: httpx.Response) -> None:
    return None


def segment(value: str) -> str:
    """An id as one path segment, escaped: a caller's typo must not reach another route."""
    return quote(value, safe="")


# -- faces


def embedding(image: ImageSource, auto_rotate: bool | None = None) -> Call[models.Embedding]:
    return Call(
        "POST",
        "/embedding",
        model(models.Embedding),
        files=[upload("image", image)],
        data=form({"auto_rotate": auto_rotate}),
    )


def face_similarity(
    image_a: ImageSource,
    image_b: ImageSource,
    threshold: float | None,
    auto_rotate: bool | None = None,
) -> Call[models.Similarity]:
    return Call(
        "POST",
        "/face-similarity",
        model(models.Similarity),
        files=[upload("image_a", image_a), upload("image_b", image_b)],
        data=form({"threshold": threshold, "auto_rotate": auto_rotate}),
    )


def extract(
    images: Sequence[ImageSource],
    *,
    store: bool,
    filename: str | None,
    as_json: bool,
    options: DetectionOptions,
) -> Call[models.Extraction]:
    values = {**options, "store": store or None, "filename": filename}
    if as_json:
        data = [base64.b64encode(read_image(i)[1]).decode("ascii") for i in images]
        body = {k: v for k, v in values.items() if v is not None}
        return Call(
            "POST", "/extract", model(models.Extraction), json={**body, "images": {"data": data}}
        )
    return Call(
        "POST",
        "/extract",
        model(models.Extraction),
        files=[upload("images", i) for i in images],
        data=form(values),
    )


def parse_drawing(response: httpx.Response) -> models.Drawing:
    return models.Drawing(
        jpeg=response.content, faces_detected=int(response.headers.get("X-Faces-Detected", 0))
    )


def draw(
    image: ImageSource, *, landmarks: bool, scores: bool, options: DetectionOptions
) -> Call[models.Drawing]:
    values = {**options, "draw_landmarks": landmarks, "draw_scores": scores}
    return Call("POST", "/draw", parse_drawing, files=[upload("image", image)], data=form(values))


# -- identities


def enroll(
    images: Sequence[ImageSource],
    identity_id: str | None,
    name: str | None,
    metadata: dict[str, Any] | None,
    auto_rotate: bool | None = None,
) -> Call[models.Enrollment]:
    return Call(
        "POST",
        "/identities",
        model(models.Enrollment),
        files=[upload("images", i) for i in images],
        data=form(
            {
                "identity_id": identity_id,
                "name": name,
                "metadata": metadata,
                "auto_rotate": auto_rotate,
            }
        ),
    )


def add_images(
    identity_id: str, images: Sequence[ImageSource], auto_rotate: bool | None = None
) -> Call[models.Enrollment]:
    return Call(
        "POST",
        f"/identities/{segment(identity_id)}/images",
        model(models.Enrollment),
        files=[upload("images", i) for i in images],
        data=form({"auto_rotate": auto_rotate}),
    )


def list_identities(offset: int, limit: int, name: str | None) -> Call[models.IdentityPage]:
    params = form({"offset": offset, "limit": limit, "name": name})
    return Call("GET", "/identities", model(models.IdentityPage), params=params)


def get_identity(identity_id: str) -> Call[models.Identity]:
    return Call("GET", f"/identities/{segment(identity_id)}", model(models.Identity))


def update_identity(
    identity_id: str, name: str | Unset | None, metadata: dict[str, Any] | Unset
) -> Call[models.Identity]:
    body: dict[str, Any] = {}
    if not isinstance(name, Unset):
        body["name"] = name
    if not isinstance(metadata, Unset):
        body["metadata"] = metadata
    return Call("PATCH", f"/identities/{segment(identity_id)}", model(models.Identity), json=body)


def delete_identity(identity_id: str) -> Call[None]:
    return Call("DELETE", f"/identities/{segment(identity_id)}", no_content)


# The value DELETE /identities asks for in ?confirm= (issue 10: no longer any truthy string).
DELETE_ALL_CONFIRMATION = "delete-all-identities"


def delete_all_identities(confirm: str) -> Call[models.Deleted]:
    return Call("DELETE", "/identities", model(models.Deleted), params={"confirm": confirm})


def delete_template(identity_id: str, template_id: str) -> Call[models.Identity]:
    path = f"/identities/{segment(identity_id)}/templates/{segment(template_id)}"
    return Call("DELETE", path, model(models.Identity))


def template_image(identity_id: str, template_id: str) -> Call[bytes]:
    """The aligned face crop (112x112 JPEG) the service keeps with a template, when it does
    (FACE_GALLERY_STORE_FACE_CROPS); a 404 when it has none."""
    path = f"/identities/{segment(identity_id)}/templates/{segment(template_id)}/image"
    return Call("GET", path, lambda response: response.content)


def merge(identity_id: str, source_id: str) -> Call[models.Identity]:
    return Call(
        "POST",
        f"/identities/{segment(identity_id)}/merge",
        model(models.Identity),
        json={"source_id": source_id},
    )


# -- identify and verify


def identify(
    image: ImageSource, top_k: int, threshold: float | None, auto_rotate: bool | None = None
) -> Call[models.Identification]:
    return Call(
        "POST",
        "/identify",
        model(models.Identification),
        files=[upload("image", image)],
        data=form({"top_k": top_k, "threshold": threshold, "auto_rotate": auto_rotate}),
    )


def identify_embedding(
    vector: Sequence[float], top_k: int, threshold: float | None
) -> Call[models.Identification]:
    body = {"embedding": [float(v) for v in vector], "top_k": top_k, "threshold": threshold}
    return Call("POST", "/identify/embedding", model(models.Identification), json=body)


def verify(
    image: ImageSource, identity_id: str, threshold: float | None, auto_rotate: bool | None = None
) -> Call[models.Verification]:
    return Call(
        "POST",
        "/verify",
        model(models.Verification),
        files=[upload("image", image)],
        data=form({"identity_id": identity_id, "threshold": threshold, "auto_rotate": auto_rotate}),
    )


def verify_embedding(
    vector: Sequence[float], identity_id: str, threshold: float | None
) -> Call[models.Verification]:
    body = {
        "embedding": [float(v) for v in vector],
        "identity_id": identity_id,
        "threshold": threshold,
    }
    return Call("POST", "/verify/embedding", model(models.Verification), json=body)


# -- detection records


def list_records(filename: str | None, offset: int, limit: int) -> Call[models.RecordPage]:
    params = form({"filename": filename, "offset": offset, "limit": limit})
    return Call("GET", "/records", model(models.RecordPage), params=params)


def get_record(record_id: str) -> Call[models.Record]:
    return Call("GET", f"/records/{segment(record_id)}", model(models.Record))


def delete_record(record_id: str) -> Call[None]:
    return Call("DELETE", f"/records/{segment(record_id)}", no_content)


# -- health


def health() -> Call[models.Health]:
    # A probe reports what it finds now: no retry, and the 503 body is the answer.
    return Call("GET", "/health", model(models.Health), accept=frozenset({503}), retry=False)


def live() -> Call[models.Liveness]:
    return Call("GET", "/health/live", model(models.Liveness), retry=False)


def metrics() -> Call[str]:
    """Prometheus's text format (the ``metrics`` scope when keys are required)."""
    return Call("GET", "/metrics", lambda response: response.text)


# -- API keys and the audit log (admin scope)


def create_key(name: str, scopes: Sequence[str]) -> Call[models.CreatedKey]:
    body = {"name": name, "scopes": list(scopes)}
    return Call("POST", "/keys", model(models.CreatedKey), json=body)


def parse_keys(response: httpx.Response) -> list[models.ApiKey]:
    return [models.ApiKey.model_validate(item) for item in response.json()["items"]]


def list_keys(include_revoked: bool) -> Call[list[models.ApiKey]]:
    params = {"revoked": "true"} if include_revoked else None
    return Call("GET", "/keys", parse_keys, params=params)


def revoke_key(key_id: str) -> Call[models.ApiKey]:
    return Call("DELETE", f"/keys/{segment(key_id)}", model(models.ApiKey))


class AuditFilter(TypedDict, total=False):
    """GET /audit's filters: a key's name, an action (e.g. identity.delete), an id the write
    touched, and a time range (``since`` inclusive)."""

    principal: str
    action: str
    target: str
    since: datetime
    until: datetime


def audit(offset: int, limit: int, filters: AuditFilter) -> Call[models.AuditPage]:
    values: dict[str, Any] = {"offset": offset, "limit": limit}
    for key, value in filters.items():
        values[key] = value.isoformat() if isinstance(value, datetime) else value
    return Call("GET", "/audit", model(models.AuditPage), params=form(values))
