"""Every error path of the keys API and the token endpoint, over raw HTTPS (httpx).

Each refusal must be a 4xx in Key Vault's shape ``{"error": {"code", "message"}}`` (the token
endpoint answers in Entra ID's OAuth2 shape) and must change nothing: every test here runs
under ``unchanged``, which compares the vault's keys before and after, and the last test reads
the vault back through the CLI. Expired, not-yet-valid and otherwise forged tokens are signed
with the server's own token keys (``DIR/token-keys``) through ``TokenSigner.open`` with a
``FrozenClock``, so the only thing wrong with each is the thing under test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from customerkey.api.tokens import TokenSigner
from customerkey.clock import FrozenClock, SystemClock
from customerkey.rng import SystemRng

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "err-vault"
APP, READER = "err-app@contoso.com", "err-reader@contoso.com"
API = "api-version=7.5"
LIMIT = 4 * 1024 * 1024


@dataclass
class Env:
    server: LiveServer
    app_token: str
    reader_token: str
    target: dict[str, Any]
    app_object_id: str = ""  # what tokens name as their subject

    @property
    def vault(self) -> str:
        return self.server.vault_url(VAULT)

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "app",
        host: str | None = None,
        query: str | None = API,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A keys-API request to ``path`` on the vault host, as ``app`` unless told."""
        sent = dict(headers or {})
        if token is not None:
            bearer = {"app": self.app_token, "reader": self.reader_token}.get(token, token)
            sent.setdefault("Authorization", f"Bearer {bearer}")
        url = f"{host or self.vault}{path}" + (f"?{query}" if query is not None else "")
        return self.server.http.request(method, url, headers=sent, **kwargs)

    def raw_json(self, method: str, path: str, body: bytes, **kwargs: Any) -> httpx.Response:
        return self.call(
            method, path, content=body, headers={"Content-Type": "application/json"}, **kwargs
        )

    def state(self) -> dict[str, Any]:
        """What a refusal must not change: the keys, their versions and attributes."""
        keys = self.call("GET", "/keys", query=f"{API}&maxresults=25")
        versions = self.call("GET", "/keys/target/versions")
        newest = self.call("GET", "/keys/target")
        deleted = self.call("GET", "/deletedkeys")
        policy = self.call("GET", "/keys/target/rotationpolicy")
        for response in (keys, versions, newest, deleted, policy):
            assert response.status_code == 200, response.text
        return {
            "keys": keys.json(),
            "versions": versions.json(),
            "newest": newest.json(),
            "deleted": deleted.json(),
            "policy": policy.json(),
        }


@pytest.fixture(scope="module")
def env(live_server: LiveServer) -> Env:
    server = live_server
    server.create_vault(VAULT)
    app_secret = server.create_principal(APP)
    reader_secret = server.create_principal(READER)
    server.grant(VAULT, APP, ["all"])
    server.grant(VAULT, READER, ["get"])
    env = Env(
        server,
        app_token=server.token(APP, app_secret),
        reader_token=server.token(READER, reader_secret),
        target={},
        app_object_id=server.admin("GET", f"/principals/{APP}").json()["ObjectId"],
    )
    created = env.call(
        "POST",
        "/keys/target/create",
        json={"kty": "RSA", "key_size": 2048, "key_ops": ["wrapKey", "unwrapKey"]},
    )
    assert created.status_code == 200, created.text
    env.target = created.json()
    return env


@pytest.fixture
def unchanged(env: Env, live: LiveServer) -> Iterator[Env]:
    before = env.state()
    yield env
    assert env.state() == before


pytestmark = pytest.mark.usefixtures("unchanged")


