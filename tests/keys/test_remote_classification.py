"""How ``RemoteKeyProvider`` classifies SDK failures for the availability rules: a refusal by
the customer's side is ``KeyAccessDenied``, anything else ``KeyProviderUnavailable``.

A vault answering with garbage is an outage, never a refusal (unless its status line was a
refusal). The exception classes the SDK raises on garbage are classified directly; then the
real SDK parses canned garbage answers: ``CannedVault`` is a ``requests`` transport adapter
(no network) that answers the Key Vault 401 challenge and then the given status and body, so
everything from azure-core's response handling to the provider's reading of the result runs
as in production. Garbage over a real HTTPS connection is in
``tests/keys/test_vault_garbage.py``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    DeserializationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import RequestsTransport

from customerkey.errors import KeyAccessDenied, KeyProviderUnavailable
from customerkey.keyprovider.base import KeyUri
from customerkey.keyprovider.remote import RemoteKeyProvider

URI = KeyUri.parse("https://contoso-vault-a.vault.localhost:9443/keys/root-a/" + "a" * 32)


def _with_status(error: HttpResponseError, status: int | None) -> HttpResponseError:
    error.status_code = status
    return error


def _raise(error: BaseException) -> None:
    raise error


@pytest.mark.parametrize(
    "error",
    [
        _with_status(HttpResponseError(message="Forbidden"), 403),
        _with_status(HttpResponseError(message="Bad request"), 400),
        _with_status(HttpResponseError(message="Conflict"), 409),
        _with_status(ResourceNotFoundError(message="KeyNotFound"), 404),
        _with_status(ClientAuthenticationError(message="vault said 401"), 401),
        # the token endpoint refused the service principal (a reset secret, a removed app)
        _with_status(ClientAuthenticationError(message="token request failed (401)"), 401),
        _with_status(ClientAuthenticationError(message="token request failed (400)"), 400),
    ],
)
def test_refusals_are_access_denied(error: BaseException) -> None:
    with pytest.raises(KeyAccessDenied):
        RemoteKeyProvider._call(URI, lambda: _raise(error))


@pytest.mark.parametrize(
    "error",
    [
        _with_status(HttpResponseError(message="Internal"), 500),
        _with_status(HttpResponseError(message="Unavailable"), 503),
        _with_status(HttpResponseError(message="Throttled"), 429),
        ServiceRequestError("connection refused"),
        ServiceResponseError("connection reset"),
        ServiceResponseTimeoutError("read timed out"),
        # no token at all: the token endpoint could not be reached, or failed
        ClientAuthenticationError(message="token request failed: connection refused"),
        _with_status(ClientAuthenticationError(message="token request failed (503)"), 503),
        _with_status(ClientAuthenticationError(message="token request failed (429)"), 429),
        OSError("network down"),
    ],
)
def test_outages_are_unavailable(error: BaseException) -> None:
    with pytest.raises(KeyProviderUnavailable):
        RemoteKeyProvider._call(URI, lambda: _raise(error))


def test_success_passes_through() -> None:
    assert RemoteKeyProvider._call(URI, lambda: b"key") == b"key"


# ---------------------------------------------------------------- garbage: exception classes


def _json_error() -> ValueError:
    try:
        json.loads("<html>")
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


def _base64_error() -> binascii.Error:
    try:
        base64.b64decode("abcde", validate=True)
    except binascii.Error as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "error",
    [
        TypeError("cannot convert 'NoneType' object to bytes"),
        KeyError("value"),
        AttributeError("'list' object has no attribute 'result'"),
        IndexError("list index out of range"),
        _json_error(),
        _base64_error(),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        RecursionError("maximum recursion depth exceeded"),
        DeserializationError("Cannot deserialize"),
        _with_status(DecodeError(message="JSON is invalid"), 200),
        _with_status(IncompleteReadError(message="body cut short"), 200),
        _with_status(DecodeError(message="JSON is invalid"), 500),
        DecodeError(message="JSON is invalid"),  # no status at all
    ],
    ids=lambda e: type(e).__name__,
)
def test_garbage_is_unavailable_and_names_the_key(error: BaseException) -> None:
    with pytest.raises(KeyProviderUnavailable) as failed:
        RemoteKeyProvider._call(URI, lambda: _raise(error))
    assert failed.value.message.startswith(f"{URI}: ")
    assert not isinstance(failed.value, KeyAccessDenied)


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_refusal_with_an_unreadable_body_is_still_a_refusal(status: int) -> None:
    error = _with_status(DecodeError(message="JSON is invalid"), status)
    with pytest.raises(KeyAccessDenied, match=f"HTTP {status}"):
        RemoteKeyProvider._call(URI, lambda: _raise(error))


# ---------------------------------------------------------------- garbage: through the real SDK

CHALLENGE = (
    'Bearer authorization="https://localhost:9443/contoso", resource="https://vault.localhost:9443"'
)
KID = "https://contoso-vault-a.vault.localhost:9443/keys/root-a/" + "b" * 32


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class CannedVault(requests.adapters.BaseAdapter):
    """Answers the 401 challenge, then every authorized request with ``status`` and ``body``."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        super().__init__()
        self.status, self.body, self.content_type = status, body, content_type
        self.requests: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.requests.append(str(request.url))
        response = requests.Response()
        response.request = request
        response.url = str(request.url)
        if "Authorization" not in request.headers:
            response.status_code = 401
            response.headers["WWW-Authenticate"] = CHALLENGE
            response.raw = io.BytesIO(b"")
        else:
            response.status_code = self.status
            response.headers["Content-Type"] = self.content_type
            response.raw = io.BytesIO(self.body)
        return response

    def close(self) -> None:
        pass


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("token", int(datetime.now(UTC).timestamp()) + 3600)


