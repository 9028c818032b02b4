"""The service's exceptions. Each maps to one HTTP status; messages name what was wrong."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class FaceServiceError(Exception):
    """Base class; ``status_code`` is the HTTP status the API answers with, ``retry_after_s``
    the Retry-After it sends, if any, ``headers`` any other headers of the answer."""

    status_code = 500
    retry_after_s: int | None = None
    headers: Mapping[str, str] = MappingProxyType({})
    # The answer's text when the message itself may name internals (hosts, ports, database
    # errors): the API logs the message and answers this instead.
    public_detail: str | None = None


class InvalidImageError(FaceServiceError):
    status_code = 400


class ImageTooLargeError(FaceServiceError):
    status_code = 413


class UnsupportedMediaTypeError(FaceServiceError):
    status_code = 415


class NoFaceError(FaceServiceError):
    status_code = 422

    def __init__(self, field: str) -> None:
        super().__init__(f"no face found in {field!r}")
        self.field = field


class LowQualityFaceError(FaceServiceError):
    """A face whose embedding_norm is below the request's min_quality."""

    status_code = 422

    def __init__(self, field: str, norm: float, min_quality: float) -> None:
        super().__init__(
            f"the face in {field!r} is too poor to compare: embedding_norm {norm:.2f} is below "
            f"min_quality {min_quality:g}"
        )


class ConfirmationRequiredError(FaceServiceError):
    """A destructive request without its explicit confirmation."""

    status_code = 400


class TooManyFacesError(FaceServiceError):
    """More faces to embed in one request than FACE_MAX_FACES_PER_REQUEST allows."""

    status_code = 422


class NoUsableFaceError(FaceServiceError):
    """An enrollment where no image gave a usable face: nothing is written."""

    status_code = 422


class EmbeddingError(FaceServiceError):
    """A query embedding that is not a finite, non-zero vector."""

    status_code = 422


class ModelUnavailableError(FaceServiceError):
    """Triton or one of the models cannot answer now; the client should retry."""

    status_code = 503
    retry_after_s = 5
    public_detail = "the models are not available; retry shortly"


class ServiceBusyError(FaceServiceError):
    """More requests are running and waiting than the service admits; retry shortly."""

    status_code = 503
    retry_after_s = 1


class RateLimitedError(FaceServiceError):
    """A client past its rate limit (FACE_RATE_LIMIT); Retry-After says when a slot frees."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelRepositoryError(FaceServiceError):
    """A model file or the model repository is missing, corrupt or of an unknown layout."""


class ModelConfigError(FaceServiceError):
    """A Triton model configuration cannot be built or does not fit the pipeline."""


class TritonServerError(FaceServiceError):
    """The local Triton process could not be started or stopped."""


class IdentityNotFoundError(FaceServiceError):
    status_code = 404

    def __init__(self, identity_id: str) -> None:
        super().__init__(f"identity {identity_id!r} does not exist")
        self.identity_id = identity_id


class IdentityExistsError(FaceServiceError):
    status_code = 409

    def __init__(self, identity_id: str) -> None:
        super().__init__(f"identity {identity_id!r} already exists")
        self.identity_id = identity_id


class TemplateNotFoundError(FaceServiceError):
    status_code = 404

    def __init__(self, identity_id: str, template_id: str) -> None:
        super().__init__(f"identity {identity_id!r} has no template {template_id!r}")


class RecordNotFoundError(FaceServiceError):
    status_code = 404

    def __init__(self, record_id: str) -> None:
        super().__init__(f"record {record_id!r} does not exist")


class GalleryError(FaceServiceError):
    """The gallery database cannot be reached or used; the client may retry."""

    status_code = 503
    retry_after_s = 5
    public_detail = "the gallery database is not available; retry shortly"


# RFC 6750's challenge: the client learns how to authenticate (a key as Bearer or X-API-Key).
_REALM = 'Bearer realm="face-service"'


class AuthenticationError(FaceServiceError):
    """No API key, or one that is unknown, malformed or revoked; ``reason`` says which, for
    the metrics (``missing_key``, ``invalid_key``, ``revoked_key``)."""

    status_code = 401

    def __init__(
        self, message: str, *, invalid_token: bool = False, reason: str = "missing_key"
    ) -> None:
        super().__init__(message)
        self.reason = reason
        challenge = _REALM + (', error="invalid_token"' if invalid_token else "")
        self.headers = {"WWW-Authenticate": challenge}


class PermissionDeniedError(FaceServiceError):
    """A valid key without the scope the request needs."""

    status_code = 403

    def __init__(self, name: str, scope: str) -> None:
        super().__init__(f"the API key {name!r} lacks the {scope!r} scope this request needs")
        self.scope = scope
        self.reason = "missing_scope"
        self.headers = {
            "WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{scope}"'
        }


class KeyNotFoundError(FaceServiceError):
    status_code = 404

    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id!r} does not exist")


class KeyNameExistsError(FaceServiceError):
    status_code = 409

    def __init__(self, name: str) -> None:
        super().__init__(f"an active API key is named {name!r} already")


class FaceCropNotFoundError(FaceServiceError):
    """A template enrolled without its face crop (kept with FACE_GALLERY_STORE_FACE_CROPS)."""

    status_code = 404
