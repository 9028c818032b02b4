"""Request ids, the log's formats and the access line, on the real app with stub models
(tests/fakes.py): the id made, kept or replaced, on every answer (the errors and the middlewares'
own) and in every error body; JSON lines that parse and carry it; the access line's fields (the
route's template, the key's name, the faces); no key, image or embedding in any line."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from app import create_app
from face_service.errors import ModelUnavailableError
from face_service.logs import LogFormat, configure_logging, log_handler
from face_service.settings import Settings
from tests.fakes import app_client, fake_services, png

ADMIN_KEY = "operator-admin-key-for-the-tests-0123456789"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path, max_request_bytes=1_000_000) as client:
        yield client


class CapturedLog:
    """The root logger's lines, written by the service's own handler in one format."""

    def __init__(self, log_format: LogFormat) -> None:
        self.stream = io.StringIO()
        self.handler = log_handler(log_format, self.stream)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[str]:
        return self.text.splitlines()

    def records(self) -> list[dict[str, object]]:
        """Every line as JSON (a line that is not fails the test)."""
        return [json.loads(line) for line in self.lines()]

    def service_text(self) -> str:
        """The JSON lines of the service, not those of the tests' own HTTP client (httpx)."""
        lines = self.lines()
        return "\n".join(line for line in lines if json.loads(line)["logger"] != "httpx")


@pytest.fixture
def json_log() -> Iterator[CapturedLog]:
    yield from captured("json")


@pytest.fixture
def text_log() -> Iterator[CapturedLog]:
    yield from captured("text")


def captured(log_format: LogFormat) -> Iterator[CapturedLog]:
    log = CapturedLog(log_format)
    root = logging.getLogger()
    level = root.level
    root.addHandler(log.handler)
    root.setLevel(logging.DEBUG)
    try:
        yield log
    finally:
        root.removeHandler(log.handler)
        root.setLevel(level)


def access_lines(log: CapturedLog, request_id: str) -> list[dict[str, object]]:
    return [
        record
        for record in log.records()
        if record["logger"] == "face_service.access" and record["request_id"] == request_id
    ]


# -- the id


def test_an_id_is_made_when_the_client_sends_none(client: TestClient) -> None:
    first = client.get("/health").headers["X-Request-ID"]
    second = client.get("/health").headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(first)
    assert GENERATED_ID.fullmatch(second)
    assert first != second


@pytest.mark.parametrize("sent", ["abc", "trace-7f.2:span_9", "A" * 128])
def test_a_sane_client_id_is_returned(client: TestClient, sent: str) -> None:
    assert client.get("/health", headers={"X-Request-ID": sent}).headers["X-Request-ID"] == sent


@pytest.mark.parametrize(
    "sent", ["", "A" * 129, "has space", "new\\nline", "<script>", "key=secret;drop", "é"]
)
def test_an_unsafe_client_id_is_replaced(client: TestClient, sent: str) -> None:
    returned = client.get("/health", headers={"X-Request-ID": sent.encode()}).headers[
        "X-Request-ID"
    ]
    assert GENERATED_ID.fullmatch(returned)
    assert returned != sent


def error_answers(tmp_path: Path) -> Iterator[tuple[int, TestClient, str, str, dict]]:
    """(status, client, method, path, request keywords) of each kind of error answer."""
    with app_client(tmp_path / "open", max_request_bytes=1_000_000) as open_client:
        yield 404, open_client, "GET", "/no/such/route", {}
        yield 404, open_client, "GET", "/identities/nobody", {}
        yield 405, open_client, "PUT", "/identities", {}
        too_large = {"content": b"x" * 1_000_001, "headers": {"content-type": "image/png"}}
        yield 413, open_client, "POST", "/embedding", too_large
        no_face = {"files": [("image", ("a.png", png(0), "image/png"))]}
        yield 422, open_client, "POST", "/embedding", no_face
        yield 422, open_client, "POST", "/identify/embedding", {"json": {"embedding": "x"}}

        async def unavailable(*args: object, **kwargs: object) -> object:
            raise ModelUnavailableError("model 'face_detector' is not available")

        open_client.app.state.pipeline.detector.predict = unavailable  # type: ignore[attr-defined]
        one_face = {"files": [("image", ("a.png", png(1), "image/png"))]}
        yield 503, open_client, "POST", "/embedding", one_face
    settings = {"auth": "required", "admin_key": ADMIN_KEY, "rate_limit": "2/minute"}
    with app_client(tmp_path / "keys", **settings) as keyed_client:
        yield 401, keyed_client, "GET", "/identities", {}
        yield 401, keyed_client, "GET", "/identities", {}
        yield 429, keyed_client, "GET", "/identities", {}


