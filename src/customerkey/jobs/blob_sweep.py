"""The blob sweep: removing blob files that no row references, and dead writers' staging files.

Every workload writes a blob before it commits the row naming it, so a process killed in
between (a ``file put`` SIGKILLed mid-upload, a mail write or import, a mailbox re-key batch)
leaves a blob that is never listed or read but takes space. The sweep knows no workload's
names: each workload registers a ``BlobOwner`` for its top folder, which says which unit a
blob name belongs to (a mail item blob stands alone; a file version folder is one unit,
since an upload commits all its chunks at once) and which of a unit's names rows reference.

``BlobSweeper.sweep`` walks each owner's folder one container folder (a mailbox, a site) at a
time and asks the owner only about the names it may delete, in batches, in read transactions
that take no write lock; files are deleted only after those transactions have ended. A blob
is deleted only when nothing references it and it is older than ``clock.now() - grace``: the
grace covers writers that stored a blob and have not committed its row yet. A unit counts as
one: none of its blobs is deleted while any blob in it is younger than the grace or (for
folder units) a live writer is staging a file in it. Deletion uses
``BlobStore.delete_unless_newer``, so a blob rewritten meanwhile (a retried import or
re-key writes the same name again) survives. Names no owner recognises are counted and left
alone. An owner whose rows outlive their blobs (``PrunesRows``: the staged copies of mail
imports, ``mail-staging/``, whose rows say who may still use them) has the rows of the units
nobody will use deleted after the walk, so abandoned staging goes after the grace, rows and
objects. Staging files of dead writers go too (``BlobStore.remove_dead_temp_files``), and so do
uploads begun before the cutoff and never completed (``BlobStore.abort_stale_uploads``: an
S3 multipart upload whose writer died; they count as staging files). A sweep
that removed anything writes one ``BlobSweep`` audit record with its counts; a dry run removes
nothing, writes no record and reports what it would have removed.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.orm import Session

from customerkey.actor import Actor
from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.errors import Forbidden
from customerkey.identity import authorize as authz
from customerkey.jobs.queue import pid_alive
from customerkey.storage.blob_store import BlobInfo, BlobStore
from customerkey.storage.database import Database

log = logging.getLogger("customerkey.blob_sweep")

AUDIT_OPERATION = "BlobSweep"
DEFAULT_GRACE = timedelta(hours=1)
# Names looked up per query: few enough for any database's parameter limit.
LOOKUP_BATCH = 500
# Names kept in a report; the counts are always complete.
LISTED_LIMIT = 1000

Progress = Callable[[int, int], None]  # (folders done, folders in all)


class BlobOwner(Protocol):
    """A workload's blobs, as the sweep sees them.

    ``prefix`` is its top folder. ``unit_of(name)`` is the unit a blob belongs to (None: not
    a name of this owner's, left alone); with ``units_are_folders`` a unit is a folder whose
    blobs stand or fall together, and a live writer staging a file in it keeps it.
    ``referenced(session, folder, units)`` returns which blob names of those units rows
    reference, for the container ``folder`` they are in."""

    @property
    def prefix(self) -> str: ...

    @property
    def units_are_folders(self) -> bool: ...

    def unit_of(self, name: str) -> str | None: ...

    def referenced(self, session: Session, folder: str, units: Iterable[str]) -> set[str]: ...


@runtime_checkable
class PrunesRows(Protocol):
    """An owner whose rows outlive their blobs (a staged import's row): after the walk,
    ``prune_rows(session, cutoff)`` deletes the rows nobody will use any more, whose blobs
    the walk removed (or the next one will); returns how many."""

    def prune_rows(self, session: Session, cutoff: datetime) -> int: ...


@dataclass(frozen=True)
class SweepReport:
    dry_run: bool
    cutoff: datetime  # unreferenced blobs last written before this were (or would be) removed
    folders: int  # mailbox and site folders walked
    blobs: int  # blob files seen
    recent: int  # blob files within the grace, not considered
    orphans: int  # unreferenced blobs removed (or that would be)
    orphan_bytes: int
    temp_files: int  # dead writers' staging files removed (or that would be)
    temp_bytes: int
    unknown: int  # files whose names follow no pattern of ours, left alone
    removed: Sequence[str] = ()  # the first LISTED_LIMIT names removed (or that would be)

    @property
    def bytes_reclaimed(self) -> int:
        return self.orphan_bytes + self.temp_bytes

    @property
    def listed_all(self) -> bool:
        return len(self.removed) == self.orphans + self.temp_files

    def counts(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "cutoff": self.cutoff.isoformat(),
            "folders": self.folders,
            "blobs": self.blobs,
            "recent": self.recent,
            "orphans": self.orphans,
            "orphan_bytes": self.orphan_bytes,
            "temp_files": self.temp_files,
            "temp_bytes": self.temp_bytes,
            "bytes_reclaimed": self.bytes_reclaimed,
            "unknown": self.unknown,
        }


@dataclass
class _Tally:
    dry_run: bool
    cutoff: datetime
    folders: int = 0
    blobs: int = 0
    recent: int = 0
    orphans: int = 0
    orphan_bytes: int = 0
    temp_files: int = 0
    temp_bytes: int = 0
    unknown: int = 0
    removed: list[str] = field(default_factory=list)

    def note_removed(self, name: str) -> None:
        if len(self.removed) < LISTED_LIMIT:
            self.removed.append(name)

    def report(self) -> SweepReport:
        return SweepReport(
            dry_run=self.dry_run,
            cutoff=self.cutoff,
            folders=self.folders,
            blobs=self.blobs,
            recent=self.recent,
            orphans=self.orphans,
            orphan_bytes=self.orphan_bytes,
            temp_files=self.temp_files,
            temp_bytes=self.temp_bytes,
            unknown=self.unknown,
            removed=tuple(self.removed),
        )


class BlobSweeper:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        clock: Clock,
        grace: timedelta = DEFAULT_GRACE,
        *,
        audit: AuditLog | None = None,
        is_alive: Callable[[int], bool] = pid_alive,
        owners: Sequence[BlobOwner] = (),
    ) -> None:
        if grace < timedelta(0):
            raise ValueError("the sweep's grace cannot be negative")
        self.db = db
        self.blobs = blobs
        self.grace = grace
        self._clock = clock
        self._audit = audit or AuditLog(clock)
        self._is_alive = is_alive
        self.owners = list(owners)

    def sweep(
        self, actor: Actor, *, dry_run: bool = False, progress: Progress | None = None
    ) -> SweepReport:
        """Remove (with ``dry_run``: only report) every unreferenced blob older than the grace
        and every staging file of a dead writer, under every owner's folder."""
        if not authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform()):
            raise Forbidden("Only the platform operator can sweep the blob store.")
        tally = _Tally(dry_run=dry_run, cutoff=self._clock.now() - self.grace)
        total = sum(1 for owner in self.owners for _ in self.blobs.iter_folders(owner.prefix))
        if progress is not None:
            progress(0, total)
        for owner in self.owners:
            for folder in self.blobs.iter_folders(owner.prefix):
                self._sweep_folder(owner, folder, tally)
                tally.folders += 1
                if progress is not None:
                    progress(tally.folders, max(total, tally.folders))
            for info in self.blobs.abort_stale_uploads(owner.prefix, tally.cutoff, dry_run=dry_run):
                tally.temp_files += 1
                tally.temp_bytes += info.size
                tally.note_removed(info.name)
            if isinstance(owner, PrunesRows) and not dry_run:
                with self.db.transaction() as session:
                    pruned = owner.prune_rows(session, tally.cutoff)
                if pruned:
                    log.info("blob sweep: forgot %d abandoned %s row(s)", pruned, owner.prefix)
        report = tally.report()
        if not dry_run and (report.orphans or report.temp_files):
            with self.db.transaction() as session:
                self._audit.append(
                    session,
                    principal=actor.audit_name,
                    actor_id=actor.object_id or None,
                    operation=AUDIT_OPERATION,
                    request_id=actor.request_id,
                    details={**report.counts(), "grace_seconds": self.grace.total_seconds()},
                )
        return report

    def _sweep_folder(self, owner: BlobOwner, folder: str, tally: _Tally) -> None:
        """One container folder (``mail/<mailbox>``, ``files/<site>``), unit by unit."""
        staged: list[BlobInfo] = []
        emptied: list[str] = []

        def unit_key(info: BlobInfo) -> str:
            if info.is_staging:
                return info.name.rsplit("/", 1)[0]
            return owner.unit_of(info.name) or info.name

        def units() -> Iterator[tuple[str, list[BlobInfo]]]:
            listing = self.blobs.iter_blobs(folder, staging=True)
            for unit, group in itertools.groupby(listing, key=unit_key):
                blobs: list[BlobInfo] = []
                busy = False
                for info in group:
                    if info.is_staging:
                        staged.append(info)
                        assert info.writer_pid is not None
                        if owner.units_are_folders and self._alive(info.writer_pid):
                            busy = True
                        continue
                    tally.blobs += 1
                    if owner.unit_of(info.name) is None:
                        tally.unknown += 1
                        continue
                    blobs.append(info)
                    busy = busy or info.mtime >= tally.cutoff
                if busy:
                    tally.recent += len(blobs)
                elif blobs:
                    yield unit, blobs

        for batch in _unit_batches(units(), LOOKUP_BATCH):
            with self.db.read() as session:
                referenced = owner.referenced(session, folder, [unit for unit, _ in batch])
            for unit, blobs in batch:
                kept = False
                for info in blobs:
                    if info.name in referenced or not self._remove_orphan(info, tally):
                        kept = True
                if not kept:
                    emptied.append(unit)
        self._remove_temp_files(staged, tally)
        if owner.units_are_folders and not tally.dry_run:
            for unit in emptied:
                self.blobs.remove_empty_folder(unit)

    # ------------------------------------------------------------------ both

    def _alive(self, pid: int) -> bool:
        # As sweep_temp_files judges: this process's own staging files are live ones.
        return pid == os.getpid() or self._is_alive(pid)

    def _remove_orphan(self, info: BlobInfo, tally: _Tally) -> bool:
        """Remove an unreferenced blob (unless a writer has just replaced it); says whether
        it was (or, in a dry run, would be) removed."""
        if tally.dry_run:
            size: int | None = info.size
        else:
            size = self.blobs.delete_unless_newer(info.name, tally.cutoff)
        if size is None:
            return False
        tally.orphans += 1
        tally.orphan_bytes += size
        tally.note_removed(info.name)
        return True

    def _remove_temp_files(self, staged: list[BlobInfo], tally: _Tally) -> None:
        """The dead writers' staging files among those the folder's walk found."""
        removed = self.blobs.remove_dead_temp_files(
            staged, is_alive=self._is_alive, dry_run=tally.dry_run
        )
        for info in removed:
            tally.temp_files += 1
            tally.temp_bytes += info.size
            tally.note_removed(info.name)


def _unit_batches(
    units: Iterator[tuple[str, list[BlobInfo]]], size: int
) -> Iterator[list[tuple[str, list[BlobInfo]]]]:
    """Units in batches of about ``size`` blob names to look up."""
    batch: list[tuple[str, list[BlobInfo]]] = []
    names = 0
    for unit in units:
        batch.append(unit)
        names += len(unit[1])
        if names >= size:
            yield batch
            batch, names = [], 0
    if batch:
        yield batch
