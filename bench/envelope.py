"""envelope: seal and open 1 KiB, 64 KiB, 1 MiB and 16 MiB items through ``crypto.aead``.

Baselines on the same bytes, in the same run:

- raw ``AESGCM`` one-shot: one key set up once, a fresh 12-byte nonce per call, the whole
  item as one GCM message (no header, no key derivation, no segments). What the envelope
  adds to that is the cost of its guarantees.
- the AWS Encryption SDK (``aws-encryption-sdk``, the ``[bench]`` extra) with its committing
  suite without signatures (``AES_256_GCM_HKDF_SHA512_COMMIT_KEY``, the fair match for our
  committing, unsigned envelope) and a raw AES-256 wrapping key (``RawMasterKey``: the raw
  AES keyring of the SDK's 3.x/4.x core API; the MPL keyrings are a separate package),
  commitment policy REQUIRE_ENCRYPT_REQUIRE_DECRYPT, default 4 KiB frames.

Every item is sealed with the context the mail workload binds (tenant, mailbox, item, key
ids); the SDK gets the same pairs as its encryption context.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench._common import KIB, MIB, Row, interleaved_rates, ratio
from customerkey.crypto.aead import open_sealed, seal

NAME = "envelope"
TITLE = "Envelope seal/open vs raw AES-GCM and the AWS Encryption SDK"

SIZES = (("1 KiB", KIB), ("64 KiB", 64 * KIB), ("1 MiB", MIB), ("16 MiB", 16 * MIB))
KEY_ID = "7e2d1c0b-9a8f-4e7d-6c5b-4a3f2e1d0c9b"
CONTEXT = {
    "tenant": "contoso",
    "mailbox": "6f1c2b9e-8d4f-4a0e-9b8e-2f6f0a1c3d5e",
    "item": "0b6c1e7a-3f2d-4c5b-8a9e-1d2c3b4a5f6e",
    "key": KEY_ID,
}
SMALL_TARGET = 50_000  # items/s, sealed and opened, at 1 KiB
RAW_SHARE_TARGET = 0.5  # of raw AES-GCM throughput, at 1 MiB and above
ESDK_TARGET = 20.0  # times the AWS Encryption SDK, every size


def _esdk() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]] | str:
    """(encrypt, decrypt) through the AWS Encryption SDK, or why it is not available."""
    try:
        import aws_encryption_sdk
        from aws_encryption_sdk import CommitmentPolicy
        from aws_encryption_sdk.identifiers import (
            Algorithm,
            EncryptionKeyType,
            WrappingAlgorithm,
        )
        from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
        from aws_encryption_sdk.key_providers.raw import RawMasterKey
    except ImportError as exc:  # pragma: no cover - depends on the environment
        return f"aws-encryption-sdk not installed ({exc}); pip install -e '.[bench]'"
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    master_key = RawMasterKey(
        provider_id="customerkey-bench",
        key_id=b"bench-key-1",
        wrapping_key=WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=os.urandom(32),
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        ),
    )
    suite = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY

    def encrypt(data: bytes) -> bytes:
        sealed, _ = client.encrypt(
            source=data, key_provider=master_key, algorithm=suite, encryption_context=CONTEXT
        )
        return bytes(sealed)

    def decrypt(data: bytes) -> bytes:
        plain, _ = client.decrypt(source=data, key_provider=master_key)
        return bytes(plain)

    return encrypt, decrypt


def run(quick: bool) -> list[Row]:
    min_time, repeats = (0.05, 2) if quick else (0.4, 5)
    key = os.urandom(32)
    raw = AESGCM(os.urandom(32))
    esdk = _esdk()
    rows: list[Row] = []
    for label, size in SIZES:
        data = os.urandom(size)
        sealed = seal(key, data, key_id=KEY_ID, key_version="1", context=CONTEXT)
        assert open_sealed(key, sealed, context=CONTEXT) == data
        nonce = os.urandom(12)
        raw_sealed = raw.encrypt(nonce, data, None)
        fns: dict[str, Callable[[], object]] = {
            "seal": lambda data=data: seal(
                key, data, key_id=KEY_ID, key_version="1", context=CONTEXT
            ),
            "open": lambda sealed=sealed: open_sealed(key, sealed, context=CONTEXT),
            "raw_encrypt": lambda data=data: raw.encrypt(os.urandom(12), data, None),
            "raw_decrypt": lambda nonce=nonce, raw_sealed=raw_sealed: raw.decrypt(
                nonce, raw_sealed, None
            ),
        }
        if not isinstance(esdk, str):
            esdk_encrypt, esdk_decrypt = esdk
            esdk_sealed = esdk_encrypt(data)
            assert esdk_decrypt(esdk_sealed) == data
            fns["esdk_encrypt"] = lambda data=data, enc=esdk_encrypt: enc(data)
            fns["esdk_decrypt"] = lambda esdk_sealed=esdk_sealed, dec=esdk_decrypt: dec(esdk_sealed)
        # The SDK is slow on big items: a shorter budget still gives it whole calls.
        rates = interleaved_rates(fns, min_time=min_time, repeats=repeats)
        mb = size / 1e6
        for op, raw_name, esdk_name in (
            ("seal", "raw_encrypt", "esdk_encrypt"),
            ("open", "raw_decrypt", "esdk_decrypt"),
        ):
            ours = rates[op]
            raw_rate = rates[raw_name]
            share = ratio(ours, raw_rate)
            if size == KIB:
                target, met = f">= {SMALL_TARGET:,} items/s", ours >= SMALL_TARGET
            elif size >= MIB:
                target = f">= {RAW_SHARE_TARGET:.0%} of raw"
                met = share is not None and share >= RAW_SHARE_TARGET
            else:
                target, met = "", None
            rows.append(
                Row(
                    NAME,
                    f"{label} {op}",
                    "items/s",
                    ours,
                    baseline="raw AESGCM one-shot",
                    baseline_value=raw_rate,
                    ratio=share,
                    target=target,
                    met=met,
                    extra={"MB/s": ours * mb, "baseline MB/s": raw_rate * mb, "bytes": size},
                )
            )
            if isinstance(esdk, str):
                rows.append(
                    Row(
                        NAME,
                        f"{label} {op}",
                        "items/s",
                        ours,
                        baseline="AWS Encryption SDK",
                        target=f">= {ESDK_TARGET:.0f}x",
                        note=esdk,
                    )
                )
                continue
            esdk_rate = rates[esdk_name]
            times = ratio(ours, esdk_rate)
            rows.append(
                Row(
                    NAME,
                    f"{label} {op}",
                    "items/s",
                    ours,
                    baseline="AWS Encryption SDK (commit, raw AES)",
                    baseline_value=esdk_rate,
                    ratio=times,
                    target=f">= {ESDK_TARGET:.0f}x",
                    met=times is not None and times >= ESDK_TARGET,
                    extra={"MB/s": ours * mb, "baseline MB/s": esdk_rate * mb, "bytes": size},
                )
            )
    return rows
