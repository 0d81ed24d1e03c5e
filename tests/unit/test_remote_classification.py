"""How ``RemoteKeyProvider`` classifies SDK failures for the availability rules: a refusal by
the customer's side is ``KeyAccessDenied``, anything else ``KeyProviderUnavailable``."""

from __future__ import annotations

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)

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
