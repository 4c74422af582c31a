"""Narrow unit tests: HTTP status and Bitrix24 error bodies -> the error types of syncd.core.errors.

These use httpx.MockTransport on purpose (status -> error mapping only); everything else runs
against the fake over loopback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from syncd.connectors.crm.bitrix24.client import Bitrix24Client
from syncd.connectors.http import RetryPolicy, retry_after_seconds
from syncd.core.errors import (
    AuthError,
    FatalError,
    MalformedResponseError,
    RateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)

FIXTURES = Path(__file__).parent / "fixtures" / "bitrix24"


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> Bitrix24Client:
    client = Bitrix24Client(
        "https://b24.example/rest/1/secret-token/", retry=RetryPolicy(max_attempts=1)
    )
    client._http = httpx.Client(transport=httpx.MockTransport(handler))
    return client


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        (503, fixture("error.QUERY_LIMIT_EXCEEDED.assembled.json"), RateLimitedError),
        (429, b'{"error":"OPERATION_TIME_LIMIT","error_description":"blocked"}', RateLimitedError),
        (
            401,
            b'{"error":"NO_AUTH_FOUND","error_description":"Wrong authorization data"}',
            AuthError,
        ),
        (400, fixture("crm.contact.list.error.access-denied.json"), UpstreamRejectedError),
        (400, fixture("crm.item.list.error.invalid-filter.json"), UpstreamRejectedError),
        (403, b'{"error":"insufficient_scope","error_description":""}', AuthError),
        (
            500,
            b'{"error":"INTERNAL_SERVER_ERROR","error_description":"x"}',
            UpstreamUnavailableError,
        ),
        (500, b'{"error":"PORTAL_DELETED","error_description":"x"}', FatalError),
        (502, b"<html><body>502 Bad Gateway</body></html>", UpstreamUnavailableError),
        (200, b'{"result": [', MalformedResponseError),
        (200, b"<html>maintenance</html>", MalformedResponseError),
        (200, b'{"time": {}}', MalformedResponseError),
    ],
)
def test_error_classification(status: int, body: bytes, error_type: type[Exception]) -> None:
    client = client_for(lambda request: httpx.Response(status, content=body))
    with pytest.raises(error_type) as caught:
        client.call("crm.contact.list", {})
    assert "secret-token" not in str(caught.value)


def test_empty_code_access_denied_is_an_auth_error_on_403() -> None:
    client = client_for(
        lambda r: httpx.Response(403, content=b'{"error":"","error_description":"Access denied."}')
    )
    with pytest.raises(AuthError):
        client.call("crm.contact.list", {})


def test_retry_after_header_wins() -> None:
    client = client_for(
        lambda r: httpx.Response(
            503,
            headers={"Retry-After": "7"},
            content=fixture("error.QUERY_LIMIT_EXCEEDED.assembled.json"),
        )
    )
    with pytest.raises(RateLimitedError) as caught:
        client.call("crm.contact.list", {})
    assert caught.value.retry_after == 7.0


def test_retries_transient_errors_then_succeeds() -> None:
    answers = [
        httpx.Response(503, content=fixture("error.QUERY_LIMIT_EXCEEDED.assembled.json")),
        httpx.Response(200, content=fixture("crm.contact.list.response.json")),
    ]
    client = client_for(lambda r: answers.pop(0))
    client.retry = RetryPolicy(max_attempts=3, base_delay=0.0)
    client.retry.delay_for = lambda attempt, error: 0.0  # type: ignore[method-assign]
    response = client.call("crm.contact.list", {})
    assert len(response.result) == 5
    assert client.requests_sent == 2


def test_batch_splits_results_and_errors() -> None:
    body = json.loads(fixture("batch.response.json"))
    body["result"]["result_error"] = {"bad": {"error": "", "error_description": "Access denied."}}
    client = client_for(lambda r: httpx.Response(200, json=body))
    result = client.batch(
        {
            "get_user": ("user.get", {"ID": 1}),
            "get_department": ("department.get", {}),
            "bad": ("crm.contact.list", {}),
        }
    )
    assert result.result["get_user"]["NAME"] == "John"
    assert result.total == {"get_department": 1}
    assert result.next == {}
    assert isinstance(result.errors["bad"], UpstreamRejectedError)


def test_retry_after_http_date() -> None:
    headers = httpx.Headers({"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    assert (retry_after_seconds(headers) or 0) > 1000
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"})) is None


def test_batch_error_for_a_command_not_sent_is_a_classified_error() -> None:
    """An answer carrying an error for a key the client never sent does not belong to this
    request: a retriable MalformedResponseError, never a bare KeyError."""
    body = json.loads(fixture("batch.response.json"))
    body["result"]["result_error"] = {"ghost": {"error": "", "error_description": "x"}}
    client = client_for(lambda r: httpx.Response(200, json=body))
    with pytest.raises(MalformedResponseError, match="not sent"):
        client.batch({"get_user": ("user.get", {"ID": 1})})


def test_batch_reads_each_commands_operating_time() -> None:
    """Every command's ``result_time`` counts against its own method: one near the limit
    pauses that method only, and the headroom of each is known to whoever sizes a batch."""
    import time as time_module

    reset = time_module.time() + 300
    body = {
        "result": {
            "result": {"a": [], "b": []},
            "result_error": [],
            "result_total": [],
            "result_next": [],
            "result_time": {
                "a": {"processing": 0.25, "operating": 470.0, "operating_reset_at": reset},
                "b": {"processing": 0.05, "operating": 12.0, "operating_reset_at": reset},
            },
        },
        "time": {"start": 1.0, "finish": 2.0, "operating": 0, "operating_reset_at": reset},
    }
    client = client_for(lambda r: httpx.Response(200, json=body))
    result = client.batch(
        {"a": ("crm.contact.list", {}), "b": ("crm.item.list", {"entityTypeId": 1040})}
    )
    assert result.seconds == {"a": 0.25, "b": 0.05}
    assert result.nbytes > 0
    assert client.operating_wait("crm.contact.list") > 200  # 470 s of 400 used: paused
    assert client.operating_wait("crm.item.list") == 0
    assert client.operating_headroom("crm.item.list") == pytest.approx(388.0)
    assert client.operating_headroom("crm.company.list") == client.operating_budget_seconds
