"""Which master key a database belongs to.

The ``installation`` table holds one row naming the master key the database's data is sealed
under, by its id (``home.master_key_id_of``: a non-secret fingerprint, the one every sealed
header carries). The first process to open the database records its key; every process after
it, on this host or another, checks its own key against that row before it writes anything.
So a host started against a shared PostgreSQL database with a home of its own, which would
make a new master key and seal data that no other host could open, stops at once with
``MasterKeyMismatch`` instead. Two processes opening a new database together both try to
record theirs; the one that loses reads the winner's row and is judged against it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError

from customerkey.errors import MasterKeyMismatch
from customerkey.storage.database import Database
from customerkey.storage.models import InstallationRow

_ROW = 1


def claim_installation(db: Database, master_key_id: str, now: datetime) -> None:
    """Record ``master_key_id`` as the database's master key if none is, else check it is the
    one recorded (raises ``MasterKeyMismatch``; nothing is written then)."""
    recorded = _recorded(db)
    if recorded is None:
        try:
            with db.transaction() as session:
                session.add(InstallationRow(id=_ROW, master_key_id=master_key_id, recorded_at=now))
            return
        except IntegrityError:
            recorded = _recorded(db)  # another process recorded its key first
    if recorded != master_key_id:
        raise MasterKeyMismatch(
            f"This database belongs to the installation whose master key is {recorded}; this "
            f"host's master key is {master_key_id}. Give this host that installation's master "
            "key (docs/DEPLOY.md) instead of a new one."
        )


def _recorded(db: Database) -> str | None:
    with db.read() as session:
        row = session.get(InstallationRow, _ROW)
        return row.master_key_id if row is not None else None