def test_every_error_answer_carries_the_id_in_header_and_body(tmp_path: Path) -> None:
    seen = []
    for status, client, method, path, keywords in error_answers(tmp_path):
        sent = f"case-{len(seen)}"
        headers = {**keywords.pop("headers", {}), "X-Request-ID": sent}
        response = client.request(method, path, headers=headers, **keywords)
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["X-Request-ID"] == sent, (status, path)
        assert response.json()["request_id"] == sent, (status, path)
        assert response.json()["detail"], (status, path)
        seen.append(status)
    assert sorted(set(seen)) == [401, 404, 405, 413, 422, 429, 503]


def test_an_unexpected_failure_is_a_500_with_the_id_and_no_internals(client: TestClient) -> None:
    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("internal detail: /secret/path")

    client.app.state.pipeline.detector.predict = broken  # type: ignore[attr-defined]
    response = client.post(
        "/embedding",
        files=[("image", ("a.png", png(1), "image/png"))],
        headers={"X-Request-ID": "crash-1"},
    )
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "crash-1"
    assert response.json()["request_id"] == "crash-1"
    assert "/secret/path" not in response.text


def test_the_openapi_error_bodies_declare_the_id(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("ErrorPublic", "ValidationErrorPublic"):
        assert "request_id" in schemas[name]["properties"], name
        assert "request_id" in schemas[name]["required"], name


# -- the log


def test_json_lines_parse_and_carry_the_id(client: TestClient, json_log: CapturedLog) -> None:
    async def unavailable(*args: object, **kwargs: object) -> object:
        raise ModelUnavailableError("model 'face_detector' is not available")

    client.app.state.pipeline.detector.predict = unavailable  # type: ignore[attr-defined]
    response = client.post(
        "/embedding",
        files=[("image", ("a.png", png(1), "image/png"))],
        headers={"X-Request-ID": "json-1"},
    )
    assert response.status_code == 503
    records = json_log.records()  # every line parses
    mine = [record for record in records if record["request_id"] == "json-1"]
    loggers = {record["logger"] for record in mine}
    assert {"face_service", "face_service.access"} <= loggers  # the 503's warning, the access
    for record in mine:
        assert {"time", "level", "logger", "message", "request_id"} <= record.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*", str(record["time"]))
    warning = next(record for record in mine if record["logger"] == "face_service")
    assert warning["level"] == "WARNING"
    assert "face_detector" in str(warning["message"])
    # Lines written outside a request say so rather than borrowing an id.
    logging.getLogger("face_service").info("outside")
    assert json_log.records()[-1]["request_id"] is None


def test_text_lines_show_the_id(client: TestClient, text_log: CapturedLog) -> None:
    client.get("/identities/nobody", headers={"X-Request-ID": "text-1"})
    line = next(line for line in text_log.lines() if "face_service.access" in line)
    assert "[text-1]" in line
    assert "GET /identities/{identity_id} 404" in line
    logging.getLogger("face_service").info("outside")
    assert "[-] outside" in text_log.lines()[-1]


def test_the_access_line_names_route_status_duration_faces_and_client(
    client: TestClient, json_log: CapturedLog
) -> None:
    response = client.post(
        "/extract",
        files=[
            ("images", ("a.png", png(2), "image/png")),
            ("images", ("b.png", png(3), "image/png")),
        ],
        headers={"X-Request-ID": "extract-1"},
    )
    assert response.status_code == 200
    client.get("/identities/some-person-id", headers={"X-Request-ID": "get-1"})
    client.get("/no/such/place", headers={"X-Request-ID": "none-1"})
    [extract] = access_lines(json_log, "extract-1")
    assert extract["method"] == "POST"
    assert extract["route"] == "/extract"
    assert extract["status"] == 200
    assert extract["faces"] == 5
    assert isinstance(extract["duration_ms"], float)
    assert extract["duration_ms"] > 0
    assert extract["client"] == "testclient"
    assert extract["key_name"] is None  # authentication is off
    [lookup] = access_lines(json_log, "get-1")
    assert (lookup["route"], lookup["status"], lookup["faces"]) == (
        "/identities/{identity_id}",
        404,
        0,
    )
    [unmatched] = access_lines(json_log, "none-1")
    assert (unmatched["route"], unmatched["status"]) == ("(unmatched)", 404)
    assert "some-person-id" not in json_log.service_text()
    assert "/no/such/place" not in json_log.service_text()
    assert len(access_lines(json_log, "extract-1")) == 1  # one line a request, not uvicorn's too


def test_the_access_line_names_the_key_and_no_secret_reaches_the_log(
    tmp_path: Path, json_log: CapturedLog
) -> None:
    settings = {"auth": "required", "admin_key": ADMIN_KEY}
    with app_client(tmp_path, **settings) as client:
        made = client.post(
            "/keys",
            json={"name": "reception", "scopes": ["write"]},
            headers={"X-API-Key": ADMIN_KEY},
        )
        key = made.json()["key"]
        image = png(1)
        enrolled = client.post(
            "/identities",
            data={"identity_id": "ann"},
            files=[("images", ("a.png", image, "image/png"))],
            headers={"Authorization": f"Bearer {key}", "X-Request-ID": "enroll-1"},
        )
        assert enrolled.status_code == 201, enrolled.text
        embedded = client.post(
            "/extract",
            json={"images": {"data": [base64.b64encode(image).decode()]}, "return_embedding": True},
            headers={"X-API-Key": key, "X-Request-ID": "extract-1"},
        )
        assert embedded.status_code == 200, embedded.text
        refused = client.get("/identities", headers={"X-API-Key": key[:-4] + "AAAA"})
        assert refused.status_code == 401
    [enroll] = access_lines(json_log, "enroll-1")
    assert (enroll["route"], enroll["status"], enroll["key_name"]) == (
        "/identities",
        201,
        "reception",
    )
    assert enroll["faces"] == 1
    [extract] = access_lines(json_log, "extract-1")
    assert (extract["key_name"], extract["faces"]) == ("reception", 1)
    embedding = embedded.json()["images"][0]["faces"][0]["embedding"]
    logged = json_log.service_text()
    for secret in (key, key[:-4] + "AAAA", key[-43:], ADMIN_KEY):
        assert secret not in logged
    assert base64.b64encode(image).decode()[:40] not in logged
    assert "PNG" not in logged
    assert json.dumps(embedding[:8])[1:-1] not in logged
    assert all(len(line) < 2000 for line in json_log.lines())


def test_the_servers_report_of_a_crash_carries_the_id(
    tmp_path: Path, json_log: CapturedLog
) -> None:
    """Under uvicorn (as app.main runs it) the traceback of an unexpected failure, which uvicorn
    logs after the answer, is found by the request's id."""
    app = create_app(Settings(data_dir=tmp_path), services=fake_services)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]

        async def broken(*args: object, **kwargs: object) -> object:
            raise RuntimeError("boom in the detector")

        app.state.pipeline.detector.predict = broken
        answer = httpx.post(
            f"http://127.0.0.1:{port}/embedding",
            files={"image": ("a.png", png(1), "image/png")},
            headers={"X-Request-ID": "crash-2"},
            timeout=30,
        )
    finally:
        server.should_exit = True
        thread.join(30)
    assert answer.status_code == 500
    assert answer.json()["request_id"] == "crash-2"
    crash = [record for record in json_log.records() if "exc_info" in record]
    assert crash, json_log.text
    assert crash[0]["request_id"] == "crash-2"
    assert "boom in the detector" in str(crash[0]["exc_info"])
    [access] = access_lines(json_log, "crash-2")
    assert access["status"] == 500