def assert_kv_error(response: httpx.Response, status: int, code: str) -> str:
    """The response is ``status`` with exactly ``{"error": {"code": code, "message": ...}}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message.strip(), body
    return message


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert response.headers["cache-control"] == "no-store"


# ------------------------------------------------------------------ authentication


def _challenge(env: Env, tenant: str) -> str:
    return f'Bearer authorization="{env.server.url}/{tenant}", resource="{env.server.resource}"'


def test_no_token_gets_401_and_the_key_vault_challenge(env: Env) -> None:
    response = env.call("GET", "/keys/target", token=None)
    message = assert_kv_error(response, 401, "Unauthorized")
    assert "Bearer" in message
    assert response.headers["www-authenticate"] == _challenge(env, "contoso")

    # The SDK's first, body-less request to a vault of unknown tenant, and a create.
    unknown = env.call("GET", "/keys/target", token=None, host=env.server.vault_url("no-vault"))
    assert_kv_error(unknown, 401, "Unauthorized")
    assert unknown.headers["www-authenticate"] == _challenge(env, "common")
    create = env.call("POST", "/keys/sneaky/create", token=None, json={"kty": "RSA"})
    assert_kv_error(create, 401, "Unauthorized")
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "bearer"):
        other = env.call("GET", "/keys/target", token=None, headers={"Authorization": header})
        assert_kv_error(other, 401, "Unauthorized")
        assert other.headers["www-authenticate"] == _challenge(env, "contoso")


def _signer(env: Env, tmp: Path | None = None, **options: Any) -> TokenSigner:
    """A signer with the server's own keys (or, with ``tmp``, keys of its own)."""
    clock = options.pop("clock", SystemClock())
    return TokenSigner.open(
        tmp or env.server.home / "token-keys",
        clock=clock,
        rng=SystemRng(),
        issuer=options.pop("issuer", env.server.url),
    )


def _mint(signer: TokenSigner, env: Env, **claims: Any) -> str:
    fields: dict[str, Any] = {
        "subject": env.app_object_id,
        "tenant": "contoso",
        "audience": env.server.resource,
        "lifetime": timedelta(minutes=30),
        **claims,
    }
    return signer.issue(**fields).access_token


def _tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[10] != "A" else "B").join((signature[:10], signature[11:]))
    return ".".join((head, payload, flipped))


def _tamper_payload(token: str) -> str:
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else@contoso.com"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return ".".join((head, forged, signature))


def test_a_token_minted_with_the_server_keys_is_accepted(env: Env) -> None:
    """The control for the forged tokens below: minted the same way, nothing wrong with it."""
    token = _mint(_signer(env), env)
    response = env.call("GET", "/keys/target", token=token)
    assert response.status_code == 200, response.text
    assert response.json()["key"]["kid"] == env.target["key"]["kid"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("garbage", "malformed"),
        ("bad signature", "signature is invalid"),
        ("edited claims", "signature is invalid"),
        ("foreign keys", "unknown or retired key"),
        ("expired", "expired"),
        ("not yet valid", "not valid before"),
        ("wrong audience", "audience"),
        ("wrong issuer", "not issued by this service"),
        ("unknown principal", "no longer exists"),
    ],
)
def test_bad_tokens_get_401(env: Env, tmp_path: Path, case: str, expected: str) -> None:
    real = _signer(env)
    now = datetime.now(UTC)
    token = {
        "garbage": lambda: "not.a.jwt",
        "bad signature": lambda: _tamper_signature(env.app_token),
        "edited claims": lambda: _tamper_payload(env.app_token),
        "foreign keys": lambda: _mint(_signer(env, tmp_path / "other-keys"), env),
        "expired": lambda: _mint(
            _signer(env, clock=FrozenClock(now - timedelta(hours=2))),
            env,
            lifetime=timedelta(hours=1),
        ),
        "not yet valid": lambda: _mint(
            _signer(env, clock=FrozenClock(now + timedelta(hours=1))), env
        ),
        "wrong audience": lambda: _mint(real, env, audience="https://graph.microsoft.com"),
        "wrong issuer": lambda: _mint(_signer(env, issuer="https://login.example.com"), env),
        "unknown principal": lambda: _mint(real, env, subject="ghost@contoso.com"),
    }[case]()
    for method, path, body in (
        ("GET", "/keys/target", None),
        ("POST", "/keys/target//wrapkey", {"alg": "RSA-OAEP-256", "value": "AAAA"}),
        ("POST", "/keys/forged/create", {"kty": "RSA"}),
    ):
        response = env.call(method, path, token=token, json=body)
        message = assert_kv_error(response, 401, "Unauthorized")
        assert expected in message, message
        assert response.headers["www-authenticate"] == _challenge(env, "contoso")


