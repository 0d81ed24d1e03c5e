"""The mail workload's job kinds and their typed payloads."""

from __future__ import annotations

from dataclasses import dataclass

IMPORT_JOB = "mailbox-import"
REKEY_JOB = "mailbox-rekey"
REFRESH_JOB = "dep-refresh"
PURGE_JOB = "dep-purge"


@dataclass(frozen=True)
class ImportPayload:
    """Import a mail store at ``path`` (``format``: mbox, maildir or eml) into the target
    mailbox; ``signature`` pins the store's content so a changed store is refused."""

    path: str
    format: str
    signature: str
    principal: str
    request_id: str | None = None


@dataclass(frozen=True)
class RekeyPayload:
    """Re-encrypt the target mailbox's items under its key ``key_id``."""

    key_id: str
    reason: str


@dataclass(frozen=True)
class RefreshPayload:
    """Re-wrap the target DEP's mailbox keys onto generation ``generation_id``."""

    generation_id: str
