"""The mail workload: mail users, mailboxes and their items, always stored encrypted.

Key hierarchy (DESIGN.md): each mailbox has a mailbox key (AES-256), wrapped (AES-KWP) by the
DEP key of the policy generation protecting it, or by the tenant's service-managed key when
it has no customer DEP. Each item is one envelope (``crypto.aead``) under the mailbox key,
bound to tenant, mailbox, item and key ids, in a blob named ``mail/<mailbox>/<item>.<key seq>``.
The database holds ids, folder, sizes, a date and wrapped keys; never content.

Changing a mailbox's DEP when it holds content (or ``$null``, back to service-managed keys)
makes a new mailbox key that new writes use at once, and a ``mailbox-rekey`` job that
re-encrypts every item under it and then destroys the old key. Items are always read under
whichever key seals them, so the mailbox stays readable throughout.

``MailService`` is one class put together from one part per concern, each a module of this
package inheriting from ``base.MailServiceBase`` (constructor, shared state, helpers):

- ``mailboxes``: mailboxes and mail users, their statistics
- ``rekey``: DEP assignment, moves and the re-key job
- ``imports``: mail store imports and the import job
- ``items``: delivering, listing, reading, deleting and exporting items
- ``refresh``: the DEP's key roll and its re-wrap job
- ``purge``: the DEP's data purge approval and job

The views and errors are in ``models``, the key-usage counter in ``usage``, blob names in
``blobs``, job kinds and payloads in ``jobs``, mail store formats in ``formats``; this module
re-exports what callers import from it.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from customerkey.jobs.registry import JobKind
from customerkey.jobs.worker import Handler
from customerkey.storage.models import MailboxRow
from customerkey.workloads.mail.base import MAILBOX_KEYS
from customerkey.workloads.mail.imports import ImportsMixin
from customerkey.workloads.mail.items import ItemsMixin
from customerkey.workloads.mail.jobs import IMPORT_JOB, PURGE_JOB, REFRESH_JOB, REKEY_JOB
from customerkey.workloads.mail.mailboxes import MailboxesMixin
from customerkey.workloads.mail.models import (
    IMPORT_BATCH,
    IMPORT_NAMESPACE,
    REFRESH_BATCH,
    REKEY_BATCH,
    ImportResult,
    ItemNotFound,
    Mailbox,
    MailboxNotFound,
    MailboxStatistics,
    MailItem,
    Progress,
    item_context,
)
from customerkey.workloads.mail.purge import PurgeMixin
from customerkey.workloads.mail.refresh import RefreshMixin
from customerkey.workloads.mail.rekey import RekeyMixin
from customerkey.workloads.mail.usage import MailUsage

__all__ = [
    "IMPORT_BATCH",
    "IMPORT_NAMESPACE",
    "MAILBOX_KEYS",
    "REFRESH_BATCH",
    "REKEY_BATCH",
    "ImportResult",
    "ItemNotFound",
    "MailItem",
    "MailService",
    "MailUsage",
    "Mailbox",
    "MailboxNotFound",
    "MailboxStatistics",
    "Progress",
    "item_context",
]


class MailService(
    MailboxesMixin,
    RekeyMixin,
    ImportsMixin,
    ItemsMixin,
    RefreshMixin,
    PurgeMixin,
):
    """The mail service (see the module's docstring); it adds only its job handlers.

    An import and a re-key (move, DEP change) may be cancelled: each batch commits whole, an
    import keeps what it stored (running it again goes on from there), and a re-key leaves
    every item readable under the key that seals it (moving or setting the DEP again
    finishes it). A refresh and a purge run to the end."""

    def job_handlers(self) -> dict[str, Handler | JobKind]:
        return {
            IMPORT_JOB: JobKind(
                self.run_import,
                cancellable=True,
                cancel_note=(
                    "The messages imported so far stay in the mailbox; the same import "
                    "command goes on from where it stopped."
                ),
                tenant_of=_mailbox_tenant,
            ),
            REKEY_JOB: JobKind(
                self.run_rekey,
                cancellable=True,
                cancel_note=(
                    "Items already re-encrypted stay under the new mailbox key, the others "
                    "under the old one; every item stays readable. Moving the mailbox (or "
                    "setting its DEP) again finishes the re-key."
                ),
                tenant_of=_mailbox_tenant,
            ),
            REFRESH_JOB: self.run_refresh,
            PURGE_JOB: self.run_purge,
        }


def _mailbox_tenant(session: Session, mailbox_id: str) -> str | None:
    row = session.get(MailboxRow, mailbox_id)
    return row.tenant_id if row is not None else None
