"""Reading images and options out of requests: multipart uploads, base64 JSON, their limits."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import TypeVar

from fastapi import Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile

from face_service.analysis import ImageInput, settings_context
from face_service.api.json_limits import JSONLimitError, check_text, format_path, parse_json
from face_service.api.schemas.extract import ExtractJSONCreate
from face_service.errors import (
    ImageTooLargeError,
    InvalidImageError,
    UnsupportedMediaTypeError,
)
from face_service.settings import Settings

ACCEPTED_IMAGE_TYPES = ("image/", "application/octet-stream")
Options = TypeVar("Options", bound=BaseModel)


async def require_multipart(request: Request) -> None:
    # async: a plain def dependency would run in a worker thread (deps.py)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError(
            "expected multipart/form-data with image file(s), "
            f"got {content_type or 'no content type'!r}"
        )


async def require_multipart_or_json(request: Request) -> None:
    """For routes that also take their images as base64 in a JSON body (/extract)."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        await require_multipart(request)


def check_image_type(content_type: str | None, field: str) -> None:
    content_type = content_type or "application/octet-stream"
    if not content_type.startswith(ACCEPTED_IMAGE_TYPES):
        raise UnsupportedMediaTypeError(
            f"{field!r} has content type {content_type!r}; send an image"
        )


async def read_image(upload: UploadFile, field: str, settings: Settings) -> bytes:
    """The bytes of one uploaded image, after its content type and size are checked."""
    check_image_type(upload.content_type, field)
    if upload.size is not None and upload.size > settings.max_image_bytes:
        raise ImageTooLargeError(
            f"{field!r} has {upload.size} bytes; the limit is {settings.max_image_bytes}"
        )
    return await upload.read()


def storable_filename(filename: str | None) -> str | None:
    """An upload's name as the gallery can store it: control characters (NUL among them) and
    unpaired surrogates dropped."""
    if filename is None:
        return None
    kept = "".join(c for c in filename if ord(c) >= 32 and not 0xD800 <= ord(c) <= 0xDFFF)
    return kept or None


def validate_options(
    model: type[Options], values: dict[str, object], settings: Settings | None = None
) -> Options:
    """Options as ``model``, or FastAPI's own 422 naming each offending field. With
    ``settings``, options left out take the service's settings (see AnalysisOptions)."""
    context = None if settings is None else settings_context(settings)
    try:
        return model.model_validate(values, context=context)
    except ValidationError as error:
        raise RequestValidationError(
            [
                {**detail, "loc": ("body", *detail["loc"])}
                for detail in error.errors(include_url=False, include_context=False)
            ]
        ) from error


async def read_multipart(
    request: Request, model: type[Options], settings: Settings, *, files_field: str
) -> tuple[list[ImageInput], Options, list[str | None]]:
    """Every ``files_field`` part (an image each), the other fields as options, and the
    uploaded files' names."""
    async with request.form() as form:
        uploads = [
            part for part in form.getlist(files_field) if isinstance(part, StarletteUploadFile)
        ]
        check_image_count(len(uploads), settings)
        filenames = [storable_filename(upload.filename) for upload in uploads]
        images: list[ImageInput] = []
        for index, upload in enumerate(uploads):
            try:
                images.append(await read_image(upload, f"{files_field}[{index}]", settings))
            except (UnsupportedMediaTypeError, ImageTooLargeError) as error:
                images.append(error)
        fields = {key: value for key, value in form.items() if key != files_field}
    if not all(isinstance(value, str) for value in fields.values()):
        raise validation_error(
            next(key for key, value in fields.items() if not isinstance(value, str)),
            "expected a form field, got a file",
        )
    for key, value in fields.items():
        try:
            check_text(str(value))
        except JSONLimitError as error:
            raise validation_error(key, str(error)) from error
    return images, validate_options(model, fields, settings), filenames


async def read_extract_json(
    request: Request, settings: Settings
) -> tuple[list[ImageInput], ExtractJSONCreate]:
    body = await request.body()
    try:
        document = await asyncio.to_thread(parse_json, body)
    except JSONLimitError as error:
        raise validation_error(format_path(error.path) or "body", str(error)) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidImageError(f"the body is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise validation_error("images", "the body must be a JSON object")
    request_model = await asyncio.to_thread(validate_options, ExtractJSONCreate, document, settings)
    check_image_count(len(request_model.images.data), settings)
    images = await asyncio.to_thread(
        lambda: [
            decode_base64(data, index, settings)
            for index, data in enumerate(request_model.images.data)
        ]
    )
    return images, request_model


def decode_base64(data: str, index: int, settings: Settings) -> ImageInput:
    field = f"images.data[{index}]"
    if data.startswith("data:"):
        data = data.partition(",")[2]
    size = len(data) * 3 // 4
    if size > settings.max_image_bytes:
        return ImageTooLargeError(
            f"{field!r} has about {size} bytes; the limit is {settings.max_image_bytes}"
        )
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        return InvalidImageError(f"{field!r} is not valid base64: {error}")


def check_image_count(count: int, settings: Settings) -> None:
    if count == 0:
        raise validation_error("images", "at least one image is required")
    if count > settings.max_images_per_request:
        raise ImageTooLargeError(
            f"{count} images in one request; the limit is {settings.max_images_per_request}"
        )


def validation_error(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message}])