def test_forbidden_operations_get_403(env: Env) -> None:
    assert env.call("GET", "/keys/target", token="reader").status_code == 200
    version = env.target["key"]["kid"].rsplit("/", 1)[1]
    for method, path, body, permission in (
        (
            "POST",
            f"/keys/target/{version}/wrapkey",
            {"alg": "RSA-OAEP", "value": "AAAA"},
            "wrapKey",
        ),
        ("POST", "/keys/target//unwrapkey", {"alg": "RSA-OAEP", "value": "AAAA"}, "unwrapKey"),
        ("POST", "/keys/target//encrypt", {"alg": "RSA-OAEP", "value": "AAAA"}, "encrypt"),
        ("POST", "/keys/reader-key/create", {"kty": "RSA"}, "create"),
        ("PATCH", "/keys/target/", {"attributes": {"enabled": False}}, "update"),
        ("DELETE", "/keys/target", None, "delete"),
        ("GET", "/keys", None, "list"),
        ("POST", "/keys/target/backup", None, "backup"),
        ("POST", "/keys/target/rotate", None, "rotate"),
        ("PUT", "/keys/target/rotationpolicy", {"lifetimeActions": []}, "setrotationpolicy"),
        ("GET", "/deletedkeys", None, "list"),
    ):
        response = env.call(method, path, token="reader", json=body)
        message = assert_kv_error(response, 403, "Forbidden")
        assert f"'{READER}' does not have keys {permission} permission" in message, message
        assert f"key vault '{VAULT};location=eastus'" in message


# ------------------------------------------------------------------ not found


@pytest.mark.parametrize(
    ("method", "path", "host", "code"),
    [
        ("GET", "/keys/no-such-key", None, "KeyNotFound"),
        ("GET", "/keys/target/" + "0" * 32, None, "KeyNotFound"),
        ("PATCH", "/keys/target/" + "f" * 32, None, "KeyNotFound"),
        ("POST", "/keys/no-such-key//wrapkey", None, "KeyNotFound"),
        ("POST", "/keys/target/" + "0" * 32 + "/unwrapkey", None, "KeyNotFound"),
        ("GET", "/keys/no-such-key/versions", None, "KeyNotFound"),
        ("GET", "/keys/no-such-key/rotationpolicy", None, "KeyNotFound"),
        ("POST", "/keys/no-such-key/rotate", None, "KeyNotFound"),
        ("POST", "/keys/no-such-key/backup", None, "KeyNotFound"),
        ("DELETE", "/keys/no-such-key", None, "KeyNotFound"),
        ("GET", "/deletedkeys/target", None, "KeyNotFound"),
        ("POST", "/deletedkeys/target/recover", None, "KeyNotFound"),
        ("DELETE", "/deletedkeys/target", None, "KeyNotFound"),
        ("GET", "/keys/target", "no-such-vault", "VaultNotFound"),
        ("GET", "/keys", "no-such-vault", "VaultNotFound"),
        ("GET", "/keys/target", "localhost", "NotFound"),
        ("GET", "/no/such/route", None, "NotFound"),
    ],
)
def test_not_found(env: Env, method: str, path: str, host: str | None, code: str) -> None:
    url = None
    if host == "localhost":
        url = env.server.url
    elif host is not None:
        url = env.server.vault_url(host)
    body = {"alg": "RSA-OAEP", "value": "AAAA"} if path.endswith("wrapkey") else None
    if method == "PATCH":
        body = {"tags": {"x": "y"}}
    response = env.call(method, path, host=url, json=body)
    assert_kv_error(response, 404, code)


# ------------------------------------------------------------------ malformed requests

MALFORMED = {
    "not json": b"{not json",
    "empty": b"",
    "truncated": b'{"kty": "RSA"',
    "array": b"[]",
    "null": b"null",
    "string": b'"RSA"',
    "invalid utf-8": b'{"kty": "\xff\xfe"}',
    "lone surrogate": b'{"kty": "RSA", "tags": {"a": "\\ud800"}}',
    "surrogate key": b'{"kty": "RSA", "tags": {"\\udfff": "a"}}',
    "deep nesting": b'{"kty": "RSA", "tags": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("body", list(MALFORMED.values()), ids=list(MALFORMED))
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/keys/fresh/create"),
        ("POST", "/keys/target/create"),
        ("PATCH", "/keys/target/"),
        ("PUT", "/keys/imported"),
        ("POST", "/keys/target//wrapkey"),
        ("POST", "/keys/restore"),
        ("PUT", "/keys/target/rotationpolicy"),
    ],
)
def test_malformed_json_gets_400(env: Env, method: str, path: str, body: bytes) -> None:
    assert_kv_error(env.raw_json(method, path, body), 400, "BadParameter")


