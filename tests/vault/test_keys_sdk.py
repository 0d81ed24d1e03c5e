"""The unmodified ``azure-keyvault-keys`` SDK against a real ``customerkey serve``.

``KeyClient`` and ``CryptographyClient`` talk HTTPS to ``<vault>.vault.localhost:PORT``,
verified against the CA the server made on first start, with tokens from the server's token
endpoint (``customerkey.azure.ClientSecretCredential``) obtained through the Key Vault 401
challenge. Vaults, principals and access policies are set up through the admin API.

Principals in vault ``sdk-main``:

- ``app@contoso.com``: every key permission (also on the other vaults)
- ``reader@contoso.com``: ``get`` only
- ``crypto-svc`` (service): wrapKey, unwrapKey, encrypt, decrypt, but not ``get``. The SDK's
  ``CryptographyClient`` does public-key operations (wrap, encrypt) locally once it can read
  the key; without ``get`` every operation goes to the server, which is how these tests drive
  the server's wrapKey and encrypt.
- ``stranger@contoso.com``: no access policy at all
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.keys import (
    JsonWebKey,
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicyAction,
    KeyType,
    KeyVaultKey,
)
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from customerkey.azure import ClientSecretCredential

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

MAIN, GUARD, TWIN, FAR, LISTING = "sdk-main", "sdk-guard", "sdk-twin", "sdk-far", "sdk-list"
APP, READER, CRYPTO, STRANGER = (
    "app@contoso.com",
    "reader@contoso.com",
    "crypto-svc",
    "stranger@contoso.com",
)
ALL_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
WRAP_ALGORITHMS = [KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa_oaep]
ENCRYPT_ALGORITHMS = [EncryptionAlgorithm.rsa_oaep_256, EncryptionAlgorithm.rsa_oaep]


@dataclass
class Sdk:
    server: LiveServer
    credentials: dict[str, ClientSecretCredential]

    def keys(self, vault: str = MAIN, as_: str = APP) -> KeyClient:
        return KeyClient(
            self.server.vault_url(vault),
            self.credentials[as_],
            connection_verify=str(self.server.ca),
        )

    def crypto(self, key: KeyVaultKey | str, as_: str = APP) -> CryptographyClient:
        return CryptographyClient(key, self.credentials[as_], connection_verify=str(self.server.ca))


@pytest.fixture(scope="module")
def sdk(live_server: LiveServer) -> Iterator[Sdk]:
    server = live_server
    server.create_vault(MAIN)
    server.create_vault(GUARD, purge_protection=True, retention_days=7)
    server.create_vault(TWIN)
    server.create_vault(FAR, subscription="fabrikam-sub-9", region="westeurope")
    server.create_vault(LISTING)
    secrets = {
        APP: server.create_principal(APP),
        READER: server.create_principal(READER),
        CRYPTO: server.create_principal(CRYPTO, kind="service"),
        STRANGER: server.create_principal(STRANGER),
    }
    for vault in (MAIN, GUARD, TWIN, FAR, LISTING):
        server.grant(vault, APP, ["all"])
    server.grant(MAIN, READER, ["get"])
    server.grant(MAIN, CRYPTO, ["wrapKey", "unwrapKey", "encrypt", "decrypt"])
    credentials = {name: server.credential(name, secret) for name, secret in secrets.items()}
    try:
        yield Sdk(server, credentials)
    finally:
        for credential in credentials.values():
            credential.close()


@pytest.fixture
def kv(sdk: Sdk, live: LiveServer) -> Sdk:
    """The SDK set-up, checked for server-side errors after each test."""
    return sdk


def _public_key(key: KeyVaultKey) -> rsa.RSAPublicKey:
    assert key.key.n is not None and key.key.e is not None
    numbers = rsa.RSAPublicNumbers(
        int.from_bytes(key.key.e, "big"), int.from_bytes(key.key.n, "big")
    )
    return numbers.public_key()


def _oaep(algorithm: str) -> padding.OAEP:
    digest: hashes.HashAlgorithm = hashes.SHA256() if algorithm.endswith("256") else hashes.SHA1()
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def _status(error: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int | None, str | None]:
    return error.value.status_code, error.value.error.code if error.value.error else None


def _seconds(when: datetime) -> datetime:
    return when.replace(microsecond=0)


# ------------------------------------------------------------------ create, get, list


@pytest.mark.parametrize(
    ("name", "hsm", "size", "ops"),
    [
        ("rsa-2048", False, 2048, ["wrapKey", "unwrapKey"]),
        ("rsa-hsm-2048", True, 2048, ["wrapKey", "unwrapKey", "encrypt", "decrypt"]),
        ("rsa-hsm-3072", True, 3072, None),
    ],
)
def test_create_rsa_keys(kv: Sdk, name: str, hsm: bool, size: int, ops: list[str] | None) -> None:
    now = datetime.now(UTC)
    not_before, expires = now - timedelta(days=1), now + timedelta(days=365)
    key = kv.keys().create_rsa_key(
        name,
        size=size,
        hardware_protected=hsm,
        key_operations=ops,
        not_before=not_before,
        expires_on=expires,
        tags={"purpose": "test", "size": str(size)},
    )
    assert key.name == name
    assert key.key_type == (KeyType.rsa_hsm if hsm else KeyType.rsa)
    assert key.key.n is not None and int.from_bytes(key.key.n, "big").bit_length() == size
    assert key.key.e == b"\x01\x00\x01"
    assert key.key.d is None and key.key.p is None  # private parts never leave
    assert key.key_operations == (ops or ALL_OPS)
    assert key.properties.enabled is True
    assert key.properties.not_before == _seconds(not_before)
    assert key.properties.expires_on == _seconds(expires)
    assert key.properties.tags == {"purpose": "test", "size": str(size)}
    assert key.properties.recovery_level == "Recoverable+Purgeable"
    assert key.properties.recoverable_days == 90
    assert key.properties.vault_url == kv.server.vault_url(MAIN)
    version = key.properties.version
    assert version is not None and len(version) == 32 and int(version, 16) >= 0
    assert key.id == f"{kv.server.vault_url(MAIN)}/keys/{name}/{version}"

    fetched = kv.keys().get_key(name)
    assert fetched.id == key.id
    assert fetched.key.n == key.key.n
    assert fetched.key_operations == key.key_operations
    assert fetched.properties.not_before == key.properties.not_before


def test_same_name_adds_a_version_and_get_picks_newest_or_named(kv: Sdk) -> None:
    client = kv.keys()
    first = client.create_rsa_key("versioned", size=2048, key_operations=["wrapKey"])
    second = client.create_rsa_key("versioned", size=2048, key_operations=["unwrapKey"])
    assert first.properties.version != second.properties.version
    assert client.get_key("versioned").id == second.id
    old = client.get_key("versioned", first.properties.version)
    assert old.id == first.id
    assert old.key.n == first.key.n != second.key.n
    assert old.key_operations == ["wrapKey"]
    versions = {p.version for p in client.list_properties_of_key_versions("versioned")}
    assert versions == {first.properties.version, second.properties.version}
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_key("versioned", "0" * 32)
    assert _status(missing) == (404, "KeyNotFound")


def test_listing_follows_next_link_across_pages(kv: Sdk) -> None:
    client = kv.keys(LISTING)
    names = {f"page-key-{i}" for i in range(5)}
    for name in sorted(names):
        client.create_rsa_key(name, size=2048)
    for _ in range(2):
        client.rotate_key("page-key-0")

    pages = [list(page) for page in client.list_properties_of_keys(max_page_size=2).by_page()]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert {p.name for page in pages for p in page} == names
    assert {p.name for p in client.list_properties_of_keys()} == names  # one default page

    version_pages = [
        list(page)
        for page in client.list_properties_of_key_versions("page-key-0", max_page_size=1).by_page()
    ]
    assert [len(page) for page in version_pages] == [1, 1, 1]
    assert len({p.version for page in version_pages for p in page}) == 3
    newest = client.get_key("page-key-0").properties.version
    assert newest in {p.version for page in version_pages for p in page}


# ------------------------------------------------------------------ update, rotate, policy


def test_update_key_properties(kv: Sdk) -> None:
    client = kv.keys()
    key = client.create_rsa_key("updatable", size=2048, key_operations=["wrapKey", "unwrapKey"])
    expires = datetime.now(UTC) + timedelta(days=30)
    updated = client.update_key_properties(
        "updatable",
        key.properties.version,
        enabled=False,
        expires_on=expires,
        tags={"owner": "alice"},
        key_operations=["unwrapKey"],
    )
    assert updated.id == key.id
    assert updated.properties.enabled is False
    assert updated.properties.expires_on == _seconds(expires)
    assert updated.properties.tags == {"owner": "alice"}
    assert updated.key_operations == ["unwrapKey"]
    assert updated.properties.updated_on is not None
    fetched = client.get_key("updatable")
    assert fetched.properties.enabled is False
    assert fetched.properties.tags == {"owner": "alice"}

    wrapped = _public_key(key).encrypt(b"\x07" * 32, _oaep("RSA-OAEP-256"))
    with pytest.raises(HttpResponseError) as disabled:
        kv.crypto(key.id, as_=CRYPTO).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert _status(disabled) == (403, "Forbidden")

    client.update_key_properties("updatable", enabled=True)  # no version: the newest
    unwrapped = kv.crypto(key.id, as_=CRYPTO).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert unwrapped.key == b"\x07" * 32


def test_rotate_and_rotation_policy(kv: Sdk) -> None:
    client = kv.keys()
    key = client.create_rsa_key(
        "rotating", size=2048, key_operations=["wrapKey", "unwrapKey"], tags={"t": "1"}
    )
    empty = client.get_key_rotation_policy("rotating")
    assert empty.lifetime_actions == []
    assert empty.expires_in is None

    policy = client.update_key_rotation_policy(
        "rotating",
        empty,
        expires_in="P90D",
        lifetime_actions=[
            KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D"),
            KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P10D"),
        ],
    )
    assert policy.expires_in == "P90D"
    assert policy.id == f"{kv.server.vault_url(MAIN)}/keys/rotating/rotationpolicy"
    actions = {
        (a.action, a.time_after_create, a.time_before_expiry) for a in policy.lifetime_actions
    }
    assert actions == {
        (KeyRotationPolicyAction.rotate, "P30D", None),
        (KeyRotationPolicyAction.notify, None, "P10D"),
    }
    again = client.get_key_rotation_policy("rotating")
    assert again.expires_in == "P90D"
    assert {(a.action, a.time_after_create) for a in again.lifetime_actions} == {
        (KeyRotationPolicyAction.rotate, "P30D"),
        (KeyRotationPolicyAction.notify, None),
    }
    assert again.created_on is not None and again.updated_on is not None

    before = datetime.now(UTC)
    rotated = client.rotate_key("rotating")
    assert rotated.properties.version != key.properties.version
    assert rotated.key.n != key.key.n
    assert rotated.key_operations == ["wrapKey", "unwrapKey"]
    assert rotated.properties.tags == {"t": "1"}
    assert rotated.key_type == key.key_type
    # The policy's expiryTime dates the new version.
    assert rotated.properties.expires_on is not None
    expected = _seconds(before + timedelta(days=90))
    assert abs(rotated.properties.expires_on - expected) <= timedelta(seconds=5)
    assert client.get_key("rotating").id == rotated.id
    assert len(list(client.list_properties_of_key_versions("rotating"))) == 2

    with pytest.raises(HttpResponseError) as refused:
        client.update_key_rotation_policy("rotating", empty, expires_in="P1D")
    assert _status(refused) == (400, "BadParameter")
    assert client.get_key_rotation_policy("rotating").expires_in == "P90D"  # unchanged


# ------------------------------------------------------------------ wrap, unwrap, encrypt


@pytest.fixture(scope="module")
def wrap_key(sdk: Sdk) -> KeyVaultKey:
    return sdk.keys().create_rsa_key(
        "wrapping", size=2048, hardware_protected=True, key_operations=ALL_OPS
    )


@pytest.mark.parametrize("algorithm", WRAP_ALGORITHMS)
def test_wrap_unwrap_round_trips(kv: Sdk, wrap_key: KeyVaultKey, algorithm: str) -> None:
    secret = bytes(range(32))
    # With the key readable, the SDK wraps locally with the public key; unwrap is the server's.
    local = kv.crypto(wrap_key)
    wrapped = local.wrap_key(algorithm, secret)
    assert wrapped.key_id == wrap_key.id
    assert local.unwrap_key(algorithm, wrapped.encrypted_key).key == secret

    # The server's wrapKey (the crypto principal cannot read the key, so nothing is local).
    remote = kv.crypto(wrap_key.id, as_=CRYPTO)
    server_wrapped = remote.wrap_key(algorithm, secret)
    assert server_wrapped.key_id == wrap_key.id
    assert server_wrapped.encrypted_key != wrapped.encrypted_key  # OAEP is randomized
    assert remote.unwrap_key(algorithm, server_wrapped.encrypted_key).key == secret
    assert local.unwrap_key(algorithm, server_wrapped.encrypted_key).key == secret

    # Material wrapped outside the SDK with the published public key.
    outside = _public_key(wrap_key).encrypt(secret[::-1], _oaep(algorithm))
    assert remote.unwrap_key(algorithm, outside).key == secret[::-1]

    # The audit log shows whose wraps the server did: only the crypto principal's.
    response = kv.server.admin(
        "GET", "/audit", params={"vault": MAIN, "operation": "KeyWrap", "limit": 1000}
    )
    assert response.status_code == 200, response.text
    wraps = [
        r
        for r in response.json()["value"]
        if r["Key"] == "wrapping" and r["Details"] == {"alg": algorithm}
    ]
    assert {(r["Principal"], r["Result"], r["Version"]) for r in wraps} == {
        (CRYPTO, "success", wrap_key.properties.version)
    }


def test_unwrap_with_the_wrong_algorithm_is_refused(kv: Sdk, wrap_key: KeyVaultKey) -> None:
    wrapped = _public_key(wrap_key).encrypt(b"k" * 32, _oaep("RSA-OAEP-256"))
    with pytest.raises(HttpResponseError) as refused:
        kv.crypto(wrap_key).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
    assert _status(refused) == (400, "BadParameter")


@pytest.mark.parametrize("algorithm", ENCRYPT_ALGORITHMS)
def test_encrypt_decrypt_round_trips(kv: Sdk, wrap_key: KeyVaultKey, algorithm: str) -> None:
    remote = kv.crypto(wrap_key.id, as_=CRYPTO)
    encrypted = remote.encrypt(algorithm, b"attack at dawn")
    assert encrypted.key_id == wrap_key.id
    assert encrypted.algorithm == algorithm
    assert len(encrypted.ciphertext) == 256
    assert remote.decrypt(algorithm, encrypted.ciphertext).plaintext == b"attack at dawn"

    local = kv.crypto(wrap_key).encrypt(algorithm, b"retreat at dusk")
    assert remote.decrypt(algorithm, local.ciphertext).plaintext == b"retreat at dusk"


def test_key_operations_and_dates_limit_use(kv: Sdk) -> None:
    client = kv.keys()
    now = datetime.now(UTC)
    wrap_only = client.create_rsa_key("wrap-only", size=2048, key_operations=["wrapKey"])
    later = client.create_rsa_key("not-yet", size=2048, not_before=now + timedelta(days=1))
    gone = client.create_rsa_key(
        "expired", size=2048, not_before=now - timedelta(days=2), expires_on=now - timedelta(days=1)
    )
    remote = kv.crypto(wrap_only.id, as_=CRYPTO)
    assert remote.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"x" * 32).key_id == wrap_only.id
    for operation in (
        lambda: remote.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"x"),
        lambda: remote.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"\0" * 256),
    ):
        with pytest.raises(HttpResponseError) as refused:
            operation()
        assert _status(refused) == (403, "Forbidden")
    for key in (later, gone):
        wrapped = _public_key(key).encrypt(b"y" * 32, _oaep("RSA-OAEP-256"))
        with pytest.raises(HttpResponseError) as refused:
            kv.crypto(key.id, as_=CRYPTO).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        assert _status(refused) == (403, "Forbidden")


# ------------------------------------------------------------------ import


def _jwk(private_key: rsa.RSAPrivateKey, ops: list[str]) -> JsonWebKey:
    numbers = private_key.private_numbers()

    def raw(value: int) -> bytes:
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    return JsonWebKey(
        kty="RSA",
        key_ops=ops,
        n=raw(numbers.public_numbers.n),
        e=raw(numbers.public_numbers.e),
        d=raw(numbers.d),
        p=raw(numbers.p),
        q=raw(numbers.q),
        dp=raw(numbers.dmp1),
        dq=raw(numbers.dmq1),
        qi=raw(numbers.iqmp),
    )


@pytest.mark.parametrize("hsm", [False, True])
def test_import_an_rsa_jwk_with_private_parts(kv: Sdk, hsm: bool) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = f"imported-{'hsm' if hsm else 'soft'}"
    imported = kv.keys().import_key(
        name,
        _jwk(private_key, ["wrapKey", "unwrapKey"]),
        hardware_protected=hsm,
        tags={"origin": "on-premises"},
    )
    assert imported.key_type == (KeyType.rsa_hsm if hsm else KeyType.rsa)
    assert imported.key.d is None
    assert _public_key(imported).public_numbers() == private_key.public_key().public_numbers()
    assert imported.key_operations == ["wrapKey", "unwrapKey"]
    assert imported.properties.tags == {"origin": "on-premises"}

    # The server unwraps with the imported private key, and wraps with its public half.
    secret = b"\x42" * 32
    outside = private_key.public_key().encrypt(secret, _oaep("RSA-OAEP-256"))
    remote = kv.crypto(imported.id, as_=CRYPTO)
    assert remote.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, outside).key == secret
    server_wrapped = remote.wrap_key(KeyWrapAlgorithm.rsa_oaep, secret)
    assert private_key.decrypt(server_wrapped.encrypted_key, _oaep("RSA-OAEP")) == secret


def test_importing_public_parts_only_is_refused(kv: Sdk) -> None:
    public = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    )
    jwk = JsonWebKey(kty="RSA", n=public.n.to_bytes(256, "big"), e=b"\x01\x00\x01")
    with pytest.raises(HttpResponseError) as refused:
        kv.keys().import_key("public-only", jwk)
    assert _status(refused) == (400, "BadParameter")
    with pytest.raises(ResourceNotFoundError):
        kv.keys().get_key("public-only")


# ------------------------------------------------------------------ soft delete


def test_delete_recover_and_purge(kv: Sdk) -> None:
    client = kv.keys()
    key = client.create_rsa_key("deletable", size=2048)
    before = datetime.now(UTC)
    deleted = client.begin_delete_key("deletable").result()
    assert deleted.name == "deletable"
    assert deleted.id == key.id
    assert deleted.recovery_id == f"{kv.server.vault_url(MAIN)}/deletedkeys/deletable"
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    assert abs(deleted.deleted_date - _seconds(before)) <= timedelta(seconds=5)
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=90)

    with pytest.raises(ResourceNotFoundError) as gone:
        client.get_key("deletable")
    assert _status(gone) == (404, "KeyNotFound")
    assert "deletable" not in {p.name for p in client.list_properties_of_keys()}
    assert "deletable" in {d.name for d in client.list_deleted_keys()}
    assert client.get_deleted_key("deletable").recovery_id == deleted.recovery_id
    with pytest.raises(HttpResponseError) as reuse:
        client.create_rsa_key("deletable", size=2048)
    assert _status(reuse) == (409, "Conflict")

    recovered = client.begin_recover_deleted_key("deletable").result()
    assert recovered.id == key.id
    assert client.get_key("deletable").key.n == key.key.n
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_key("deletable")

    client.begin_delete_key("deletable").wait()
    client.purge_deleted_key("deletable")
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_key("deletable")
    with pytest.raises(ResourceNotFoundError):
        client.get_key("deletable")
    fresh = client.create_rsa_key("deletable", size=2048)  # the name is free again
    assert fresh.properties.version != key.properties.version


def test_purge_protection_refuses_purge_until_retention_ends(kv: Sdk) -> None:
    client = kv.keys(GUARD)
    key = client.create_rsa_key("guarded", size=2048)
    assert key.properties.recovery_level == "CustomizedRecoverable"
    assert key.properties.recoverable_days == 7
    deleted = client.begin_delete_key("guarded").result()
    assert deleted.scheduled_purge_date is not None and deleted.deleted_date is not None
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=7)
    with pytest.raises(HttpResponseError) as refused:
        client.purge_deleted_key("guarded")
    assert _status(refused) == (403, "Forbidden")
    assert "purge protection" in str(refused.value)
    assert client.get_deleted_key("guarded").name == "guarded"  # still there
    assert client.begin_recover_deleted_key("guarded").result().id == key.id


def test_deleting_or_purging_what_is_not_there(kv: Sdk) -> None:
    client = kv.keys()
    for call in (
        lambda: client.begin_delete_key("never-existed"),
        lambda: client.purge_deleted_key("never-existed"),
        lambda: client.begin_recover_deleted_key("never-existed"),
        lambda: client.get_deleted_key("never-existed"),
    ):
        with pytest.raises(ResourceNotFoundError) as missing:
            call()
        assert _status(missing) == (404, "KeyNotFound")


# ------------------------------------------------------------------ backup and restore


def test_backup_and_restore_with_conflicts(kv: Sdk) -> None:
    main = kv.keys()
    first = main.create_rsa_key("backed-up", size=2048, key_operations=["wrapKey", "unwrapKey"])
    second = main.rotate_key("backed-up")
    blob = main.backup_key("backed-up")
    assert isinstance(blob, bytes) and len(blob) > 256

    with pytest.raises(ResourceExistsError) as exists:
        main.restore_key_backup(blob)
    assert _status(exists) == (409, "Conflict")

    twin = kv.keys(TWIN)
    restored = twin.restore_key_backup(blob)
    assert restored.name == "backed-up"
    assert restored.id == f"{kv.server.vault_url(TWIN)}/keys/backed-up/{second.properties.version}"
    assert restored.key.n == second.key.n
    assert restored.key_operations == ["wrapKey", "unwrapKey"]
    versions = {p.version for p in twin.list_properties_of_key_versions("backed-up")}
    assert versions == {first.properties.version, second.properties.version}
    # The restored private key works: unwrap in the twin what was wrapped for the original.
    wrapped = kv.crypto(second).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"r" * 32)
    assert kv.crypto(restored).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key

    with pytest.raises(ResourceExistsError) as again:
        twin.restore_key_backup(blob)
    assert _status(again) == (409, "Conflict")
    twin.begin_delete_key("backed-up").wait()
    with pytest.raises(ResourceExistsError) as soft_deleted:
        twin.restore_key_backup(blob)
    assert _status(soft_deleted) == (409, "Conflict")
    assert "soft-deleted" in str(soft_deleted.value)

    with pytest.raises(HttpResponseError) as elsewhere:
        kv.keys(FAR).restore_key_backup(blob)
    assert _status(elsewhere) == (400, "BadParameter")
    with pytest.raises(ResourceNotFoundError):
        kv.keys(FAR).get_key("backed-up")

    tampered = bytearray(blob)
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(HttpResponseError) as corrupt:
        kv.keys(LISTING).restore_key_backup(bytes(tampered))
    assert _status(corrupt) == (400, "BadParameter")

    # Once purged, the name is free and the backup restores into the original vault.
    main.begin_delete_key("backed-up").wait()
    main.purge_deleted_key("backed-up")
    back = main.restore_key_backup(blob)
    assert back.id == second.id
    assert back.key.n == second.key.n


# ------------------------------------------------------------------ permissions


@pytest.fixture(scope="module")
def guarded_key(sdk: Sdk) -> KeyVaultKey:
    return sdk.keys().create_rsa_key("permission-key", size=2048)


def test_a_reader_can_get_but_nothing_else(kv: Sdk, guarded_key: KeyVaultKey) -> None:
    reader = kv.keys(as_=READER)
    assert reader.get_key("permission-key").id == guarded_key.id
    refused_calls = {
        "create": lambda: reader.create_rsa_key("reader-made", size=2048),
        "list": lambda: list(reader.list_properties_of_keys()),
        "list versions": lambda: list(reader.list_properties_of_key_versions("permission-key")),
        "update": lambda: reader.update_key_properties("permission-key", enabled=False),
        "rotate": lambda: reader.rotate_key("permission-key"),
        "backup": lambda: reader.backup_key("permission-key"),
        "delete": lambda: reader.begin_delete_key("permission-key"),
        "rotation policy": lambda: reader.get_key_rotation_policy("permission-key"),
        "import": lambda: reader.import_key(
            "reader-import", _jwk(rsa.generate_private_key(65537, 2048), ["wrapKey"])
        ),
    }
    for what, call in refused_calls.items():
        with pytest.raises(HttpResponseError) as refused:
            call()
        assert _status(refused) == (403, "Forbidden"), what
        assert "does not have keys" in str(refused.value), what
        assert READER in str(refused.value), what

    crypto = kv.crypto(guarded_key.id, as_=READER)
    wrapped = _public_key(guarded_key).encrypt(b"z" * 32, _oaep("RSA-OAEP-256"))
    for what, operation in {
        "unwrapKey": lambda: crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped),
        "decrypt": lambda: crypto.decrypt(EncryptionAlgorithm.rsa_oaep_256, wrapped),
    }.items():
        with pytest.raises(HttpResponseError) as refused:
            operation()
        assert _status(refused) == (403, "Forbidden"), what
        assert f"keys {what} permission" in str(refused.value)

    # wrapKey needs only the public key, which the reader may read: the SDK wraps locally and
    # never asks the server (whose refusal of the reader's wrapKey is in test_keys_errors).
    local = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"z" * 32)
    assert kv.crypto(guarded_key).unwrap_key(local.algorithm, local.encrypted_key).key == b"z" * 32
    audit = kv.server.admin("GET", "/audit", params={"vault": MAIN, "limit": 1000})
    reader_records = [r for r in audit.json()["value"] if r["Principal"] == READER]
    assert [r for r in reader_records if r["Result"] != "denied"] == []  # reads are not audited
    assert "KeyWrap" not in {r["Operation"] for r in reader_records}
    assert {"KeyCreate", "KeyUnwrap", "KeyDecrypt", "KeyBackup"} <= {
        r["Operation"] for r in reader_records if r["Result"] == "denied"
    }

    # Nothing the reader tried changed anything.
    app = kv.keys()
    key = app.get_key("permission-key")
    assert key.id == guarded_key.id and key.properties.enabled is True
    assert len(list(app.list_properties_of_key_versions("permission-key"))) == 1
    for name in ("reader-made", "reader-import"):
        with pytest.raises(ResourceNotFoundError):
            app.get_key(name)


def test_without_get_every_operation_goes_to_the_server(kv: Sdk, guarded_key: KeyVaultKey) -> None:
    with pytest.raises(HttpResponseError) as no_get:
        kv.keys(as_=CRYPTO).get_key("permission-key")
    assert _status(no_get) == (403, "Forbidden")

    stranger = kv.crypto(guarded_key.id, as_=STRANGER)
    for what, operation in {
        "wrapKey": lambda: stranger.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"s" * 32),
        "encrypt": lambda: stranger.encrypt(EncryptionAlgorithm.rsa_oaep, b"s"),
        "unwrapKey": lambda: stranger.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"\0" * 256),
    }.items():
        with pytest.raises(HttpResponseError) as refused:
            operation()
        assert _status(refused) == (403, "Forbidden"), what
        assert f"keys {what} permission" in str(refused.value)
    with pytest.raises(HttpResponseError) as other_vault:
        kv.keys(TWIN, as_=READER).get_key("permission-key")
    assert _status(other_vault) == (403, "Forbidden")


def test_concurrent_operations_all_succeed(kv: Sdk, wrap_key: KeyVaultKey) -> None:
    """Threads unwrapping and creating at once on SQLite: no lock errors, nothing lost."""
    wrapped = _public_key(wrap_key).encrypt(b"c" * 32, _oaep("RSA-OAEP-256"))

    def work(worker: int) -> list[bytes]:
        client = kv.crypto(wrap_key.id, as_=CRYPTO)
        keys = kv.keys()
        out = []
        for i in range(4):
            out.append(client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key)
            if i == 0:
                keys.create_rsa_key(f"concurrent-{worker}", size=2048)
        return out

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = [key for batch in pool.map(work, range(6)) for key in batch]
    assert results == [b"c" * 32] * 24
    names = {p.name for p in kv.keys().list_properties_of_keys()}
    assert {f"concurrent-{i}" for i in range(6)} <= names
