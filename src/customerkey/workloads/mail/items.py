"""Mail items: deliver one message (sealed under the mailbox's current key), list, read and
delete items, iterate over every item's plaintext, and export a mailbox to mbox or .eml files."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from customerkey.crypto.aead import open_stream, seal
from customerkey.storage.models import MailboxKeyRow, MailboxRow, MailItemRow
from customerkey.vault.models import Actor
from customerkey.workloads.mail import blobs as blob_names
from customerkey.workloads.mail import formats
from customerkey.workloads.mail.base import MailServiceBase
from customerkey.workloads.mail.models import ItemNotFound, MailItem, Progress, item_context


class ItemsMixin(MailServiceBase):
    """Items: add, list, read, delete, iterate, export."""

    def add_message(
        self, actor: Actor, identity: str, message: bytes, folder: str = "Inbox"
    ) -> MailItem:
        """Deliver one message (the write path applications use)."""
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
            self._may_use(session, actor, row)
            key_row = self._current_key(session, row)
            tenant, mailbox_id, key_id, key_seq = row.tenant_id, row.id, key_row.id, key_row.seq
            generation_id, wrapped = key_row.generation_id, key_row.wrapped
        mailbox_key = self.keys.unwrap(tenant, generation_id, wrapped, request_id=actor.request_id)
        item_id = self._uuid()
        blob = blob_names.item_blob(mailbox_id, item_id, key_seq)
        sealed = seal(
            mailbox_key,
            message,
            key_id=key_id,
            key_version=str(key_seq),
            context=item_context(tenant, mailbox_id, item_id, key_id),
            rng=self._rng,
        )
        self.blobs.put_bytes(blob, sealed)
        now = self._clock.now()
        with self.db.transaction() as session:
            self._require_live_key(session, key_id)
            seq = (
                int(
                    session.scalar(
                        select(func.max(MailItemRow.seq)).where(
                            MailItemRow.mailbox_id == mailbox_id
                        )
                    )
                    or 0
                )
                + 1
            )
            item = MailItemRow(
                id=item_id,
                mailbox_id=mailbox_id,
                seq=seq,
                folder=folder[:256],
                key_id=key_id,
                blob=blob,
                size=len(message),
                sealed_size=len(sealed),
                received_at=formats.received_time(message, now),
                created_at=now,
            )
            session.add(item)
            self._audit.append(
                session,
                tenant=tenant,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="MailItemCreate",
                request_id=actor.request_id,
                details={"mailbox": mailbox_id, "item": item_id},
            )
            return MailItem(item.id, item.seq, item.folder, item.size, item.received_at, key_id)

    def list_items(
        self, actor: Actor, identity: str, *, folder: str | None = None
    ) -> list[MailItem]:
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
            self._may_use(session, actor, row)
            query = select(MailItemRow).where(MailItemRow.mailbox_id == row.id)
            if folder is not None:
                query = query.where(MailItemRow.folder == folder)
            return [
                MailItem(i.id, i.seq, i.folder, i.size, i.received_at, i.key_id)
                for i in session.scalars(query.order_by(MailItemRow.seq))
            ]

    def _open_item(
        self,
        tenant: str,
        item: MailItemRow,
        key: MailboxKeyRow,
        *,
        system: bool,
        request_id: str | None,
    ) -> bytes:
        mailbox_key = self.keys.unwrap(
            tenant, key.generation_id, key.wrapped, system=system, request_id=request_id
        )
        out = io.BytesIO()
        with self.blobs.open(item.blob) as handle:
            open_stream(
                mailbox_key,
                handle,
                out,
                context=item_context(tenant, item.mailbox_id, item.id, key.id),
            )
        return out.getvalue()

    def _item(self, session: Session, row: MailboxRow, item_ref: str) -> MailItemRow:
        item = session.get(MailItemRow, item_ref)
        # A sequence number: ASCII digits ("²" is a digit to isdigit, not to int) that fit
        # the 64-bit column; any other reference names no item.
        if item is None and item_ref.isascii() and item_ref.isdigit() and len(item_ref) < 19:
            item = session.scalar(
                select(MailItemRow).where(
                    MailItemRow.mailbox_id == row.id, MailItemRow.seq == int(item_ref)
                )
            )
        if item is None or item.mailbox_id != row.id:
            raise ItemNotFound(f"No item '{item_ref}' in mailbox '{row.upn}'.")
        return item

    def read_item(self, actor: Actor, identity: str, item_ref: str) -> bytes:
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
            self._may_use(session, actor, row)
            item = self._item(session, row, item_ref)
            key = session.get(MailboxKeyRow, item.key_id)
            assert key is not None
            tenant = row.tenant_id
        return self._open_item(tenant, item, key, system=False, request_id=actor.request_id)

    def delete_item(self, actor: Actor, identity: str, item_ref: str) -> None:
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
            self._may_use(session, actor, row)
            item = self._item(session, row, item_ref)
            blob = item.blob
            session.delete(item)
            self._audit.append(
                session,
                tenant=row.tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="MailItemDelete",
                request_id=actor.request_id,
                details={"mailbox": row.id, "item": item.id},
            )
        self.blobs.delete(blob)

    def iter_messages(
        self, actor: Actor, identity: str, *, system: bool = False
    ) -> Iterator[tuple[MailItem, bytes]]:
        """Every item with its plaintext, oldest first, one at a time."""
        items = self.list_items(actor, identity)
        for item in items:
            with self.db.transaction() as session:
                row = session.get(MailItemRow, item.id)
                if row is None:
                    continue
                key = session.get(MailboxKeyRow, row.key_id)
                mailbox = session.get(MailboxRow, row.mailbox_id)
                assert key is not None and mailbox is not None
                tenant = mailbox.tenant_id
            data = self._open_item(tenant, row, key, system=system, request_id=actor.request_id)
            yield item, data

    def export_messages(
        self,
        actor: Actor,
        identity: str,
        path: Path,
        *,
        fmt: str | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Export every message of the mailbox into a new store at ``path`` (0600 files, 0700
        folders), each byte for byte as stored; an mbox ``From_`` line carries the item's
        received time (``formats``). ``progress(done, total)`` is first called once the
        target has been checked and the store begun (so nothing is shown for an export that
        is refused), then after each message."""
        fmt = fmt or ("eml" if path.suffix == "" and not path.name.endswith(".mbox") else "mbox")
        total = len(self.list_items(actor, identity))  # refused before anything is written
        writer = formats.MessageWriter(path, fmt)
        count = 0
        try:
            if progress is not None:
                progress(0, total)
            for item, data in self.iter_messages(actor, identity):
                writer.add(item.folder, data, received=item.received_at)
                count += 1
                if progress is not None:
                    progress(count, total)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return count
