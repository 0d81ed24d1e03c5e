"""Settings, read from the environment (prefix ``CUSTOMERKEY_``) with sane defaults.

``CUSTOMERKEY_HOME`` is the data folder (default ``~/.customerkey``); without
``CUSTOMERKEY_DATABASE_URL`` the database is SQLite inside it. Background jobs are tuned by
``CUSTOMERKEY_JOB_LEASE_SECONDS`` (how long a silent worker keeps a job before another may
take it over), ``CUSTOMERKEY_REKEY_BATCH``, ``CUSTOMERKEY_REFRESH_BATCH`` and
``CUSTOMERKEY_IMPORT_BATCH``. Workers on many hosts share one PostgreSQL database: each
names its host by ``CUSTOMERKEY_HOST_ID`` (default: ``/etc/machine-id``, else the hostname) and
renews a heartbeat every ``CUSTOMERKEY_WORKER_HEARTBEAT_SECONDS``; a worker whose heartbeat is
older than ``CUSTOMERKEY_WORKER_TIMEOUT_SECONDS`` is dead to every host. The token
endpoint's admission control is tuned by the ``CUSTOMERKEY_TOKEN_*`` settings below.
``CUSTOMERKEY_RELEASE_AUTHORITIES`` (JSON) names the attestation authorities whose tokens
secure key release trusts (``ReleaseAuthority``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from customerkey.errors import BadParameter


def default_home() -> Path:
    return Path.home() / ".customerkey"


MACHINE_ID_FILE = Path("/etc/machine-id")


def default_host_id() -> str:
    """This machine's id: ``/etc/machine-id`` when readable and set, else the hostname."""
    try:
        machine_id = MACHINE_ID_FILE.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        machine_id = ""
    return machine_id or socket.gethostname()


class RemoteVault(BaseModel):
    """A Key-Vault-compatible vault reached over HTTPS (another customerkey, or Azure).

    Key URIs whose host ends with ``.<domain>`` go there, signed in as ``client_id``.
    """

    domain: str  # e.g. "vault.azure.net" or "vault.localhost:9443"
    authority: str  # token endpoint base, e.g. "https://localhost:9443"
    tenant: str
    client_id: str
    client_secret: str
    ca_file: str | None = None
    workload: str = "all"  # "mailbox", "files" or "all"
    # The customer tenants whose DEPs may name keys in this vault domain; empty: every tenant.
    tenants: list[str] = Field(default_factory=list)


