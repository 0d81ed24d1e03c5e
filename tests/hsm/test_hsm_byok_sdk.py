"""Bring your own key through a real ``customerkey serve`` with its HSM in this session's
SoftHSM2 token, driven by the unmodified Azure SDK and the CLI: a key exchange key (KEK) made
with key_ops ``import`` only; a customer RSA key wrapped to its downloaded public key (by the
``byok-wrap`` command and by the library helper) and imported with ``JsonWebKey(t=...)`` lands
in the token as a sensitive, non-extractable object and works there. What an attacker tries
is refused: using the KEK for anything else or changing its operations, a blob naming another
KEK or vault, a tampered blob (undetailed, and nothing is created, in the vault or the token),
a blob wrapped to a key that is not a KEK, and BYOK on a server with no HSM."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from pkcs11 import Attribute, ObjectClass

from customerkey.azure import ClientSecretCredential
from customerkey.vault.byok import parse_byok, wrap_for_kek
from tests.support.softhsm import SoftHsm, stored_version

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "hsm-byok"
OTHER_VAULT = "hsm-byok-other"
APP = "byok-app@contoso.com"


@dataclass
class Sdk:
    server: LiveServer
    credential: ClientSecretCredential

    def keys(self, vault: str = VAULT) -> KeyClient:
        return KeyClient(
            self.server.vault_url(vault), self.credential, connection_verify=str(self.server.ca)
        )

    def crypto(self, key_id: str) -> CryptographyClient:
        return CryptographyClient(key_id, self.credential, connection_verify=str(self.server.ca))


@pytest.fixture(scope="module")
def sdk(hsm_server: LiveServer) -> Iterator[Sdk]:
    for vault in (VAULT, OTHER_VAULT):
        hsm_server.create_vault(vault)
    secret = hsm_server.create_principal(APP)
    for vault in (VAULT, OTHER_VAULT):
        hsm_server.grant(vault, APP, ["all"])
    credential = hsm_server.credential(APP, secret)
    try:
        yield Sdk(hsm_server, credential)
    finally:
        credential.close()


def _rsa_public(key: KeyVaultKey) -> rsa.RSAPublicKey:
    assert key.key.n is not None and key.key.e is not None
    return rsa.RSAPublicNumbers(
        int.from_bytes(key.key.e, "big"), int.from_bytes(key.key.n, "big")
    ).public_key()


def _kek(sdk: Sdk, name: str, vault: str = VAULT) -> KeyVaultKey:
    kek = sdk.keys(vault).create_rsa_key(
        name, hardware_protected=True, size=2048, key_operations=["import"]
    )
    assert kek.key_type == "RSA-HSM" and kek.key_operations == ["import"]
    return kek


def _token_objects(softhsm: SoftHsm, **match: object) -> list[dict[str, object]]:
    """What the token says of its private-key objects matching ``match`` (CKA_ID or label)."""
    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.label)
    try:
        session = token.open(user_pin=softhsm.pin)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        session = token.open()
    template: dict[Attribute, object] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
    if "object_id" in match:
        template[Attribute.ID] = bytes.fromhex(str(match["object_id"]))
    if "label" in match:
        template[Attribute.LABEL] = str(match["label"])
    with session:
        seen = []
        for key in session.get_objects(template):
            found: dict[str, object] = {
                "sensitive": key[Attribute.SENSITIVE],
                "extractable": key[Attribute.EXTRACTABLE],
                "token": key[Attribute.TOKEN],
                "decrypt": key[Attribute.DECRYPT],
                "sign": key[Attribute.SIGN],
                "unwrap": key[Attribute.UNWRAP],
                "modulus": int.from_bytes(key[Attribute.MODULUS], "big"),
            }
            try:
                found["private_exponent"] = key[Attribute.PRIVATE_EXPONENT]
            except pkcs11.exceptions.AttributeSensitive:
                found["private_exponent"] = "refused"
            seen.append(found)
        return seen


def _import(sdk: Sdk, name: str, blob: bytes, *, vault: str = VAULT) -> KeyVaultKey:
    jwk = JsonWebKey(kty="RSA-HSM", t=blob, key_ops=["sign", "verify", "unwrapKey", "wrapKey"])
    return sdk.keys(vault).import_key(name, jwk)


def _refused(sdk: Sdk, name: str, blob: bytes) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as info:
        _import(sdk, name, blob)
    with pytest.raises(ResourceNotFoundError):
        sdk.keys().get_key(name)
    return info.value


def test_a_pem_key_wrapped_by_the_cli_lands_in_the_token_and_works_there(
    sdk: Sdk, softhsm: SoftHsm, tmp_path: Path
) -> None:
    kek = _kek(sdk, "kek-cli")
    assert kek.id is not None and kek.properties.version is not None
    kek_pem = tmp_path / "kek.pem"
    kek_pem.write_bytes(
        _rsa_public(kek).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    target = rsa.generate_private_key(65537, 3072)
    key_pem = tmp_path / "mykey.pem"
    key_pem.write_bytes(
        target.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    out = tmp_path / "mykey.byok"
    sdk.server.cli(
        "key", "byok-wrap", "--kek-public", str(kek_pem), "--key", str(key_pem),
        "--kid", kek.id, "--out", str(out),
    )  # fmt: skip
    assert parse_byok(out.read_bytes()).kek.name == "kek-cli"
    imported = _import(sdk, "byok-rsa", out.read_bytes())

    # The public key served is the imported key's.
    assert imported.key_type == "RSA-HSM"
    assert _rsa_public(imported).public_numbers() == target.public_key().public_numbers()
    assert imported.properties.version is not None
    sealed, object_id = stored_version(sdk.server.home, imported.properties.version)
    assert sealed == b"" and object_id is not None  # nothing of it in the database
    [seen] = _token_objects(softhsm, object_id=object_id)
    assert seen["sensitive"] is True and seen["extractable"] is False and seen["token"] is True
    assert seen["private_exponent"] == "refused"
    assert seen["modulus"] == target.public_key().public_numbers().n

    # What pyca wraps to the customer's public key unwraps with the imported key, and what
    # the token signs verifies under the customer's public key.
    assert imported.id is not None
    client = sdk.crypto(imported.id)
    secret = os.urandom(32)
    wrapped = target.public_key().encrypt(
        secret, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    )
    assert client.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == secret
    digest = hashlib.sha256(b"signed by the brought key").digest()
    signature = client.sign(SignatureAlgorithm.rs256, digest).signature
    target.public_key().verify(
        signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    )


def test_the_kek_does_nothing_but_import(sdk: Sdk, softhsm: SoftHsm) -> None:
    kek = _kek(sdk, "kek-only")
    assert kek.id is not None and kek.properties.version is not None
    client = sdk.crypto(kek.id)
    wrapped = _rsa_public(kek).encrypt(
        os.urandom(32), padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    )
    with pytest.raises(HttpResponseError) as info:
        client.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
    assert info.value.status_code == 403 and "unwrapKey is not permitted" in str(info.value)
    with pytest.raises(HttpResponseError) as info:
        client.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"x").digest())
    assert info.value.status_code == 403
    with pytest.raises(HttpResponseError) as info:
        client.decrypt("RSA-OAEP", wrapped)  # type: ignore[arg-type]
    assert info.value.status_code == 403
    # Its operations are fixed: it does not become a decrypting key, nor a key a KEK.
    with pytest.raises(HttpResponseError) as info:
        sdk.keys().update_key_properties("kek-only", key_operations=["decrypt", "unwrapKey"])
    assert info.value.status_code == 400 and "fixed" in str(info.value)
    assert sdk.keys().get_key("kek-only").key_operations == ["import"]
    sdk.keys().create_rsa_key("plain-hsm", hardware_protected=True, size=2048)
    with pytest.raises(HttpResponseError) as info:
        sdk.keys().update_key_properties("plain-hsm", key_operations=["import"])
    assert info.value.status_code == 400
    # "import" with anything else is no KEK.
    with pytest.raises(HttpResponseError) as info:
        sdk.keys().create_rsa_key(
            "mixed", hardware_protected=True, size=2048, key_operations=["import", "decrypt"]
        )
    assert info.value.status_code == 400
    # And the token itself refuses it any use but unwrapping.
    _, object_id = stored_version(sdk.server.home, kek.properties.version)
    [seen] = _token_objects(softhsm, object_id=object_id)
    assert (seen["decrypt"], seen["sign"], seen["unwrap"]) == (False, False, True)


def test_a_blob_for_another_kek_or_vault_is_refused(sdk: Sdk) -> None:
    kek_a, kek_b = _kek(sdk, "kek-a"), _kek(sdk, "kek-b")
    assert kek_a.id is not None and kek_b.id is not None
    target = rsa.generate_private_key(65537, 2048)
    # Wrapped to A, but naming B: B cannot open it; nothing said about why.
    blob = wrap_for_kek(_rsa_public(kek_a), kek_b.id, target, aes_key=os.urandom(32))
    refusal = _refused(sdk, "to-b", blob)
    assert refusal.status_code == 400 and refusal.message.endswith("Decryption failed.")
    # A KEK of another vault cannot import here.
    other = _kek(sdk, "kek-other", vault=OTHER_VAULT)
    assert other.id is not None
    blob = wrap_for_kek(_rsa_public(other), other.id, target, aes_key=os.urandom(32))
    refusal = _refused(sdk, "from-other", blob)
    assert refusal.status_code == 400 and "another vault" in refusal.message
    # The right one works (the blob itself was fine).
    blob = wrap_for_kek(_rsa_public(kek_a), kek_a.id, target, aes_key=os.urandom(32))
    assert _rsa_public(_import(sdk, "to-a", blob)).public_numbers().n == (
        target.public_key().public_numbers().n
    )


@pytest.mark.parametrize("where", ["rsa-part", "kwp-part", "kwp-tail"])
def test_a_tampered_blob_is_refused_undetailed_and_creates_nothing(
    sdk: Sdk, softhsm: SoftHsm, where: str
) -> None:
    kek = _kek(sdk, f"kek-t-{where}")
    assert kek.id is not None
    blob = wrap_for_kek(
        _rsa_public(kek), kek.id, rsa.generate_private_key(65537, 2048), aes_key=os.urandom(32)
    )
    transfer = parse_byok(blob)
    ciphertext = bytearray(transfer.ciphertext)
    ciphertext[{"rsa-part": 10, "kwp-part": 300, "kwp-tail": -1}[where]] ^= 0x01
    from customerkey.vault.byok import make_byok

    name = f"tampered-{where}"
    refusal = _refused(sdk, name, make_byok(kek.id, bytes(ciphertext), "test"))
    assert refusal.status_code == 400
    assert refusal.message.endswith("Decryption failed.")
    assert not _token_objects(softhsm, label=f"customerkey {VAULT}/{name}")


def test_a_blob_wrapped_to_a_key_that_is_not_a_kek_is_refused(sdk: Sdk, softhsm: SoftHsm) -> None:
    target = rsa.generate_private_key(65537, 2048)
    for name, hardware in (("soft-rsa", False), ("hsm-rsa", True)):
        key = sdk.keys().create_rsa_key(name, hardware_protected=hardware, size=2048)
        assert key.id is not None
        blob = wrap_for_kek(_rsa_public(key), key.id, target, aes_key=os.urandom(32))
        refusal = _refused(sdk, f"via-{name}", blob)
        assert refusal.status_code == 400 and "not a key exchange key" in refusal.message
        assert not _token_objects(softhsm, label=f"customerkey {VAULT}/via-{name}")


def test_byok_without_an_hsm_is_refused_clearly(live_server: LiveServer) -> None:
    live_server.create_vault("soft-byok")
    secret = live_server.create_principal("byok-soft@contoso.com")
    live_server.grant("soft-byok", "byok-soft@contoso.com", ["all"])
    credential = live_server.credential("byok-soft@contoso.com", secret)
    try:
        keys = KeyClient(
            live_server.vault_url("soft-byok"), credential, connection_verify=str(live_server.ca)
        )
        kek_public = rsa.generate_private_key(65537, 2048).public_key()
        kid = live_server.vault_url("soft-byok") + "/keys/kek/" + "0" * 32
        blob = wrap_for_kek(
            kek_public, kid, rsa.generate_private_key(65537, 2048), aes_key=os.urandom(32)
        )
        with pytest.raises(HttpResponseError) as info:
            keys.import_key("byok", JsonWebKey(kty="RSA-HSM", t=blob))
        assert info.value.status_code == 400
        assert "no HSM configured" in str(info.value)
        assert "CUSTOMERKEY_PKCS11_MODULE" in str(info.value)
        with pytest.raises(HttpResponseError) as info:
            keys.create_rsa_key("kek", hardware_protected=True, key_operations=["import"])
        assert info.value.status_code == 400 and "no HSM configured" in str(info.value)
    finally:
        credential.close()