def _provider(status: int, body: bytes, content_type: str = "application/json") -> Any:
    provider = RemoteKeyProvider(StaticToken(), verify=False, retries=0)  # type: ignore[arg-type]
    session = requests.Session()
    session.mount("https://", CannedVault(status, body, content_type))
    provider._options["transport"] = RequestsTransport(session=session, session_owner=False)
    return provider


GOOD_KEY = bytes(range(32))
UNWRAP_GARBAGE = {
    "invalid-json": b'{"kid": "x", "value": ',
    "html-200": b"<html><body><h1>Welcome to nginx!</h1></body></html>",
    "empty-body": b"",
    "a-list": b"[1, 2, 3]",
    "a-string": b'"value"',
    "null": b"null",
    "missing-value": json.dumps({"kid": KID}).encode(),
    "value-a-number": b'{"value": 12}',
    "value-negative": b'{"value": -1}',
    "value-true": b'{"value": true}',
    "value-an-object": b'{"value": {"a": 1}}',
    "value-a-list": b'{"value": [1, 2]}',
    "value-empty": b'{"value": ""}',
    "bad-base64": b'{"value": "!!!***"}',
    "bad-base64-length": b'{"value": "abcde"}',
    "not-utf8": b'{"value": "\xff\xfe"}',
    "deeply-nested": b"[" * 100_000 + b"]" * 100_000,
}


def test_the_canned_vault_passes_a_good_answer() -> None:
    body = json.dumps({"kid": KID, "value": _b64url(GOOD_KEY)}).encode()
    assert _provider(200, body).unwrap(URI, b"wrapped") == GOOD_KEY


@pytest.mark.parametrize("name", sorted(UNWRAP_GARBAGE))
def test_an_unwrap_answer_of_garbage_is_unavailable(name: str) -> None:
    provider = _provider(
        200, UNWRAP_GARBAGE[name], "text/html" if "html" in name else "application/json"
    )
    with pytest.raises(KeyProviderUnavailable) as failed:
        provider.unwrap(URI, b"wrapped")
    assert failed.value.message.startswith(f"{URI}: ")
    assert not isinstance(failed.value, KeyAccessDenied)


@pytest.mark.parametrize("name", ["missing-value", "value-a-number", "html-200", "bad-base64"])
def test_a_wrap_answer_of_garbage_is_unavailable(name: str) -> None:
    with pytest.raises(KeyProviderUnavailable, match="root-a"):
        _provider(200, UNWRAP_GARBAGE[name]).wrap(URI, GOOD_KEY)


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"key": {"kid": 5}}',
        json.dumps({"key": {"kid": KID.rsplit("/", 1)[0], "kty": "RSA", "n": "AQAB"}}).encode(),
        json.dumps({"key": {"kid": KID, "kty": "RSA", "n": 7}}).encode(),
        json.dumps(
            {"key": {"kid": KID, "kty": "RSA", "n": "AQAB"}, "attributes": {"exp": "soon"}}
        ).encode(),
        json.dumps({"key": {"kid": KID, "kty": "RSA", "n": "AQAB", "key_ops": 5}}).encode(),
        b"<html></html>",
    ],
    ids=[
        "empty",
        "kid-a-number",
        "no-version",
        "n-a-number",
        "exp-a-string",
        "ops-a-number",
        "html",
    ],
)
def test_a_get_key_answer_of_garbage_is_unavailable(body: bytes) -> None:
    with pytest.raises(KeyProviderUnavailable, match="root-a"):
        _provider(200, body).properties(URI.unversioned())


@pytest.mark.parametrize("status", [403, 404])
def test_a_refusal_in_html_is_still_a_refusal(status: int) -> None:
    with pytest.raises(KeyAccessDenied):
        _provider(status, b"<html>Forbidden</html>", "text/html").unwrap(URI, b"wrapped")


def test_a_server_error_in_html_is_unavailable() -> None:
    with pytest.raises(KeyProviderUnavailable):
        _provider(502, b"<html>Bad gateway</html>", "text/html").unwrap(URI, b"wrapped")
