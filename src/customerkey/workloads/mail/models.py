"""The mail workload's models: the mailbox, statistics, item and import-result views the
service hands out, its two not-found errors, its batch-size defaults and the envelope context
that binds an item to its tenant, mailbox and key."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from customerkey.errors import NotFound

REFRESH_BATCH = 5000  # default of Settings.refresh_batch
IMPORT_BATCH = 200
# Item ids of imported messages: uuid5(IMPORT_NAMESPACE, "<job id>/<position in the store>").
IMPORT_NAMESPACE = uuid.UUID("5d0f3c52-9a0e-4c7b-8b3e-6f1c2a9d4e71")
REKEY_BATCH = 100  # default of Settings.rekey_batch
Progress = Callable[[int, int | None], None]


class MailboxNotFound(NotFound):
    code = "MailboxNotFound"


class ItemNotFound(NotFound):
    code = "ItemNotFound"


@dataclass(frozen=True)
class Mailbox:
    id: str
    tenant: str
    upn: str
    alias: str
    display_name: str
    kind: str  # user | shared | mailuser
    state: str
    policy_id: str | None
    policy_name: str | None
    created_at: datetime

    @property
    def recipient_type(self) -> str:
        return {"user": "UserMailbox", "shared": "SharedMailbox", "mailuser": "MailUser"}[self.kind]


@dataclass(frozen=True)
class MailboxStatistics:
    mailbox: Mailbox
    item_count: int
    total_size: int
    is_encrypted: bool
    data_encryption_policy_id: str | None
    job_state: str | None
    percent_complete: float | None


@dataclass(frozen=True)
class MailItem:
    id: str
    seq: int
    folder: str
    size: int
    received_at: datetime
    key_id: str


@dataclass(frozen=True)
class ImportResult:
    mailbox: str
    imported: int
    bytes: int


def item_context(tenant: str, mailbox_id: str, item_id: str, key_id: str) -> dict[str, str]:
    return {"tenant": tenant, "mailbox": mailbox_id, "item": item_id, "key": key_id}
