"""Produce ``key_types.json``: known answers for the key types and algorithms of issue 16.

Run from the repository root: ``PYTHONPATH=src python tests/vectors/generate_key_types.py``.
Tests never run this; they read the JSON it writes. Everything here is computed with
pyca/cryptography's own primitives (never customerkey's modules), so the vectors check
customerkey against an independent implementation:

- ``aes_kw``: RFC 3394 section 4 (4.1, 4.2, 4.3, 4.6), copied verbatim and checked.
- ``aes_gcm``: the GCM specification's test cases 2, 4, 10 and 16 (McGrew and Viega, "The
  Galois/Counter Mode of Operation", the cases NIST's CAVP uses), copied verbatim and checked.
- ``aes_cbc``: NIST SP 800-38A appendix F.2.1, F.2.3 and F.2.5 (CBC encrypt), copied verbatim.
- ``aes_cbcpad``: CBC with PKCS#7 padding at the lengths around a block, fixed key and IV.
- ``ecdsa``: RFC 6979 A.2.5 (P-256, SHA-256, "sample" and "test") and A.2.6 (P-384, SHA-384,
  "sample") copied verbatim; P-521/SHA-512 and secp256k1/SHA-256 from fixed scalars signed
  deterministically (RFC 6979) by pyca/cryptography. Signatures are ``r || s``.
- ``rsa_signatures``: the Wycheproof 2048-bit key of ``rsa_oaep.json``: RS* (deterministic)
  computed here; PS* (randomized) kept from the previous file while they still verify.
- ``rsa1_5``: RSAES-PKCS1-v1_5 ciphertexts under the same key (randomized; kept while they
  still decrypt to the same plaintext).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.hazmat.primitives.serialization import load_der_private_key

HERE = Path(__file__).resolve().parent
OUT = HERE / "key_types.json"

RFC3394 = [
    ("rfc3394-4.1", "000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF",
     "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"),
    ("rfc3394-4.2", "000102030405060708090A0B0C0D0E0F1011121314151617",
     "00112233445566778899AABBCCDDEEFF", "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D"),
    ("rfc3394-4.3", "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
     "00112233445566778899AABBCCDDEEFF", "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7"),
    ("rfc3394-4.6", "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
     "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
     "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"),
]  # fmt: skip

_GCM_P = (
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
_GCM_A = "feedfacedeadbeeffeedfacedeadbeefabaddad2"
_GCM_IV = "cafebabefacedbaddecaf888"
GCM = [
    ("gcm-test-case-2", "00000000000000000000000000000000", "000000000000000000000000",
     "00000000000000000000000000000000", "",
     "0388dace60b6a392f328c2b971b2fe78", "ab6e47d42cec13bdf53a67b21257bddf"),
    ("gcm-test-case-4", "feffe9928665731c6d6a8f9467308308", _GCM_IV, _GCM_P, _GCM_A,
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
     "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
     "5bc94fbc3221a5db94fae95ae7121a47"),
    ("gcm-test-case-10", "feffe9928665731c6d6a8f9467308308feffe9928665731c", _GCM_IV,
     _GCM_P, _GCM_A,
     "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c"
     "7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710",
     "2519498e80f1478f37ba55bd6d27618c"),
    ("gcm-test-case-16", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     _GCM_IV, _GCM_P, _GCM_A,
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"),
]  # fmt: skip

_CBC_IV = "000102030405060708090a0b0c0d0e0f"
_CBC_P = (
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)
CBC = [
    ("sp800-38a-F.2.1", "2b7e151628aed2a6abf7158809cf4f3c",
     "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
     "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7"),
    ("sp800-38a-F.2.3", "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
     "4f021db243bc633d7178183a9fa071e8b4d9ada9ad7dedf4e5e738763f69145a"
     "571b242012fb7ae07fa9baac3df102e008b0e27988598881d920a9e64f5615cd"),
    ("sp800-38a-F.2.5", "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
     "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d"
     "39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b"),
]  # fmt: skip

RFC6979 = [
    ("rfc6979-A.2.5-sha256-sample", "P-256", "ES256",
     "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721", b"sample",
     "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
     "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"),
    ("rfc6979-A.2.5-sha256-test", "P-256", "ES256",
     "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721", b"test",
     "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367"
     "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083"),
    ("rfc6979-A.2.6-sha384-sample", "P-384", "ES384",
     "6B9D3DAD2E1B8C1C05B19875B6659F4DE23C3B667BF297BA9AA47740787137D8"
     "96D5724E4C70A825F872C9EA60D2EDF5", b"sample",
     "94EDBB92A5ECB8AAD4736E56C691916B3F88140666CE9FA73D64C4EA95AD133C"
     "81A648152E44ACF96E36DD1E80FABE46"
     "99EF4AEB15F178CEA1FE40DB2603138F130E740A19624526203B6351D0A3A94F"
     "A329C145786E679E7B82C71A38628AC8"),
]  # fmt: skip
# Fixed scalars for the curves RFC 6979's SHA-2 rows we copy do not cover.
FIXED_EC = [
    ("customerkey-P-521-sha512", "P-521", "ES512",
     "01" + "5f" * 65, b"customerkey ES512"),
    ("customerkey-P-256K-sha256", "P-256K", "ES256K",
     "2c" * 32, b"customerkey ES256K"),
]  # fmt: skip

CURVES = {
    "P-256": (ec.SECP256R1(), hashes.SHA256(), 32),
    "P-256K": (ec.SECP256K1(), hashes.SHA256(), 32),
    "P-384": (ec.SECP384R1(), hashes.SHA384(), 48),
    "P-521": (ec.SECP521R1(), hashes.SHA512(), 66),
}
RSA_HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


def _digest(algorithm: hashes.HashAlgorithm, message: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(message)
    return h.finalize()


def aes_vectors() -> dict[str, Any]:
    kw = []
    for name, kek, key, wrapped in RFC3394:
        assert aes_key_wrap(bytes.fromhex(kek), bytes.fromhex(key)).hex().upper() == wrapped
        kw.append(
            {
                "name": name,
                "source": f"RFC 3394 section {name[8:]}",
                "kek": kek.lower(),
                "key": key.lower(),
                "wrapped": wrapped.lower(),
            }
        )
    gcm = []
    for name, key, iv, plaintext, aad, ciphertext, tag in GCM:
        sealed = AESGCM(bytes.fromhex(key)).encrypt(
            bytes.fromhex(iv), bytes.fromhex(plaintext), bytes.fromhex(aad) or None
        )
        assert sealed.hex() == ciphertext + tag
        gcm.append(
            {
                "name": name,
                "source": "GCM specification (McGrew, Viega), " + name[4:],
                "key": key,
                "iv": iv,
                "plaintext": plaintext,
                "aad": aad,
                "ciphertext": ciphertext,
                "tag": tag,
            }
        )
    cbc = []
    for name, key, ciphertext in CBC:
        encryptor = Cipher(algorithms.AES(bytes.fromhex(key)), modes.CBC(bytes.fromhex(_CBC_IV)))
        out = encryptor.encryptor()
        assert (out.update(bytes.fromhex(_CBC_P)) + out.finalize()).hex() == ciphertext
        cbc.append(
            {
                "name": name,
                "source": "NIST SP 800-38A appendix " + name[10:],
                "key": key,
                "iv": _CBC_IV,
                "plaintext": _CBC_P,
                "ciphertext": ciphertext,
            }
        )
    cbcpad = []
    key = bytes(range(32))
    iv = bytes(range(100, 116))
    for length in (0, 1, 15, 16, 17, 33):
        plaintext = bytes((7 * i + 3) % 256 for i in range(length))
        padder = sym_padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        out = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        ciphertext = out.update(padded) + out.finalize()
        cbcpad.append(
            {
                "name": f"customerkey-cbcpad-{length}",
                "source": "pyca/cryptography",
                "key": key.hex(),
                "iv": iv.hex(),
                "plaintext": plaintext.hex(),
                "ciphertext": ciphertext.hex(),
            }
        )
    return {"aes_kw": kw, "aes_gcm": gcm, "aes_cbc": cbc, "aes_cbcpad": cbcpad}


def _ec_case(
    name: str, crv: str, alg: str, d_hex: str, message: bytes, source: str
) -> dict[str, Any]:
    curve, digest_alg, size = CURVES[crv]
    key = ec.derive_private_key(int(d_hex, 16), curve)
    numbers = key.public_key().public_numbers()
    digest = _digest(digest_alg, message)
    der = key.sign(digest, ec.ECDSA(utils.Prehashed(digest_alg), deterministic_signing=True))
    r, s = utils.decode_dss_signature(der)
    return {
        "name": name,
        "source": source,
        "crv": crv,
        "alg": alg,
        "d": key.private_numbers().private_value.to_bytes(size, "big").hex(),
        "x": numbers.x.to_bytes(size, "big").hex(),
        "y": numbers.y.to_bytes(size, "big").hex(),
        "message": message.decode(),
        "digest": digest.hex(),
        "signature": (r.to_bytes(size, "big") + s.to_bytes(size, "big")).hex(),
    }


def ecdsa_vectors() -> list[dict[str, Any]]:
    cases = []
    for name, crv, alg, d_hex, message, signature in RFC6979:
        case = _ec_case(name, crv, alg, d_hex, message, f"RFC 6979 appendix {name[8:13]}")
        assert case["signature"] == signature.lower(), name
        cases.append(case)
    for name, crv, alg, d_hex, message in FIXED_EC:
        source = "customerkey (fixed scalar; deterministic ECDSA, RFC 6979, by pyca/cryptography)"
        cases.append(_ec_case(name, crv, alg, d_hex, message, source))
    return cases


def rsa_vectors(previous: dict[str, Any]) -> dict[str, Any]:
    oaep = json.loads((HERE / "rsa_oaep.json").read_text(encoding="utf-8"))
    key_name = "wycheproof-2048-sha256"
    key = load_der_private_key(bytes.fromhex(oaep["keys"][key_name]["pkcs8"]), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    kept = {c["name"]: c for c in previous.get("rsa_signatures", [])}
    signatures = []
    for scheme in ("RS", "PS"):
        for bits, digest_alg in RSA_HASHES.items():
            alg = f"{scheme}{bits}"
            digest = _digest(digest_alg, f"customerkey {alg}".encode())
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if scheme == "RS"
                else padding.PSS(mgf=padding.MGF1(digest_alg), salt_length=digest_alg.digest_size)
            )
            name = f"customerkey-{alg}"
            old = kept.get(name)
            signature = key.sign(digest, pad, utils.Prehashed(digest_alg))
            if scheme == "PS" and old is not None and old["digest"] == digest.hex():
                try:
                    key.public_key().verify(
                        bytes.fromhex(old["signature"]), digest, pad, utils.Prehashed(digest_alg)
                    )
                    signature = bytes.fromhex(old["signature"])
                except InvalidSignature:
                    pass  # a stale vector is replaced
            signatures.append(
                {
                    "name": name,
                    "source": "pyca/cryptography",
                    "key": key_name,
                    "alg": alg,
                    "digest": digest.hex(),
                    "signature": signature.hex(),
                    "deterministic": scheme == "RS",
                }
            )
    kept_15 = {c["name"]: c for c in previous.get("rsa1_5", [])}
    rsa15 = []
    for length in (1, 32, 245):
        plaintext = hashlib.sha512(f"rsa1_5 {length}".encode()).digest() * 4
        plaintext = plaintext[:length]
        name = f"customerkey-rsa1_5-{length}"
        old = kept_15.get(name)
        ciphertext = None
        if old is not None and old["plaintext"] == plaintext.hex():
            if key.decrypt(bytes.fromhex(old["ciphertext"]), padding.PKCS1v15()) == plaintext:
                ciphertext = old["ciphertext"]
        if ciphertext is None:
            ciphertext = key.public_key().encrypt(plaintext, padding.PKCS1v15()).hex()
        rsa15.append(
            {
                "name": name,
                "source": "pyca/cryptography (PKCS#1 v1.5 is randomized)",
                "key": key_name,
                "plaintext": plaintext.hex(),
                "ciphertext": ciphertext,
            }
        )
    return {"rsa_signatures": signatures, "rsa1_5": rsa15}


def main() -> None:
    previous = json.loads(OUT.read_text(encoding="utf-8")) if OUT.exists() else {}
    data = {
        "description": "Known answers for EC/RSA signatures, RSA1_5 and AES modes (issue 16)",
        "generator": "tests/vectors/generate_key_types.py",
        **aes_vectors(),
        "ecdsa": ecdsa_vectors(),
        **rsa_vectors(previous),
    }
    OUT.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
