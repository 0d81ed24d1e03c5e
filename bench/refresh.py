"""refresh: ``dep refresh`` of a DEP protecting 100,000 mailboxes, until every mailbox is on
the new generation.

Set-up (not timed): a tenant, two vaults with RSA-2048 root keys, a DEP over them, and
100,000 mailboxes with their mailbox keys, made by a bulk INSERT through the real models
(``MailboxRow``, ``MailboxKeyRow``): each mailbox key is a fresh random AES-256 key wrapped
with ``aes_kwp_wrap`` under the DEP's real generation key, exactly what ``create_mailbox``
stores, so the rows are the ones the real ``run_refresh`` job moves; only the per-mailbox
service call is skipped. Then root key A gets a new version (the key roll).

Timed: ``runtime.mail.refresh(...)`` (the new generation: RSA wraps in both vaults, the job
enqueued) and the job run to completion by a worker in this process, on SQLite, with the
default batch size. Afterwards every live mailbox key must be on the new generation.

Baseline: raw AES-KWP unwrap + wrap (pyca ``keywrap``) of the same 100,000 wrapped keys in a
loop, with nothing else: the work the re-wrap cannot avoid.
"""

from __future__ import annotations

import os
import time
import uuid

from cryptography.hazmat.primitives.keywrap import (
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)
from sqlalchemy import func, insert, select

from bench._common import (
    DEP_NAME,
    KEY_A,
    MAIL_DOMAIN,
    TENANT,
    VAULT_A,
    Row,
    open_runtime,
    setup_dep,
    temp_dir,
)
from customerkey.crypto.wrap import aes_kwp_wrap
from customerkey.runtime import Runtime
from customerkey.storage.models import MailboxKeyRow, MailboxRow
from customerkey.vault.models import OPERATOR

NAME = "refresh"
TITLE = "dep refresh of a DEP protecting many mailboxes (SQLite)"

TARGET_SECONDS = 10.0
FULL_MAILBOXES = 100_000
QUICK_MAILBOXES = 2_000
INSERT_CHUNK = 5_000


def bulk_mailboxes(
    rt: Runtime, policy_id: str, generation_id: str, count: int, *, tag: str = "user"
) -> tuple[bytes, list[bytes]]:
    """Insert ``count`` mailboxes (named ``<tag>NNNNNN``) and their keys, wrapped under the
    generation's real key (only the per-mailbox service call is skipped); returns the DEP key
    and the wrapped mailbox keys (for the baseline)."""
    dep_key = rt.policies.generation_key(generation_id, system=True)
    now = rt.clock.now()
    wrapped_keys: list[bytes] = []
    for start in range(0, count, INSERT_CHUNK):
        mailboxes: list[dict[str, object]] = []
        keys: list[dict[str, object]] = []
        for i in range(start, min(count, start + INSERT_CHUNK)):
            mailbox_id = str(uuid.uuid4())
            key_id = str(uuid.uuid4())
            wrapped = aes_kwp_wrap(dep_key, os.urandom(32))
            wrapped_keys.append(wrapped)
            mailboxes.append(
                {
                    "id": mailbox_id,
                    "tenant_id": TENANT,
                    "upn": f"{tag}{i:06d}@{MAIL_DOMAIN}",
                    "alias": f"{tag}{i:06d}",
                    "display_name": f"{tag}{i:06d}",
                    "kind": "user",
                    "state": "active",
                    "policy_id": policy_id,
                    "current_key_id": key_id,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            keys.append(
                {
                    "id": key_id,
                    "mailbox_id": mailbox_id,
                    "seq": 1,
                    "generation_id": generation_id,
                    "wrapped": wrapped,
                    "state": "active",
                    "created_at": now,
                }
            )
        with rt.db.transaction() as session:
            session.execute(insert(MailboxRow), mailboxes)
            session.execute(insert(MailboxKeyRow), keys)
    return dep_key, wrapped_keys


def _raw_rewrap_seconds(old: bytes, wrapped_keys: list[bytes], repeats: int) -> float:
    new = os.urandom(32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for blob in wrapped_keys:
            aes_key_wrap_with_padding(new, aes_key_unwrap_with_padding(old, blob))
        best = min(best, time.perf_counter() - start)
    return best


def run(quick: bool) -> list[Row]:
    count = QUICK_MAILBOXES if quick else FULL_MAILBOXES
    with temp_dir("refresh") as tmp:
        rt = open_runtime(tmp / "home")
        try:
            policy_id, generation_id = setup_dep(rt)
            start = time.perf_counter()
            dep_key, wrapped_keys = bulk_mailboxes(rt, policy_id, generation_id, count)
            setup_seconds = time.perf_counter() - start
            rt.vault.create_key(
                OPERATOR, VAULT_A, KEY_A, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
            )
            start = time.perf_counter()
            job = rt.mail.refresh(OPERATOR, TENANT, DEP_NAME)
            assert job is not None
            finished = rt.worker().run_until_idle()
            seconds = time.perf_counter() - start
            states = {j.id: j.state for j in finished}
            assert states.get(job.id) == "succeeded", f"refresh job ended {states}"
            new_generation = rt.policies.current_generation(policy_id)
            assert new_generation is not None and new_generation.id != generation_id
            with rt.db.transaction() as session:
                behind = session.scalar(
                    select(func.count())
                    .select_from(MailboxKeyRow)
                    .where(
                        MailboxKeyRow.generation_id != new_generation.id,
                        MailboxKeyRow.state != "destroyed",
                    )
                )
            assert behind == 0, f"{behind} mailbox keys are not on the new generation"
        finally:
            rt.close()
    raw_seconds = _raw_rewrap_seconds(dep_key, wrapped_keys, repeats=1 if quick else 3)
    keys_per_s = count / seconds
    raw_per_s = count / raw_seconds
    scaled = seconds * FULL_MAILBOXES / count
    return [
        Row(
            NAME,
            f"{count:,} mailboxes",
            "seconds to all on new gen",
            seconds,
            target=f"<= {TARGET_SECONDS:.0f} s at 100,000",
            met=seconds <= TARGET_SECONDS if count == FULL_MAILBOXES else None,
            note="" if count == FULL_MAILBOXES else f"~{scaled:.0f} s scaled to 100,000",
            extra={"setup_seconds": setup_seconds, "mailboxes": count},
        ),
        Row(
            NAME,
            f"{count:,} mailboxes",
            "keys/s",
            keys_per_s,
            baseline="raw AES-KWP unwrap+wrap",
            baseline_value=raw_per_s,
            ratio=keys_per_s / raw_per_s,
        ),
    ]
