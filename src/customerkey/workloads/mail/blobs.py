"""The names of the mail workload's blobs, built and parsed in one place, and what the blob
sweep asks of them.

``mail/<mailbox id>/<item id>.<key seq>``: one sealed message, under the mailbox key with
that sequence number (a re-key writes ``<item>.<new seq>`` before the row switches to it,
then deletes the old name). ``MailItemRow.blob`` references it. Each blob stands alone for
the sweep.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from customerkey.storage.models import MailItemRow

PREFIX = "mail"
_ITEM = re.compile(r"^(?P<item>[A-Za-z0-9-]+)\.(?P<seq>[0-9]+)$")


def mailbox_folder(mailbox_id: str) -> str:
    return f"{PREFIX}/{mailbox_id}"


def item_blob(mailbox_id: str, item_id: str, key_seq: int) -> str:
    return f"{PREFIX}/{mailbox_id}/{item_id}.{key_seq}"


def parse_item_blob(name: str) -> tuple[str, str, int] | None:
    """(mailbox id, item id, key seq) of an item blob's name; None for any other name."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    match = _ITEM.match(parts[2])
    if match is None:
        return None
    return parts[1], match["item"], int(match["seq"])


class MailBlobs:
    """The sweep's view of ``mail/``: a unit is one item blob."""

    prefix = PREFIX
    units_are_folders = False

    def unit_of(self, name: str) -> str | None:
        return name if parse_item_blob(name) is not None else None

    def referenced(self, session: Session, folder: str, units: Iterable[str]) -> set[str]:
        mailbox_id = folder.split("/")[1]
        item_ids = set()
        for unit in units:
            parsed = parse_item_blob(unit)
            if parsed is not None:
                item_ids.add(parsed[1])
        return set(
            session.scalars(
                select(MailItemRow.blob).where(
                    MailItemRow.mailbox_id == mailbox_id, MailItemRow.id.in_(item_ids)
                )
            )
        )
