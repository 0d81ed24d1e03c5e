"""The mail workload's job kinds and their typed payloads."""

from __future__ import annotations

from dataclasses import dataclass

IMPORT_JOB = "mailbox-import"
REKEY_JOB = "mailbox-rekey"
REFRESH_JOB = "dep-refresh"
PURGE_JOB = "dep-purge"


@dataclass(frozen=True)
class ImportPayload:
    """Import a mail store into the target mailbox from ``staging``, the copy staged in the
    blob store (``staging``: any host may run it). ``path`` (where it was staged from, on the
    host that started it), ``format`` (mbox, maildir or eml) and ``signature`` (its content as
    it was on disk) identify the store, so that starting the same import again finds this job.
    A payload without ``staging`` (queued before imports were staged) is read from ``path``
    and runs only where that path is."""

    path: str
    format: str
    signature: str
    principal: str
    request_id: str | None = None
    staging: str | None = None


@dataclass(frozen=True)
class RekeyPayload:
    """Re-encrypt the target mailbox's items under its key ``key_id``."""

    key_id: str
    reason: str


@dataclass(frozen=True)
class RefreshPayload:
    """Re-wrap the target DEP's mailbox keys onto generation ``generation_id``."""

    generation_id: str
