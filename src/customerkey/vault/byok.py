"""Bring your own key (BYOK): the key transfer blob (the ``.byok`` file) Azure Key Vault
specifies, its parsing and checks, and the customer-side wrap that makes one.

A key exchange key (KEK) is an RSA-HSM key made in the HSM whose ``key_ops`` are exactly
``["import"]`` (``KEK_OPS``); it is used for nothing but unwrapping transfer blobs. The customer
wraps the target key for the KEK's public key with ``CKM_RSA_AES_KEY_WRAP``
(``crypto.rsa_aes_wrap``: RSA-OAEP with SHA-1 of an ephemeral AES-256 key, then AES key wrap
with padding, RFC 5649, of the target key) and sends the JSON transfer blob::

    {"schema_version": "1.0.0",
     "header": {"kid": "<the KEK's key id>", "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"},
     "ciphertext": "<base64url of the wrapped key>",
     "generator": "<the tool that made it>"}

as the ``key_hsm`` member (base64url of the JSON's bytes) of the imported JWK. The target key
plaintext is PKCS#8 DER for RSA and EC keys and the raw key bytes for an AES (oct-HSM) key.

Everything here is pure: the vault service finds the KEK and the token unwraps the target key
(``vault.hsm``); the plaintext key never reaches the server's process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from customerkey.crypto.rsa import b64url_decode, b64url_encode
from customerkey.crypto.rsa_aes_wrap import AES_KEY_BYTES, RsaAesWrapAlgorithm, rsa_aes_wrap
from customerkey.errors import BadParameter

__all__ = [
    "BYOK_ENC",
    "KEK_OPS",
    "MAX_BYOK_BYTES",
    "ByokTransfer",
    "KekReference",
    "is_kek_request",
    "make_byok",
    "parse_byok",
    "target_plaintext",
    "wrap_for_kek",
]

KEK_OPS = ("import",)
BYOK_ENC = RsaAesWrapAlgorithm.CKM_RSA_AES_KEY_WRAP.value
SCHEMA_VERSION = "1.0.0"
# A 4096-bit KEK's 512 bytes plus a wrapped 4096-bit RSA PKCS#8 (~2.4 KB), base64url, with
# the JSON around it: far below this.
MAX_BYOK_BYTES = 16 * 1024
_MODULUS_BYTES = (256, 384, 512)  # the KEK sizes: 2048, 3072, 4096 bits


@dataclass(frozen=True)
class KekReference:
    """The KEK a transfer blob names: its vault (the first label of the kid's host), its name
    and its version (None: the newest)."""

    vault: str
    name: str
    version: str | None


@dataclass(frozen=True)
class ByokTransfer:
    kek: KekReference
    ciphertext: bytes  # RSA-OAEP(K) | AES-KWP(K, target key)
    generator: str

    def split(self, modulus_bytes: int) -> tuple[bytes, bytes]:
        """(the encrypted AES key, the wrapped target key) for a KEK of ``modulus_bytes``."""
        return self.ciphertext[:modulus_bytes], self.ciphertext[modulus_bytes:]


def is_kek_request(key_ops: Sequence[str] | None) -> bool:
    """Whether ``key_ops`` asks for a key exchange key; ``BadParameter`` when ``import`` is
    mixed with other operations (a KEK does nothing else)."""
    if key_ops is None:
        return False
    names = [op.lower() for op in key_ops if isinstance(op, str)]
    if "import" not in names:
        return False
    if any(name != "import" for name in names) or len(names) != len(key_ops):
        raise BadParameter(
            "A key exchange key has the key operation 'import' only; it cannot be combined "
            "with other operations."
        )
    return True


def kek_reference(kid: object) -> KekReference:
    """The KEK named by a Key Vault key id ``https://<vault>.<domain>/keys/<name>[/<version>]``."""
    if not isinstance(kid, str) or not kid:
        raise BadParameter("The key transfer blob's header has no 'kid' naming the KEK.")
    parts = urlsplit(kid)
    segments = [s for s in parts.path.split("/") if s]
    host = parts.hostname or ""
    if parts.scheme != "https" or not host or len(segments) not in (2, 3) or segments[0] != "keys":
        raise BadParameter(
            "The key transfer blob's 'kid' is not a key id "
            "(https://<vault>.<domain>/keys/<name>/<version>)."
        )
    version = segments[2] if len(segments) == 3 else None
    return KekReference(host.split(".", 1)[0].lower(), segments[1], version)


def parse_byok(data: bytes) -> ByokTransfer:
    """The transfer blob ``data`` (the ``.byok`` file's bytes), checked; ``BadParameter``
    naming what is wrong with its form (never anything about the key inside)."""
    if len(data) > MAX_BYOK_BYTES:
        raise BadParameter(f"The key transfer blob is larger than {MAX_BYOK_BYTES} bytes.")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadParameter("The key transfer blob ('key_hsm') is not a JSON document.") from None
    if not isinstance(document, dict):
        raise BadParameter("The key transfer blob ('key_hsm') is not a JSON object.")
    header = document.get("header")
    if not isinstance(header, dict):
        raise BadParameter("The key transfer blob has no 'header' object.")
    if header.get("alg") != "dir":
        raise BadParameter("The key transfer blob's header 'alg' must be 'dir'.")
    if header.get("enc") != BYOK_ENC:
        raise BadParameter(
            f"The key transfer blob's header 'enc' must be '{BYOK_ENC}'; got "
            f"{_shown(header.get('enc'))}."
        )
    schema = document.get("schema_version")
    if not isinstance(schema, str) or schema.split(".", 1)[0] != "1":
        raise BadParameter(
            f"The key transfer blob's 'schema_version' must be 1.x; got {_shown(schema)}."
        )
    kek = kek_reference(header.get("kid"))
    text = document.get("ciphertext")
    try:
        ciphertext = b64url_decode(text) if isinstance(text, str) else b""
    except ValueError:
        ciphertext = b""
    # The smallest blob: a 2048-bit OAEP block and a wrapped 16-byte key (24 bytes).
    if len(ciphertext) < _MODULUS_BYTES[0] + 24:
        raise BadParameter("The key transfer blob's 'ciphertext' is missing or too short.")
    generator = document.get("generator")
    return ByokTransfer(kek, ciphertext, generator if isinstance(generator, str) else "")


def make_byok(kid: str, ciphertext: bytes, generator: str) -> bytes:
    """The transfer blob's bytes for ``ciphertext`` wrapped to the KEK ``kid``."""
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "header": {"kid": kid, "alg": "dir", "enc": BYOK_ENC},
        "ciphertext": b64url_encode(ciphertext),
        "generator": generator,
    }
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