WRONG_TYPES: list[tuple[str, str, Any]] = [
    ("POST", "/keys/fresh/create", {"kty": 5}),
    ("POST", "/keys/fresh/create", {}),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "key_size": "2048"}),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "key_size": True}),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "key_size": 2048.5}),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "key_ops": "wrapKey"}),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "key_ops": [1]}),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "attributes": "enabled"}),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "attributes": {"enabled": "yes"}}),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "attributes": {"nbf": "tomorrow"}}),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "tags": {"a": 1}}),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "tags": ["a"]}),
    ("POST", "/keys/target/create", {"kty": "RSA", "public_exponent": "65537"}),
    ("PATCH", "/keys/target/", {"attributes": {"enabled": "no"}}),
    ("PATCH", "/keys/target/", {"attributes": {"enabled": 0}}),
    ("PATCH", "/keys/target/", {"attributes": {"exp": "never"}}),
    ("PATCH", "/keys/target/", {"key_ops": {"wrapKey": True}}),
    ("PATCH", "/keys/target/", {"tags": "x"}),
    ("PUT", "/keys/imported", {"key": "x"}),
    ("PUT", "/keys/imported", {"key": {"n": "AQAB"}}),
    ("PUT", "/keys/imported", {"key": {"kty": "RSA"}, "Hsm": "yes"}),
    ("POST", "/keys/target//wrapkey", {"alg": "RSA-OAEP", "value": 5}),
    ("POST", "/keys/target//wrapkey", {"alg": None, "value": "AAAA"}),
    ("POST", "/keys/target//unwrapkey", {"alg": "RSA-OAEP"}),
    ("POST", "/keys/restore", {"value": 7}),
    ("POST", "/keys/restore", {}),
    ("PUT", "/keys/target/rotationpolicy", {"lifetimeActions": "rotate"}),
    ("PUT", "/keys/target/rotationpolicy", {"lifetimeActions": [{"trigger": {}}]}),
    ("PUT", "/keys/target/rotationpolicy", {"attributes": {"expiryTime": 90}}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRONG_TYPES)
def test_wrong_types_get_400(env: Env, method: str, path: str, body: Any) -> None:
    assert_kv_error(env.call(method, path, json=body), 400, "BadParameter")


