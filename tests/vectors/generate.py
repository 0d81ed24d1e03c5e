"""Produce the known-answer vectors in this folder from fixed inputs.

Run from the repository root: ``PYTHONPATH=src python tests/vectors/generate.py``. Tests never
run this; they read the JSON it writes. Every random input comes from ``SeededRng(SEED)``, and
the envelope is sealed with fixed salts and nonce prefixes through the ``_salt`` /
``_nonce_prefix`` test hooks, so ``envelope_v1.json`` and ``aes_kwp.json`` come out byte-identical
on every run.

RSA-OAEP is randomized and pyca/cryptography takes no seed, so our own RSA ciphertexts cannot
be reproduced: the generator keeps the ones already in ``rsa_oaep.json`` as long as they still
unwrap to the same inputs, and only makes new ones when they do not. The externally published
vectors (RFC 5649 section 6, Project Wycheproof) are copied verbatim below and checked before
they are written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from customerkey.crypto import aead, wrap
from customerkey.crypto.rsa import (
    private_jwk_fields,
    private_key_from_der,
    private_key_from_jwk,
    private_key_to_der,
)
from customerkey.errors import DecryptionFailed
from customerkey.rng import SeededRng

SEED = 20240601
HERE = Path(__file__).resolve().parent

WYCHEPROOF = "Project Wycheproof (C2SP/wycheproof testvectors"

# RFC 5649 section 6: both published examples (AES-192 KEK).
RFC5649_KEK = "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"
RFC5649_CASES = [
    (
        "c37b7e6492584340bed12207808941155068f738",
        "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
    ),
    ("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
]

# Wycheproof kwp_test.json, 256-bit KEK group: tcId 151 and 161 (valid), 169 (modified IV).
WYCHEPROOF_KWP = [
    (
        151,
        "aa0ab9d68ed4a04e723f81b44c0c88d0bcde7a80cfd476eb4b8836d9aa01ec4c",
        "57faa8766f6d6a0aa1cf643f857c150df5b31303b50af480e21c4b5e8c8a15d5",
        "0e9e2e9aa34bbf973d67bc534ac86fc5b5a5f9da5f026866177894ec6077a5c84501510e1bf4afb3",
        True,
    ),
    (
        161,
        "1abf4b7fa2bb62a78f09ddab04625dcacdd9e551d1a69b6b162baa53d2700093",
        "e43f5e4e123a03c4",
        "3a6746052a1744cfe7e2f36dafc4042d",
        True,
    ),
    (
        169,
        "4f710eb6b5e28703becfc3dc52fa8bc1dd44a4a6d38a84b4f94e89ac32d987e7",
        "a828cbda9b5ff0ae37",
        "aef4d2357a8fc5c3b4a80a15ed49781d3a82c98eb78c9180",
        False,
    ),
]

# Wycheproof rsa_oaep_2048_sha256_mgf1sha256_test.json: the group's key (as its JWK).
WYCHEPROOF_RSA_SHA256_JWK = {
    "kty": "RSA",
    "n": "orRRoH0KpfluRVZxUTVQUUqKW0YuvvcXCU-h_ugiJOY3-XRtP3yv0xh42AMltu9aFwD2WQO0aUKeidbqyIRQl7Wr"
    "OTGJ25JRLtincRoSU_rNIPecFegkfz0-QuRuSMmOJUov6XZTE6A-_48X4aApOXofomqNzib0kO2BKZYV2YFMItph"
    "BCjgnH2WWFlCZvXAIdD87KCNlFoSvoLeTR7Oa0wDFFtdNJXU7VQR64eNrwX9evw-Ca2g8RJkIvWQl1oZaYFvSGmL"
    "y7obTZyuedRg2Pn4Xnl1AF2bwixOWsD3waRdElaaYoB9O5oC5aUw53MGb0U9H1tMLpz3ggKD90K51Q",
    "e": "AQAB",
    "d": "difu81Z7KicmjlIFPs0xw6cXLMud3O6BmzBqWzxmt1c8pPqI78bzxKAL-grnE59kVDpNrD0Fgj9v9HfPzshP4qx6"
    "aLFyBLOQIy4RAxDE6JnE58EJZ9tKzeBC278Z2-ALS0dB3hAgqqr_tQVMeXyfE299k6w_yMr_ZlQkLXgh6-5Re_U3"
    "9ENmoP3UWuBbmQnC5swe2Sge_0OZ92yWuWIz7CmuC78NdSsjT8GXOJ9RBQqhrNAcB0w6yPvbnqi2UalZlejbStXE"
    "O2yGc-WhJufulLjf9MWvwBJZvI2naVC65vi65xX1CYWw1vZtBMb-87cAcg7s3N8XG7ex7L5yicRnwQ",
    "p": "3EMQUPeC6JT7UkgkfZjLfVi40eJPO1XQQcVuTeCGsNW7AovaQu610jTVaB5YCdQV5qKJrUz794-Xj2w1gU9Q7r_x"
    "xbgKafeI6B5rq13ap4Np1lnRQ-xvF-eYE6V1z62cVpFWuQET4ukRCtnntIock0im5lMyEZEpDqNs-zpbGPE",
    "q": "vRqB55d_mJgSInOuMiK1mOpfsZ606rw4MIpeMhlmA7LlAP-3n1uIaBZhHevEcvrEVUQHC-sFfJQTeKaGivO3oD0_"
    "mIDsR9XgiblPveVCq6mujXLFcIjXq_WxMfOQmPe8Fg-QU2q8lJL9Tgbz7XKZ1Ll7sDZ3IH2VZp8UDPvCDyU",
    "dp": "qUtSiyjykVmRIdkZUv_Rx_IdfBR52Z1HiIX7Fhhw7hIYvwhHJhLb5Ul-jZxlBojgnHhpYa4-LDVNxIrjRRR1nEwj"
    "xFiEiJYdwGtBTmHA4ef7vSkj0xUy_iifltoiBxHljBQBmAjgBBQnaTO7B-TvubSps3ZWkXIFIJ8z8JUV18E",
    "dq": "OvDnKpM67wn_JQPfeLr-1THAL_GivEN8VAzcvUrTVDXPURdjWWVDSAYpsRTKf3gP9--jLqDLbgANbZ6h8u9x_Zz5"
    "lIQioWVVfjfnVe3-cNkLkgUC60eLyYpj94jOOg-FbW7eclGjg7-o-kgKgaklr3s8xTjEurjJ91l_-2gBHY0",
    "qi": "JkD7-8_vsWPueoe2SDpm7kH5VtkPqKeTm_wELuCSSxt5k9BEX3WNUZM-hRecAyCwyWi0ipHDi1vpI-EJfAxWL4jU"
    "IpS2onWbr6VCinTxJwh05F9vzGDyFgLeXszRQ88xJB9ZIbWtOYP7VO8XvjsoU2flDJmcZyR7VS_kv86UX3s",
}
WYCHEPROOF_RSA_SHA256_CASES = [
    (
        1,
        "",
        "6e62bf24d95aff6868afec2a92a445b6458f16f688c19fe1212f66a63137831653cedd359d8cff4dd485d77d"
        "fd55812c181373201f54aafd65730d2a304e623455d51125d891e65d97fce52341cae45fb64c38a384a1c621"
        "e2713ee6794633f029a9fd4d774f56551eac2176162e162640f25eab873a3451c475570f19228bcede4c67c3"
        "70a75ed7fabccd538c9819eff182481b10d42f1a9f6a05373b8cf9b71818d467bd3b8ebacb619e8ad42916e6"
        "00c043effceb3855bc48a629e60ae886f51b2a7876b0e623fb2ce68af4b039242f963adb0e4240aed0ed07f6"
        "5f1ee7c0cc77d210d0c2d1dc10c81b881aa0c9c9e9499665cf2970d2ccfeeb3191531765",
    ),
    (
        3,
        "54657374",
        "5eab3f0741e63986ed647d53e1cd71df041986900803d0f99c68355d249a15a47dc5b4f70a191477654299e5"
        "a2731f3b4eec76dea18262fc696ac794e5f66cbfcddac4472c578e246c26707598055584540b839836b1404c"
        "5611ae558a984cee8fd036cea924e0be2474a940f61e0acc14fcae95ebdc59942a9ce9af9a9c81999f7f6815"
        "f057ffdc2533cb15d6391d1e2d95f16f9c04209c889a4c359c7d2926d28a66e2b030a416b928d2825627998"
        "e5191fb4983a6e65024262d94fc09187a2d78162122433251d1bfcc8e507d06eba2d229c10031261da32ab8c"
        "cd15f1c5f9fbf07ed158483d736a110af4b44d6a4da60d6cb519b4454213cf9f0dc560f2b",
    ),
    (
        7,
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        "096958786ee7972050d67a9e4b69d6c6af7db7cc674386df725770dd29129b826e39552330104c8d71e6cc3a"
        "3014dd2f61b54153af51b0438d447ee939f9e3c13bb8b00a37dea6a068f6c9d27e848b1be7a1eeeb3ee50b78"
        "036fba95ae46948ca5b13f356ea24db10f60dc09e4b8bad8f766b668ef72524432080a0ce00ed676d6d5e354"
        "984b1078520412525848156d06f0652469f95791baa3d9a798ae537094f76f976faecd5c9ce0c930a75910c6"
        "3dacf63485cb4b5e7bdbcf4d80e74037eaa1a8fe4b52930bec6be99cf6ac88cf5878dbf6859d456a95dbc346"
        "54eec425de84ca2a535d517403a9aada827e7d0093ecfc97ed056a7652825e9a45cb2dcb",
    ),
]

# Wycheproof rsa_oaep_2048_sha1_mgf1sha1_test.json: the group's key (n, e, d in hex).
WYCHEPROOF_RSA_SHA1_N = (
    "bd31c7a02691d2d9587ef6a946ff788544ccadd4b2988ad62086792a6bf96c8616b4ad13317d2270b901d0fc"
    "d1d880cb8f52fb87304a5258c11b38dfeae8df670aeee7ea1d0d9df8e00e80847e41e5989ed402d44e78b30f"
    "ef17b5671d3adbf8685e4dc204499ecd1863e1d5aff28a7cf66eadf31fec9236c120add13451522c647c9832"
    "a672cd64d328c1c322183f4661d09bda60b8dd5f0328da5420821424afdabb1a80c5d12763a1b0238cd89d07"
    "42bfc50b6a2fcb701d824218f9826f4f78a23a2b5aa42ace7f175376fb6cbdb2bad293ba583d4d31c6b8f902"
    "9e46b13689249855f505756e00e225a6a45a18769bd8d2b3a4acb9f1c23d3e51882561e5"
)
WYCHEPROOF_RSA_SHA1_E = "010001"
WYCHEPROOF_RSA_SHA1_D = (
    "0747d520ca9b2dfc0335cf94301140b8102fb838c92ea99917e354e25709602dc0cdef231ff26ad2dfabbc39"
    "1e723072a4ef52929f3f1cf0216e44c0093030f8ac29096faef28933bc9b924287014e2e935e2145be4752cc"
    "b82cb7646271936979cab73f521eeb27855ac2a410834ae5082eb62ef6f9899ee5cbb624a8d8c04ab7edcf78"
    "fe135d0f808f63b5de6e071779bf1d9eaaf8d3ef965486f2c52625e6e57a651c7bbd0197c99c057b3860a326"
    "0c864a11b3cf22ba44de3a3b3f3117e64ebf9a91f626ebb3f3c26d1b0bb80753468d4bf6a997b28335f20ed8"
    "c384d7558360a9ae9755661fa3749846b174e6bf330e52d09941f6ccd7de5004779f9bb9"
)
WYCHEPROOF_RSA_SHA1_CASES = [
    (
        3,
        "54657374",
        "504b4e0d94d800a9da92be8fa84fc345f7ab4921ec53c073c79592b347a692cce2450135e998e07bb75ed7ee"
        "44f047f75a07e37b9c912d3d529b62bef144952d5b202246ad32c5d34ec8559c4163e2145fa5fd4d56de28cb"
        "fe7e537d5732305945c9370bbc6dcd72b3296fd54a2660365715f7d911099c96dfe6d114eec7b4425cb65701"
        "aa9e08d99c7ac20179656bb678554d74baca4501b5d0b366c97224bf0c8734e00ff2af8b916aef8b83142d5e"
        "c142493e0cc4c57326515a50a31ec2c6703512034642e5789649773d2f8312561bf2f2f6000cebdbf7c7a95f"
        "bfd0f721c31ba392acea37568a24f176767f71b31f407573deef95c305e0e063db0e9168",
        True,
    ),
    (
        7,
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        "3530605f43b5539c80398f856eea8d88984af4a6a08db3b9d4093cc80d1a313c0ebe727eb2c45cec2025eee6"
        "0f385822c09f82e3bcedf66b79c2b34a4f41aa8885eca5b9891798d47914f947c76881dbfc3f21ec27a11dc9"
        "26c647b6b2a7f3292ec4aa32e969bab49afe203ffd79b0c1ab5777a041fbe4e9e1a679fe2d82e9c267ee7fbe"
        "54e9e0def68d8bbacb1e53da99aec8ba9255d2ff6676dbcc58498a386dd8a6b3cf0222a9e14fd03313303bec"
        "9d0439ff0e8a5a09ce2926ebe86cafd00cd8ca761b88df9cf84f7b8e07cc5f655199ea81ea6407ec264b5971"
        "738967a2e977132dc589c72f8bb639a9429feb512d8d32c441f7e1ce6c6befa08140a090",
        True,
    ),
    (
        12,
        "313233343030",
        "7866ab0f81437de93442325f02f86a305c4a4a0871207ff3203746c26a43fff5979e68c74264c34dad13955a"
        "32785ec1523fccb264957ed6f6b822b5c052b9161d6b75adde451c6f8d637a75dffc9b9a9103934e777cef41"
        "b7966bf730a648e5b96aa587936d460124dcec515b55473a009844f19cb2794bd739557d25417e2c036762a9"
        "21481d728b4d32a8015b17539b7cc2a16a2b33e43b85561a2119fb6c9d8ed42d6bec324281be79e2f79426c6"
        "53f8445a20cce87a2c263e7933b8ef3fa0b9f9f38fd115fde459e5d32eee2412c0af06d2f6454e04ba060ea8"
        "7c5aa0d4b365f24b4f05bb27c4aa42061a45cdcef1a39118018b875dfb9f904fda4d80fb",
        False,
    ),
]


def envelope_vectors(rng: SeededRng) -> dict[str, Any]:
    key = rng.token_bytes(32)
    version = rng.token_bytes(16).hex()
    mailbox = {"tenant": "contoso", "container": "mbx-0001", "item": "AAMkAD-42"}
    specs: list[tuple[str, str, str, dict[str, str], int, bytes]] = [
        ("empty", "ck-vector-key", version, {}, 4096, b""),
        ("one-byte", "ck-vector-key", version, mailbox, 4096, rng.token_bytes(1)),
        ("segment-minus-one", "ck-vector-key", version, mailbox, 4096, rng.token_bytes(4095)),
        ("exact-segment", "ck-vector-key", version, mailbox, 4096, rng.token_bytes(4096)),
        ("three-segments", "ck-vector-key", version, mailbox, 4096, rng.token_bytes(10000)),
        (
            "unicode-ids-default-segment",
            "clé-🔑",
            "",
            {"tenant": "Ünïcødé", "é": "ü", "a": ""},
            aead.DEFAULT_SEGMENT_SIZE,
            "Grüße, 世界!".encode(),
        ),
    ]
    cases = []
    for name, key_id, key_version, context, segment_size, plaintext in specs:
        salt = rng.token_bytes(aead.SALT_SIZE)
        nonce_prefix = rng.token_bytes(aead.NONCE_PREFIX_SIZE)
        ciphertext = aead.seal(
            key,
            plaintext,
            key_id=key_id,
            key_version=key_version,
            context=context,
            segment_size=segment_size,
            _salt=salt,
            _nonce_prefix=nonce_prefix,
        )
        okm = HKDF(hashes.SHA256(), 64, salt, b"customerkey/envelope/v1").derive(key)
        header = aead.parse_header(ciphertext)
        assert aead.open_sealed(key, ciphertext, context=context) == plaintext
        assert header.commitment == okm[32:]
        cases.append(
            {
                "name": name,
                "key": key.hex(),
                "key_id": key_id,
                "key_version": key_version,
                "context": context,
                "segment_size": segment_size,
                "salt": salt.hex(),
                "nonce_prefix": nonce_prefix.hex(),
                "plaintext": plaintext.hex(),
                "item_key": okm[:32].hex(),
                "commitment": okm[32:].hex(),
                "context_bytes": aead.encode_context(context).hex(),
                "header": ciphertext[: header.header_length].hex(),
                "segments": len(plaintext) // segment_size + 1,
                "ciphertext": ciphertext.hex(),
            }
        )
    return {
        "description": "customerkey envelope format v1 (see customerkey.crypto.aead)",
        "generator": "tests/vectors/generate.py",
        "cases": cases,
    }


def kwp_vectors(rng: SeededRng) -> dict[str, Any]:
    cases: list[dict[str, Any]] = []
    for number, (key, wrapped) in enumerate(RFC5649_CASES, start=1):
        got = wrap._kwp_wrap(bytes.fromhex(RFC5649_KEK), bytes.fromhex(key))
        assert got.hex() == wrapped, f"RFC 5649 example {number}"
        cases.append(
            {
                "name": f"rfc5649-section6-{number}",
                "source": "RFC 5649 section 6 (AES-192 KEK)",
                "kek": RFC5649_KEK,
                "key": key,
                "wrapped": wrapped,
                "valid": True,
            }
        )
    for tc_id, kek, key, wrapped, valid in WYCHEPROOF_KWP:
        if valid:
            assert wrap.aes_kwp_wrap(bytes.fromhex(kek), bytes.fromhex(key)).hex() == wrapped
        else:
            _assert_kwp_rejects(bytes.fromhex(kek), bytes.fromhex(wrapped))
        cases.append(
            {
                "name": f"wycheproof-kwp-{tc_id}",
                "source": f"{WYCHEPROOF} kwp_test.json, tcId {tc_id})",
                "kek": kek,
                "key": key,
                "wrapped": wrapped,
                "valid": valid,
            }
        )
    kek_bytes = rng.token_bytes(32)
    for size in (1, 7, 8, 9, 16, 24, 32, 33, 64):
        key_bytes = rng.token_bytes(size)
        cases.append(
            {
                "name": f"customerkey-{size}-bytes",
                "source": "customerkey (seeded)",
                "kek": kek_bytes.hex(),
                "key": key_bytes.hex(),
                "wrapped": wrap.aes_kwp_wrap(kek_bytes, key_bytes).hex(),
                "valid": True,
            }
        )
    return {
        "description": "AES key wrap with padding (RFC 5649)",
        "generator": "tests/vectors/generate.py",
        "cases": cases,
    }


def _assert_kwp_rejects(kek: bytes, wrapped: bytes) -> None:
    try:
        wrap.aes_kwp_unwrap(kek, wrapped)
    except DecryptionFailed:
        return
    raise AssertionError("invalid KWP vector unwrapped")


def rsa_vectors(rng: SeededRng, previous: dict[str, Any] | None) -> dict[str, Any]:
    sha256_key = private_key_from_jwk(WYCHEPROOF_RSA_SHA256_JWK)
    assert private_jwk_fields(sha256_key) == {
        k: v for k, v in WYCHEPROOF_RSA_SHA256_JWK.items() if k != "kty"
    }
    n = int(WYCHEPROOF_RSA_SHA1_N, 16)
    e = int(WYCHEPROOF_RSA_SHA1_E, 16)
    d = int(WYCHEPROOF_RSA_SHA1_D, 16)
    p, q = rsa.rsa_recover_prime_factors(n, e, d)
    p, q = max(p, q), min(p, q)
    sha1_key = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    ).private_key()
    keys = {
        "wycheproof-2048-sha256": {
            "source": f"{WYCHEPROOF} rsa_oaep_2048_sha256_mgf1sha256_test.json)",
            "jwk": WYCHEPROOF_RSA_SHA256_JWK,
            "pkcs8": private_key_to_der(sha256_key).hex(),
        },
        "wycheproof-2048-sha1": {
            "source": f"{WYCHEPROOF} rsa_oaep_2048_sha1_mgf1sha1_test.json)",
            "jwk": {"kty": "RSA", **private_jwk_fields(sha1_key)},
            "pkcs8": private_key_to_der(sha1_key).hex(),
        },
    }
    cases: list[dict[str, Any]] = []
    groups = [
        ("wycheproof-2048-sha256", "RSA-OAEP-256", sha256_key, "rsa_oaep_2048_sha256_mgf1sha256"),
        ("wycheproof-2048-sha1", "RSA-OAEP", sha1_key, "rsa_oaep_2048_sha1_mgf1sha1"),
    ]
    external = [
        [(tc, msg, ct, True) for tc, msg, ct in WYCHEPROOF_RSA_SHA256_CASES],
        WYCHEPROOF_RSA_SHA1_CASES,
    ]
    for (key_name, alg, key, file), tests in zip(groups, external, strict=True):
        for tc_id, msg, ct, valid in tests:
            if valid:
                assert wrap.rsa_oaep_unwrap(key, bytes.fromhex(ct), alg).hex() == msg
            cases.append(
                {
                    "name": f"wycheproof-{file}-{tc_id}",
                    "source": f"{WYCHEPROOF} {file}_test.json, tcId {tc_id})",
                    "key": key_name,
                    "alg": alg,
                    "plaintext": msg,
                    "ciphertext": ct,
                    "valid": valid,
                }
            )
    kept = {c["name"]: c for c in (previous or {}).get("cases", [])}
    for alg in ("RSA-OAEP-256", "RSA-OAEP"):
        name = f"customerkey-{alg.lower()}-dep-key"
        plaintext = rng.token_bytes(32)
        old = kept.get(name)
        ciphertext = None
        if old is not None and old["plaintext"] == plaintext.hex():
            try:
                old_ct = bytes.fromhex(old["ciphertext"])
                if wrap.rsa_oaep_unwrap(sha256_key, old_ct, alg) == plaintext:
                    ciphertext = old["ciphertext"]
            except DecryptionFailed:
                pass
        if ciphertext is None:
            ciphertext = wrap.rsa_oaep_wrap(sha256_key.public_key(), plaintext, alg).hex()
        cases.append(
            {
                "name": name,
                "source": "customerkey (seeded plaintext; OAEP padding is randomized)",
                "key": "wycheproof-2048-sha256",
                "alg": alg,
                "plaintext": plaintext.hex(),
                "ciphertext": ciphertext,
                "valid": True,
            }
        )
    for entry in keys.values():
        assert isinstance(entry["pkcs8"], str)
        private_key_from_der(bytes.fromhex(entry["pkcs8"]))
    return {
        "description": "RSA-OAEP key unwrap (decrypt direction: OAEP is randomized)",
        "generator": "tests/vectors/generate.py",
        "keys": keys,
        "cases": cases,
    }


def write(name: str, data: dict[str, Any]) -> None:
    path = HERE / name
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def main() -> None:
    rng = SeededRng(SEED)
    write("envelope_v1.json", envelope_vectors(rng))
    write("aes_kwp.json", kwp_vectors(rng))
    rsa_path = HERE / "rsa_oaep.json"
    previous = json.loads(rsa_path.read_text(encoding="utf-8")) if rsa_path.exists() else None
    write("rsa_oaep.json", rsa_vectors(rng, previous))


if __name__ == "__main__":
    main()
