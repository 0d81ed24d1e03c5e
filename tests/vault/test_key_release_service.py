"""Secure key release in the vault service, against a real database (SQLite, and PostgreSQL
when configured): exportable RSA-HSM, EC-HSM and oct-HSM keys with release policies, created,
imported, updated, rotated, backed up and restored under Key Vault's rules; ``release_key``
hands the key, wrapped for the attested runtime key, only to a trusted authority's token whose
claims satisfy the policy; every refusal says why, and the refusals that are 403s are audited;
release settings changed in the database behind the master key's back are refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from sqlalchemy import select, update

from customerkey.clock import FrozenClock, to_unix
from customerkey.config import Settings
from customerkey.crypto.rsa import b64url_decode, b64url_encode, private_jwk_fields
from customerkey.crypto.signatures import ecdsa_raw_to_der
from customerkey.errors import (
    BadParameter,
    Forbidden,
    KeyIntegrityFailure,
    KeyNotUsable,
)
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.models import AuditRow, KeyVersionRow
from customerkey.vault.attestation import AttestationRejected, TrustedAuthorities
from customerkey.vault.models import OPERATOR, Actor, KeyReleasePolicy
from customerkey.vault.service.release import ReleasePolicyNotSatisfied
from tests.support.attestation import (
    AUTHORITY,
    CVM_CLAIMS,
    Authority,
    new_rsa_key,
    open_release,
    policy_bytes,
)

pytestmark = pytest.mark.storage

VAULT = "release-vault"
VAULT_URL = f"https://{VAULT}.vault.localhost:8443"


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority()


@pytest.fixture(scope="module")
def runtime_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


def _policy(immutable: bool = False, policy: dict[str, Any] | None = None) -> KeyReleasePolicy:
    return KeyReleasePolicy(policy_bytes(policy), immutable=immutable)


def _release(
    rt: Runtime,
    authority: Authority,
    token: str,
    name: str,
    *,
    actor: Actor = OPERATOR,
    version: str | None = None,
    **options: Any,
) -> str:
    return rt.vault.release_key(
        actor,
        VAULT,
        name,
        version,
        token,
        authorities=TrustedAuthorities([authority.setting()]),
        vault_url=VAULT_URL,
        api_version="7.5",
        **options,
    )


def _now(clock: FrozenClock) -> float:
    return float(to_unix(clock.now()))


def _audit(rt: Runtime, operation: str) -> list[AuditRow]:
    with rt.db.read() as session:
        return list(session.scalars(select(AuditRow).where(AuditRow.operation == operation)))


@pytest.fixture
def vault(runtime: Runtime) -> Runtime:
    runtime.vault.create_vault(OPERATOR, VAULT, subscription="sub-1", region="eastus")
    return runtime


# ---------------------------------------------------------------- releases that succeed


@pytest.mark.parametrize(
    ("kty", "options"),
    [("RSA-HSM", {"size": 2048}), ("EC-HSM", {"crv": "P-384"}), ("oct-HSM", {"size": 256})],
)
@pytest.mark.parametrize(
    "enc", [None, "CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_256", "RSA_AES_KEY_WRAP_384"]
)
def test_an_exportable_key_is_released_wrapped_for_the_runtime_key(
    vault: Runtime,
    clock: FrozenClock,
    authority: Authority,
    runtime_key: rsa.RSAPrivateKey,
    kty: str,
    options: dict[str, Any],
    enc: str | None,
) -> None:
    bundle = vault.vault.create_key(
        OPERATOR, VAULT, "skr", kty=kty, exportable=True, release_policy=_policy(), **options
    )
    assert bundle.attributes.exportable
    assert bundle.release_policy == _policy()
    token = authority.token(runtime_key=runtime_key, now=_now(clock))
    extra = {"enc": enc} if enc else {}
    value = _release(vault, authority, token, "skr", nonce="n-1", **extra)
    opened = open_release(value, runtime_key)
    kid = f"{VAULT_URL}/keys/skr/{bundle.id.version}"
    assert opened.payload["request"] == {
        "api-version": "7.5",
        "enc": enc or "CKM_RSA_AES_KEY_WRAP",
        "kid": kid,
        "nonce": "n-1",
    }
    key = opened.payload["response"]["key"]
    assert key["key"]["kid"] == kid and key["key"]["kty"] == kty
    assert key["attributes"]["exportable"] is True
    assert key["release_policy"] == {
        "contentType": "application/json; charset=utf-8",
        "data": b64url_encode(policy_bytes()),
        "immutable": False,
    }
    assert opened.transfer["header"] == {
        "kid": "TpmEphemeralEncryptionKey",
        "alg": "dir",
        "enc": enc or "CKM_RSA_AES_KEY_WRAP",
    }
    assert set(opened.header) == {"alg", "kid", "x5t#S256", "x5c"}
    # The released material is the key: the vault's own operations agree with it.
    if kty == "oct-HSM":
        wrapped = vault.vault.wrap_key(OPERATOR, VAULT, "skr", None, "A256KW", b"k" * 32)
        assert aes_key_unwrap(opened.material, wrapped.value) == b"k" * 32
    else:
        private = serialization.load_der_private_key(opened.material, password=None)
        digest = b"d" * (48 if kty == "EC-HSM" else 32)
        alg = "ES384" if kty == "EC-HSM" else "PS256"
        signature = vault.vault.sign(OPERATOR, VAULT, "skr", None, alg, digest).value
        if isinstance(private, ec.EllipticCurvePrivateKey):
            assert key["key"]["crv"] == "P-384"
            der = ecdsa_raw_to_der(signature, "P-384")
            private.public_key().verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA384())))
        else:
            assert isinstance(private, rsa.RSAPrivateKey)
            assert (
                b64url_encode(private.public_key().public_numbers().n.to_bytes(256, "big"))
                == key["key"]["n"]
            )
            private.public_key().verify(
                signature,
                digest,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                Prehashed(hashes.SHA256()),
            )
    (record,) = _audit(vault, "KeyRelease")
    assert record.result == "success" and record.version == bundle.id.version
    assert record.details == {
        "enc": enc or "CKM_RSA_AES_KEY_WRAP",
        "authority": AUTHORITY,
        "runtime_kid": "TpmEphemeralEncryptionKey",
    }


def test_an_imported_exportable_key_is_released_as_imported(
    vault: Runtime, clock: FrozenClock, authority: Authority, runtime_key: rsa.RSAPrivateKey
) -> None:
    mine = new_rsa_key()
    jwk = {"kty": "RSA", **private_jwk_fields(mine)}
    bundle = vault.vault.import_key(
        OPERATOR, VAULT, "imported", jwk, hsm=True, exportable=True, release_policy=_policy()
    )
    assert bundle.kty == "RSA-HSM" and bundle.attributes.exportable
    value = _release(
        vault, authority, authority.token(runtime_key=runtime_key, now=_now(clock)), "imported"
    )
    released = serialization.load_der_private_key(open_release(value, runtime_key).material, None)
    assert isinstance(released, rsa.RSAPrivateKey)
    assert released.private_numbers() == mine.private_numbers()


def test_the_release_permission_alone_is_enough_and_versions_are_chosen(
    vault: Runtime, clock: FrozenClock, authority: Authority, runtime_key: rsa.RSAPrivateKey
) -> None:
    first = vault.vault.create_key(
        OPERATOR, VAULT, "k", kty="oct-HSM", size=128, exportable=True, release_policy=_policy()
    )
    second = vault.vault.create_key(
        OPERATOR, VAULT, "k", kty="oct-HSM", size=256, exportable=True, release_policy=_policy()
    )
    principal, _ = vault.principals.create(OPERATOR, "cvm@contoso.com", tenant="contoso")
    cvm = principal.actor()
    vault.vault.set_access_policy(OPERATOR, VAULT, "cvm@contoso.com", ["release"])
    token = authority.token(runtime_key=runtime_key, now=_now(clock))
    newest = open_release(_release(vault, authority, token, "k", actor=cvm), runtime_key)
    assert len(newest.material) == 32
    assert newest.payload["request"]["kid"].endswith(second.id.version)
    older = _release(vault, authority, token, "k", actor=cvm, version=first.id.version)
    assert len(open_release(older, runtime_key).material) == 16
    with pytest.raises(Forbidden, match="does not have keys get permission"):
        vault.vault.get_key(cvm, VAULT, "k")


def test_the_signing_key_is_made_once_and_kept(
    vault: Runtime,
    clock: FrozenClock,
    authority: Authority,
    runtime_key: rsa.RSAPrivateKey,
    db_url: str,
    tmp_path: Any,
) -> None:
    vault.vault.create_key(
        OPERATOR, VAULT, "k", kty="oct-HSM", size=256, exportable=True, release_policy=_policy()
    )
    token = authority.token(runtime_key=runtime_key, now=_now(clock))
    first = open_release(_release(vault, authority, token, "k"), runtime_key)
    second = open_release(_release(vault, authority, token, "k"), runtime_key)
    assert first.header == second.header
    # Another process on the same installation signs with the same key.
    other = Runtime.open(
        Settings(home=tmp_path / "home", database_url=db_url), clock=clock, rng=SystemRng()
    )
    try:
        third = open_release(_release(other, authority, token, "k"), runtime_key)
    finally:
        other.close()
    assert third.header == first.header
    assert first.header["kid"] == first.header["x5t#S256"]


# ---------------------------------------------------------------- the rules of exportable keys


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {"kty": "RSA", "exportable": True, "release_policy": _policy()},
            "Key type RSA cannot be exportable",
        ),
        ({"kty": "EC", "exportable": True, "release_policy": _policy()}, "only HSM keys"),
        ({"kty": "RSA-HSM", "exportable": True}, "An exportable key needs a release policy"),
        ({"kty": "RSA-HSM", "release_policy": _policy()}, "applies only to exportable keys"),
        (
            {
                "kty": "RSA-HSM",
                "exportable": True,
                "release_policy": KeyReleasePolicy(b'{"version": "1.0.0"}'),
            },
            "The key release policy is not valid: 'anyOf'",
        ),
        (
            {
                "kty": "RSA-HSM",
                "exportable": True,
                "release_policy": KeyReleasePolicy(policy_bytes(), content_type="text/plain"),
            },
            "content type 'text/plain' is not supported",
        ),
    ],
)
def test_creation_refusals(vault: Runtime, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BadParameter) as refused:
        vault.vault.create_key(OPERATOR, VAULT, "k", **kwargs)
    assert fragment in refused.value.message
    with pytest.raises(BadParameter, match="only HSM keys"):
        jwk = {"kty": "RSA", **private_jwk_fields(new_rsa_key())}
        vault.vault.import_key(OPERATOR, VAULT, "k", jwk, exportable=True, release_policy=_policy())
    assert vault.vault.list_keys(OPERATOR, VAULT) == []


def test_updates_replace_a_mutable_policy_and_never_an_immutable_one(vault: Runtime) -> None:
    bundle = vault.vault.create_key(
        OPERATOR, VAULT, "k", kty="EC-HSM", exportable=True, release_policy=_policy()
    )
    looser = {
        "version": "1.0.0",
        "anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "a", "exists": True}]}],
    }
    updated = vault.vault.update_key(OPERATOR, VAULT, "k", release_policy=_policy(policy=looser))
    assert updated.release_policy == _policy(policy=looser)
    assert vault.vault.get_key(OPERATOR, VAULT, "k").release_policy == _policy(policy=looser)
    frozen = vault.vault.update_key(OPERATOR, VAULT, "k", release_policy=_policy(immutable=True))
    assert frozen.release_policy == _policy(immutable=True)
    # The same immutable policy again is no change; anything else is refused, and audited.
    vault.vault.update_key(OPERATOR, VAULT, "k", release_policy=_policy(immutable=True))
    for change in (_policy(policy=looser, immutable=True), _policy(immutable=False)):
        with pytest.raises(Forbidden, match="is immutable and cannot be changed"):
            vault.vault.update_key(OPERATOR, VAULT, "k", release_policy=change, tags={"a": "b"})
    assert vault.vault.get_key(OPERATOR, VAULT, "k").tags == {}
    assert [r.result for r in _audit(vault, "KeyUpdate")][-2:] == ["denied", "denied"]
    # exportable is fixed when the version is made.
    vault.vault.update_key(OPERATOR, VAULT, "k", exportable=True)
    with pytest.raises(BadParameter, match="is exportable; that cannot be changed"):
        vault.vault.update_key(OPERATOR, VAULT, "k", exportable=False)
    plain = vault.vault.create_key(OPERATOR, VAULT, "plain", kty="RSA-HSM")
    with pytest.raises(BadParameter, match="is not exportable and cannot become exportable"):
        vault.vault.update_key(OPERATOR, VAULT, "plain", exportable=True)
    with pytest.raises(BadParameter, match="a release policy applies only to exportable keys"):
        vault.vault.update_key(OPERATOR, VAULT, "plain", release_policy=_policy())
    with pytest.raises(BadParameter, match="The key release policy is not valid"):
        vault.vault.update_key(
            OPERATOR, VAULT, "k", release_policy=KeyReleasePolicy(b'{"version": "9"}')
        )
    assert vault.vault.get_key(OPERATOR, VAULT, "plain") == plain
    assert bundle.id.version == vault.vault.get_key(OPERATOR, VAULT, "k").id.version


def test_rotation_backup_and_restore_keep_the_policy(
    vault: Runtime, clock: FrozenClock, authority: Authority, runtime_key: rsa.RSAPrivateKey
) -> None:
    vault.vault.create_key(
        OPERATOR,
        VAULT,
        "k",
        kty="RSA-HSM",
        exportable=True,
        release_policy=_policy(immutable=True),
    )
    rotated = vault.vault.rotate_key(OPERATOR, VAULT, "k")
    assert rotated.attributes.exportable and rotated.release_policy == _policy(immutable=True)
    blob = vault.vault.backup_key(OPERATOR, VAULT, "k")
    vault.vault.delete_key(OPERATOR, VAULT, "k")
    vault.vault.purge_deleted_key(OPERATOR, VAULT, "k")
    restored = vault.vault.restore_key(OPERATOR, VAULT, blob)
    assert restored.id.version == rotated.id.version
    assert restored.release_policy == _policy(immutable=True)
    for version in vault.vault.list_versions(OPERATOR, VAULT, "k"):
        assert version.attributes.exportable
        value = _release(
            vault,
            authority,
            authority.token(runtime_key=runtime_key, now=_now(clock)),
            "k",
            version=version.id.version,
        )
        open_release(value, runtime_key)
    with pytest.raises(Forbidden, match="immutable"):
        vault.vault.update_key(OPERATOR, VAULT, "k", release_policy=_policy())
    plain = vault.vault.create_key(OPERATOR, VAULT, "plain", kty="RSA-HSM")
    assert not vault.vault.rotate_key(OPERATOR, VAULT, "plain").attributes.exportable
    assert plain.release_policy is None


# ---------------------------------------------------------------- releases that are refused


def _denied(rt: Runtime) -> list[tuple[str, str]]:
    return [
        (r.operation, r.details["reason"]) for r in _audit(rt, "KeyRelease") if r.result == "denied"
    ]


def test_release_refusals_say_why(
    vault: Runtime, clock: FrozenClock, authority: Authority, runtime_key: rsa.RSAPrivateKey
) -> None:
    vault.vault.create_key(
        OPERATOR, VAULT, "k", kty="RSA-HSM", exportable=True, release_policy=_policy()
    )
    vault.vault.create_key(OPERATOR, VAULT, "plain", kty="RSA-HSM")
    now = _now(clock)
    good = authority.token(runtime_key=runtime_key, now=now)
    cases: list[tuple[type[Exception], str, Any]] = [
        (KeyNotUsable, "is not exportable", lambda: _release(vault, authority, good, "plain")),
        (
            AttestationRejected,
            "issuer 'https://evil.test' is not a trusted attestation authority",
            lambda: _release(
                vault,
                authority,
                authority.token(runtime_key=runtime_key, now=now, issuer="https://evil.test"),
                "k",
            ),
        ),
        (
            AttestationRejected,
            "signature does not verify",
            lambda: _release(
                vault,
                authority,
                authority.token(runtime_key=runtime_key, now=now, signing_key=new_rsa_key()),
                "k",
            ),
        ),
        (
            AttestationRejected,
            "it has expired",
            lambda: _release(
                vault, authority, authority.token(runtime_key=runtime_key, now=now - 7200), "k"
            ),
        ),
        (
            ReleasePolicyNotSatisfied,
            "claim 'x-ms-isolation-tee.x-ms-attestation-type' does not satisfy equals",
            lambda: _release(
                vault,
                authority,
                authority.token(
                    {
                        "x-ms-isolation-tee": {
                            **CVM_CLAIMS["x-ms-isolation-tee"],
                            "x-ms-attestation-type": "tdxvm",
                        }
                    },
                    runtime_key,
                    now=now,
                ),
                "k",
            ),
        ),
    ]
    for error, fragment, call in cases:
        with pytest.raises(error) as refused:
            call()
        assert fragment in str(refused.value), (fragment, refused.value)
        assert refused.value.status == 403  # type: ignore[attr-defined]
    reasons = [reason for _, reason in _denied(vault)]
    assert len(reasons) == len(cases)
    assert "not satisfied by the attestation token" in reasons[-1]
    # Bad requests are 400s.
    without_runtime_key = authority.token(now=now)
    with pytest.raises(BadParameter, match="carries no RSA public key"):
        _release(vault, authority, without_runtime_key, "k")
    with pytest.raises(BadParameter, match="'enc' \"A256KW\" is not supported"):
        _release(vault, authority, good, "k", enc="A256KW")
    with pytest.raises(BadParameter, match="not a JWS"):
        _release(vault, authority, "not-a-token", "k")
    with pytest.raises(BadParameter, match="is empty"):
        _release(vault, authority, "", "k")
    # No trusted authority at all: nothing is trusted.
    with pytest.raises(AttestationRejected, match="not a trusted attestation authority"):
        vault.vault.release_key(
            OPERATOR,
            VAULT,
            "k",
            None,
            good,
            authorities=TrustedAuthorities([]),
            vault_url=VAULT_URL,
            api_version="7.5",
        )
    # A disabled or expired key is not released.
    vault.vault.update_key(OPERATOR, VAULT, "k", enabled=False)
    with pytest.raises(KeyNotUsable, match="is disabled"):
        _release(vault, authority, good, "k")
    # Without the release permission.
    principal, _ = vault.principals.create(OPERATOR, "eve@contoso.com", tenant="contoso")
    vault.vault.set_access_policy(OPERATOR, VAULT, "eve@contoso.com", ["get", "decrypt"])
    with pytest.raises(Forbidden, match="does not have keys release permission"):
        _release(vault, authority, good, "k", actor=principal.actor())
    assert not [r for r in _audit(vault, "KeyRelease") if r.result == "success"]


def test_release_settings_changed_in_the_database_are_refused(
    vault: Runtime, clock: FrozenClock, authority: Authority, runtime_key: rsa.RSAPrivateKey
) -> None:
    plain = vault.vault.create_key(OPERATOR, VAULT, "plain", kty="RSA-HSM")
    exportable = vault.vault.create_key(
        OPERATOR, VAULT, "k", kty="RSA-HSM", exportable=True, release_policy=_policy(immutable=True)
    )
    token = authority.token(runtime_key=runtime_key, now=_now(clock))
    stored = {
        "contentType": "application/json; charset=utf-8",
        "data": b64url_encode(policy_bytes()),
        "immutable": True,
    }

    def _set(version: str, **values: object) -> None:
        with vault.db.transaction() as session:
            session.execute(
                update(KeyVersionRow).where(KeyVersionRow.version == version).values(**values)
            )

    # Someone with the database but not the master key makes a key exportable...
    _set(plain.id.version, exportable=True, release_policy=stored)
    with pytest.raises(KeyIntegrityFailure, match="release settings do not match their tag"):
        _release(vault, authority, token, "plain")
    # ...or copies another version's tag onto it...
    with vault.db.read() as session:
        tag = session.scalar(
            select(KeyVersionRow.release_tag).where(KeyVersionRow.version == exportable.id.version)
        )
    _set(plain.id.version, release_tag=tag)
    with pytest.raises(KeyIntegrityFailure):
        _release(vault, authority, token, "plain")
    with pytest.raises(KeyIntegrityFailure):
        vault.vault.backup_key(OPERATOR, VAULT, "plain")
    with pytest.raises(KeyIntegrityFailure):
        vault.vault.rotate_key(OPERATOR, VAULT, "plain")
    # ...or loosens a policy, or clears its immutable flag.
    looser = {**stored, "data": b64url_encode(b'{"version":"1.0.0","anyOf":[]}')}
    _set(exportable.id.version, release_policy=looser)
    with pytest.raises(KeyIntegrityFailure):
        _release(vault, authority, token, "k")
    _set(exportable.id.version, release_policy={**stored, "immutable": False})
    with pytest.raises(KeyIntegrityFailure):
        vault.vault.update_key(OPERATOR, VAULT, "k", release_policy=_policy())
    _set(exportable.id.version, release_policy=stored)
    open_release(_release(vault, authority, token, "k"), runtime_key)
    assert json.loads(b64url_decode(stored["data"])) == json.loads(policy_bytes())
