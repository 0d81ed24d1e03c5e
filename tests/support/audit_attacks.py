"""What someone with write access to the database, but not the master key, can do to the audit
chain, and small real endpoints (a syslog collector, a webhook) that receive checkpoints.

The attacker knows the published chain format (``customerkey.audit.chain``) and can recompute
plain SHA-256 hashes; it cannot compute the keyed HMAC.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import delete, select

from customerkey.audit.chain import PLAIN, canonical, plain_hash
from customerkey.storage.database import Database
from customerkey.storage.models import AuditRow


def rebuild_plain(
    db_url: str,
    *,
    from_seq: int,
    edit: Callable[[AuditRow], None] | None = None,
    keep_chain_version: bool = False,
) -> None:
    """Apply ``edit`` to record ``from_seq``, then re-chain it and every record after it with
    plain SHA-256 (as ``chain`` 0, or keeping the stored version when ``keep_chain_version``),
    so that every record links to the one before it."""
    db = Database(db_url)
    try:
        with db.transaction() as session:
            rows = list(session.scalars(select(AuditRow).order_by(AuditRow.seq)))
            prev = next((r.hash for r in rows if r.seq == from_seq - 1), "0" * 64)
            for row in rows:
                if row.seq < from_seq:
                    continue
                if row.seq == from_seq and edit is not None:
                    edit(row)
                if not keep_chain_version:
                    row.chain = PLAIN
                row.prev_hash = prev
                row.hash = plain_hash(prev, canonical(row, row.chain))
                prev = row.hash
                session.flush()
    finally:
        db.dispose()


def cut_tail(db_url: str, *, keep: int) -> None:
    """Delete every record after the first ``keep``."""
    db = Database(db_url)
    try:
        with db.transaction() as session:
            session.execute(delete(AuditRow).where(AuditRow.seq > keep))
    finally:
        db.dispose()


@contextmanager
def udp_collector() -> Iterator[socket.socket]:
    """A UDP socket on loopback, as a syslog collector listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(30)  # a bound on a failure, never a wait for success
    try:
        yield sock
    finally:
        sock.close()


@dataclass
class Webhook:
    url: str
    status: int = 204
    bodies: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)


@contextmanager
def webhook_server(status: int = 204) -> Iterator[Webhook]:
    """A real HTTP server on loopback that records each POST and answers ``status``."""
    hook = Webhook(url="", status=status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            hook.bodies.append(json.loads(self.rfile.read(length)))
            hook.authorizations.append(self.headers.get("Authorization"))
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/checkpoints"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
