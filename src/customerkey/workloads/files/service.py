"""The files workload (SharePoint Online / OneDrive): sites, files in folders, file versions
and a site recycle bin, always stored encrypted.

Key hierarchy (DESIGN.md, and the SharePoint sections of the Customer Key reference)::

    primary root key    secondary root key    availability key
            \\__________________|___________________/
                   tenant intermediate key (TIK) = a generation of the tenant's files DEP
                                  | AES-KWP
                   site key (AES-256, one per site)
                                  | AES-KWP
                   chunk key (AES-256, random, one per chunk of a file version)
                                  |
                   chunk envelope (crypto.aead, 1 MiB segments)

A files policy is a ``PolicyRow`` of kind ``files`` (one per tenant; key_uri_1 is the primary
key, key_uri_2 the secondary) and a TIK is one of its generations. Without a registered policy
site keys are wrapped by the tenant's service-managed key. ``register`` moves every site key
under the TIK in a background job (State Registering, percent of sites done, then Registered);
``roll`` (Update-SPODataEncryptionPolicy) makes a new TIK generation wrapped by the new key and
re-wraps every site key onto it (State Rolling); no file content is rewritten by either. Only
one roll runs at a time. The files workload never falls back to the availability key by
itself: ``recover`` is the explicit, audited operator action that uses it.

Files stream in and out: content is cut into chunks of ``chunk_size`` bytes (8 MiB), each
sealed with ``seal_stream`` under its own key into a blob named
``files/<site>/<file>/<version>/<position>``. The envelope context binds tenant, site, file,
version, chunk position and chunk key id, and each version records its chunk count and size,
so a dropped, reordered, swapped or truncated chunk fails to open. The database holds ids,
paths, sizes and wrapped keys; never content.

Deleting a file moves it to the site's recycle bin (restorable); purging the recycle bin
destroys its chunk keys and blobs. The data purge path (two tenant admins, vault access
revoked first) destroys every TIK generation, site key and chunk key of the tenant.

``FilesService`` is one class put together from one part per concern, each a module of this
package inheriting from ``base.FilesServiceBase`` (constructor, shared state, helpers):

- ``status``: the files policy's state (``policy`` and ``purge`` build on it)
- ``policy``: register, roll, resume, recover, and the re-wrap jobs
- ``purge``: the data purge path
- ``sites``: sites and OneDrives
- ``documents``: file records and the recycle bin
- ``transfers``: uploads and downloads

The views, errors and constants are in ``models``, site URLs and file paths in ``urls``, the
stream helpers in ``streams``, the key-usage counter in ``usage``, blob names in ``blobs``, job
kinds and payloads in ``jobs``; this module re-exports what callers import from it.
"""

from __future__ import annotations

from customerkey.jobs.worker import Handler
from customerkey.workloads.files.base import SITE_KEYS
from customerkey.workloads.files.documents import DocumentsMixin
from customerkey.workloads.files.jobs import PURGE_JOB, REGISTER_JOB, ROLL_JOB
from customerkey.workloads.files.models import (
    CHUNK_SIZE,
    FILES_POLICY_NAME,
    KEY_TYPES,
    MAX_PATH,
    RECOVERY_ACTIVITY,
    REWRAP_BATCH,
    SPO_DOMAIN,
    FileInfo,
    FileNotFound,
    FilesPolicyStatus,
    FileVersion,
    PreparedDownload,
    Progress,
    Site,
    SiteEncryptionStatus,
    SiteNotFound,
    chunk_context,
)
from customerkey.workloads.files.policy import PolicyMixin
from customerkey.workloads.files.purge import PurgeMixin
from customerkey.workloads.files.sites import SitesMixin
from customerkey.workloads.files.status import StatusMixin
from customerkey.workloads.files.transfers import TransfersMixin
from customerkey.workloads.files.urls import (
    admin_url,
    normalize_path,
    parse_site_url,
    tenant_of_admin_url,
)
from customerkey.workloads.files.usage import FilesUsage

__all__ = [
    "CHUNK_SIZE",
    "FILES_POLICY_NAME",
    "KEY_TYPES",
    "MAX_PATH",
    "RECOVERY_ACTIVITY",
    "REWRAP_BATCH",
    "SITE_KEYS",
    "SPO_DOMAIN",
    "FileInfo",
    "FileNotFound",
    "FileVersion",
    "FilesPolicyStatus",
    "FilesService",
    "FilesUsage",
    "PreparedDownload",
    "Progress",
    "Site",
    "SiteEncryptionStatus",
    "SiteNotFound",
    "admin_url",
    "chunk_context",
    "normalize_path",
    "parse_site_url",
    "tenant_of_admin_url",
]


class FilesService(
    PolicyMixin,
    PurgeMixin,
    StatusMixin,  # after PolicyMixin and PurgeMixin, which extend it
    SitesMixin,
    DocumentsMixin,
    TransfersMixin,
):
    """The files service (see the module's docstring); it adds only its job handlers."""

    def job_handlers(self) -> dict[str, Handler]:
        return {
            REGISTER_JOB: self.run_register,
            ROLL_JOB: self.run_roll,
            PURGE_JOB: self.run_purge,
        }