@pytest.fixture
def saved_logging() -> Iterator[None]:
    """The process's logging as it was, after a test that configures it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    loggers = {name: logging.getLogger(name) for name in names}
    saved = {
        name: (list(logger.handlers), logger.propagate, logger.disabled)
        for name, logger in loggers.items()
    }
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, (old_handlers, propagate, disabled) in saved.items():
            loggers[name].handlers[:] = old_handlers
            loggers[name].propagate = propagate
            loggers[name].disabled = disabled
        logging.captureWarnings(False)


def test_configure_logging_routes_everything_through_one_handler(
    saved_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "warning")
    root = logging.getLogger()
    assert len(root.handlers) == 1
    assert root.level == logging.WARNING
    assert logging.getLogger("uvicorn.access").disabled  # the service writes its own
    logging.getLogger("uvicorn.error").warning("from uvicorn")
    logging.getLogger("some.library").warning("from a library")
    logging.getLogger("face_service").info("below the level")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("uvicorn.error", "from uvicorn"),
        ("some.library", "from a library"),
    ]


def test_text_and_json_handlers_agree_on_a_line_outside_requests(
    text_log: CapturedLog, json_log: CapturedLog
) -> None:
    # The text handler sees each record first: what it shows ("-") must not become the id.
    logging.getLogger("face_service").warning("outside any request")
    assert json_log.records()[-1]["request_id"] is None
    assert "[-] outside any request" in text_log.lines()[-1]
