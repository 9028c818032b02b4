"""What both clients share: the base URL and key from arguments or the environment, the
headers, turning an answer into a result or a typed error, and the retry loop's decisions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from face_client.calls import Call
from face_client.errors import ConnectionFailed, FaceAPIError, from_response
from face_client.retry import RetryPolicy, parse_retry_after

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:3000"
URL_VARIABLE = "FACE_URL"
KEY_VARIABLE = "FACE_API_KEY"
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Settings:
    url: str
    api_key: str | None
    timeout_s: float
    retry: RetryPolicy

    @classmethod
    def resolve(
        cls,
        url: str | None,
        api_key: str | None,
        timeout_s: float | None,
        retry: RetryPolicy | None,
    ) -> Settings:
        """Arguments first, then FACE_URL / FACE_API_KEY, then the defaults."""
        return cls(
            url=(url or os.environ.get(URL_VARIABLE) or DEFAULT_URL).rstrip("/"),
            api_key=api_key or os.environ.get(KEY_VARIABLE) or None,
            timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
            retry=retry or RetryPolicy(),
        )

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": "face-client/0.1", "Accept": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        return headers


def request_arguments(call: Call[Any]) -> dict[str, Any]:
    arguments: dict[str, Any] = {"params": call.params}
    if call.files is not None:
        arguments["files"] = call.files
        arguments["data"] = call.data or {}
    elif call.json is not None:
        arguments["json"] = call.json
    return arguments


def retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


def retryable(call: Call[Any], policy: RetryPolicy, response: httpx.Response) -> bool:
    return call.retry and response.status_code in policy.statuses


def result(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer, or the typed error for it."""
    if response.is_success or response.status_code in call.accept:
        return call.parse(response)
    raise from_response(response, retry_after(response))


def connection_failed(call: Call[Any], url: str, error: httpx.TransportError) -> FaceAPIError:
    kind = (
        "did not answer in time"
        if isinstance(error, httpx.TimeoutException)
        else ("cannot be reached")
    )
    failure = ConnectionFailed(f"{call.method} {call.path}: {url} {kind} ({error})")
    failure.__cause__ = error
    return failure


def connect_retryable(call: Call[Any], policy: RetryPolicy, error: httpx.TransportError) -> bool:
    # Only a connection that was never made is safe to repeat for a write.
    return call.retry and policy.connect_errors and isinstance(error, httpx.ConnectError)