BAD_VALUES: list[tuple[str, str, Any, str]] = [
    ("POST", "/keys/fresh/create", {"kty": "EC", "crv": "P-192"}, "P-192"),
    ("POST", "/keys/fresh/create", {"kty": "oct-HSM"}, "not supported"),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "key_size": 1024}, "1024"),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "key_ops": ["fly"]}, "fly"),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "public_exponent": 17}, "exponent"),
    (
        "POST",
        "/keys/fresh/create",
        {"kty": "RSA", "attributes": {"nbf": 2_000_000_000, "exp": 1_900_000_000}},
        "expiry",
    ),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "attributes": {"exp": 10**15}}, "unix"),
    ("POST", "/keys/fresh/create", {"kty": "RSA", "tags": {str(i): "v" for i in range(16)}}, "15"),
    ("POST", "/keys/bad_name!/create", {"kty": "RSA"}, "invalid"),
    ("POST", "/keys/" + "k" * 128 + "/create", {"kty": "RSA"}, "invalid"),
    ("PATCH", "/keys/target/zz", {"tags": {}}, "version"),
    (
        "PATCH",
        "/keys/target/",
        {"attributes": {"nbf": 4_000_000_000, "exp": 3_000_000_000}},
        "expiry",
    ),
    ("PATCH", "/keys/target/", {"key_ops": ["sign", "teleport"]}, "teleport"),
    ("PUT", "/keys/imported", {"key": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}, "private"),
    ("PUT", "/keys/imported", {"key": {"kty": "oct", "k": "AAAA"}}, "RSA"),
    ("POST", "/keys/target//wrapkey", {"alg": "RSA-OAEP-512", "value": "AAAA"}, "RSA-OAEP-512"),
    ("POST", "/keys/target//wrapkey", {"alg": "RSA-OAEP", "value": "!!!"}, "base64url"),
    ("POST", "/keys/target//wrapkey", {"alg": "RSA-OAEP", "value": "A" * 400}, "at most"),
    ("POST", "/keys/target//unwrapkey", {"alg": "RSA-OAEP", "value": "AAAA"}, "decrypted"),
    ("POST", "/keys/target//unwrapkey", {"alg": "RSA-OAEP-256", "value": "A" * 342}, "decrypted"),
    ("POST", "/keys/target//sign", {"alg": "RS256", "value": "AAAA"}, "sign"),
    ("POST", "/keys/target/zzz/wrapkey", {"alg": "RSA-OAEP", "value": "AAAA"}, "version"),
    ("POST", "/keys/restore", {"value": "AAAA"}, "backup"),
    ("POST", "/keys/restore", {"value": "***"}, "base64url"),
    (
        "PUT",
        "/keys/target/rotationpolicy",
        {"attributes": {"expiryTime": "P1D"}},
        "28 days",
    ),
    (
        "PUT",
        "/keys/target/rotationpolicy",
        {
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": "soon"}, "action": {"type": "Rotate"}}
            ]
        },
        "ISO 8601",
    ),
    (
        "PUT",
        "/keys/target/rotationpolicy",
        {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Boom"}}]},
        "Rotate",
    ),
    # Durations past what a date can hold were a 500 (OverflowError) before the API bounded them.
    (
        "PUT",
        "/keys/target/rotationpolicy",
        {"attributes": {"expiryTime": "P9999999Y"}},
        "P100Y",
    ),
    # Within timedelta's range but not a date's: stored, it broke every later rotation.
    ("PUT", "/keys/target/rotationpolicy", {"attributes": {"expiryTime": "P9000Y"}}, "P100Y"),
    (
        "PUT",
        "/keys/target/rotationpolicy",
        {
            "lifetimeActions": [
                {
                    "trigger": {"timeAfterCreate": "P" + "9" * 5000 + "D"},
                    "action": {"type": "Rotate"},
                }
            ]
        },
        "P100Y",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "says"), BAD_VALUES)
def test_bad_values_get_400(env: Env, method: str, path: str, body: Any, says: str) -> None:
    message = assert_kv_error(env.call(method, path, json=body), 400, "BadParameter")
    assert says in message, message


@pytest.mark.parametrize(
    "query",
    [
        f"{API}&maxresults=0",
        f"{API}&maxresults=26",
        f"{API}&maxresults=-1",
        f"{API}&maxresults=many",
        f"{API}&$skiptoken=%21%21%21",
        f"{API}&$skiptoken=LTE",
    ],
)
def test_bad_paging_gets_400(env: Env, query: str) -> None:
    for path in ("/keys", "/keys/target/versions", "/deletedkeys"):
        assert_kv_error(env.call("GET", path, query=query), 400, "BadParameter")


