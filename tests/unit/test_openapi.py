"""The OpenAPI document as Swagger UI and client generators read it: every $ref resolves, form
bodies have readable names, every route is tagged, the 422 is documented as the list FastAPI
returns (and the text our own 422s carry), file fields are binary file pickers, the image
limit is in the schema, and nothing is prefilled that would change what a request does."""

from __future__ import annotations

from typing import Any

import pytest

from app import create_app
from face_service.api.openapi import EXAMPLE_REQUEST_ID, captured_examples
from face_service.api.schemas.extract import ExtractJSONCreate, ExtractPublic
from face_service.api.schemas.faces import EmbeddingPublic, SimilarityPublic
from face_service.api.schemas.identify import (
    EmbeddingQuery,
    EmbeddingVerify,
    IdentifyPublic,
    VerifyPublic,
)
from face_service.api.schemas.identities import (
    EnrollmentPublic,
    IdentityPagePublic,
    IdentityPublic,
)
from face_service.settings import Settings

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings(max_images_per_request=32)).openapi()


def walk(node: Any, path: str = "#") -> list[tuple[str, Any]]:
    found = [(path, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            found += walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += walk(value, f"{path}/{index}")
    return found


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def form_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    body = document["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
    return resolve(document, body["schema"]["$ref"])


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    refs = [node["$ref"] for _, node in walk(document) if isinstance(node, dict) and "$ref" in node]
    assert len(refs) > 50
    for ref in refs:
        assert isinstance(resolve(document, ref), dict), ref
    assert not [path for path, node in walk(document) if isinstance(node, dict) and "$defs" in node]


def test_schema_names_are_readable(document: dict[str, Any]) -> None:
    names = set(document["components"]["schemas"])
    assert not [name for name in names if name.startswith("Body_")]
    assert {"EmbeddingForm", "FaceSimilarityForm", "IdentifyForm", "VerifyForm"} <= names
    assert {"EnrollForm", "AddImagesForm", "ExtractForm", "DrawForm", "Base64Images"} <= names


def test_every_route_has_a_resource_tag(document: dict[str, Any]) -> None:
    untagged = [(p, m) for p, m, op in operations(document) if not op.get("tags")]
    assert untagged == []
    tags = {op["tags"][0] for _, _, op in operations(document)}
    assert {"faces", "extract", "identities", "identify", "records", "health"} <= tags


def test_422_is_documented_as_the_validation_list_and_as_text(document: dict[str, Any]) -> None:
    validation = document["components"]["schemas"]["ValidationErrorPublic"]
    assert validation["properties"]["detail"]["type"] == "array"
    documented = 0
    for path, method, operation in operations(document):
        response = operation["responses"].get("422")
        if response is None:
            continue
        documented += 1
        content = response["content"]["application/json"]
        refs = {option["$ref"] for option in content["schema"]["anyOf"]}
        assert refs == {
            "#/components/schemas/ValidationErrorPublic",
            "#/components/schemas/ErrorPublic",
        }, (path, method)
        listed = content["examples"]["invalid field"]["value"]["detail"]
        assert listed[0]["loc"] == ["body", "threshold"]
    assert documented >= 15


def test_file_fields_are_binary_file_pickers(document: dict[str, Any]) -> None:
    binary = {"type": "string", "format": "binary"}
    for path in ("/embedding", "/identify", "/verify"):
        assert form_schema(document, path)["properties"]["image"]["format"] == "binary"
    similarity = form_schema(document, "/face-similarity")["properties"]
    assert similarity["image_a"]["format"] == similarity["image_b"]["format"] == "binary"
    draw = form_schema(document, "/draw")["properties"]
    assert {draw["image"]["type"], draw["image"]["format"]} == {"string", "binary"}
    for path in ("/identities", "/identities/{identity_id}/images", "/extract"):
        images = form_schema(document, path)["properties"]["images"]
        assert images["type"] == "array"
        assert images["items"] == binary
        assert images["maxItems"] == 32


def test_documented_fields_are_the_accepted_ones(document: dict[str, Any]) -> None:
    assert list(form_schema(document, "/identities/{identity_id}/images")["properties"]) == [
        "images",
        "auto_rotate",
    ]
    draw = form_schema(document, "/draw")["properties"]
    assert "return_embedding" not in draw
    assert "embed_only" not in draw
    assert {"draw_landmarks", "draw_scores", "limit_faces"} <= set(draw)
    json_body = document["paths"]["/extract"]["post"]["requestBody"]["content"]["application/json"]
    images = resolve(document, json_body["schema"]["properties"]["images"]["$ref"])
    assert images["properties"]["data"]["maxItems"] == 32


def test_nothing_prefilled_changes_a_request(document: dict[str, Any]) -> None:
    for path in ("/face-similarity", "/identify", "/verify"):
        threshold = form_schema(document, path)["properties"]["threshold"]
        assert threshold.get("example") == "", path
        assert "default" not in threshold, path
    enroll = form_schema(document, "/identities")["properties"]
    assert enroll["identity_id"]["example"] == ""  # not a random sample of the pattern
    assert enroll["metadata"]["examples"] == [{"team": "research"}]


def test_error_examples_are_the_service_messages(document: dict[str, Any]) -> None:
    responses = document["paths"]["/embedding"]["post"]["responses"]
    examples = responses["415"]["content"]["application/json"]["examples"]
    assert examples["not multipart"]["value"] == {
        "detail": "expected multipart/form-data with image file(s), got 'application/json'",
        "request_id": EXAMPLE_REQUEST_ID,
    }
    assert "no face" in responses["422"]["content"]["application/json"]["examples"]


RESPONSE_MODELS = {
    ("/embedding", "post"): EmbeddingPublic,
    ("/face-similarity", "post"): SimilarityPublic,
    ("/extract", "post"): ExtractPublic,
    ("/identities", "post"): EnrollmentPublic,
    ("/identities", "get"): IdentityPagePublic,
    ("/identities/{identity_id}", "get"): IdentityPublic,
    ("/identify", "post"): IdentifyPublic,
    ("/identify/embedding", "post"): IdentifyPublic,
    ("/verify", "post"): VerifyPublic,
    ("/verify/embedding", "post"): VerifyPublic,
}
REQUEST_MODELS = {
    "/extract": ExtractJSONCreate,
    "/identify/embedding": EmbeddingQuery,
    "/verify/embedding": EmbeddingVerify,
}


@pytest.mark.parametrize(("path", "method"), sorted(RESPONSE_MODELS))
def test_response_examples_are_captured_answers(
    document: dict[str, Any], path: str, method: str
) -> None:
    responses = document["paths"][path][method]["responses"]
    [content] = [r["content"]["application/json"] for c, r in responses.items() if c < "300"]
    example = content["example"]
    assert example == captured_examples()[path][method]
    # Whole answers of the service: every field the model has, parsed back without loss.
    model = RESPONSE_MODELS[path, method]
    assert model.model_validate(example).model_dump(mode="json") == example


@pytest.mark.parametrize("path", sorted(REQUEST_MODELS))
def test_json_request_examples_are_valid_requests(document: dict[str, Any], path: str) -> None:
    body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    REQUEST_MODELS[path].model_validate(body["example"])
    if "embedding" in body["example"]:
        assert len(body["example"]["embedding"]) == 512  # a real embedding: it executes
