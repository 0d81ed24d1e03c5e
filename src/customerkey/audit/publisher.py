"""Publishing signed checkpoints of the audit chain to the sinks, on demand and periodically.

``publish`` reads the head of the chain (one read transaction), signs a checkpoint of it and
writes it to every sink. When a sink fails the others still get it; ``SinkHealth`` is told
(key operations then fail closed, see ``audit.sinks``), the failure is logged, and
``AuditSinkUnavailable`` names every sink that failed. When all succeed the health recovers.

``tick`` is the periodic step, driven by the injected clock: at most once per ``interval`` it
publishes, when the log has grown since this process last published or while the sinks are
failing (so that a sink that comes back clears the failure). ``start``/``stop`` run ticks in a
thread (the first at once); long-running processes start it (``customerkey serve``'s processes,
``customerkey worker``), like the revocation relay. Several processes publishing is harmless:
each checkpoint is signed and true when made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from customerkey.audit.checkpoints import Checkpoint, CheckpointSigner
from customerkey.audit.log import AuditLog
from customerkey.audit.sinks import (
    MARKER_NAME,
    AuditSinkUnavailable,
    FileSink,
    Sink,
    SinkFailed,
    SinkHealth,
    SyslogSink,
    WebhookSink,
)
from customerkey.clock import Clock
from customerkey.config import Settings
from customerkey.storage.database import Database

CHECKPOINT_FILE_NAME = "audit-checkpoints.jsonl"
# How often the thread wakes to see whether a checkpoint is due (real seconds, at most).
POLL_SECONDS = 1.0
log = logging.getLogger("customerkey.audit")


def sinks_from_settings(settings: Settings, home: Path) -> list[Sink]:
    sinks: list[Sink] = [FileSink(settings.audit_checkpoint_file or home / CHECKPOINT_FILE_NAME)]
    if settings.audit_syslog:
        sinks.append(SyslogSink(settings.audit_syslog))
    if settings.audit_webhook_url:
        sinks.append(
            WebhookSink(
                settings.audit_webhook_url,
                token=settings.audit_webhook_token,
                ca_file=settings.audit_webhook_ca_file,
            )
        )
    return sinks


def health_for(settings: Settings, home: Path) -> SinkHealth:
    return SinkHealth(home / MARKER_NAME, fail_closed=settings.audit_fail_closed)


class CheckpointPublisher:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        signer: CheckpointSigner,
        sinks: Sequence[Sink],
        health: SinkHealth,
        clock: Clock,
        *,
        interval: timedelta | None,
    ) -> None:
        self._db = db
        self._audit = audit
        self.signer = signer
        self.sinks = list(sinks)
        self.health = health
        self._clock = clock
        self.interval = interval if interval and interval > timedelta(0) else None
        self._published: tuple[int, str] | None = None
        self._last_attempt: datetime | None = None
        self._lock = threading.Lock()  # one publish at a time
        self._lifecycle = threading.Lock()
        self._users = 0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def publish(self) -> Checkpoint:
        """Sign a checkpoint of the chain's head and write it to every sink; raises
        ``AuditSinkUnavailable`` when any sink failed (the others have it)."""
        with self._lock:
            return self._publish()

    def _publish(self) -> Checkpoint:
        now = self._clock.now()
        self._last_attempt = now
        with self._db.read() as session:
            seq, head = self._audit.head(session)
        checkpoint = self.signer.sign(seq, head, now)
        failures: list[str] = []
        for sink in self.sinks:
            try:
                sink.write(checkpoint)
            except SinkFailed as exc:
                failures.append(f"{sink.name}: {exc}")
        if failures:
            reason = "; ".join(failures)
            self.health.failed(reason)
            consequence = (
                "key operations are refused until a checkpoint reaches every sink"
                if self.health.fail_closed
                else "key operations go on (audit_fail_closed is off)"
            )
            log.warning(
                "audit checkpoint of record %d not delivered (%s); %s", seq, reason, consequence
            )
            raise AuditSinkUnavailable(f"The audit checkpoint could not be written: {reason}.")
        self.health.recovered()
        self._published = (seq, head)
        return checkpoint

    def tick(self) -> Checkpoint | None:
        """Publish when due (see the module docstring); returns what was published. Never
        raises for a sink that failed: the failure is logged and remembered."""
        if self.interval is None:
            return None
        with self._lock:
            now = self._clock.now()
            if self._last_attempt is not None and now - self._last_attempt < self.interval:
                return None
            if self._published is not None and self.health.reason() is None:
                with self._db.read() as session:
                    head = self._audit.head(session)
                if head == self._published:
                    self._last_attempt = now
                    return None
            try:
                return self._publish()
            except AuditSinkUnavailable:
                return None

    def _loop(self, stop: threading.Event) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # the database is away, say: the next tick retries
                log.exception("audit checkpoint tick failed")
            if stop.wait(min(POLL_SECONDS, self.interval.total_seconds() if self.interval else 1)):
                return

    def start(self) -> None:
        """Run ticks in a thread until ``stop`` (a second start only counts)."""
        with self._lifecycle:
            self._users += 1
            if self._users > 1 or self.interval is None:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(self._stop,), daemon=True, name="customerkey-checkpoints"
            )
            self._thread.start()

    def stop(self, *, all_users: bool = False) -> None:
        """One user is done (``all_users``: every one); the last one stops the thread."""
        with self._lifecycle:
            if self._users == 0:
                return
            self._users = 0 if all_users else self._users - 1
            if self._users > 0:
                return
            stop, thread = self._stop, self._thread
            self._stop = self._thread = None
        if stop is not None and thread is not None:
            stop.set()
            thread.join(timeout=30)

    @contextmanager
    def running(self) -> Iterator[CheckpointPublisher]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
