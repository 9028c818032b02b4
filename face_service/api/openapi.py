"""What the OpenAPI document says beyond the routes' signatures: the error answers each route
may give (with real messages, the 422 as the list it is), the bodies of the routes that read
their multipart forms themselves, and the finishing of the whole document (readable form
names, every ``$ref`` resolvable, the image-count limit, nothing prefilled that would change
what a request does)."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from face_service.api.schemas.errors import ErrorPublic, ValidationErrorItem, ValidationErrorPublic

ERROR_DESCRIPTIONS = {
    400: "an image that cannot be read, or a destructive request without its confirmation",
    401: "no API key, or one that is not valid (unknown or revoked); see WWW-Authenticate",
    403: "the API key lacks the scope this request needs (named in detail)",
    404: "no such identity, template, record or API key",
    409: "the identity id exists already, or an active API key has that name",
    413: "too large: an image (bytes or pixels), the number of images, or the request",
    415: "not multipart/form-data, or a part that is not an image",
    422: "no (usable) face found (`detail` is a text), or an invalid field (`detail` is "
    "FastAPI's list of errors, each with `loc`, `msg` and `type`)",
    503: "Triton, a model or the gallery database is unavailable, or the service is busy; "
    "retry after Retry-After",
}

# Messages as the service words them (face_service/errors.py, imaging.py, uploads.py).
ERROR_EXAMPLES: dict[int, dict[str, str]] = {
    400: {
        "not an image": "'image' is not an image in a supported format "
        "(JPEG, PNG, WebP, BMP, GIF, TIFF)",
        "no confirmation": "deleting every identity needs ?confirm=true",
    },
    404: {"no such identity": "identity 'ada' does not exist"},
    409: {"id taken": "identity 'ada' already exists"},
    413: {
        "too many pixels": "'image' has 12000x9000 = 108000000 pixels; the limit is 40000000",
        "too many images": "33 images in one request; the limit is 32",
    },
    415: {
        "not multipart": "expected multipart/form-data with image file(s), got 'application/json'"
    },
    422: {"no face": "no face found in 'image'"},
    503: {"busy": "the service is busy: 8 requests running and 64 waiting; retry shortly"},
}
# What a request id looks like when the service makes one (a client may send its own).
EXAMPLE_REQUEST_ID = "7f9c2ba4e88f4a9f8c1d3b5e6a7f8091"
VALIDATION_EXAMPLE = {
    "detail": [
        {
            "type": "less_than_equal",
            "loc": ["body", "threshold"],
            "msg": "Input should be less than or equal to 1",
            "input": "2",
        }
    ],
    "request_id": EXAMPLE_REQUEST_ID,
}


# Real answers of the service to the wheels' photos (scripts/capture_openapi_examples.py):
# {path: {method: response body, "request-json": a JSON request body that succeeds}}.
EXAMPLES_FILE = Path(__file__).with_name("openapi_examples.json")


@cache
def captured_examples() -> dict[str, dict[str, Any]]:
    return json.loads(EXAMPLES_FILE.read_text(encoding="utf-8"))


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """``responses`` for a route or router that may answer with these error statuses."""
    return {code: {"model": ErrorPublic, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


# The errors of a route that takes images.
UPLOAD_ERRORS = error_responses(400, 413, 415, 422, 503)

BINARY = {"type": "string", "format": "binary"}


def multipart_openapi(
    model: type[BaseModel] | None,
    files_field: str,
    description: str,
    *,
    single: bool = False,
    name: str,
    exclude: frozenset[str] = frozenset(),
) -> dict:
    """``openapi_extra`` for a route that reads its multipart form itself: ``files_field``
    (one file with ``single``, else one or more) and ``model``'s fields but ``exclude``, as the
    component schema ``name``."""
    files: dict[str, Any] = (
        {**BINARY, "description": description}
        if single
        else {"type": "array", "items": BINARY, "minItems": 1, "description": description}
    )
    fields = {} if model is None else model.model_json_schema()["properties"]
    properties = {
        files_field: files,
        **{key: value for key, value in fields.items() if key not in exclude},
    }
    schema = {"type": "object", "properties": properties, "required": [files_field]}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": {"$ref": _ref(name)}}},
        },
        "x-form-schema": {name: {"title": name, **schema}},
    }


def _ref(name: str) -> str:
    return f"#/components/schemas/{name}"


def _camel(path: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", re.sub(r"\{[^}]*\}", "", path))
    return "".join(word.capitalize() for word in words if word)


def build_openapi(app: FastAPI, *, max_images: int) -> dict[str, Any]:
    """The app's OpenAPI document, finished (see the module docstring)."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    renames: dict[str, str] = {}
    for path, path_item in document.get("paths", {}).items():
        for operation in path_item.values():
            body = operation.get("requestBody", {}).get("content", {})
            ref = body.get("multipart/form-data", {}).get("schema", {}).get("$ref", "")
            old = ref.rpartition("/")[2]
            if old.startswith("Body_"):
                renames[old] = f"{_camel(path)}Form"  # /face-similarity: FaceSimilarityForm
    for old, new in renames.items():
        schemas[new] = {**schemas.pop(old), "title": new}
    for model in (ValidationErrorPublic, ValidationErrorItem):
        # The routes document their own 422, so FastAPI leaves its list schema out.
        schemas.setdefault(model.__name__, model.model_json_schema(ref_template=_ref("{model}")))
    forms = set(renames.values())
    for path, path_item in document.get("paths", {}).items():
        for method, operation in path_item.items():
            _add_captured_examples(operation, captured_examples().get(path, {}), method)
            form = operation.pop("x-form-schema", {})
            schemas.update(form)
            forms.update(form)
            for code, response in operation.get("responses", {}).items():
                _document_error(code, response)
    document = _hoist_defs(document, schemas)
    document = _rewrite_refs(document, {_ref(old): _ref(new) for old, new in renames.items()})
    for name, schema in document["components"]["schemas"].items():
        _finish_schema(schema, max_images, form=name in forms)
    return document