def test_oversized_bodies_get_413(env: Env) -> None:
    declared = env.raw_json("POST", "/keys/target/create", b"{" + b" " * LIMIT + b"}")
    message = assert_kv_error(declared, 413, "RequestTooLarge")
    assert str(LIMIT) in message

    def chunks() -> Iterator[bytes]:
        yield b'{"kty": "RSA", "tags": {"a": "'
        for _ in range(LIMIT // 65536 + 1):
            yield b"x" * 65536
        yield b'"}}'

    streamed = env.call(
        "POST",
        "/keys/target/create",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert "content-length" not in streamed.request.headers
    assert_kv_error(streamed, 413, "RequestTooLarge")

    # Just under the limit the body is read and judged on its merits.
    under = env.raw_json("POST", "/keys/target/create", b"{" + b" " * (LIMIT - 100) + b"x}")
    assert_kv_error(under, 400, "BadParameter")


@pytest.mark.parametrize("version", ["1.0", "7.7", "", "7.5-preview", "2016-10-02"])
def test_unknown_api_version_gets_400(env: Env, version: str) -> None:
    response = env.call("GET", "/keys/target", query=f"api-version={version}")
    message = assert_kv_error(response, 400, "BadParameter")
    assert "7.3, 7.4, 7.5, 7.6-preview.1, 7.6-preview.2, 7.6, 2025-07-01" in message
    create = env.call(
        "POST", "/keys/fresh/create", query=f"api-version={version}", json={"kty": "RSA"}
    )
    assert_kv_error(create, 400, "BadParameter")


def test_missing_api_version_gets_400(env: Env) -> None:
    for method, path, body in (
        ("GET", "/keys/target", None),
        ("GET", "/keys", None),
        ("POST", "/keys/fresh/create", {"kty": "RSA"}),
        ("POST", "/keys/target//wrapkey", {"alg": "RSA-OAEP", "value": "AAAA"}),
    ):
        response = env.call(method, path, query=None, json=body)
        assert "api-version" in assert_kv_error(response, 400, "BadParameter")


def test_unsupported_methods_get_405(env: Env) -> None:
    for method, path in (("DELETE", "/keys"), ("PUT", "/deletedkeys"), ("POST", "/keys")):
        assert_kv_error(env.call(method, path), 405, "MethodNotAllowed")


# ------------------------------------------------------------------ token endpoint


def test_token_endpoint_refusals(env: Env) -> None:
    server = env.server
    good = server.token_response(server.admin_view["Id"], server.admin_secret)
    assert good.status_code == 200
    assert good.json()["token_type"] == "Bearer"
    assert good.json()["expires_in"] == 3600

    assert_oauth_error(server.token_response(APP, "wrong-secret"), 401, "invalid_client")
    assert_oauth_error(server.token_response("nobody@contoso.com", "x"), 401, "invalid_client")
    assert_oauth_error(
        server.token_response(server.admin_view["Id"], server.admin_secret, tenant="fabrikam"),
        401,
        "invalid_client",
    )
    assert_oauth_error(
        server.token_response(APP, "wrong-secret", grant_type="password"),
        400,
        "unsupported_grant_type",
    )
    assert_oauth_error(
        server.token_response(APP, "x", grant_type="authorization_code"),
        400,
        "unsupported_grant_type",
    )
    for scope in (
        "https://graph.microsoft.com/.default",
        f"{server.resource}",
        "",
        f"{server.resource}/.default https://graph.microsoft.com/.default",
        "https://vault.azure.net/.default",
    ):
        response = server.token_response(server.admin_view["Id"], server.admin_secret, scope=scope)
        assert_oauth_error(response, 400, "invalid_scope")
    url = f"{server.url}/contoso/oauth2/v2.0/token"
    as_json = server.http.post(url, json={"grant_type": "client_credentials"})
    assert_oauth_error(as_json, 400, "invalid_request")
    no_secret = server.http.post(url, data={"grant_type": "client_credentials", "client_id": APP})
    assert_oauth_error(no_secret, 400, "invalid_request")


# ------------------------------------------------------------------ nothing changed


def test_the_cli_sees_only_what_the_setup_made(env: Env) -> None:
    """After every refusal above (whatever ran before), the vault holds just ``target``."""
    version = env.target["key"]["kid"].rsplit("/", 1)[1]
    keys = env.server.cli_json("key", "list", VAULT)
    assert [k["Name"] for k in keys] == ["target"]
    assert keys[0]["Version"] == version
    assert keys[0]["Enabled"] is True
    assert keys[0]["KeyOps"] == ["wrapKey", "unwrapKey"]
    assert env.server.cli_json("key", "list", VAULT, "--deleted") == []
    records = env.server.cli_json("audit", "show", "--vault", VAULT, "--limit", "10000")
    changes = [
        r["Operation"]
        for r in records
        if r["Result"] == "success"
        and r["Operation"]
        in {
            "KeyCreate",
            "KeyImport",
            "KeyUpdate",
            "KeyDelete",
            "KeyRotate",
            "KeyRestore",
            "KeyRotationPolicySet",
            "KeyPurge",
            "KeyRecover",
        }
    ]
    assert changes == ["KeyCreate"]
    denied = [r for r in records if r["Result"] == "denied"]
    assert all(r["Principal"] == READER for r in denied)
