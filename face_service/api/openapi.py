"""What the OpenAPI document says beyond the routes' signatures: the error answers each route
may give, and the bodies of the routes that read their multipart forms themselves."""

from __future__ import annotations

from pydantic import BaseModel

from face_service.api.schemas.errors import ErrorPublic

ERROR_DESCRIPTIONS = {
    400: "an image that cannot be read, or a destructive request without its confirmation",
    401: "no API key, or one that is not valid (unknown or revoked); see WWW-Authenticate",
    403: "the API key lacks the scope this request needs (named in detail)",
    404: "no such identity, template, record or API key",
    409: "the identity id exists already, or an active API key has that name",
    413: "too large: an image (bytes or pixels), the number of images, or the request",
    415: "not multipart/form-data, or a part that is not an image",
    422: "no (usable) face found, or an invalid field",
    503: "Triton, a model or the gallery database is unavailable, or the service is busy; "
    "retry after Retry-After",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """``responses`` for a route or router that may answer with these error statuses."""
    return {code: {"model": ErrorPublic, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


# The errors of a route that takes images.
UPLOAD_ERRORS = error_responses(400, 413, 415, 422, 503)


def multipart_openapi(model: type[BaseModel], files_field: str, description: str) -> dict:
    """``openapi_extra`` for a route that reads its multipart form itself: ``files_field``
    (one or more files) and ``model``'s fields."""
    properties = {
        files_field: {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": description,
        },
        **model.model_json_schema()["properties"],
    }
    schema = {"type": "object", "properties": properties, "required": [files_field]}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }
