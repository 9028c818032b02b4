"""The Python client (face_client) on httpx.MockTransport: each error status becomes its typed
exception carrying the API's status and message, 503/429 are retried after the Retry-After the
service sent (bounded in attempts and time), the API key and URL come from arguments or the
environment, and the sync and async clients behave alike."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from face_client import (
    NO_RETRY,
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    FaceAPIError,
    Forbidden,
    NotFound,
    RateLimited,
    RetryPolicy,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMedia,
)
from face_client.retry import parse_retry_after

Handler = Callable[[httpx.Request], httpx.Response]
IDENTITY = {
    "identity_id": "ada",
    "name": "Ada",
    "metadata": {},
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
    "templates": [],
}


def client(handler: Handler, **kwargs: object) -> Client:
    return Client("http://face.test", transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (413, TooLarge),
        (415, UnsupportedMedia),
        (422, Unprocessable),
        (429, RateLimited),
        (503, Unavailable),
        (500, ServerError),
    ],
)
def test_each_status_raises_its_error_with_the_api_message(
    status: int, error: type[FaceAPIError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"detail": f"the reason {status}"})

    with client(handler, retry=NO_RETRY) as face, pytest.raises(error) as raised:
        face.get_identity("ada")
    assert raised.value.status == status
    assert raised.value.detail == f"the reason {status}"
    assert str(raised.value) == f"{status}: the reason {status}"
    assert isinstance(raised.value.response, httpx.Response)


def test_an_error_carries_the_services_request_id() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"detail": "identity 'ada' does not exist", "request_id": "req-7"}
        return httpx.Response(404, json=body, headers={"X-Request-ID": "req-7"})

    with client(handler, retry=NO_RETRY) as face, pytest.raises(NotFound) as raised:
        face.get_identity("ada")
    assert raised.value.request_id == "req-7"
    assert raised.value.detail == "identity 'ada' does not exist"
    assert FaceAPIError("no answer").request_id is None


def test_a_validation_error_keeps_the_list_and_reads_as_one_line() -> None:
    detail = [
        {"type": "less_than_equal", "loc": ["body", "top_k"], "msg": "Input should be <= 100"},
        {"type": "missing", "loc": ["body", "image"], "msg": "Field required"},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"detail": detail})

    with client(handler) as face, pytest.raises(Unprocessable) as raised:
        face.identify(b"jpeg", top_k=500)
    assert raised.value.errors == detail
    assert raised.value.detail == "top_k: Input should be <= 100; image: Field required"


def test_a_non_json_error_body_is_still_the_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="Bad Gateway from the proxy")

    with client(handler) as face, pytest.raises(ServerError) as raised:
        face.live()
    assert raised.value.status == 502
    assert raised.value.detail == "Bad Gateway from the proxy"


def retry_then_ok(status: int, retry_after: str, answers: list[httpx.Request]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        answers.append(request)
        if len(answers) == 1:
            return httpx.Response(
                status, json={"detail": "busy"}, headers={"Retry-After": retry_after}
            )
        return httpx.Response(200, json=IDENTITY)

    return handler


def test_a_503_is_retried_after_its_retry_after() -> None:
    requests: list[httpx.Request] = []
    with client(retry_then_ok(503, "1", requests)) as face:
        started = time.monotonic()
        identity = face.get_identity("ada")
        elapsed = time.monotonic() - started
    assert identity.identity_id == "ada"
    assert len(requests) == 2
    assert 1.0 <= elapsed < 2.5  # the second request waited the second the service asked for


@pytest.mark.parametrize("status", [429, 503])
def test_the_wait_is_the_retry_after_seconds_or_date(status: int) -> None:
    requests: list[httpx.Request] = []
    waits: list[float] = []
    with client(retry_then_ok(status, "7", requests)) as face:
        face.sleep = waits.append
        face.get_identity("ada")
    assert waits == [7.0]
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 18 <= (parse_retry_after(later) or 0) <= 20
    assert parse_retry_after("soon") is None


def test_retries_are_bounded_by_attempts_and_backoff_without_retry_after() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={"detail": "Triton is restarting"})

    waits: list[float] = []
    with client(handler, retry=RetryPolicy(attempts=3, backoff_s=0.25)) as face:
        face.sleep = waits.append
        with pytest.raises(Unavailable, match="Triton is restarting"):
            face.get_identity("ada")
    assert len(calls) == 3
    assert waits == [0.25, 0.5]


def test_a_retry_after_beyond_the_limits_is_not_waited_for() -> None:
    requests: list[httpx.Request] = []
    waits: list[float] = []
    policy = RetryPolicy(max_delay_s=30)
    with client(retry_then_ok(503, "120", requests), retry=policy) as face:
        face.sleep = waits.append
        with pytest.raises(Unavailable) as raised:
            face.get_identity("ada")
    assert (waits, len(requests), raised.value.retry_after_s) == ([], 1, 120.0)
    requests.clear()
    with client(retry_then_ok(503, "5", requests), retry=RetryPolicy(max_total_s=3)) as face:
        face.sleep = waits.append
        with pytest.raises(Unavailable):
            face.get_identity("ada")
    assert (waits, len(requests)) == ([], 1)


def test_an_upload_is_sent_again_whole_on_retry() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        if len(bodies) == 1:
            return httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "0"})
        return httpx.Response(201, json={"identity": IDENTITY, "images": []})

    with client(handler) as face:
        result = face.enroll([("a.jpg", b"first-image"), ("b.png", b"second")], identity_id="ada")
    assert result.identity.name == "Ada"
    assert len(bodies) == 2

    def parts(body: bytes) -> list[bytes]:  # each request has its own multipart boundary
        return [line for line in body.split(b"\r\n") if not line.startswith(b"--")]

    assert parts(bodies[0]) == parts(bodies[1])
    assert b"first-image" in bodies[1]
    assert b'filename="a.jpg"' in bodies[1]
    assert b"Content-Type: image/jpeg" in bodies[1]
    assert b'name="identity_id"\r\n\r\nada' in bodies[1]


def test_health_returns_an_unavailable_report_without_retrying() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = {"status": "unavailable", "triton": False, "models": {}, "reason": "down"}
        return httpx.Response(503, json=body, headers={"Retry-After": "5"})

    with client(handler) as face:
        report = face.health()
    assert (report.ready, report.reason, len(calls)) == (False, "down", 1)


def test_key_and_url_from_arguments_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "alive"})

    monkeypatch.setenv("FACE_URL", "http://from-env:9000/")
    monkeypatch.setenv("FACE_API_KEY", "env-key")
    with Client(transport=httpx.MockTransport(handler)) as face:
        face.live()
    with Client(
        "http://given:1", api_key="given-key", transport=httpx.MockTransport(handler)
    ) as face:
        face.live()
    assert str(seen[0].url) == "http://from-env:9000/health/live"
    assert seen[0].headers["X-API-Key"] == "env-key"
    assert str(seen[1].url) == "http://given:1/health/live"
    assert seen[1].headers["X-API-Key"] == "given-key"
    monkeypatch.delenv("FACE_URL")
    monkeypatch.delenv("FACE_API_KEY")
    with Client(transport=httpx.MockTransport(handler)) as face:
        face.live()
    assert str(seen[2].url) == "http://127.0.0.1:3000/health/live"
    assert "X-API-Key" not in seen[2].headers


def test_requests_are_shaped_as_the_api_reads_them() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=IDENTITY)

    with client(handler) as face:
        face.update_identity("ada", name=None)
        face.update_identity("ada", metadata={"team": "x"})
        face.merge("ada", "ada-2")
        face.delete_template("ada", "t/1")
    assert json.loads(seen[0].content) == {"name": None}  # None clears; unset keeps
    assert json.loads(seen[1].content) == {"metadata": {"team": "x"}}
    assert (seen[2].url.path, json.loads(seen[2].content)) == (
        "/identities/ada/merge",
        {"source_id": "ada-2"},
    )
    assert seen[3].url.raw_path == b"/identities/ada/templates/t%2F1"


def test_an_unreachable_service_is_a_connection_failure() -> None:
    face = Client("http://127.0.0.1:9", timeout_s=2, retry=NO_RETRY)
    with face, pytest.raises(ConnectionFailed, match="cannot be reached") as raised:
        face.live()
    assert raised.value.status is None


def test_the_async_client_retries_and_maps_errors_alike() -> None:
    requests: list[httpx.Request] = []
    waits: list[float] = []

    async def scenario() -> None:
        transport = httpx.MockTransport(retry_then_ok(429, "2", requests))
        async with AsyncClient("http://face.test", transport=transport) as face:

            async def sleep(seconds: float) -> None:
                waits.append(seconds)

            face.sleep = sleep
            identity = await face.get_identity("ada")
            assert identity.name == "Ada"

        def missing(request: httpx.Request) -> httpx.Response:
            return httpx.Response(404, json={"detail": "identity 'x' does not exist"})

        async with AsyncClient("http://face.test", transport=httpx.MockTransport(missing)) as face:
            with pytest.raises(NotFound, match="does not exist"):
                await face.delete_identity("x")

    asyncio.run(scenario())
    assert (waits, len(requests)) == ([2.0], 2)


def test_iter_identities_walks_every_page() -> None:
    people = [{**IDENTITY, "identity_id": f"p{i}"} for i in range(5)]

    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        limit = int(request.url.params["limit"])
        page = people[offset : offset + limit]
        return httpx.Response(
            200, json={"items": page, "total": len(people), "offset": offset, "limit": limit}
        )

    with client(handler) as face:
        ids = [i.identity_id for i in face.iter_identities(page_size=2)]
    assert ids == ["p0", "p1", "p2", "p3", "p4"]


def test_the_client_stands_alone_without_the_service_code() -> None:
    """face_client imports nothing of the service: it installs and runs on httpx, pydantic and
    tqdm only."""
    from tests.unit.test_architecture import import_graph

    graph = import_graph()
    client_modules = [name for name in graph if name.split(".")[0] == "face_client"]
    assert len(client_modules) >= 12
    for name in client_modules:
        assert all(imported.split(".")[0] == "face_client" for imported in graph[name]), name


def test_every_photo_method_sends_auto_rotate_only_when_given() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return httpx.Response(422, json={"detail": "no face"})

    photo = ("a.png", b"not read here")
    calls: list[Callable[[Client, bool | None], object]] = [
        lambda face, turn: face.embedding(photo, auto_rotate=turn),
        lambda face, turn: face.face_similarity(photo, photo, auto_rotate=turn),
        lambda face, turn: face.identify(photo, auto_rotate=turn),
        lambda face, turn: face.verify(photo, "ada", auto_rotate=turn),
        lambda face, turn: face.enroll([photo], auto_rotate=turn),
        lambda face, turn: face.add_images("ada", [photo], auto_rotate=turn),
    ]
    with client(handler, retry=NO_RETRY) as face:
        for call in calls:
            for turn in (False, True, None):
                with pytest.raises(Unprocessable):
                    call(face, turn)
    field = b'name="auto_rotate"\r\n\r\n'
    sent = [body.split(field)[1].split(b"\r\n")[0] if field in body else None for body in bodies]
    assert sent == [b"false", b"true", None] * len(calls)
