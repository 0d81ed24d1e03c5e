"""The composition root: builds the platform's services from settings, for the CLI and the API.

``Runtime.open`` makes sure the home folder exists (creating it and the master key on first
use), reads the master key (or, in a home whose master key is sealed by the HSM, has the token
unseal it first: ``hsm.master_seal``; without the token the start fails), connects to the
database and runs pending migrations, ensures the built-in workload principals, then wires the
services with one clock and one source of randomness. Narrowing access through the vault clears
this process's DEP-key cache at once (a vault change listener); ``revocations`` follows the
revocation log so that changes made by any other process on the same database clear it too,
within a poll interval. Long-running processes start it (``customerkey serve`` and each of its
worker processes, ``Worker.run_forever``); one-shot commands do not need it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from customerkey.audit.chain import ChainKey
from customerkey.audit.checkpoints import CheckpointSigner
from customerkey.audit.log import AuditLog
from customerkey.audit.publisher import CheckpointPublisher, health_for, sinks_from_settings
from customerkey.audit.reader import AuditService
from customerkey.clock import Clock, SystemClock
from customerkey.config import RemoteVault, Settings, load_settings
from customerkey.crypto.sealing import MasterSealer
from customerkey.home import Home, master_key_id_of
from customerkey.hsm import open_protector
from customerkey.hsm.master_seal import unseal_master_key
from customerkey.identity.directory import PrincipalService
from customerkey.identity.tenants import TenantService
from customerkey.identity.workload_principals import SERVICE_TENANT, WORKLOAD_PRINCIPALS
from customerkey.jobs.blob_sweep import BlobSweeper
from customerkey.jobs.queue import JobQueue
from customerkey.jobs.registry import JobKind, JobRegistry
from customerkey.jobs.worker import Handler, Worker
from customerkey.keyprovider.base import KeyProvider
from customerkey.keyprovider.local import InProcessKeyProvider
from customerkey.keyprovider.router import KeyProviderRouter
from customerkey.keys.cache import DepKeyCache
from customerkey.keys.deps import DataEncryptionPolicies
from customerkey.keys.usage import KeyUsageService
from customerkey.rng import Rng, SystemRng
from customerkey.storage.blob_store import open_blob_store
from customerkey.storage.database import Database
from customerkey.storage.installation import claim_installation
from customerkey.storage.revocations import KEEP, Revocation, RevocationRelay
from customerkey.vault.hsm import HsmProtector
from customerkey.vault.protection import SoftwareKeyProtector
from customerkey.vault.service import KeyVaultService
from customerkey.workloads.files.blobs import FilesBlobs
from customerkey.workloads.files.service import FilesService, FilesUsage
from customerkey.workloads.mail.blobs import MailBlobs
from customerkey.workloads.mail.service import MailService, MailUsage
from customerkey.workloads.mail.staging import StagedImports


def _remote_provider(remote: RemoteVault) -> KeyProvider:
    from customerkey.azure.credential import ClientSecretCredential
    from customerkey.keyprovider.remote import READ_TIMEOUT, RemoteKeyProvider

    verify: str | bool = remote.ca_file or True
    # A hung token endpoint must be given up on as soon as a hung vault is, so that the other
    # root key (or the availability key) is tried within seconds.
    credential = ClientSecretCredential(
        remote.tenant,
        remote.client_id,
        remote.client_secret,
        authority=remote.authority,
        verify=verify,
        timeout=READ_TIMEOUT,
    )
    return RemoteKeyProvider(credential, verify=verify)


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
    tenants: TenantService
    policies: DataEncryptionPolicies
    mail: MailService
    jobs: JobQueue
    key_cache: DepKeyCache
    revocations: RevocationRelay
    usage: KeyUsageService
    files: FilesService
    blob_sweeper: BlobSweeper
    checkpoints: CheckpointPublisher
    routers: dict[str, KeyProviderRouter] = field(default_factory=dict)
    # The HSM holding RSA-HSM and EC-HSM keys (``customerkey.hsm``); None: all in software.
    hsm: HsmProtector | None = None
    # The unsealed master key, for front-ends that derive keys of their own from it (HKDF with
    # their own salt: the console's session cookies); never shown.
    master_key: bytes = field(default=b"", repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        rng: Rng | None = None,
        migrate: bool = True,
    ) -> Runtime:
        settings = settings or load_settings()
        clock = clock or SystemClock()
        rng = rng or SystemRng()
        home = Home(settings.home)
        home.init(rng=rng)
        db = Database(settings.resolved_database_url())
        db.storage.retry_after = settings.storage_retry_after_seconds
        if migrate:
            db.migrate()
        if home.is_sealed():
            master_key = unseal_master_key(settings, home, rng)
        else:
            master_key = home.master_key()
        master_key_id = master_key_id_of(master_key)
        claim_installation(db, master_key_id, clock.now())
        # The audit chain is keyed under the master key; key operations wait on the sinks of
        # its signed checkpoints (fail closed, ``audit.sinks``).
        sink_health = health_for(settings, home.path)
        audit = AuditLog(clock, chain_key=ChainKey(master_key), gate=sink_health.check)
        checkpoints = CheckpointPublisher(
            db,
            audit,
            CheckpointSigner(master_key, master_key_id),
            sinks_from_settings(settings, home.path),
            sink_health,
            clock,
            interval=timedelta(seconds=settings.audit_checkpoint_seconds),
        )
        # Opened before anything else uses keys: a token that cannot be used stops the start.
        hsm = open_protector(settings, master_key=master_key, rng=rng)
        vault = KeyVaultService(
            db,
            protector=SoftwareKeyProtector(master_key, master_key_id),
            master_key=master_key,
            master_key_id=master_key_id,
            clock=clock,
            rng=rng,
            audit=audit,
            hsm=hsm,
        )
        if migrate:
            # Versions made before public-key tags get theirs once checked (a no-op after).
            vault.backfill_public_tags()
        principals = PrincipalService(db, clock=clock, rng=rng, audit=audit)
        routers: dict[str, KeyProviderRouter] = {}
        for workload in WORKLOAD_PRINCIPALS:
            principal = principals.ensure(
                workload.app_id,
                kind="service",
                tenant=SERVICE_TENANT,
                display_name=workload.display_name,
                builtin=True,
            )
            routers[workload.workload] = KeyProviderRouter(
                InProcessKeyProvider(vault, principal.actor()),
                local_tenant_of=lambda uri: vault.vault_tenant(uri.vault),
            )
        for remote in settings.remote_vaults:
            provider = _remote_provider(remote)
            for kind, router in routers.items():
                if remote.workload in ("all", kind):
                    router.add_remote(remote.domain, provider, tenants=remote.tenants)
        cache = DepKeyCache(clock, timedelta(seconds=settings.dek_cache_ttl_seconds))

        def revoke(vault_name: str, _key: str, _change: str) -> None:
            cache.invalidate_vault(vault_name)

        vault.add_change_listener(revoke)

        def revoked_elsewhere(revocation: Revocation) -> None:
            cache.invalidate_vault(revocation.vault)

        relay = RevocationRelay(
            db,
            revoked_elsewhere,
            clock=clock,
            keep=max(KEEP, timedelta(seconds=settings.dek_cache_ttl_seconds)),
        )
        sealer = MasterSealer(master_key, master_key_id)
        policies = DataEncryptionPolicies(
            db,
            clock=clock,
            rng=rng,
            audit=audit,
            sealer=sealer,
            providers=routers,
            cache=cache,
        )
        jobs = JobQueue(
            db,
            clock=clock,
            lease=timedelta(seconds=settings.job_lease_seconds),
            host_id=settings.resolved_host_id(),
            heartbeat=timedelta(seconds=settings.worker_heartbeat_seconds),
            heartbeat_timeout=timedelta(seconds=settings.worker_timeout_seconds),
        )
        blobs = open_blob_store(settings, home.blobs_dir)
        mail = MailService(
            db,
            clock=clock,
            rng=rng,
            audit=audit,
            policies=policies,
            sealer=sealer,
            blobs=blobs,
            jobs=jobs,
            rekey_batch=settings.rekey_batch,
            refresh_batch=settings.refresh_batch,
            import_batch=settings.import_batch,
        )
        files = FilesService(
            db,
            clock=clock,
            rng=rng,
            audit=audit,
            policies=policies,
            sealer=sealer,
            blobs=blobs,
            jobs=jobs,
            rewrap_batch=settings.refresh_batch,
        )
        return cls(
            settings=settings,
            home=home,
            db=db,
            clock=clock,
            rng=rng,
            audit=audit,
            vault=vault,
            principals=principals,
            audit_log=AuditService(db, audit, checkpoints),
            tenants=TenantService(db, clock=clock, audit=audit),
            policies=policies,
            mail=mail,
            jobs=jobs,
            key_cache=cache,
            revocations=relay,
            usage=KeyUsageService(db, vault, [MailUsage(), FilesUsage()]),
            files=files,
            blob_sweeper=BlobSweeper(
                db,
                blobs,
                clock,
                timedelta(seconds=settings.blob_sweep_grace_seconds),
                audit=audit,
                owners=[
                    MailBlobs(),
                    FilesBlobs(),
                    StagedImports(clock, timedelta(seconds=settings.blob_sweep_grace_seconds)),
                ],
            ),
            checkpoints=checkpoints,
            routers=routers,
            hsm=hsm,
            master_key=master_key,
        )

    def job_kinds(self) -> dict[str, JobKind]:
        """Every workload's job kinds, collected through one registry."""
        registry = JobRegistry()
        registry.register_all(self.mail.job_handlers())
        registry.register_all(self.files.job_handlers())
        return registry.kinds()

    def job_handlers(self) -> dict[str, Handler]:
        return {kind: entry.handler for kind, entry in self.job_kinds().items()}

    def worker(self, **kwargs: object) -> Worker:
        kwargs.setdefault("while_running", self._background)
        return Worker(self.jobs, self.job_handlers(), **kwargs)  # type: ignore[arg-type]

    @contextmanager
    def _background(self) -> Iterator[None]:
        """What a long-running worker keeps going: the revocation relay, audit checkpoints."""
        with self.revocations.running(), self.checkpoints.running():
            yield

    def release_hsm_before_fork(self) -> None:
        """Before ``os.fork()``: no PKCS#11 state may cross it (``reopen_hsm_after_fork``)."""
        if self.hsm is not None:
            self.hsm.release_before_fork()

    def reopen_hsm_after_fork(self) -> None:
        """In a forked process: its own PKCS#11 initialisation, login and sessions."""
        if self.hsm is not None:
            self.hsm.reopen_after_fork()

    def close(self) -> None:
        self.checkpoints.stop(all_users=True)
        self.revocations.close()
        if self.hsm is not None:
            self.hsm.close()
        self.db.dispose()
