"""The az CLI against a real ``customerkey serve``: finding az, the loopback proxy it reaches the
server through, and one signed-in az identity (``Az``). Used by ``tests/clients/test_az_cli.py``
(the ``az keyvault key`` command group) and ``tests/clients/test_sdk_samples.py`` (the SDK's
samples, whose ``DefaultAzureCredential`` signs in through az's login).

Where az comes from: ``$CUSTOMERKEY_AZ`` (a path; ``.ci/run`` installs azure-cli into its own
venv and sets it), else ``az`` on PATH. Without either, ``require_az()`` skips the test, unless
``CUSTOMERKEY_REQUIRE_AZ=1`` (set by ``.ci/run``), which turns the skip into a failure: CI
always runs them.

Each az process gets a fresh ``AZURE_CONFIG_DIR`` (per signed-in identity),
``REQUESTS_CA_BUNDLE`` = the server's CA, and ``HTTPS_PROXY`` = a CONNECT proxy in this
process that sends ``localhost`` and ``*.vault.localhost`` on the server's port to loopback
(what ``live_server``'s in-process resolver does for the SDK tests; az is another process,
and the system resolver here does not resolve ``*.localhost``). The proxy refuses every other
destination and records it. MSAL's instance discovery asks login.microsoftonline.com about
unknown authorities; az's documented switch for private clouds,
``az config set core.instance_discovery=false``, turns that off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.live_servers import DOMAIN
from tests.support.servers import clean_env

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

AZ_ENV, REQUIRE_ENV = "CUSTOMERKEY_AZ", "CUSTOMERKEY_REQUIRE_AZ"
AZ_TIMEOUT = 180
CLOUD = "customerkey"
# Where az looks for newer versions of itself when a config folder is new (handled if refused).
AZ_VERSION_CHECK = "azcliprod.blob.core.windows.net:443"


# ------------------------------------------------------------------ the loopback proxy


class _Tunnel(socketserver.BaseRequestHandler):
    server: LoopbackProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        client.settimeout(AZ_TIMEOUT)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk or len(head) > 16384:
                return
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = line.partition(" ")
        target = rest.partition(" ")[0]
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or not self.server.allows(host, port):
            self.server.refused.append(line)
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=AZ_TIMEOUT) as up:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            pump = threading.Thread(target=_pipe, args=(up, client), daemon=True)
            pump.start()
            _pipe(client, up)
            pump.join(AZ_TIMEOUT)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class LoopbackProxy(socketserver.ThreadingTCPServer):
    """An HTTP CONNECT proxy to the server's port for its own host names only."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.port = port
        self.refused: list[str] = []

    def allows(self, host: str, port: str) -> bool:
        name = host.lower().rstrip(".")
        ours = name == "localhost" or name.endswith("." + DOMAIN)
        return ours and port == str(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def refused_hosts(self) -> set[str]:
        """The ``host:port`` of every CONNECT the proxy refused."""
        return {line.split()[1] for line in self.refused}


@contextlib.contextmanager
def loopback_proxy(port: int) -> Iterator[LoopbackProxy]:
    """A ``LoopbackProxy`` to ``port``, serving in a thread while the block runs."""
    proxy = LoopbackProxy(port)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


# ------------------------------------------------------------------ finding and running az


def az_executable() -> str | None:
    """``$CUSTOMERKEY_AZ`` if set (it must exist), else ``az`` on PATH, else None."""
    chosen = os.environ.get(AZ_ENV)
    if chosen:
        if not Path(chosen).is_file():
            pytest.fail(f"{AZ_ENV}={chosen} is not a file")
        return chosen
    return shutil.which("az")


def require_az() -> str:
    """az's path; skips the test without it (fails instead under ``CUSTOMERKEY_REQUIRE_AZ=1``)."""
    executable = az_executable()
    if executable is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but az is not installed (set {AZ_ENV} or PATH)")
        pytest.skip(f"the az CLI is not installed (pip install azure-cli, or set {AZ_ENV})")
    return executable


def az_environment(server: LiveServer, proxy: LoopbackProxy, config_dir: Path) -> dict[str, str]:
    """The environment of an az process (or of a process that runs az): its config folder,
    the server's CA, and the proxy to the server's host names."""
    env = {
        **clean_env(),
        "AZURE_CONFIG_DIR": str(config_dir),
        "REQUESTS_CA_BUNDLE": str(server.ca),
        "HTTPS_PROXY": proxy.url,
        "https_proxy": proxy.url,
        "NO_PROXY": "",
        "no_proxy": "",
        "AZURE_CORE_COLLECT_TELEMETRY": "false",
        "AZURE_CORE_NO_COLOR": "true",
        "AZURE_CORE_SURVEY_MESSAGE": "false",
    }
    for name in ("CURL_CA_BUNDLE", "SSL_CERT_FILE", "HTTP_PROXY", "http_proxy"):
        env.pop(name, None)
    return env


@dataclass
class Az:
    """One az identity: its own config folder, talking to ``server`` through ``proxy``."""

    executable: str
    server: LiveServer
    proxy: LoopbackProxy
    config_dir: Path
    calls: list[str] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        return az_environment(self.server, self.proxy, self.config_dir)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls.append(" ".join(args))
        result = subprocess.run(
            [self.executable, *args],
            capture_output=True,
            text=True,
            env=self.environment(),
            timeout=AZ_TIMEOUT,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"az {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}"
            )
        return result

    def json(self, *args: str) -> Any:
        out = self.run(*args, "--output", "json").stdout
        return json.loads(out) if out.strip() else None

    def fails(self, *args: str) -> str:
        """Run a command that must fail; its standard error."""
        result = self.run(*args, check=False)
        assert result.returncode != 0, f"az {' '.join(args)} succeeded:\n{result.stdout}"
        return result.stderr

    def register_cloud(self) -> None:
        self.run("cloud", "register", "--name", CLOUD, "--endpoint-resource-manager", arm(self))
        self.run("cloud", "set", "--name", CLOUD)
        self.run("config", "set", "core.instance_discovery=false")

    def login(self, client_id: str, secret: str, tenant: str, *extra: str) -> Any:
        return self.json(
            "login",
            "--service-principal",
            "--username",
            client_id,
            f"--password={secret}",  # a secret may begin with '-'
            "--tenant",
            tenant,
            *extra,
        )


def arm(az: Az) -> str:
    return f"{az.server.url}/"
