"""The synchronous client: one method per route of the API, typed results, typed errors, and
retries on 503/429 that honour Retry-After.

    with Client("http://127.0.0.1:3000", api_key="...") as face:
        person = face.enroll(["ada1.jpg", "ada2.jpg"], identity_id="ada", name="Ada")
        print(face.identify("group.jpg").faces[0].match)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

import face_client.calls as calls
import face_client.models as models
from face_client.calls import (
    UNSET,
    AuditFilter,
    Call,
    DetectionOptions,
    ImageSource,
    Unset,
)
from face_client.retry import RetryPolicy
from face_client.transport import (
    Settings,
    connect_retryable,
    connection_failed,
    request_arguments,
    result,
    retry_after,
    retryable,
)

T = TypeVar("T")


class Client:
    """``url`` defaults to $FACE_URL, then http://127.0.0.1:3000; ``api_key`` to $FACE_API_KEY.
    ``transport``: an httpx transport (tests pass httpx.MockTransport); ``http``: an httpx
    client of the caller's to send with instead of the client's own (not closed by it)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.settings = Settings.resolve(url, api_key, timeout_s, retry)
        # A caller's own httpx client (proxies, TLS, an app's test client) stays the caller's.
        self.owns_http = http is None
        self.http = http or httpx.Client(timeout=self.settings.timeout_s, transport=transport)
        self.headers = self.settings.headers()
        self.sleep = time.sleep  # replaceable, for tests

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.owns_http:
            self.http.close()

    def send(self, call: Call[T]) -> T:
        policy = self.settings.retry
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.http.request(
                    call.method,
                    self.settings.url + call.path,
                    headers=self.headers,
                    **request_arguments(call),
                )
            except httpx.TransportError as error:
                wait = policy.delay(attempt - 1, None)
                if connect_retryable(call, policy, error) and policy.should_retry(
                    attempt, started, wait
                ):
                    self.sleep(wait)
                    continue
                raise connection_failed(call, self.settings.url, error) from error
            if retryable(call, policy, response):
                wait = policy.delay(attempt - 1, retry_after(response))
                if policy.should_retry(attempt, started, wait):
                    self.sleep(wait)
                    continue
            return result(call, response)

    # -- faces

    def embedding(self, image: ImageSource, *, auto_rotate: bool | None = None) -> models.Embedding:
        """The most prominent face's embedding (POST /embedding). ``auto_rotate``: search the
        other orientations when the photo looks turned; None leaves it to the service's
        FACE_AUTO_ROTATE (the same on every photo method)."""
        return self.send(calls.embedding(image, auto_rotate))

    def face_similarity(
        self,
        image_a: ImageSource,
        image_b: ImageSource,
        *,
        threshold: float | None = None,
        auto_rotate: bool | None = None,
    ) -> models.Similarity:
        """1:1 of two images' most prominent faces (POST /face-similarity)."""
        return self.send(calls.face_similarity(image_a, image_b, threshold, auto_rotate))

    compare = face_similarity

    def extract(
        self,
        images: Sequence[ImageSource],
        *,
        store: bool = False,
        filename: str | None = None,
        as_json: bool = False,
        **options: Unpack[DetectionOptions],
    ) -> models.Extraction:
        """Every face of each image (POST /extract), as multipart or, with ``as_json``, base64
        JSON. An unreadable image is reported in its own entry (status 'error')."""
        return self.send(
            calls.extract(images, store=store, filename=filename, as_json=as_json, options=options)
        )

    def draw(
        self,
        image: ImageSource,
        *,
        landmarks: bool = True,
        scores: bool = True,
        **options: Unpack[DetectionOptions],
    ) -> models.Drawing:
        """The image as JPEG with its faces drawn (POST /draw)."""
        return self.send(calls.draw(image, landmarks=landmarks, scores=scores, options=options))

    # -- identities

    def enroll(
        self,
        images: Sequence[ImageSource],
        *,
        identity_id: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        auto_rotate: bool | None = None,
    ) -> models.Enrollment:
        """A new person, one template per usable image (POST /identities). Each template's
        ``source`` is the image's file name."""
        return self.send(calls.enroll(images, identity_id, name, metadata, auto_rotate))

    def add_images(
        self,
        identity_id: str,
        images: Sequence[ImageSource],
        *,
        auto_rotate: bool | None = None,
    ) -> models.Enrollment:
        return self.send(calls.add_images(identity_id, images, auto_rotate))

    def list_identities(
        self, *, offset: int = 0, limit: int = 100, name: str | None = None
    ) -> models.IdentityPage:
        return self.send(calls.list_identities(offset, limit, name))

    def iter_identities(
        self, *, name: str | None = None, page_size: int = 500
    ) -> Iterator[models.Identity]:
        """Every identity, a page at a time."""
        offset = 0
        while True:
            page = self.list_identities(offset=offset, limit=page_size, name=name)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def get_identity(self, identity_id: str) -> models.Identity:
        return self.send(calls.get_identity(identity_id))

    def update_identity(
        self,
        identity_id: str,
        *,
        name: str | Unset | None = UNSET,
        metadata: dict[str, Any] | Unset = UNSET,
    ) -> models.Identity:
        """PATCH: only the arguments given change; ``name=None`` clears the name."""
        return self.send(calls.update_identity(identity_id, name, metadata))

    def delete_identity(self, identity_id: str) -> None:
        self.send(calls.delete_identity(identity_id))

    def delete_all_identities(self, *, confirm: str) -> models.Deleted:
        """Empties the gallery. ``confirm`` must be the value the service asks for: spelled out
        (DELETE_ALL_CONFIRMATION) so that no call does this by accident."""
        return self.send(calls.delete_all_identities(confirm))

    def delete_template(self, identity_id: str, template_id: str) -> models.Identity:
        return self.send(calls.delete_template(identity_id, template_id))

    def template_image(self, identity_id: str, template_id: str) -> bytes:
        """The template's aligned face crop as JPEG (NotFound when the service keeps none)."""
        return self.send(calls.template_image(identity_id, template_id))

    def merge(self, identity_id: str, source_id: str) -> models.Identity:
        """Moves ``source_id``'s templates to ``identity_id`` and deletes ``source_id``."""
        return self.send(calls.merge(identity_id, source_id))

    # -- identify and verify

    def identify(
        self,
        image: ImageSource,
        *,
        top_k: int = 5,
        threshold: float | None = None,
        auto_rotate: bool | None = None,
    ) -> models.Identification:
        return self.send(calls.identify(image, top_k, threshold, auto_rotate))

    def identify_embedding(
        self, embedding: Sequence[float], *, top_k: int = 5, threshold: float | None = None
    ) -> models.Identification:
        return self.send(calls.identify_embedding(embedding, top_k, threshold))

    def verify(
        self,
        image: ImageSource,
        identity_id: str,
        *,
        threshold: float | None = None,
        auto_rotate: bool | None = None,
    ) -> models.Verification:
        return self.send(calls.verify(image, identity_id, threshold, auto_rotate))

    def verify_embedding(
        self, embedding: Sequence[float], identity_id: str, *, threshold: float | None = None
    ) -> models.Verification:
        return self.send(calls.verify_embedding(embedding, identity_id, threshold))

    # -- detection records

    def list_records(
        self, *, filename: str | None = None, offset: int = 0, limit: int = 100
    ) -> models.RecordPage:
        return self.send(calls.list_records(filename, offset, limit))

    def get_record(self, record_id: str) -> models.Record:
        return self.send(calls.get_record(record_id))

    def delete_record(self, record_id: str) -> None:
        self.send(calls.delete_record(record_id))

    # -- health

    def health(self) -> models.Health:
        """Readiness; a 503 is returned as ``Health(status='unavailable', ...)``, not raised."""
        return self.send(calls.health())

    def live(self) -> models.Liveness:
        return self.send(calls.live())

    def metrics(self) -> str:
        """The service's Prometheus metrics, as text."""
        return self.send(calls.metrics())

    # -- API keys and the audit log (admin scope)

    def create_key(self, name: str, scopes: Sequence[str]) -> models.CreatedKey:
        """A new key with ``scopes`` (read, write, admin); its secret (``.key``) is in this
        answer only."""
        return self.send(calls.create_key(name, scopes))

    def list_keys(self, *, include_revoked: bool = False) -> list[models.ApiKey]:
        return self.send(calls.list_keys(include_revoked))

    def revoke_key(self, key_id: str) -> models.ApiKey:
        return self.send(calls.revoke_key(key_id))

    def audit(
        self, *, offset: int = 0, limit: int = 100, **filters: Unpack[AuditFilter]
    ) -> models.AuditPage:
        """The audit log of writes, newest first."""
        return self.send(calls.audit(offset, limit, filters))