class ReleaseAuthority(BaseModel):
    """An attestation authority whose tokens secure key release trusts (``vault.attestation``).

    ``authority`` is the issuer (``iss``) of its tokens, as a release policy names it (e.g.
    ``https://sharedeus.eus.attest.azure.net``). Its signing keys are a JWK Set given inline
    (``jwks``) or as the path of a JSON file (``jwks_file``, re-read when it changes); they are
    never fetched from the network. For example::

        CUSTOMERKEY_RELEASE_AUTHORITIES='[{"authority": "https://attest.contoso.com",
                                          "jwks_file": "/etc/customerkey/attest-jwks.json"}]'
    """

    authority: str = Field(min_length=1)
    jwks_file: str | None = None
    jwks: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> ReleaseAuthority:
        if (self.jwks_file is None) == (self.jwks is None):
            raise ValueError(
                "a release authority needs exactly one of 'jwks_file' (a path) and 'jwks' "
                "(an inline JWK Set)"
            )
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CUSTOMERKEY_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    database_url: str | None = None
    domain: str = "vault.localhost"
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    dek_cache_ttl_seconds: int = Field(default=900, ge=0)
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # The server's exposure (``customerkey.server``; README "Operating the server"). URLs the
    # server hands out (key ids, recovery ids, next links, token audiences) name the configured
    # domain and ``public_port`` (default: ``port``; behind a load balancer, the port clients
    # reach); a request whose Host header names another host or port is refused. The bare
    # host answers as localhost, 127.0.0.1, [::1], the domain and each of ``public_hosts``.
    public_port: int | None = Field(default=None, ge=1, le=65535)
    public_hosts: list[str] = Field(default_factory=list)
    # Each connection gets ``header_timeout_seconds`` for its TLS handshake and for each
    # request head; an idle keep-alive connection is closed after ``keep_alive_seconds``; a
    # server process holds at most ``max_connections``, and answers 503 to more.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    max_connections: int = Field(default=1000, ge=1)
    # /metrics: "token" (a bearer token read from ``metrics_token_file``, default
    # <home>/metrics.token, made on first start), "loopback" (plain HTTP on
    # 127.0.0.1:``metrics_port`` only), "public" or "off". /openapi.json and /docs: "off" or
    # "public".
    metrics: str = Field(default="token", pattern="^(token|loopback|public|off)$")
    metrics_port: int = Field(default=9464, ge=1, le=65535)
    metrics_token_file: Path | None = None
    openapi: str = Field(default="off", pattern="^(off|public)$")
    # What the server writes on stderr: "json" (one object per line), "text", or "auto" (text
    # on a terminal, JSON otherwise).
    log_format: str = Field(default="auto", pattern="^(auto|json|text)$")
    token_lifetime_seconds: int = Field(default=3600, ge=60)
    # The web console's sign-in (``customerkey.console``): a session ends this long after
    # sign-in whatever happens, or after ``console_idle_seconds`` without a request.
    console_session_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
    console_idle_seconds: int = Field(default=30 * 60, ge=60, le=24 * 3600)
    job_lease_seconds: int = Field(default=60, ge=5)
    # Workers on many hosts (``jobs.heartbeats``): ``host_id`` names this host in the worker
    # registry (default: /etc/machine-id, else the hostname; set it when containers share a
    # machine id). A worker renews its heartbeat every ``worker_heartbeat_seconds``; one whose
    # heartbeat is older than ``worker_timeout_seconds`` (at least twice the interval) is dead,
    # and a worker on any host gives its jobs back to the queue. Host clocks must agree to well
    # within the timeout (NTP).
    host_id: str | None = Field(default=None, min_length=1, max_length=200)
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0, le=3600)
    worker_timeout_seconds: float = Field(default=20.0, gt=0, le=86400)
    # Items re-encrypted per transaction by a mailbox re-key (move, DEP change), and mailbox
    # keys re-wrapped per transaction by a DEP refresh (site keys, by a files registration or
    # key roll): smaller batches lose less work to a crash and hold locks for less time;
    # larger ones commit less often. ``import_batch``: messages stored per transaction by a
    # mailbox import.
    rekey_batch: int = Field(default=100, ge=1)
    refresh_batch: int = Field(default=5000, ge=1)
    import_batch: int = Field(default=200, ge=1)
    remote_vaults: list[RemoteVault] = Field(default_factory=list)
    # A writer stores a blob before it commits the row naming it: the sweep leaves
    # unreferenced blobs younger than this alone, so it must exceed any write's duration.
    blob_sweep_grace_seconds: int = Field(default=3600, ge=60)
    # Where blobs live (``storage.blob_store``; README "Object storage"): "local" (files under
    # <home>/blobs) or "s3" (objects of ``s3_bucket`` at ``s3_endpoint``, default AWS, under
    # the key prefix ``s3_prefix``; needs the ``s3`` extra). S3 credentials come from the AWS
    # chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role), never
    # from these settings. The sweep's grace also covers S3 multipart uploads in progress.
    blob_store: str = Field(default="local", pattern="^(local|s3)$")
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_region: str | None = None
    s3_prefix: str = ""
    # Out of storage (disk full, quota; ``storage.exhaustion``): writes are refused with 503
    # and ``Retry-After: storage_retry_after_seconds``; while this process last saw the
    # storage full, /healthz writes a probe file of ``storage_probe_bytes`` into each local
    # storage folder (the SQLite database's and the blob folder) to see whether it recovered.
    storage_retry_after_seconds: int = Field(default=30, ge=1, le=3600)
    storage_probe_bytes: int = Field(default=1 << 20, ge=0)
    # The token endpoint checks client secrets (scrypt, ~50 ms of CPU each) on this many
    # dedicated threads per server process, never on the event loop; at most
    # ``token_hash_queue`` more requests wait for a thread, beyond that the endpoint answers
    # 429 at once.
    token_hash_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    token_hash_queue: int = Field(default=64, ge=0)
    # Token buckets for failed sign-ins (a wrong secret, an unknown client id): per client id
    # and per source address (IPv6: per /64), ``burst`` failures at once and ``per_minute``
    # more a minute after that; over the limit the endpoint answers 429 with Retry-After
    # without checking the secret. A burst of 0 turns a limit off.
    token_client_failure_burst: int = Field(default=10, ge=0)
    token_client_failures_per_minute: float = Field(default=10.0, gt=0)
    token_source_failure_burst: int = Field(default=50, ge=0)
    token_source_failures_per_minute: float = Field(default=30.0, gt=0)
    # All token requests per source address, successful or not: off (0) by default; an SDK
    # client asks for one token per credential an hour.
    token_source_request_burst: int = Field(default=0, ge=0)
    token_source_requests_per_minute: float = Field(default=600.0, gt=0)
    # Per-vault throttling of the keys API (``api.throttle``; docs/SECURITY.md "Throttling"):
    # "keyvault" (Azure Key Vault's limits, answered with 429 Throttled and Retry-After),
    # "keyvault*F" (those times F > 0) or "off". Off by default so a single-organisation
    # install and the benchmarks run at full speed; "keyvault" is the multi-tenant setting.
    throttle: str = Field(default="off", pattern=r"^(off|keyvault(\*[0-9]*\.?[0-9]+)?)$")
    # The audit log's signed checkpoints (``customerkey.audit``; docs/SECURITY.md) go to every
    # sink set here: always the file ``audit_checkpoint_file`` (default
    # <home>/audit-checkpoints.jsonl, JSON lines, 0600); syslog at ``audit_syslog``
    # ("udp://host:port", "tcp://host:port" or a unix socket path such as /dev/log; RFC 5424);
    # a webhook at ``audit_webhook_url`` (POST of the checkpoint's JSON, with
    # "Authorization: Bearer <audit_webhook_token>" when set, trusting
    # ``audit_webhook_ca_file`` when set). The server and workers publish one every
    # ``audit_checkpoint_seconds`` when the log has grown (0: only on demand, 'customerkey
    # audit checkpoint'). While a sink cannot be written, operations that use or hand out key
    # material fail closed with 503 AuditSinkUnavailable; with ``audit_fail_closed`` off they
    # go on and a warning is logged.
    audit_checkpoint_file: Path | None = None
    audit_syslog: str | None = None
    audit_webhook_url: str | None = None
    audit_webhook_token: str | None = None
    audit_webhook_ca_file: str | None = None
    audit_checkpoint_seconds: float = Field(default=300.0, ge=0)
    audit_fail_closed: bool = True
    # Secure key release: the attestation authorities whose tokens may release exportable keys
    # (none by default: every release is then refused).
    release_authorities: list[ReleaseAuthority] = Field(default_factory=list)
    # An HSM through PKCS#11 (``customerkey.hsm``; README "Keys in an HSM"): the vendor's
    # PKCS#11 library (``pkcs11_module``), the label of the token to use and the user PIN, read
    # from ``pkcs11_pin_file`` (preferred: a file only the service account reads; one trailing
    # newline is dropped) or else ``pkcs11_pin``. With a module set, RSA-HSM and EC-HSM keys
    # are made and used inside the token; start-up fails if the token cannot be used. Without
    # one, every key type is protected in software under the master key.
    pkcs11_module: str | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin_file: Path | None = None
    pkcs11_pin: SecretStr | None = None
    # The Security Officer PIN, read only by the commands that create or import the security
    # domain (``customerkey hsm security-domain``; docs/HSM.md); never by the server.
    pkcs11_so_pin_file: Path | None = None

    @field_validator("throttle")
    @classmethod
    def _throttle_factor_positive(cls, value: str) -> str:
        factor = value.partition("*")[2]
        if factor and not float(factor) > 0:
            raise ValueError("the factor after 'keyvault*' must be above 0")
        return value

    @model_validator(mode="after")
    def _timeout_outlasts_heartbeats(self) -> Settings:
        if self.worker_timeout_seconds < 2 * self.worker_heartbeat_seconds:
            raise ValueError(
                "CUSTOMERKEY_WORKER_TIMEOUT_SECONDS must be at least twice "
                "CUSTOMERKEY_WORKER_HEARTBEAT_SECONDS"
            )
        return self

    def resolved_host_id(self) -> str:
        return self.host_id or default_host_id()

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.blob_store == "s3" and not self.s3_bucket:
            raise ValueError("CUSTOMERKEY_BLOB_STORE=s3 needs CUSTOMERKEY_S3_BUCKET")
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'customerkey.db'}"


class BadSettings(BadParameter):
    code = "BadSettings"


def load_settings(**values: Any) -> Settings:
    """The settings from ``values`` and the environment; a bad setting is ``BadSettings``
    naming the setting and what is wrong, never echoing the value (it may hold a secret, such
    as a remote vault's client secret)."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise BadSettings(f"Invalid settings: {problems}.") from None
    except SettingsError as exc:
        # pydantic-settings names the field and its source, not the value.
        raise BadSettings(f"Invalid settings: {exc}.") from None
