"""Real remote vaults for service-side tests: ``customerkey serve`` subprocesses ("clouds").

Each ``Cloud`` is one independent installation: its own home folder (SQLite, master key, a CA
made on first start), a loopback port of its own, vaults answering at
``https://<vault>.vault.localhost:<port>``. It is set up the way a tenant's security admin
would, through the ``customerkey`` CLI on its home (``--json`` output), and it can be stopped
(SIGTERM) and started again on the same home and port, so a test can take a vault away and
bring it back.

A cloud may listen on another loopback address (``listen_host``, e.g. ``127.0.0.2``) so that
something else can take its public address ``127.0.0.1:<port>``: ``garbage_vault`` puts a
proxy there. Its URLs stay the same.

CLI calls cost about a second each (a Python start-up), so ``run_parallel`` runs one call per
cloud at once, and a cloud remembers whether the workload's access policy is in place so that
putting things back costs nothing when nothing changed.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from customerkey.config import RemoteVault
from tests.support.servers import clean_env

DOMAIN = "vault.localhost"
TENANT = "contoso"
PERMISSIONS = "get,wrapKey,unwrapKey"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0
# Lines a server writes only when something went wrong that is not the caller's fault.
BUG_MARKERS = ("Exception in ASGI application", "Traceback (most recent", '"status":500')


def _command(home: Path, args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "customerkey.cli.main", "--home", str(home), *args]


@dataclass
class Cloud:
    """One ``customerkey serve`` holding one vault with one root key for the mail workload."""

    name: str  # "a" or "b"
    home: Path
    port: int
    vault: str
    key: str
    principal: str
    process: subprocess.Popen[bytes] | None = None
    secret: str = ""
    granted: bool = False  # the principal's access policy is in place
    starts: int = 0
    _signalled: bool = field(default=False, repr=False)
    listen_host: str = "127.0.0.1"  # where ``serve`` binds; the URLs name 127.0.0.1 regardless

    # ---------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def ca(self) -> Path:
        return self.home / "tls" / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self.home.parent / f"{self.home.name}-serve.log"

    @property
    def key_uri(self) -> str:
        return f"https://{self.vault}.{DOMAIN}:{self.port}/keys/{self.key}"

    def remote_vault(self) -> RemoteVault:
        """How the local platform reaches this cloud, signed in as the mail application."""
        return RemoteVault(
            domain=f"{DOMAIN}:{self.port}",
            authority=self.url,
            tenant=TENANT,
            client_id=self.principal,
            client_secret=self.secret,
            ca_file=str(self.ca),
        )

    # ---------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Start ``customerkey serve`` without waiting for it (see ``wait_ready``)."""
        assert not self.running, f"cloud {self.name} is already running"
        self.home.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                _command(
                    self.home,
                    [
                        "serve",
                        "--port",
                        str(self.port),
                        "--domain",
                        DOMAIN,
                        "--scheduler-interval",
                        "3600",
                        *(["--host", self.listen_host] if self.listen_host != "127.0.0.1" else []),
                    ],
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )
        self.starts += 1

    def wait_ready(self) -> None:
        """Poll ``/healthz`` over TLS verified against the cloud's own CA until it answers."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"cloud {self.name}: customerkey serve exited {self.process.returncode}:\n"
                    + self.log()[-4000:]
                )
            if self.ca.exists():
                try:
                    context = ssl.create_default_context(cafile=str(self.ca))
                    response = httpx.get(f"{self.url}/healthz", verify=context, timeout=5)
                    if response.status_code == 200:
                        return
                    last = AssertionError(f"/healthz answered {response.status_code}")
                except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
                    last = exc
            time.sleep(0.05)  # polling for the server to start
        self.process.kill()
        self.process.wait()
        raise AssertionError(
            f"cloud {self.name} did not answer /healthz ({last}):\n" + self.log()[-4000:]
        )

    def terminate(self) -> None:
        """Send SIGTERM once (a second one would kill the server mid-shutdown)."""
        if self.process is not None and self.process.poll() is None and not self._signalled:
            self.process.send_signal(signal.SIGTERM)
            self._signalled = True

    def stop(self) -> None:
        """SIGTERM, then wait for a clean exit (status 0) and the port to be free."""
        if self.process is None:
            return
        self.terminate()
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"cloud {self.name} did not stop on SIGTERM") from None
        finally:
            self._signalled = False
        assert status == 0, f"cloud {self.name} exited {status} on SIGTERM:\n{self.log()[-4000:]}"
        self.assert_port_closed()

    def assert_port_closed(self) -> None:
        with socket.socket() as probe:
            probe.settimeout(1)
            assert probe.connect_ex((self.listen_host, self.port)) != 0, (
                f"cloud {self.name} stopped but something still listens on {self.port}"
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def bugs(self) -> list[str]:
        return [line for line in self.log().splitlines() if any(m in line for m in BUG_MARKERS)]

    # ---------------------------------------------------------------- the CLI on this home

    def cli(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            _command(self.home, ["--json", *args]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )

    def grant_command(self, permissions: str = PERMISSIONS) -> list[str]:
        return [
            "vault",
            "access",
            "set",
            self.vault,
            "--spn",
            self.principal,
            "--key-permissions",
            permissions,
            "--replace",
        ]

    def revoke_command(self) -> list[str]:
        return ["vault", "access", "remove", self.vault, "--spn", self.principal]


def run_parallel(calls: Sequence[tuple[Cloud, Sequence[str]]]) -> list[Any]:
    """Run one CLI call per entry at once; every one must succeed. Returns the parsed JSON."""
    running = [(cloud, list(args), cloud.cli(*args)) for cloud, args in calls]
    results: list[Any] = []
    for cloud, args, process in running:
        try:
            out, err = process.communicate(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AssertionError(f"cloud {cloud.name}: customerkey {args} timed out") from None
        if process.returncode != 0:
            raise AssertionError(
                f"cloud {cloud.name}: customerkey {' '.join(args)} exited "
                f"{process.returncode}:\n{err}"
            )
        results.append(json.loads(out) if out.strip() else None)
    return results


def start_clouds(clouds: Sequence[Cloud]) -> None:
    """Start every stopped cloud at once and wait until each answers."""
    stopped = [c for c in clouds if not c.running]
    for cloud in stopped:
        cloud.spawn()
    for cloud in stopped:
        cloud.wait_ready()


def stop_clouds(clouds: Sequence[Cloud]) -> None:
    """Stop every cloud at once (SIGTERM to all, then wait for each)."""
    for cloud in clouds:
        cloud.terminate()
    for cloud in clouds:
        cloud.stop()


def provision(clouds: Sequence[Cloud]) -> None:
    """On each (running) cloud: a vault of tenant contoso, an RSA-HSM root key for wrapKey and
    unwrapKey, the mail application's service principal with a secret, and its access policy
    (get, wrapKey, unwrapKey). Steps run on all clouds at once."""
    run_parallel(
        [
            (
                c,
                [
                    "vault",
                    "create",
                    c.vault,
                    "--subscription",
                    f"contoso-sub-{c.name}",
                    "--region",
                    "eastus" if c.name == "a" else "westus",
                    "--tenant",
                    TENANT,
                ],
            )
            for c in clouds
        ]
    )
    keys = run_parallel(
        [
            (
                c,
                [
                    "key",
                    "create",
                    c.vault,
                    c.key,
                    "--protection",
                    "hsm",
                    "--ops",
                    "wrapKey,unwrapKey",
                ],
            )
            for c in clouds
        ]
    )
    for key in keys:
        assert key["KeyType"] == "RSA-HSM", key
    principals = run_parallel(
        [(c, ["principal", "create", c.principal, "--service", "--tenant", TENANT]) for c in clouds]
    )
    for cloud, view in zip(clouds, principals, strict=True):
        cloud.secret = view["ClientSecret"]
        assert cloud.secret
    set_access(clouds, granted=True)


def set_access(clouds: Sequence[Cloud], *, granted: bool) -> None:
    """Grant (get, wrapKey, unwrapKey) or remove the mail application's access policy."""
    for cloud in clouds:
        cloud.granted = False  # unknown until the call succeeded
    views = run_parallel(
        [(c, c.grant_command() if granted else c.revoke_command()) for c in clouds]
    )
    for cloud, view in zip(clouds, views, strict=True):
        holders = {p["PrincipalName"]: p["PermissionsToKeys"] for p in view["AccessPolicies"]}
        if granted:
            assert sorted(holders.get(cloud.principal, [])) == sorted(PERMISSIONS.split(","))
        else:
            assert cloud.principal not in holders, view
        cloud.granted = granted


def make_ready(clouds: Sequence[Cloud]) -> None:
    """Whatever an earlier test did: every cloud running, every access policy in place."""
    start_clouds(clouds)
    missing = [c for c in clouds if not c.granted]
    if missing:
        set_access(missing, granted=True)
