"""RSA padding done in software around a raw RSA operation that runs elsewhere (in an HSM,
``customerkey.hsm``): the private key stays where it is; only the padded message ``EM`` (the
output of the raw operation, ``k`` bytes for a ``k``-byte modulus) is handled here.

- ``oaep_decode``: EME-OAEP decoding (RFC 8017 section 7.1.2, step 3) with MGF1 over the same
  hash and an empty label, for tokens that do RSA-OAEP with SHA-1 only (SoftHSM 2.6): the
  token runs ``CKM_RSA_X_509`` and this decodes. Every check runs to the end and they are
  combined into one flag, so how far decoding got does not show in the time taken (as far as
  Python allows); any failure raises ``DecryptionFailed()``, which says nothing about why.
- ``pkcs1v15_decode``: EME-PKCS1-v1_5 decoding (RFC 8017 section 7.2.2) with implicit
  rejection, as pyca/cryptography's OpenSSL does for software keys: a message with bad
  padding decodes to bytes derived by HMAC-SHA256 from a secret rejection key and the
  ciphertext (a length of 0 to ``k - 11`` bytes and its bytes), never to an error, so the
  answer is no padding oracle.
- ``digest_info``: the DER ``DigestInfo`` prefix RSASSA-PKCS1-v1_5 signs (RFC 8017 section
  9.2, note 1), for tokens asked to sign with plain ``CKM_RSA_PKCS``.
"""

from __future__ import annotations

import hashlib
import hmac

from customerkey.errors import DecryptionFailed

__all__ = ["digest_info", "mgf1", "oaep_decode", "pkcs1v15_decode"]

_HASHES = {"SHA-1": hashlib.sha1, "SHA-256": hashlib.sha256}
# DER of DigestInfo ::= SEQUENCE { AlgorithmIdentifier (with NULL params), OCTET STRING }.
_DIGEST_INFO = {
    "SHA-256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "SHA-384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "SHA-512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


def mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    """MGF1 (RFC 8017 appendix B.2.1) over ``hash_name``."""
    new = _HASHES[hash_name]
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += new(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def oaep_decode(em: bytes, k: int, hash_name: str) -> bytes:
    """The message inside the OAEP-encoded ``em`` (``k`` bytes, empty label); raises
    ``DecryptionFailed()`` for anything else."""
    new = _HASHES[hash_name]
    h_len = new().digest_size
    if len(em) != k or k < 2 * h_len + 2:
        raise DecryptionFailed()
    masked_seed, masked_db = em[1 : 1 + h_len], em[1 + h_len :]
    seed = bytes(a ^ b for a, b in zip(masked_seed, mgf1(masked_db, h_len, hash_name), strict=True))
    db = bytes(a ^ b for a, b in zip(masked_db, mgf1(seed, k - h_len - 1, hash_name), strict=True))
    bad = em[0]
    bad |= 0 if hmac.compare_digest(db[:h_len], new(b"").digest()) else 1
    # Find the 0x01 after the zero padding without leaving the loop early: ``found`` turns 1
    # at the first non-zero byte, which must be 0x01.
    found = 0
    start = 0
    for index in range(h_len, len(db)):
        byte = db[index]
        first = (1 - found) & (1 if byte != 0 else 0)
        bad |= first & (0 if byte == 1 else 1)
        start |= first * (index + 1)
        found |= first
    bad |= 1 - found
    if bad:
        raise DecryptionFailed()
    return db[start:]


def pkcs1v15_decode(em: bytes, k: int, *, rejection_key: bytes, ciphertext: bytes) -> bytes:
    """The message inside the PKCS#1 v1.5-encoded ``em`` or, when the padding is bad, the
    synthetic message for ``ciphertext`` (see the module docstring)."""
    if len(em) != k or k < 11:
        raise DecryptionFailed()
    bad = em[0] | (em[1] ^ 2)
    found = 0
    start = 0
    for index in range(2, k):
        zero = 1 if em[index] == 0 else 0
        first = (1 - found) & zero
        start |= first * (index + 1)
        found |= first
    bad |= 1 - found
    bad |= 1 if start < 11 else 0  # at least 8 bytes of non-zero padding
    synthetic = _synthetic(rejection_key, ciphertext, k - 11)
    return synthetic if bad else em[start:]


def _synthetic(key: bytes, ciphertext: bytes, max_length: int) -> bytes:
    prk = hmac.new(key, ciphertext, hashlib.sha256).digest()
    blocks = bytearray()
    counter = 0
    while len(blocks) < max_length + 2:
        blocks += hmac.new(prk, counter.to_bytes(4, "big"), hashlib.sha256).digest()
        counter += 1
    length = int.from_bytes(blocks[:2], "big") % (max_length + 1)
    return bytes(blocks[2 : 2 + length])


def digest_info(hash_name: str, digest: bytes) -> bytes:
    """``DigestInfo`` for ``digest`` (SHA-256, SHA-384 or SHA-512)."""
    return _DIGEST_INFO[hash_name] + digest
