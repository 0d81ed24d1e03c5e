"""Checks of an imported mailbox, shared by the mail import tests and their crash tests."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from customerkey.runtime import Runtime
from customerkey.storage.models import MailItemRow
from customerkey.vault.models import OPERATOR


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_import(rt: Runtime, upn: str, originals: list[bytes], context: str = "") -> None:
    """The mailbox holds exactly the store's messages, in the store's order, each decrypting
    to its original bytes; its folder on disk holds exactly the items' blobs (a temporary
    file of a killed writer aside, which the blob sweep removes)."""
    rt.key_cache.clear()
    got = [sha(data) for _, data in rt.mail.iter_messages(OPERATOR, upn)]
    expected = [sha(m) for m in originals]
    first_difference = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    assert got == expected, (
        f"{upn}: {len(got)} items, {len(expected)} expected; first difference at "
        f"{first_difference}\n{context}"
    )
    mailbox_id = rt.mail.get(OPERATOR, upn).id
    with rt.db.transaction() as session:
        referenced = set(
            session.scalars(select(MailItemRow.blob).where(MailItemRow.mailbox_id == mailbox_id))
        )
    folder = rt.home.blobs_dir / "mail" / mailbox_id
    on_disk = {
        f"mail/{mailbox_id}/{p.name}" for p in folder.iterdir() if not p.name.startswith(".")
    }
    assert on_disk == referenced, (
        f"{upn}: orphaned blobs {sorted(on_disk - referenced)[:3]}, missing "
        f"{sorted(referenced - on_disk)[:3]}\n{context}"
    )
