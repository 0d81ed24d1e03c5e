"""The mail workload's key-usage counter: how many mailboxes and items a DEP generation
protects (``keys.usage`` asks it, for every policy kind)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from customerkey.storage.models import MailboxKeyRow, MailItemRow


class MailUsage:
    """Key usage: the mailboxes and items under a DEP generation (shown for every kind)."""

    policy_kinds: frozenset[str] | None = None
    labels = ("Mailboxes", "Items")

    def count(self, session: Session, generation_id: str) -> dict[str, int]:
        mailboxes = session.scalar(
            select(func.count(func.distinct(MailboxKeyRow.mailbox_id))).where(
                MailboxKeyRow.generation_id == generation_id, MailboxKeyRow.state != "destroyed"
            )
        )
        items = session.scalar(
            select(func.count())
            .select_from(MailItemRow)
            .join(MailboxKeyRow, MailboxKeyRow.id == MailItemRow.key_id)
            .where(MailboxKeyRow.generation_id == generation_id)
        )
        return {"Mailboxes": int(mailboxes or 0), "Items": int(items or 0)}

    def describe(self, counts: Mapping[str, int]) -> str:
        return f"{counts['Mailboxes']} mailbox(es) and {counts['Items']} item(s)"