def _add_captured_examples(
    operation: dict[str, Any], captured: dict[str, Any], method: str
) -> None:
    if method in captured:
        for code in ("200", "201"):
            content = operation.get("responses", {}).get(code, {}).get("content", {})
            if "application/json" in content:
                content["application/json"]["example"] = captured[method]
    request = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if request is not None and "request-json" in captured:
        request["example"] = captured["request-json"]


def _document_error(code: str, response: dict[str, Any]) -> None:
    status = int(code) if code.isdigit() else 0
    content = response.get("content", {}).get("application/json")
    if content is None or status < 400:
        return
    examples = {
        title: {"summary": title, "value": {"detail": text, "request_id": EXAMPLE_REQUEST_ID}}
        for title, text in ERROR_EXAMPLES.get(status, {}).items()
    }
    if status == 422:
        content["schema"] = {
            "anyOf": [{"$ref": _ref("ValidationErrorPublic")}, {"$ref": _ref("ErrorPublic")}]
        }
        examples["invalid field"] = {"summary": "invalid field", "value": VALIDATION_EXAMPLE}
    if examples:
        content["examples"] = examples


def _hoist_defs(node: Any, schemas: dict[str, Any]) -> Any:
    """Moves every nested ``$defs`` (pydantic's, in schemas given inline) into components."""
    if isinstance(node, dict):
        for name, schema in node.pop("$defs", {}).items():
            schemas.setdefault(name, _hoist_defs(schema, schemas))
        return {key: _hoist_defs(value, schemas) for key, value in node.items()}
    if isinstance(node, list):
        return [_hoist_defs(value, schemas) for value in node]
    return node


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        rewritten = {key: _rewrite_refs(value, renames) for key, value in node.items()}
        ref = rewritten.get("$ref")
        if isinstance(ref, str):
            ref = ref.replace("#/$defs/", "#/components/schemas/")
            rewritten["$ref"] = renames.get(ref, ref)
        return rewritten
    if isinstance(node, list):
        return [_rewrite_refs(value, renames) for value in node]
    return node


def _finish_schema(schema: dict[str, Any], max_images: int, *, form: bool) -> None:
    """A schema's image lists get the count limit; a form's optional fields that Swagger UI
    would otherwise prefill (a threshold, an id pattern's random sample) show empty."""
    for name, prop in schema.get("properties", {}).items():
        if name in ("images", "data") and prop.get("type") == "array":
            prop["maxItems"] = max_images
        for field in (prop, prop.get("items", {})):
            if field.get("contentMediaType") == "application/octet-stream":
                # Swagger UI draws a file picker for OpenAPI 3.0's spelling only.
                field["format"] = "binary"
        if (
            form
            and name not in schema.get("required", [])
            and any(option.get("type") == "null" for option in prop.get("anyOf", []))
        ):
            # Swagger UI fills a form from each field's example, else a sample (a number's
            # minimum: threshold -1 made two strangers "the same person"). Empty is left out.
            prop.setdefault("example", "")
