"""Secure key release through the unmodified ``azure-keyvault-keys`` SDK (and the stock
azure-identity credential) against a real ``customerkey serve``.

The module runs its own server, configured (``CUSTOMERKEY_RELEASE_AUTHORITIES``) to trust one
attestation authority made here: an RSA key pair whose JWK Set is a file next to the server's
home (``tests.support.attestation``). The tests play the attested environment: they issue
attestation tokens whose claims satisfy the key's release policy or not, with a runtime key of
their own in ``x-ms-runtime.keys``, call ``KeyClient.release_key`` and unwrap what comes back
with the runtime private key, then check it is the vault's key by having the vault sign, unwrap
or decrypt and doing the other half locally.

Principals in vault ``skr-main``: ``skr-app@contoso.com`` (every key permission),
``skr-cvm`` (service; only ``release``, ``sign`` and ``unwrapKey``, no ``get``, so its crypto
operations run on the server), ``skr-other@contoso.com`` (everything but ``release``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import (
    ApiVersion,
    JsonWebKey,
    KeyClient,
    KeyExportEncryptionAlgorithm,
    KeyReleasePolicy,
    KeyType,
)
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from customerkey.crypto.signatures import ecdsa_raw_to_der
from tests.support.attestation import (
    AUTHORITY,
    CVM_CLAIMS,
    CVM_POLICY,
    Authority,
    new_rsa_key,
    open_release,
    policy_bytes,
)
from tests.support.live_servers import TENANT, contoso_server

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "skr-main"
APP, CVM, OTHER = "skr-app@contoso.com", "skr-cvm", "skr-other@contoso.com"
ALL_BUT_RELEASE = ["get", "list", "create", "import", "update", "sign", "unwrapKey", "wrapKey"]


@dataclass
class Skr:
    server: LiveServer
    authority: Authority
    runtime_key: rsa.RSAPrivateKey
    secrets: dict[str, str]

    def credential(self, who: str = APP) -> ClientSecretCredential:
        return ClientSecretCredential(
            TENANT,
            who,
            self.secrets[who],
            authority=self.server.url,
            disable_instance_discovery=True,
            connection_verify=str(self.server.ca),
        )

    def keys(self, who: str = APP, **options: Any) -> KeyClient:
        return KeyClient(
            self.server.vault_url(VAULT),
            self.credential(who),
            connection_verify=str(self.server.ca),
            **options,
        )

    def remote(self, key_id: str) -> CryptographyClient:
        """Crypto as ``skr-cvm``, which cannot read keys: every operation runs on the server."""
        return CryptographyClient(
            key_id, self.credential(CVM), connection_verify=str(self.server.ca)
        )

    def token(self, claims: dict[str, Any] | None = None, **options: Any) -> str:
        return self.authority.token(claims, options.pop("runtime_key", self.runtime_key), **options)


@pytest.fixture(scope="module")
def skr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Skr]:
    root = tmp_path_factory.mktemp("skr")
    authority = Authority()
    jwks = authority.write_jwks(root / "attestation-jwks.json")
    trusted = [{"authority": AUTHORITY, "jwks_file": str(jwks)}]
    env = {"CUSTOMERKEY_RELEASE_AUTHORITIES": json.dumps(trusted)}
    with contoso_server(root / "home", env=env) as server:
        server.create_vault(VAULT)
        secrets = {
            APP: server.create_principal(APP),
            CVM: server.create_principal(CVM, kind="service"),
            OTHER: server.create_principal(OTHER),
        }
        server.grant(VAULT, APP, ["all"])
        server.grant(VAULT, CVM, ["release", "sign", "unwrapKey"])
        server.grant(VAULT, OTHER, ALL_BUT_RELEASE)
        yield Skr(server, authority, new_rsa_key(), secrets)


@pytest.fixture
def kv(skr: Skr) -> Iterator[Skr]:
    """The set-up, checked for server-side errors after each test."""
    start = skr.server.log_size()
    yield skr
    bugs = skr.server.bugs(start)
    assert not bugs, "the server logged unhandled errors:\n" + "\n".join(bugs)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _policy(policy: dict[str, Any] | None = None, *, immutable: bool = False) -> KeyReleasePolicy:
    return KeyReleasePolicy(policy_bytes(policy), immutable=immutable)


def _refused(call: Any) -> tuple[int | None, str, str]:
    with pytest.raises(HttpResponseError) as caught:
        call()
    body = caught.value.error
    return caught.value.status_code, body.code if body else "", body.message if body else ""


# ------------------------------------------------------------------ releases


def test_an_exportable_rsa_hsm_key_is_released_to_the_attested_environment(kv: Skr) -> None:
    client = kv.keys()
    name = _name("rsa")
    key = client.create_rsa_key(
        name, size=2048, hardware_protected=True, exportable=True, release_policy=_policy()
    )
    assert key.key_type == KeyType.rsa_hsm
    assert key.properties.exportable is True
    policy = key.properties.release_policy
    assert policy is not None and policy.encoded_policy == policy_bytes()
    assert policy.content_type == "application/json; charset=utf-8"
    assert policy.immutable is False
    read = client.get_key(name).properties.release_policy
    assert read is not None and read.encoded_policy == policy_bytes()

    result = client.release_key(name, kv.token())
    opened = open_release(result.value, kv.runtime_key)
    released = serialization.load_der_private_key(opened.material, password=None)
    assert isinstance(released, rsa.RSAPrivateKey)
    assert key.key.n is not None and key.key.e is not None
    numbers = released.public_key().public_numbers()
    assert numbers.n == int.from_bytes(key.key.n, "big")
    assert numbers.e == int.from_bytes(key.key.e, "big")
    assert opened.payload["response"]["key"]["key"]["kid"] == key.id
    assert opened.payload["request"]["enc"] == "CKM_RSA_AES_KEY_WRAP"

    # It is the vault's key: the vault signs and unwraps, the released key does the other half.
    assert key.id is not None
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"release me")
    value = digest.finalize()
    signed = kv.remote(key.id).sign(SignatureAlgorithm.rs256, value)
    released.public_key().verify(
        signed.signature, value, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    )
    secret = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    wrapped = released.public_key().encrypt(secret, oaep)
    assert kv.remote(key.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == secret


def test_versions_algorithms_and_nonces(kv: Skr) -> None:
    client = kv.keys()
    name = _name("rsa-v")
    first = client.create_rsa_key(
        name, hardware_protected=True, exportable=True, release_policy=_policy()
    )
    client.create_rsa_key(name, hardware_protected=True, exportable=True, release_policy=_policy())
    for algorithm in KeyExportEncryptionAlgorithm:
        result = client.release_key(
            name,
            kv.token(),
            version=first.properties.version,
            algorithm=algorithm,
            nonce="fresh-1",
        )
        opened = open_release(result.value, kv.runtime_key)
        assert opened.payload["request"]["kid"] == first.id
        assert opened.payload["request"]["enc"] == algorithm.value
        assert opened.payload["request"]["nonce"] == "fresh-1"
        assert opened.transfer["header"]["enc"] == algorithm.value
        released = serialization.load_der_private_key(opened.material, password=None)
        assert isinstance(released, rsa.RSAPrivateKey)
        assert first.key.n == released.public_key().public_numbers().n.to_bytes(256, "big")


def test_ec_hsm_and_oct_hsm_keys_are_released(kv: Skr) -> None:
    client = kv.keys()
    ec_name, oct_name = _name("ec"), _name("oct")
    ec_key = client.create_ec_key(
        ec_name, curve="P-256", hardware_protected=True, exportable=True, release_policy=_policy()
    )
    assert ec_key.key_type == KeyType.ec_hsm and ec_key.properties.exportable
    released_ec = serialization.load_der_private_key(
        open_release(client.release_key(ec_name, kv.token()).value, kv.runtime_key).material,
        password=None,
    )
    assert isinstance(released_ec, ec.EllipticCurvePrivateKey)
    assert ec_key.key.x == released_ec.public_key().public_numbers().x.to_bytes(32, "big")
    value = b"\x07" * 32
    assert ec_key.id is not None
    signature = kv.remote(ec_key.id).sign(SignatureAlgorithm.es256, value).signature
    released_ec.public_key().verify(
        ecdsa_raw_to_der(signature, "P-256"), value, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    )

    oct_key = client.create_oct_key(
        oct_name, size=256, hardware_protected=True, exportable=True, release_policy=_policy()
    )
    assert oct_key.key_type == KeyType.oct_hsm and oct_key.properties.exportable
    aes_key = open_release(client.release_key(oct_name, kv.token()).value, kv.runtime_key)
    assert len(aes_key.material) == 32
    secret = os.urandom(32)
    assert oct_key.id is not None
    wrapped = aes_key_wrap(aes_key.material, secret)
    assert kv.remote(oct_key.id).unwrap_key(KeyWrapAlgorithm.aes_256, wrapped).key == secret


def test_an_imported_exportable_key_is_released_as_imported(kv: Skr) -> None:
    client = kv.keys()
    mine = new_rsa_key()
    numbers = mine.private_numbers()

    def raw(value: int) -> bytes:
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    jwk = JsonWebKey(
        kty=KeyType.rsa,
        n=raw(numbers.public_numbers.n),
        e=raw(numbers.public_numbers.e),
        d=raw(numbers.d),
        p=raw(numbers.p),
        q=raw(numbers.q),
        dp=raw(numbers.dmp1),
        dq=raw(numbers.dmq1),
        qi=raw(numbers.iqmp),
    )
    name = _name("imported")
    imported = client.import_key(
        name, jwk, hardware_protected=True, exportable=True, release_policy=_policy()
    )
    assert imported.key_type == KeyType.rsa_hsm and imported.properties.exportable
    released = serialization.load_der_private_key(
        open_release(kv.keys(CVM).release_key(name, kv.token()).value, kv.runtime_key).material,
        password=None,
    )
    assert isinstance(released, rsa.RSAPrivateKey)
    assert released.private_numbers() == numbers


# ------------------------------------------------------------------ refusals


def test_untrusted_tampered_or_expired_tokens_are_refused(kv: Skr) -> None:
    client = kv.keys()
    name = _name("refuse")
    client.create_rsa_key(name, hardware_protected=True, exportable=True, release_policy=_policy())
    header, _, signature = kv.token().split(".")
    other_claims = kv.authority.token({"tampered": True}, kv.runtime_key).split(".")[1]
    impostor = Authority(issuer="https://attest.impostor.test")
    cases = [
        (f"{header}.{other_claims}.{signature}", "its signature does not verify"),
        (kv.token(signing_key=new_rsa_key()), "its signature does not verify"),
        (impostor.token(runtime_key=kv.runtime_key), "is not a trusted attestation authority"),
        (kv.token(issuer="https://attest.impostor.test"), "is not a trusted attestation"),
        (kv.token(lifetime=-120), "it has expired"),
    ]
    for token, fragment in cases:
        status, code, message = _refused(lambda t=token: client.release_key(name, t))
        assert (status, code) == (403, "Forbidden"), message
        assert message.startswith("Target environment attestation statement cannot be verified")
        assert fragment in message
    status, code, message = _refused(lambda: client.release_key(name, "not.a-token"))
    assert (status, code) == (400, "BadParameter") and "not a JWS" in message


def test_claims_that_do_not_satisfy_the_policy_are_refused(kv: Skr) -> None:
    client = kv.keys()
    name = _name("claims")
    client.create_ec_key(name, hardware_protected=True, exportable=True, release_policy=_policy())
    tdx = {
        "x-ms-isolation-tee": {**CVM_CLAIMS["x-ms-isolation-tee"], "x-ms-attestation-type": "tdxvm"}
    }
    status, code, message = _refused(lambda: client.release_key(name, kv.token(tdx)))
    assert (status, code) == (403, "Forbidden")
    assert "is not satisfied by the attestation token" in message
    assert "x-ms-isolation-tee.x-ms-attestation-type" in message
    status, code, message = _refused(lambda: client.release_key(name, kv.token({})))
    assert status == 403 and "is absent" in message
    # Trusted and satisfied, but no key to wrap for.
    no_runtime_key = kv.authority.token()
    status, code, message = _refused(lambda: client.release_key(name, no_runtime_key))
    assert (status, code) == (400, "BadParameter") and "x-ms-runtime.keys" in message


def test_what_cannot_be_released_and_who_cannot_release(kv: Skr) -> None:
    client = kv.keys()
    plain, exportable = _name("plain"), _name("exp")
    client.create_rsa_key(plain, hardware_protected=True)
    client.create_rsa_key(
        exportable, hardware_protected=True, exportable=True, release_policy=_policy()
    )
    status, code, message = _refused(lambda: client.release_key(plain, kv.token()))
    assert (status, code) == (403, "Forbidden") and "is not exportable" in message
    status, _, message = _refused(lambda: kv.keys(OTHER).release_key(exportable, kv.token()))
    assert status == 403 and "does not have keys release permission" in message
    status, code, message = _refused(
        lambda: client.release_key(exportable, kv.token(), algorithm="RSA-OAEP-256")
    )
    assert (status, code) == (400, "BadParameter") and "'enc'" in message
    status, code, message = _refused(lambda: client.release_key(_name("missing"), kv.token()))
    assert (status, code) == (404, "KeyNotFound")


def test_creation_rules(kv: Skr) -> None:
    client = kv.keys()
    status, code, message = _refused(
        lambda: client.create_rsa_key(_name("k"), hardware_protected=True, exportable=True)
    )
    assert (status, code) == (400, "BadParameter")
    assert "An exportable key needs a release policy" in message
    status, _, message = _refused(
        lambda: client.create_rsa_key(_name("k"), exportable=True, release_policy=_policy())
    )
    assert status == 400 and "Key type RSA cannot be exportable" in message
    status, _, message = _refused(
        lambda: client.create_rsa_key(_name("k"), hardware_protected=True, release_policy=_policy())
    )
    assert status == 400 and "applies only to exportable keys" in message
    broken = KeyReleasePolicy(b'{"version": "1.0.0", "anyOf": [{"authority": "x"}]}')
    status, _, message = _refused(
        lambda: client.create_ec_key(
            _name("k"), hardware_protected=True, exportable=True, release_policy=broken
        )
    )
    assert status == 400
    assert message == (
        "The key release policy is not valid: an authority entry has exactly one of 'allOf' "
        "and 'anyOf' (at anyOf[0])."
    )


def test_policies_update_unless_immutable(kv: Skr) -> None:
    client = kv.keys()
    name = _name("upd")
    client.create_rsa_key(name, hardware_protected=True, exportable=True, release_policy=_policy())
    looser = {
        **CVM_POLICY,
        "anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "lab", "equals": True}]}],
    }
    updated = client.update_key_properties(name, release_policy=_policy(looser))
    assert updated.properties.release_policy is not None
    assert updated.properties.release_policy.encoded_policy == policy_bytes(looser)
    opened = open_release(client.release_key(name, kv.token({"lab": True})).value, kv.runtime_key)
    assert opened.payload["response"]["key"]["release_policy"]["immutable"] is False

    frozen = client.update_key_properties(name, release_policy=_policy(immutable=True))
    assert frozen.properties.release_policy is not None
    assert frozen.properties.release_policy.immutable is True
    # Sending the same immutable policy changes nothing; any other policy is refused.
    client.update_key_properties(name, release_policy=_policy(immutable=True), tags={"t": "1"})
    for change in (_policy(looser, immutable=True), _policy()):
        status, code, message = _refused(
            lambda c=change: client.update_key_properties(name, release_policy=c)
        )
        assert (status, code) == (403, "Forbidden")
        assert "is immutable and cannot be changed" in message
    read = client.get_key(name)
    assert read.properties.tags == {"t": "1"}
    assert read.properties.release_policy is not None
    assert read.properties.release_policy.encoded_policy == policy_bytes()
    # Rotation keeps the key exportable under the same immutable policy.
    rotated = client.rotate_key(name)
    assert rotated.properties.exportable
    assert rotated.properties.release_policy is not None
    assert rotated.properties.release_policy.immutable is True
    open_release(client.release_key(name, kv.token()).value, kv.runtime_key)


def test_older_api_versions(kv: Skr) -> None:
    name = _name("old")
    kv.keys().create_rsa_key(
        name, hardware_protected=True, exportable=True, release_policy=_policy()
    )
    old = kv.keys(api_version=ApiVersion.V7_2)
    assert old.get_key(name).properties.release_policy is None  # 7.2 has no release policies
    assert kv.keys(api_version=ApiVersion.V7_3).get_key(name).properties.release_policy
    token = kv.server.token(APP, kv.secrets[APP])
    response = kv.server.http.post(
        f"{kv.server.vault_url(VAULT)}/keys/{name}/release",
        params={"api-version": "7.2"},
        headers={"Authorization": f"Bearer {token}"},
        json={"target": kv.token()},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "Key release is not part of api-version 7.2; use 7.3 or later."
    )
    response = kv.server.http.post(
        f"{kv.server.vault_url(VAULT)}/keys/{name}/release",
        params={"api-version": "7.3"},
        headers={"Authorization": f"Bearer {token}"},
        json={"target": kv.token()},
    )
    assert response.status_code == 200, response.text
    open_release(response.json()["value"], kv.runtime_key)
