"""Every key type and algorithm of issue 16 through the unmodified ``azure-keyvault-keys`` SDK
against a real ``customerkey serve``: EC and EC-HSM keys on P-256, P-256K, P-384 and P-521
(ES256/ES256K/ES384/ES512), RSA sign/verify (RS*/PS*), RSA1_5 next to RSA-OAEP(-256),
oct-HSM keys with AES-KW, AES-GCM and AES-CBC(PAD), and ``get_random_bytes``.

Every signature the vault makes is checked with pyca/cryptography outside the server, and
every key the tests import or wrap locally is checked against what the vault answers.

Principals in vault ``kt-main``:

- ``kt-app@contoso.com``: every key permission. The SDK's ``CryptographyClient`` then does
  the public-key operations locally (RSA encrypt/wrap, verify) once it has read the key.
- ``kt-crypto`` (service): the six crypto permissions but not ``get``, so every operation it
  asks goes to the server. (With ``get``, the Python SDK builds a local AES key for an
  oct-HSM key whose ``k`` it cannot see, and would wrap and CBCPAD-encrypt with that, as it
  does against Azure; oct-HSM operations therefore go through this principal.)
- ``kt-stranger@contoso.com``: no access policy.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyCurveName, KeyType, KeyVaultKey
from azure.keyvault.keys.crypto import (
    CryptographyClient,
    EncryptionAlgorithm,
    KeyWrapAlgorithm,
    SignatureAlgorithm,
)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from customerkey.azure import ClientSecretCredential

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "kt-main"
APP, CRYPTO, STRANGER = "kt-app@contoso.com", "kt-crypto", "kt-stranger@contoso.com"
CRYPTO_OPS = ["sign", "verify", "encrypt", "decrypt", "wrapKey", "unwrapKey"]
CURVES = {
    # crv: (JWS algorithm, pyca curve, hash, coordinate bytes)
    "P-256": (SignatureAlgorithm.es256, ec.SECP256R1(), hashes.SHA256(), 32),
    "P-256K": (SignatureAlgorithm.es256_k, ec.SECP256K1(), hashes.SHA256(), 32),
    "P-384": (SignatureAlgorithm.es384, ec.SECP384R1(), hashes.SHA384(), 48),
    "P-521": (SignatureAlgorithm.es512, ec.SECP521R1(), hashes.SHA512(), 66),
}
RSA_SIGNATURES = {
    SignatureAlgorithm.rs256: hashes.SHA256(),
    SignatureAlgorithm.rs384: hashes.SHA384(),
    SignatureAlgorithm.rs512: hashes.SHA512(),
    SignatureAlgorithm.ps256: hashes.SHA256(),
    SignatureAlgorithm.ps384: hashes.SHA384(),
    SignatureAlgorithm.ps512: hashes.SHA512(),
}


@dataclass
class Sdk:
    server: LiveServer
    credentials: dict[str, ClientSecretCredential]
    secrets: dict[str, str]

    def keys(self, as_: str = APP) -> KeyClient:
        return KeyClient(
            self.server.vault_url(VAULT),
            self.credentials[as_],
            connection_verify=str(self.server.ca),
        )

    def crypto(self, key: KeyVaultKey | str, as_: str = APP) -> CryptographyClient:
        return CryptographyClient(key, self.credentials[as_], connection_verify=str(self.server.ca))

    def remote(self, key: KeyVaultKey) -> CryptographyClient:
        """A client that cannot read the key, so every operation runs on the server."""
        assert key.id is not None
        return self.crypto(key.id, as_=CRYPTO)


@pytest.fixture(scope="module")
def sdk(live_server: LiveServer) -> Iterator[Sdk]:
    server = live_server
    server.create_vault(VAULT)
    secrets = {
        APP: server.create_principal(APP),
        CRYPTO: server.create_principal(CRYPTO, kind="service"),
        STRANGER: server.create_principal(STRANGER),
    }
    server.grant(VAULT, APP, ["all"])
    server.grant(VAULT, CRYPTO, CRYPTO_OPS)
    credentials = {name: server.credential(name, secret) for name, secret in secrets.items()}
    try:
        yield Sdk(server, credentials, secrets)
    finally:
        for credential in credentials.values():
            credential.close()


@pytest.fixture
def kv(sdk: Sdk, live: LiveServer) -> Sdk:
    """The SDK set-up, checked for server-side errors after each test."""
    return sdk


def _error(error: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int | None, str, str]:
    body = error.value.error
    return error.value.status_code, body.code if body else "", body.message if body else ""


def _digest(algorithm: hashes.HashAlgorithm, message: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(message)
    return h.finalize()


def _ec_public(key: KeyVaultKey) -> ec.EllipticCurvePublicKey:
    assert key.key.crv is not None and key.key.x is not None and key.key.y is not None
    curve = CURVES[KeyCurveName(key.key.crv).value][1]
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big"), curve
    )
    return numbers.public_key()


def _rsa_public(key: KeyVaultKey) -> rsa.RSAPublicKey:
    assert key.key.n is not None and key.key.e is not None
    return rsa.RSAPublicNumbers(
        int.from_bytes(key.key.e, "big"), int.from_bytes(key.key.n, "big")
    ).public_key()


def _raw_to_der(signature: bytes, size: int) -> bytes:
    assert len(signature) == 2 * size
    return utils.encode_dss_signature(
        int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    )


# ------------------------------------------------------------------ EC keys


@pytest.mark.parametrize("hsm", [False, True], ids=["EC", "EC-HSM"])
@pytest.mark.parametrize("crv", list(CURVES))
def test_ec_keys_sign_on_the_server_and_verify_anywhere(kv: Sdk, crv: str, hsm: bool) -> None:
    alg, _curve, digest_alg, size = CURVES[crv]
    name = f"ec-{crv.lower()}-{'hsm' if hsm else 'sw'}"
    key = kv.keys().create_ec_key(name, curve=crv, hardware_protected=hsm)
    assert key.key_type == (KeyType.ec_hsm if hsm else KeyType.ec)
    assert key.key.crv == crv
    assert key.key_operations == ["sign", "verify"]  # Azure's default for EC keys
    assert key.key.x is not None and len(key.key.x) == size
    assert key.key.y is not None and len(key.key.y) == size
    assert key.key.d is None and key.key.n is None
    assert kv.keys().get_key(name).key.x == key.key.x

    digest = _digest(digest_alg, b"pay 100 to contoso")
    signed = kv.remote(key).sign(alg, digest)
    assert signed.algorithm == alg and len(signed.signature) == 2 * size
    # pyca/cryptography accepts r || s, converted to DER, over the digest
    _ec_public(key).verify(
        _raw_to_der(signed.signature, size), digest, ec.ECDSA(utils.Prehashed(digest_alg))
    )
    # the server verifies, and so does the SDK locally once it can read the key
    for client in (kv.remote(key), kv.crypto(key.id or "")):
        assert client.verify(alg, digest, signed.signature).is_valid
        tampered = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
        assert not client.verify(alg, digest, tampered).is_valid
        other = _digest(digest_alg, b"pay 900 to contoso")
        assert not client.verify(alg, other, signed.signature).is_valid
    # ECDSA is randomized: two signatures differ, both verify
    again = kv.remote(key).sign(alg, digest).signature
    assert again != signed.signature
    assert kv.remote(key).verify(alg, digest, again).is_valid


def test_ec_signatures_from_outside_verify_on_the_server(kv: Sdk) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    numbers = private.public_key().public_numbers()
    jwk = JsonWebKey(
        kty=KeyType.ec,
        crv=KeyCurveName.p_384,
        x=numbers.x.to_bytes(48, "big"),
        y=numbers.y.to_bytes(48, "big"),
        d=private.private_numbers().private_value.to_bytes(48, "big"),
    )
    imported = kv.keys().import_key("ec-imported", jwk)
    assert imported.key_type == KeyType.ec and imported.key.crv == "P-384"
    assert imported.key.x == jwk.x and imported.key.y == jwk.y and imported.key.d is None
    assert imported.key_operations == ["sign", "verify"]
    digest = hashlib.sha384(b"signed outside").digest()
    r, s = utils.decode_dss_signature(
        private.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
    )
    outside = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    assert kv.remote(imported).verify(SignatureAlgorithm.es384, digest, outside).is_valid
    # and what the vault signs, the original key's public half verifies
    inside = kv.remote(imported).sign(SignatureAlgorithm.es384, digest).signature
    private.public_key().verify(
        _raw_to_der(inside, 48), digest, ec.ECDSA(utils.Prehashed(hashes.SHA384()))
    )
    hsm = kv.keys().import_key("ec-imported-hsm", jwk, hardware_protected=True)
    assert hsm.key_type == KeyType.ec_hsm


def test_ec_import_refuses_a_point_that_is_not_its_key(kv: Sdk) -> None:
    one, two = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    numbers = two.public_key().public_numbers()
    jwk = JsonWebKey(
        kty=KeyType.ec,
        crv=KeyCurveName.p_256,
        x=numbers.x.to_bytes(32, "big"),
        y=numbers.y.to_bytes(32, "big"),
        d=one.private_numbers().private_value.to_bytes(32, "big"),
    )
    with pytest.raises(HttpResponseError) as error:
        kv.keys().import_key("ec-mismatch", jwk)
    status, code, message = _error(error)
    assert (status, code) == (400, "BadParameter") and "public point" in message


def test_ec_backup_restores_the_same_key(kv: Sdk) -> None:
    client = kv.keys()
    key = client.create_ec_key("ec-backup", curve="P-256K")
    blob = client.backup_key("ec-backup")
    client.begin_delete_key("ec-backup").wait()
    client.purge_deleted_key("ec-backup")
    restored = client.restore_key_backup(blob)
    assert restored.id == key.id
    assert (restored.key.crv, restored.key.x, restored.key.y) == (
        key.key.crv,
        key.key.x,
        key.key.y,
    )
    digest = hashlib.sha256(b"after restore").digest()
    signature = kv.remote(restored).sign(SignatureAlgorithm.es256_k, digest).signature
    _ec_public(key).verify(
        _raw_to_der(signature, 32), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    )
    rotated = client.rotate_key("ec-backup")
    assert rotated.key.crv == "P-256K" and rotated.key.x != key.key.x


def test_ec_refusals(kv: Sdk) -> None:
    client = kv.keys()
    key = client.create_ec_key("ec-refusals", curve="P-256")
    remote = kv.remote(key)
    cases = [
        # digest of the wrong length for the algorithm
        (lambda: remote.sign(SignatureAlgorithm.es256, b"x" * 48), 400, "32 bytes"),
        # an algorithm of another curve
        (lambda: remote.sign(SignatureAlgorithm.es384, b"x" * 48), 400, "P-384"),
        # an RSA algorithm
        (lambda: remote.sign(SignatureAlgorithm.rs256, b"x" * 32), 400, "RSA key"),
        # EC keys neither wrap nor encrypt
        (lambda: remote.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32), 400, "EC"),
        (lambda: remote.encrypt(EncryptionAlgorithm.rsa_oaep, b"k"), 400, "EC"),
    ]
    for call, status, says in cases:
        with pytest.raises(HttpResponseError) as error:
            call()
        got_status, code, message = _error(error)
        assert (got_status, code) == (status, "BadParameter"), message
        assert says in message, message
    with pytest.raises(HttpResponseError) as error:
        client.create_key("ec-bad-ops", "EC", curve="P-256", key_operations=["wrapKey"])
    assert _error(error)[:2] == (400, "BadParameter")
    with pytest.raises(HttpResponseError) as error:
        client.create_ec_key("ec-bad-curve", curve="P-192")
    assert _error(error)[:2] == (400, "BadParameter") and "P-192" in _error(error)[2]
    # an operation the key does not list is refused with 403
    verify_only = client.create_ec_key("ec-verify-only", curve="P-256", key_operations=["verify"])
    with pytest.raises(HttpResponseError) as error:
        kv.remote(verify_only).sign(SignatureAlgorithm.es256, b"x" * 32)
    assert _error(error)[:2] == (403, "Forbidden")
    # without the sign permission
    with pytest.raises(HttpResponseError) as error:
        kv.crypto(key.id or "", as_=STRANGER).sign(SignatureAlgorithm.es256, b"x" * 32)
    assert _error(error)[0] == 403


# ------------------------------------------------------------------ RSA sign and verify


@pytest.mark.parametrize("alg", list(RSA_SIGNATURES))
def test_rsa_signatures(kv: Sdk, alg: SignatureAlgorithm) -> None:
    name = f"rsa-sign-{alg.value.lower()}"
    key = kv.keys().create_rsa_key(name, size=2048, key_operations=["sign", "verify"])
    digest_alg = RSA_SIGNATURES[alg]
    digest = _digest(digest_alg, b"the quarterly report")
    signature = kv.remote(key).sign(alg, digest).signature
    assert len(signature) == 256
    if alg.value.startswith("PS"):
        scheme: padding.AsymmetricPadding = padding.PSS(
            mgf=padding.MGF1(digest_alg), salt_length=digest_alg.digest_size
        )
    else:
        scheme = padding.PKCS1v15()
        # RSASSA-PKCS1-v1_5 is deterministic
        assert kv.remote(key).sign(alg, digest).signature == signature
    _rsa_public(key).verify(signature, digest, scheme, utils.Prehashed(digest_alg))
    for client in (kv.remote(key), kv.crypto(key)):
        assert client.verify(alg, digest, signature).is_valid
        assert not client.verify(alg, digest, signature[:-1] + bytes([signature[-1] ^ 1])).is_valid
    with pytest.raises(InvalidSignature):
        _rsa_public(key).verify(
            signature, _digest(digest_alg, b"another report"), scheme, utils.Prehashed(digest_alg)
        )
    with pytest.raises(HttpResponseError) as error:
        kv.remote(key).sign(alg, digest[:-1])
    assert _error(error)[:2] == (400, "BadParameter")
    with pytest.raises(HttpResponseError) as error:
        kv.remote(key).sign(SignatureAlgorithm.es256, digest[:32])
    assert _error(error)[:2] == (400, "BadParameter") and "EC key" in _error(error)[2]


def test_rsa_signature_made_outside_verifies_on_the_server(kv: Sdk) -> None:
    private = rsa.generate_private_key(65537, 2048)
    numbers = private.private_numbers()

    def b(value: int) -> bytes:
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    jwk = JsonWebKey(
        kty=KeyType.rsa,
        n=b(numbers.public_numbers.n),
        e=b(numbers.public_numbers.e),
        d=b(numbers.d),
        p=b(numbers.p),
        q=b(numbers.q),
        dp=b(numbers.dmp1),
        dq=b(numbers.dmq1),
        qi=b(numbers.iqmp),
    )
    key = kv.keys().import_key("rsa-sign-imported", jwk)
    digest = hashlib.sha512(b"outside").digest()
    outside = private.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA512()))
    assert kv.remote(key).sign(SignatureAlgorithm.rs512, digest).signature == outside
    assert kv.remote(key).verify(SignatureAlgorithm.rs512, digest, outside).is_valid


# ------------------------------------------------------------------ RSA1_5 and RSA-OAEP


@pytest.mark.parametrize(
    "alg", [KeyWrapAlgorithm.rsa1_5, KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa_oaep_256]
)
def test_keys_wrapped_locally_unwrap_on_the_server(kv: Sdk, alg: KeyWrapAlgorithm) -> None:
    key = kv.keys().create_rsa_key(f"wrap-{alg.value.lower().replace('_', '-')}", size=2048)
    secret = os.urandom(32)
    wrapped = kv.crypto(key).wrap_key(alg, secret)  # the SDK wraps locally (it can read key)
    assert kv.remote(key).unwrap_key(alg, wrapped.encrypted_key).key == secret
    assert kv.crypto(key).unwrap_key(alg, wrapped.encrypted_key).key == secret


@pytest.mark.parametrize(
    "alg",
    [EncryptionAlgorithm.rsa1_5, EncryptionAlgorithm.rsa_oaep, EncryptionAlgorithm.rsa_oaep_256],
)
def test_rsa_encryption_all_algorithms(kv: Sdk, alg: EncryptionAlgorithm) -> None:
    name = alg.value.lower().replace("_", "-")
    key = kv.keys().create_rsa_key(f"enc-{name}", size=2048)
    other = kv.keys().create_rsa_key(f"enc-other-{name}", size=2048)
    local = kv.crypto(key).encrypt(alg, b"attack at dawn")
    assert kv.remote(key).decrypt(alg, local.ciphertext).plaintext == b"attack at dawn"
    remote = kv.remote(key).encrypt(alg, b"retreat at dusk")
    assert kv.remote(key).decrypt(alg, remote.ciphertext).plaintext == b"retreat at dusk"
    # another key does not decrypt it (RSA1_5 decryption uses implicit rejection: it answers
    # bytes that are not the plaintext, instead of an error a padding oracle could use)
    try:
        wrong = kv.remote(other).decrypt(alg, remote.ciphertext).plaintext
    except HttpResponseError as refused:
        assert refused.status_code == 400
    else:
        assert alg == EncryptionAlgorithm.rsa1_5 and wrong != b"retreat at dusk"


def test_server_side_rsa1_5_wrap_round_trips(kv: Sdk) -> None:
    key = kv.keys().create_rsa_key("wrap-rsa1-5-server", size=2048)
    remote = kv.remote(key)
    wrapped = remote.wrap_key(KeyWrapAlgorithm.rsa1_5, b"k" * 32).encrypted_key
    assert remote.unwrap_key(KeyWrapAlgorithm.rsa1_5, wrapped).key == b"k" * 32


def test_an_ec_key_created_without_a_curve_is_p256(kv: Sdk) -> None:
    key = kv.keys().create_ec_key("ec-default-curve")
    assert key.key.crv == "P-256" and key.key_operations == ["sign", "verify"]


# ------------------------------------------------------------------ oct-HSM keys


@pytest.mark.parametrize("size", [128, 192, 256])
def test_oct_hsm_key_wrap_and_encryption(kv: Sdk, size: int) -> None:
    key = kv.keys().create_oct_key(f"aes-{size}", size=size, hardware_protected=True)
    assert key.key_type == KeyType.oct_hsm
    assert key.key_operations == ["encrypt", "decrypt", "wrapKey", "unwrapKey"]
    assert key.key.k is None  # the AES key never leaves
    remote = kv.remote(key)
    kw = KeyWrapAlgorithm(f"A{size}KW")
    secret = os.urandom(32)
    wrapped = remote.wrap_key(kw, secret).encrypted_key
    assert len(wrapped) == 40
    assert remote.unwrap_key(kw, wrapped).key == secret
    tampered = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    with pytest.raises(HttpResponseError) as error:
        remote.unwrap_key(kw, tampered)
    assert _error(error)[:2] == (400, "BadParameter")

    gcm = EncryptionAlgorithm(f"A{size}GCM")
    sealed = remote.encrypt(gcm, b"the plans", additional_authenticated_data=b"header")
    assert sealed.iv is not None and len(sealed.iv) == 12
    assert sealed.tag is not None and len(sealed.tag) == 16
    assert sealed.aad == b"header"
    assert len(sealed.ciphertext) == len(b"the plans")
    opened = remote.decrypt(
        gcm,
        sealed.ciphertext,
        iv=sealed.iv,
        authentication_tag=sealed.tag,
        additional_authenticated_data=b"header",
    )
    assert opened.plaintext == b"the plans"
    for iv, tag, aad in (
        (sealed.iv, sealed.tag, b"other header"),
        (sealed.iv, bytes(16), b"header"),
        (bytes(12), sealed.tag, b"header"),
    ):
        with pytest.raises(HttpResponseError) as error:
            remote.decrypt(
                gcm,
                sealed.ciphertext,
                iv=iv,
                authentication_tag=tag,
                additional_authenticated_data=aad,
            )
        assert _error(error)[:2] == (400, "BadParameter")

    iv = os.urandom(16)
    for suffix, plaintext in (("CBC", b"sixteen byte msg" * 2), ("CBCPAD", b"any length")):
        cbc = EncryptionAlgorithm(f"A{size}{suffix}")
        encrypted = remote.encrypt(cbc, plaintext, iv=iv)
        assert encrypted.iv == iv
        assert len(encrypted.ciphertext) % 16 == 0
        assert remote.decrypt(cbc, encrypted.ciphertext, iv=iv).plaintext == plaintext


def test_oct_hsm_import_matches_local_aes(kv: Sdk) -> None:
    """A key imported as oct-HSM answers what pyca/cryptography computes with the same key."""
    aes = os.urandom(32)
    key = kv.keys().import_key(
        "aes-imported", JsonWebKey(kty=KeyType.oct_hsm, k=aes), hardware_protected=True
    )
    assert key.key_type == KeyType.oct_hsm and key.key.k is None
    remote = kv.remote(key)
    secret = os.urandom(24)
    wrapped = remote.wrap_key(KeyWrapAlgorithm.aes_256, secret).encrypted_key
    assert wrapped == aes_key_wrap(aes, secret)  # RFC 3394 is deterministic
    assert aes_key_unwrap(aes, wrapped) == secret
    sealed = remote.encrypt(
        EncryptionAlgorithm.a256_gcm, b"gcm", additional_authenticated_data=b"a"
    )
    assert sealed.iv is not None and sealed.tag is not None
    assert AESGCM(aes).decrypt(sealed.iv, sealed.ciphertext + sealed.tag, b"a") == b"gcm"
    iv = bytes(range(16))
    cbc = remote.encrypt(EncryptionAlgorithm.a256_cbc, b"0123456789abcdef", iv=iv).ciphertext
    decryptor = Cipher(algorithms.AES(aes), modes.CBC(iv)).decryptor()
    assert decryptor.update(cbc) + decryptor.finalize() == b"0123456789abcdef"
    # the same key under another name, made here: what one wraps the other unwraps
    twin = kv.keys().import_key(
        "aes-imported-twin", JsonWebKey(kty=KeyType.oct, k=aes), hardware_protected=True
    )
    assert kv.remote(twin).unwrap_key(KeyWrapAlgorithm.aes_256, wrapped).key == secret
    # and a different key does not
    other = kv.keys().create_oct_key("aes-other", size=256, hardware_protected=True)
    with pytest.raises(HttpResponseError) as error:
        kv.remote(other).unwrap_key(KeyWrapAlgorithm.aes_256, wrapped)
    assert _error(error)[:2] == (400, "BadParameter")


def test_oct_refusals(kv: Sdk) -> None:
    client = kv.keys()
    with pytest.raises(HttpResponseError) as error:
        client.create_oct_key("aes-software", size=256)  # plain oct: refused in a key vault
    status, code, message = _error(error)
    assert (status, code) == (400, "BadParameter") and "oct-HSM" in message
    with pytest.raises(HttpResponseError) as error:
        client.create_oct_key("aes-odd", size=512, hardware_protected=True)
    assert _error(error)[:2] == (400, "BadParameter") and "512" in _error(error)[2]
    key = client.create_oct_key("aes-refusals", size=128, hardware_protected=True)
    remote = kv.remote(key)
    cases = [
        (lambda: remote.wrap_key(KeyWrapAlgorithm.aes_256, b"k" * 16), "128 bits"),
        (lambda: remote.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 16), "oct-HSM"),
        (lambda: remote.wrap_key(KeyWrapAlgorithm.aes_128, b"k" * 15), "8-byte"),
        (lambda: remote.encrypt(EncryptionAlgorithm.a128_cbc, b"short", iv=bytes(16)), "16-byte"),
        (lambda: remote.sign(SignatureAlgorithm.rs256, b"x" * 32), "RSA key"),
    ]
    for call, says in cases:
        with pytest.raises(HttpResponseError) as error:
            call()
        status, code, message = _error(error)
        assert (status, code) == (400, "BadParameter"), message
        assert says in message, message


# ------------------------------------------------------------------ random bytes


def test_get_random_bytes(kv: Sdk) -> None:
    client = kv.keys()
    seen = {client.get_random_bytes(32) for _ in range(3)}
    assert len(seen) == 3 and all(len(value) == 32 for value in seen)
    assert len(client.get_random_bytes(1)) == 1 and len(client.get_random_bytes(128)) == 128
    with pytest.raises(HttpResponseError) as error:
        client.get_random_bytes(129)
    assert _error(error)[:2] == (400, "BadParameter") and "128" in _error(error)[2]
    server = kv.server
    headers = {"Authorization": f"Bearer {server.token(APP, kv.secrets[APP])}"}
    for body in ({"count": 0}, {"count": "8"}, {"count": True}, {}):
        response = server.http.post(
            f"{server.vault_url(VAULT)}/rng?api-version=7.5", headers=headers, json=body
        )
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["code"] == "BadParameter"
    with pytest.raises(HttpResponseError) as error:
        kv.keys(as_=STRANGER).get_random_bytes(8)
    assert _error(error)[0] == 403


# ------------------------------------------------------------------ raw requests


def test_unknown_operations_name_themselves(kv: Sdk) -> None:
    server = kv.server
    key = kv.keys().create_rsa_key("raw-ops", size=2048)
    token = server.token(APP, kv.secrets[APP])
    headers = {"Authorization": f"Bearer {token}"}
    for path, body in (
        (f"/keys/raw-ops/{key.properties.version}/frobnicate", {}),
        ("/keys/raw-ops//teleport", None),
    ):
        response = server.http.post(
            f"{server.vault_url(VAULT)}{path}?api-version=7.5", headers=headers, json=body
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "BadParameter"
        assert "Unknown key operation" in error["message"], error
    # release is an operation now: a key that is not exportable is refused as such
    released = server.http.post(
        f"{server.vault_url(VAULT)}/keys/raw-ops//release?api-version=7.5",
        headers=headers,
        json={"target": "x"},
    )
    assert released.status_code == 403 and "not exportable" in released.json()["error"]["message"]
    # a known operation with a bad body still names the body's problem
    response = server.http.post(
        f"{server.vault_url(VAULT)}/keys/raw-ops//sign?api-version=7.5",
        headers=headers,
        json={"alg": "RS256"},
    )
    assert response.status_code == 400 and "value" in response.json()["error"]["message"]
    # verify answers a boolean
    digest = hashlib.sha256(b"raw").digest()
    signed = server.http.post(
        f"{server.vault_url(VAULT)}/keys/raw-ops//sign?api-version=7.5",
        headers=headers,
        json={"alg": "RS256", "value": _b64(digest)},
    ).json()
    verified = server.http.post(
        f"{server.vault_url(VAULT)}/keys/raw-ops//verify?api-version=7.5",
        headers=headers,
        json={"alg": "RS256", "digest": _b64(digest), "value": signed["value"]},
    )
    assert verified.status_code == 200 and verified.json() == {"value": True}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
