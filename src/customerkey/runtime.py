"""The composition root: builds the platform's services from settings, for the CLI and the API.

``Runtime.open`` makes sure the home folder exists (creating it and the master key on first
use), connects to the database and runs pending migrations, then wires the services with
one clock and one source of randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

from customerkey.audit import AuditLog
from customerkey.clock import Clock, SystemClock
from customerkey.config import Settings
from customerkey.home import Home
from customerkey.rng import Rng, SystemRng
from customerkey.service.auditing import AuditService
from customerkey.service.principals import PrincipalService
from customerkey.storage.database import Database
from customerkey.vault.protection import SoftwareKeyProtector
from customerkey.vault.service import KeyVaultService


@dataclass
class Runtime:
    settings: Settings
    home: Home
    db: Database
    clock: Clock
    rng: Rng
    audit: AuditLog
    vault: KeyVaultService
    principals: PrincipalService
    audit_log: AuditService

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        rng: Rng | None = None,
        migrate: bool = True,
    ) -> Runtime:
        settings = settings or Settings()
        clock = clock or SystemClock()
        rng = rng or SystemRng()
        home = Home(settings.home)
        home.init(rng=rng)
        db = Database(settings.resolved_database_url())
        if migrate:
            db.migrate()
        master_key = home.master_key()
        master_key_id = home.master_key_id()
        audit = AuditLog(clock)
        vault = KeyVaultService(
            db,
            protector=SoftwareKeyProtector(master_key, master_key_id),
            master_key=master_key,
            master_key_id=master_key_id,
            clock=clock,
            rng=rng,
            audit=audit,
        )
        principals = PrincipalService(db, clock=clock, rng=rng, audit=audit)
        return cls(
            settings, home, db, clock, rng, audit, vault, principals, AuditService(db, audit)
        )

    def close(self) -> None:
        self.db.dispose()