def target_plaintext(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | bytes) -> bytes:
    """What is wrapped for a target key: PKCS#8 DER for RSA and EC, the raw bytes of AES."""
    if isinstance(key, bytes):
        if len(key) not in (16, 24, 32):
            raise ValueError(f"an AES key is 16, 24 or 32 bytes, not {len(key)}")
        return key
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def wrap_for_kek(
    kek_public: rsa.RSAPublicKey,
    kid: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | bytes,
    *,
    aes_key: bytes,
    generator: str = "customerkey byok-wrap",
) -> bytes:
    """The ``.byok`` file for ``key`` wrapped to the KEK ``kid`` (public key ``kek_public``),
    with the ephemeral AES-256 key ``aes_key`` (the caller draws it: ``customerkey.rng``)."""
    if kek_public.key_size not in (2048, 3072, 4096):
        raise ValueError(f"a KEK is 2048, 3072 or 4096 bits, not {kek_public.key_size}")
    if len(aes_key) != AES_KEY_BYTES:
        raise ValueError(f"the ephemeral AES key is {AES_KEY_BYTES} bytes")
    kek_reference(kid)
    wrapped = rsa_aes_wrap(kek_public, target_plaintext(key), BYOK_ENC, aes_key)
    return make_byok(kid, wrapped, generator)


def _shown(value: object) -> str:
    return repr(value)[:64] if value is not None else "nothing"
