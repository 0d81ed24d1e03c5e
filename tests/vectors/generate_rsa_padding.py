"""Produce ``rsa_padding.json``: the known answers for ``customerkey.crypto.rsa_padding``.

Run from the repository root: ``python tests/vectors/generate_rsa_padding.py``. Tests never run
this; they read the JSON it writes, which comes out byte-identical on every run (no random
input). It does not import ``customerkey``: each answer is computed here, independently, from
the construction written below.

``oaep_int``: the intermediate values of RSA Laboratories' PKCS#1 v2.1 OAEP example
(``oaep-int.txt`` of the PKCS#1 v2.1 test vectors: SHA-1, MGF1-SHA-1, empty label, a 1024-bit
modulus so ``k = 128``), copied verbatim; the generator checks that they fit together
(``maskedDB = DB xor dbMask``, ``maskedSeed = seed xor seedMask``) before writing them.

``synthetic``: the implicit rejection of ``pkcs1v15_decode``. It is deliberately *not* the
construction of draft-irtf-cfrg-rsa-guidance (draft-kario-rsa-guidance-implicit-rejection),
whose published vectors therefore do not apply: the draft keys its PRF with a hash of the
private exponent, which stays in the HSM here, and picks the length by rejection sampling over
labelled PRF output. Ours, for a ``k``-byte modulus, ``max_length = k - 11``, the secret
rejection key ``R`` and the ciphertext ``C`` exactly as given::

    PRK    = HMAC-SHA256(key=R, msg=C)
    T      = HMAC-SHA256(PRK, I2OSP(0, 4)) || HMAC-SHA256(PRK, I2OSP(1, 4)) || ...
             (as many 32-byte blocks as it takes to have max_length + 2 bytes)
    length = OS2IP(T[0:2]) mod (max_length + 1)
    M      = T[2 : 2 + length]

computed here with pyca/cryptography's HMAC. The cases are chosen at the edges: ``k = 11``
(the only answer is empty), ``k = 12`` (0 or 1 byte), ``k = 42`` (``max_length + 2 = 33``: a
message of the maximum 31 bytes needs the first byte of the second block) and ``k = 256`` and
``k = 512`` (a 2048- and a 4096-bit modulus), each with the longest message (``k - 11`` bytes),
the empty one, and one in between.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as pyca_hmac

HERE = Path(__file__).resolve().parent

OAEP_INT_SOURCE = (
    "RSA Laboratories, PKCS #1 v2.1 test vectors, oaep-int.txt (RSAES-OAEP, SHA-1, k = 128)"
)
OAEP_INT = {
    "message": "d436e99569fd32a7c8a05bbc90d32c49",
    "lhash": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "db": "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    + "00" * 70
    + "01d436e99569fd32a7c8a05bbc90d32c49",
    "seed": "aafd12f659cae63489b479e5076ddec2f06cb58f",
    "db_mask": "06e1deb2369aa5a5c707d82c8e4e93248ac783dee0b2c04626f5aff93edcfb25c9c2b3ff8ae10e83"
    "9a2ddb4cdcfe4ff47728b4a1b7c1362baad29ab48d2869d5024121435811591be392f982fb3e87d0"
    "95aeb40448db972f3ac14eaff49c8c3b7cfc951a51ecd1dde61264",
    "masked_db": "dcd87d5c68f1eea8f55267c31b2e8bb4251f84d7e0b2c04626f5aff93edcfb25c9c2b3ff8ae10e83"
    "9a2ddb4cdcfe4ff47728b4a1b7c1362baad29ab48d2869d5024121435811591be392f982fb3e87d0"
    "95aeb40448db972f3ac14f7bc275195281ce32d2f1b76d4d353e2d",
    "seed_mask": "41870b5ab029e657d95750b54c283c08725dbea9",
    "masked_seed": "eb7a19ace9e3006350e329504b45e2ca82310b26",
}

REJECTION_KEYS = (bytes(range(32)), bytes.fromhex("a5" * 32))
# (k, wanted): which lengths to find a ciphertext for; "max" is k - 11, "mid" anything between.
WANTED: tuple[tuple[int, tuple[str, ...]], ...] = (
    (11, ("max",)),
    (12, ("max", "zero")),
    (42, ("max", "zero", "mid")),
    (256, ("max", "zero", "mid")),
    (512, ("max", "mid")),
)


def _xor(a: bytes, b: bytes) -> bytes:
    assert len(a) == len(b)
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = pyca_hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def synthetic(rejection_key: bytes, ciphertext: bytes, k: int) -> bytes:
    max_length = k - 11
    prk = _hmac(rejection_key, ciphertext)
    stream = b"".join(_hmac(prk, i.to_bytes(4, "big")) for i in range((max_length + 2 + 31) // 32))
    assert len(stream) >= max_length + 2
    length = ((stream[0] << 8) | stream[1]) % (max_length + 1)
    return stream[2 : 2 + length]


def _ciphertext(k: int, index: int) -> bytes:
    return hashlib.shake_256(f"customerkey rsa_padding vector k={k} #{index}".encode()).digest(k)


def synthetic_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for k, wanted in WANTED:
        max_length = k - 11
        for key in REJECTION_KEYS:
            found: dict[str, tuple[bytes, bytes]] = {}
            index = 0
            while len(found) < len(wanted):
                ciphertext = _ciphertext(k, index)
                index += 1
                message = synthetic(key, ciphertext, k)
                if len(message) == max_length:
                    kind = "max"
                elif len(message) == 0:
                    kind = "zero"
                elif 0 < len(message) < max_length:
                    kind = "mid"
                else:
                    raise AssertionError("length out of bounds")
                if kind in wanted and kind not in found:
                    found[kind] = (ciphertext, message)
            for kind in wanted:
                ciphertext, message = found[kind]
                cases.append(
                    {
                        "k": k,
                        "length": kind,
                        "rejection_key": key.hex(),
                        "ciphertext": ciphertext.hex(),
                        "synthetic": message.hex(),
                    }
                )
    return cases


def oaep_int() -> dict[str, Any]:
    v = {name: bytes.fromhex(value) for name, value in OAEP_INT.items()}
    assert hashlib.sha1(b"").digest() == v["lhash"]
    assert v["db"] == v["lhash"] + bytes(70) + b"\x01" + v["message"]
    assert _xor(v["db"], v["db_mask"]) == v["masked_db"]
    assert _xor(v["seed"], v["seed_mask"]) == v["masked_seed"]
    em = b"\x00" + v["masked_seed"] + v["masked_db"]
    assert len(em) == 128
    return {"source": OAEP_INT_SOURCE, **OAEP_INT, "em": em.hex()}


def main() -> None:
    document = {
        "description": "crypto.rsa_padding: MGF1/OAEP decoding (published) and the synthetic "
        "messages of PKCS#1 v1.5 implicit rejection (our construction, see the generator)",
        "generator": "tests/vectors/generate_rsa_padding.py",
        "oaep_int": oaep_int(),
        "synthetic": synthetic_cases(),
    }
    text = json.dumps(document, indent=2) + "\n"
    (HERE / "rsa_padding.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
