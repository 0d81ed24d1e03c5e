"""The worker registry: who is working, on which host, and whether it still lives.

A worker (``customerkey worker``, a server's worker thread, a command running a job itself)
announces itself in the ``workers`` table (``WorkerRow``) under an identity of three parts:
the host id (``CUSTOMERKEY_HOST_ID``; default ``/etc/machine-id``, else the hostname), the
kernel's boot id (``/proc/sys/kernel/random/boot_id``) and its pid (with the pid namespace the
pid belongs to). While announced, a ``Heartbeat`` thread renews the row's ``heartbeat_at``
every ``heartbeat_interval`` (``CUSTOMERKEY_WORKER_HEARTBEAT_SECONDS``, default 5 s), so the
heartbeat goes on while a long batch runs; retiring stops it and removes the row.

A worker is dead when

- its heartbeat is older than ``heartbeat_timeout`` (``CUSTOMERKEY_WORKER_TIMEOUT_SECONDS``,
  default 20 s): judged the same from every host, by the judge's clock (host clocks must agree
  to well within the timeout); or
- (the fast path) it ran in this very kernel and pid namespace (same host id, boot id and pid
  namespace as the judge) and its pid no longer names a live process. A worker of another
  boot (the host rebooted, and its pid may have been reused) or of another pid namespace (a
  container sharing the machine id) is never judged by its pid, only by its heartbeat.

A row without a heartbeat (written before migration 0012) is judged by the fast path only;
its jobs otherwise wait for their leases. ``release_dead_workers`` (every worker, on start and
every couple of seconds while idle) returns the running jobs of dead workers to the queue
exactly as the lease running out would have (lease cleared, checkpoint kept, the attempt the
claim counted stays counted: it counts towards ``MAX_CLAIMS``, not ``MAX_ATTEMPTS``) and
deletes their rows; ``list_jobs`` and ``get`` show such a job ``interrupted`` until then. A
worker declared dead that was only slow finds out at its next checkpoint (``LeaseLost``) and
writes nothing more for that job; its next heartbeat announces it again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from customerkey.clock import Clock
from customerkey.config import default_host_id
from customerkey.storage.database import Database
from customerkey.storage.models import JobRow, WorkerRow

log = logging.getLogger("customerkey.jobs")

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
DEFAULT_HEARTBEAT = timedelta(seconds=5)
DEFAULT_TIMEOUT = timedelta(seconds=20)


@cache
def boot_id() -> str | None:
    """The running kernel's boot id (a random UUID per boot); None without procfs."""
    try:
        return BOOT_ID_FILE.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def pid_namespace() -> str | None:
    """This process's pid namespace (``pid:[4026531836]``); None without procfs."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


@dataclass(frozen=True)
class Identity:
    """Who a worker row says its worker is."""

    host: str
    pid: int
    boot_id: str | None
    pid_namespace: str | None


class _ThisProcess:
    """``announce``'s default: the announcing process's own boot id and pid namespace."""


THIS_PROCESS = _ThisProcess()


class WorkerRegistry:
    """The registry half of ``JobQueue`` (which supplies how a job is given back)."""

    db: Database
    _clock: Clock

    def __init__(
        self,
        *,
        host_id: str | None = None,
        heartbeat: timedelta = DEFAULT_HEARTBEAT,
        heartbeat_timeout: timedelta = DEFAULT_TIMEOUT,
    ) -> None:
        if heartbeat <= timedelta(0) or heartbeat_timeout <= heartbeat:
            raise ValueError("the heartbeat timeout must exceed a positive heartbeat interval")
        self.host_id = host_id or default_host_id()
        self.heartbeat_interval = heartbeat
        self.heartbeat_timeout = heartbeat_timeout

    # ------------------------------------------------------------------ given by JobQueue

    def _requeue_of_dead(self, job: JobRow, now: datetime) -> None:
        raise NotImplementedError

    def _release(self, row: JobRow, now: datetime) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ identity and judging

    def _local_hosts(self, host: str | None = None) -> set[str]:
        """The host ids that may name this host: its id, its hostname (rows of older
        versions, and callers that name it so), and ``host`` when given."""
        return {self.host_id, socket.gethostname(), *([host] if host else [])}

    def is_dead(self, worker: WorkerRow, now: datetime, local_hosts: set[str]) -> bool:
        """Whether ``worker`` is dead (see the module docstring)."""
        if (
            worker.host in local_hosts
            and worker.boot_id == boot_id()
            and worker.pid_namespace == pid_namespace()
            and not pid_alive(worker.pid)
        ):
            return True
        return (
            worker.heartbeat_at is not None and worker.heartbeat_at < now - self.heartbeat_timeout
        )

    def holders_gone(self, session: Session, rows: Sequence[JobRow]) -> set[str]:
        """The ids of the running jobs among ``rows`` whose holder is gone: the lease ran
        out, or the holder is a dead worker (of any host)."""
        now = self._clock.now()
        running = [r for r in rows if r.state in ("running", "cancelling")]
        if not running:
            return set()
        owners = {r.lease_owner for r in running if r.lease_owner}
        workers = {
            w.id: w for w in session.scalars(select(WorkerRow).where(WorkerRow.id.in_(owners)))
        }
        local = self._local_hosts()
        gone = set()
        for row in running:
            worker = workers.get(row.lease_owner or "")
            expired = row.lease_expires_at is None or row.lease_expires_at < now
            if expired or (worker is not None and self.is_dead(worker, now, local)):
                gone.add(row.id)
        return gone

    # ------------------------------------------------------------------ the registry

    def announce(
        self,
        worker_id: str,
        host: str | None = None,
        pid: int | None = None,
        *,
        boot: str | _ThisProcess | None = THIS_PROCESS,
        namespace: str | _ThisProcess | None = THIS_PROCESS,
    ) -> None:
        """Enter ``worker_id`` in the registry (host: this host's id, pid: this process's by
        default), or renew its heartbeat if it is there. ``boot`` and ``namespace`` default to
        this process's own (tests pass others)."""
        now = self._clock.now()
        with self.db.transaction() as session:
            row = session.get(WorkerRow, worker_id)
            if row is None:
                session.add(
                    WorkerRow(
                        id=worker_id,
                        host=host or self.host_id,
                        pid=os.getpid() if pid is None else pid,
                        boot_id=boot_id() if isinstance(boot, _ThisProcess) else boot,
                        pid_namespace=(
                            pid_namespace() if isinstance(namespace, _ThisProcess) else namespace
                        ),
                        started_at=now,
                        last_seen_at=now,
                        heartbeat_at=now,
                    )
                )
            else:
                row.last_seen_at = now
                row.heartbeat_at = now

    def retire(self, worker_id: str) -> None:
        """Remove a worker from the registry, first giving back any job it still holds (it
        stopped in the middle of one: Ctrl-C), so that nobody waits for that job's lease."""
        now = self._clock.now()
        with self.db.transaction() as session:
            for job in session.scalars(
                select(JobRow)
                .where(JobRow.lease_owner == worker_id, JobRow.state.in_(("running", "cancelling")))
                .with_for_update()
            ):
                self._release(job, now)
            row = session.get(WorkerRow, worker_id)
            if row is not None:
                session.delete(row)

    def release_dead_workers(self, host: str | None = None) -> list[str]:
        """Return the running jobs of dead workers, of any host, to the queue (lease cleared,
        checkpoint kept) and delete those workers' rows; returns the released job ids.
        ``host`` adds a name under which this host's rows may be judged by pid."""
        now = self._clock.now()
        local = self._local_hosts(host)
        with self.db.transaction() as session:
            rows = list(session.scalars(select(WorkerRow)))
            dead = [row for row in rows if self.is_dead(row, now, local)]
            if not dead:
                return []
            dead_ids = [row.id for row in dead]
            jobs = list(
                session.scalars(
                    select(JobRow)
                    .where(
                        JobRow.state.in_(("running", "cancelling")),
                        JobRow.lease_owner.in_(dead_ids),
                    )
                    .with_for_update()
                )
            )
            for job in jobs:
                log.warning("releasing job %s of dead worker %s", job.id, job.lease_owner)
                self._requeue_of_dead(job, now)
            # A bulk delete: another worker releasing at the same time may have removed them.
            session.execute(delete(WorkerRow).where(WorkerRow.id.in_(dead_ids)))
        log.info("removed dead workers %s", ", ".join(dead_ids))
        return [job.id for job in jobs]

    def live_workers(self, within: timedelta | None = None) -> list[str]:
        """The workers whose heartbeat (or last announcement) is within ``within`` (default:
        the heartbeat timeout)."""
        cutoff = self._clock.now() - (within if within is not None else self.heartbeat_timeout)
        with self.db.transaction() as session:
            return list(
                session.scalars(select(WorkerRow.id).where(WorkerRow.last_seen_at >= cutoff))
            )


class Heartbeat:
    """Calls ``beat`` every ``interval`` seconds from a daemon thread, between ``start`` and
    ``stop`` (both idempotent). A beat that fails is logged and retried at the next one."""

    def __init__(self, beat: Callable[[], object], interval: float, *, name: str) -> None:
        self._beat = beat
        self.interval = interval
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), daemon=True, name=self.name
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self._beat()
            except Exception:
                log.warning("heartbeat of %s failed; retrying", self.name, exc_info=True)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a running process on this host. A zombie (killed, not yet
    reaped by its parent) is dead: it will never renew a lease again."""
    if pid <= 0:
        return True  # not a real pid (0 and negatives address process groups): do not judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # with procfs, the process has just gone
    except OSError:
        return True  # os.kill said it was there
    # "pid (comm) state ...": comm may hold spaces and parentheses, so split at the last ")".
    state = stat.rpartition(b")")[2].split(maxsplit=1)[:1]
    return state != [b"Z"]
