"""The official samples of ``azure-keyvault-keys``, unmodified, against a real
``customerkey serve``: ``hello_world``, ``list_operations``, ``recover_purge_operations`` and
``key_rotation``, sync and async, each run as its own Python process with only its environment
set (``backup_restore_operations`` waits 60 seconds for a purge, so it is left out).

Where the samples come from: the source distribution of the installed azure-keyvault-keys
version (``pip download --no-deps --no-binary :all:``), downloaded on first use into pytest's
cache folder (a session temp folder under ``-p no:cacheprovider``) and reused; only its
``samples/`` folder is extracted. Nothing of them is kept in this repository.

How the samples sign in: they build ``DefaultAzureCredential()`` with no arguments.

- Sync: sync MSAL always asks Microsoft's instance discovery about an authority it does not
  know, so the environment route (``EnvironmentCredential``) cannot reach this server
  unmodified. The route that does is the az CLI's login: ``DefaultAzureCredential`` tries
  ``AzureCliCredential``, which runs ``az account get-access-token`` (az found on ``PATH``;
  its config folder signed in as in ``tests/clients/test_az_cli.py``, see
  ``tests/support/az_cli.py``). Without az these tests skip, unless
  ``CUSTOMERKEY_REQUIRE_AZ=1`` (``.ci/run``).
- Async: azure-identity's async ``EnvironmentCredential`` asks for the token at
  ``AZURE_AUTHORITY_HOST`` directly (no instance discovery), so ``AZURE_CLIENT_ID``,
  ``AZURE_CLIENT_SECRET``, ``AZURE_TENANT_ID`` and ``AZURE_AUTHORITY_HOST`` are enough; the
  async samples also run through az's login.

Each sample gets a vault of its own (the samples use fixed key names and leave keys deleted
but not purged). The sample processes reach the vault hosts through the loopback proxy of
``tests/support/az_cli.py`` (``HTTPS_PROXY``; nothing resolves ``*.vault.localhost`` in
them) and trust the server's CA through ``REQUESTS_CA_BUNDLE`` (requests) and
``SSL_CERT_FILE`` (aiohttp, the async transport).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import re
import shlex
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient, KeyRotationPolicyAction, KeyType

from tests.support.az_cli import (
    AZ_VERSION_CHECK,
    Az,
    LoopbackProxy,
    loopback_proxy,
    require_az,
)
from tests.support.live_servers import TENANT
from tests.support.servers import clean_env

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

PACKAGE = "azure-keyvault-keys"
PIP_TIMEOUT = 600
SAMPLE_TIMEOUT = 300
# Variables that would choose another credential or identity in the sample's process.
SIGN_IN_VARIABLES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET")

# What each sample prints when it worked (lines of its output, in order).
EXPECTED = {
    "hello_world.py": [
        "RSA Key with name 'rsaKeyName' created of type 'RSA'.",
        "EC Key with name 'ECKeyName' created of type 'EC'.",
        "Key with name 'rsaKeyName' was found.",
        "Deleted key 'ECKeyName'",
        "Deleted key 'rsaKeyName'",
    ],
    "hello_world_async.py": [
        "RSA Key with name 'rsaKeyNameAsync' created of type 'RSA'.",
        "EC Key with name 'ECKeyNameAsync' created of type EC.",
        "Key with name 'rsaKeyNameAsync' was found.",
        "Deleted 'ECKeyNameAsync'",
        "Deleted 'rsaKeyNameAsync'",
        "run_sample done",
    ],
    "list_operations.py": [
        "Key with name 'rsaKeyName' was created of type 'RSA'.",
        "Key with name 'ecKeyName' was created of type 'EC'.",
        "Key with name 'ecKeyName' with type 'EC' was found.",
        "Key with name 'rsaKeyName' with type 'RSA' was found.",
        "New version was created for Key with name 'rsaKeyName' with the updated size.",
    ],
    "list_operations_async.py": [
        "Key with name 'rsaKeyNameAsync' was created of type 'RSA'.",
        "Key with name 'ecKeyNameAsync' was created of type 'EC'.",
        "Key with name 'ecKeyNameAsync' with type 'EC' was found.",
        "Key with name 'rsaKeyNameAsync' with type 'RSA' was found.",
        "New version was created for Key with name 'rsaKeyNameAsync' with the updated size.",
        "run_sample done",
    ],
    "recover_purge_operations.py": [
        "Created key 'rsaKeyName' of type 'RSA'.",
        "Created key 'ecKeyName' of type 'EC'.",
        "Deleted key 'ecKeyName'",
        "Deleted key 'rsaKeyName'",
        "Recovered key 'rsaKeyName'",
        "Purged 'ecKeyName'",
        "Purged 'rsaKeyName'",
    ],
    "recover_purge_operations_async.py": [
        "Created key 'rsaKeyNameAsync' of type 'RSA'.",
        "Created key 'ecKeyNameAsync' of type 'EC'.",
        "Deleted key 'ecKeyNameAsync'",
        "Deleted key 'rsaKeyNameAsync'",
        "Recovered key 'rsaKeyNameAsync'",
        "Purged 'ecKeyNameAsync'",
        "Purged 'rsaKeyNameAsync'",
        "run_sample done",
    ],
    # (key_rotation is short, so it runs too; backup_restore_operations sleeps 60 s: not run.)
    "key_rotation.py": [
        "Created a new key rotation policy: Rotate after P2M",
        "Current rotation policy: Rotate after P2M",
        "New policy action: Notify P10D before expiry",
        "Deleted the key",
    ],
    "key_rotation_async.py": [
        "Created a new key rotation policy: Rotate after P2M",
        "Current rotation policy: Rotate after P2M",
        "New policy action: Notify P10D before expiry",
        "Deleted the key",
    ],
}
SYNC = ("hello_world.py", "list_operations.py", "recover_purge_operations.py", "key_rotation.py")
ASYNC = tuple(name.replace(".py", "_async.py") for name in SYNC)
# How f-strings show the SDK's enums on some Pythons ("JsonWebKeyType.RSA"), and their values.
SHOWN_ENUM = re.compile(r"\b(?:JsonWebKeyType|KeyRotationPolicyAction)\.(\w+)")
ENUM_VALUES = {member.name.upper(): member.value for member in (*KeyType, *KeyRotationPolicyAction)}


# ------------------------------------------------------------------ the samples, from the sdist


@pytest.fixture(scope="session")
def samples(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``samples/`` folder of the installed azure-keyvault-keys version's sdist
    (downloaded once, under a lock so that xdist workers wait for one another)."""
    version = importlib.metadata.version(PACKAGE)
    cache = getattr(request.config, "cache", None)
    root = (
        cache.mkdir("customerkey-sdk-samples")
        if cache is not None
        else tmp_path_factory.getbasetemp().parent / "customerkey-sdk-samples"
    )
    root.mkdir(parents=True, exist_ok=True)
    folder = root / version
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".extracted").exists():
            download = root / f"sdist-{version}"
            pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download"]
            sdist_only = ["--no-deps", "--no-binary", ":all:", "-d", str(download)]
            result = subprocess.run(
                [*pip, *sdist_only, f"{PACKAGE}=={version}"],
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT,
                env=clean_env(),
            )
            assert result.returncode == 0, f"pip download failed:\n{result.stderr[-4000:]}"
            archives = sorted(download.glob("*.tar.gz"))
            assert len(archives) == 1, f"expected one sdist in {download}: {archives}"
            names = _extract_samples(archives[0], folder)
            assert set(EXPECTED) <= names, f"the sdist's samples/ lacks {set(EXPECTED) - names}"
            (folder / ".extracted").write_text(archives[0].name)
    return folder / "samples"


def _extract_samples(archive: Path, folder: Path) -> set[str]:
    """Write the regular files under ``<root>/samples/`` of ``archive`` to ``folder/samples``;
    the names of the files written directly in it."""
    names: set[str] = set()
    with tarfile.open(archive) as sdist:
        for member in sdist.getmembers():
            parts = PurePosixPath(member.name).parts
            if len(parts) < 3 or parts[1] != "samples" or not member.isfile():
                continue
            relative = parts[1:]
            if any(part in ("", ".", "..") for part in relative):
                continue
            source = sdist.extractfile(member)
            assert source is not None
            target = folder.joinpath(*relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
            if len(relative) == 2:
                names.add(relative[1])
    return names


# ------------------------------------------------------------------ the server side


@dataclass
class Setup:
    server: LiveServer
    proxy: LoopbackProxy
    app: str  # a service principal (an application id) with every key permission on the vaults
    secret: str
    root: Path

    def vault(self) -> str:
        """A new vault the app may use; its name."""
        name = f"smp-{uuid.uuid4().hex[:12]}"
        self.server.create_vault(name)
        self.server.grant(name, self.app, ["all"])
        return name

    def keys(self, vault: str) -> KeyClient:
        """A client of ``vault`` in this process, to check what a sample left behind."""
        credential = ClientSecretCredential(
            TENANT,
            self.app,
            self.secret,
            authority=self.server.url,
            disable_instance_discovery=True,
            connection_verify=str(self.server.ca),
        )
        return KeyClient(
            self.server.vault_url(vault), credential, connection_verify=str(self.server.ca)
        )


@pytest.fixture(scope="module")
def setup(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    app = live_server.cli_json("principal", "create", "--service", "--tenant", TENANT)
    with loopback_proxy(live_server.port) as proxy:
        yield Setup(
            live_server, proxy, app["Id"], app["ClientSecret"], tmp_path_factory.mktemp("smp")
        )
    # The samples, and az for them, reached customerkey only (and az its version check).
    assert proxy.refused_hosts() <= {AZ_VERSION_CHECK}, f"refused: {proxy.refused}"


@dataclass
class AzLogin:
    az: Az
    bin_dir: Path  # holds only an ``az`` that runs the az under test, noting each call
    calls: Path

    def called(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture(scope="module")
def az_login(setup: Setup) -> AzLogin:
    """az signed in as the app on the customerkey cloud, as a user would before running the
    samples (``az cloud register``, ``az login --service-principal``)."""
    executable = require_az()
    config = setup.root / "az-config"
    config.mkdir()
    az = Az(executable, setup.server, setup.proxy, config)
    setup.vault()  # the tenant then owns a subscription for az login to find
    az.register_cloud()
    az.login(setup.app, setup.secret, TENANT)
    # A vault token once, so that the samples' az calls answer from az's token cache well
    # within AzureCliCredential's 10-second limit.
    token = az.json("account", "get-access-token", "--resource", setup.server.resource)
    assert token["tenant"] == TENANT and token["accessToken"]
    bin_dir = setup.root / "bin"
    bin_dir.mkdir()
    calls = setup.root / "az-calls.log"
    wrapper = bin_dir / "az"
    wrapper.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {shlex.quote(str(calls))}\n"
        f'exec {shlex.quote(executable)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return AzLogin(az, bin_dir, calls)


def _sample_env(setup: Setup, base: dict[str, str], vault: str) -> dict[str, str]:
    """``base`` without any other identity's sign-in variables, and ``VAULT_URL``."""
    env = {
        name: value
        for name, value in base.items()
        if name in ("AZURE_CONFIG_DIR",)
        or name.startswith("AZURE_CORE_")
        or not (name.startswith("AZURE_") or name in SIGN_IN_VARIABLES)
    }
    env["VAULT_URL"] = setup.server.vault_url(vault)
    return env


def _through_az(setup: Setup, login: AzLogin, vault: str) -> dict[str, str]:
    env = _sample_env(setup, login.az.environment(), vault)
    env["PATH"] = f"{login.bin_dir}:{env.get('PATH', '')}"
    env["SSL_CERT_FILE"] = str(setup.server.ca)  # for aiohttp, the async samples' transport
    return env


def _through_environment(setup: Setup, vault: str) -> dict[str, str]:
    env = _sample_env(setup, clean_env(), vault)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "http_proxy"):
        env.pop(name, None)
    env.update(
        {
            "AZURE_CLIENT_ID": setup.app,
            "AZURE_CLIENT_SECRET": setup.secret,
            "AZURE_TENANT_ID": TENANT,
            "AZURE_AUTHORITY_HOST": setup.server.url,
            "SSL_CERT_FILE": str(setup.server.ca),
            "HTTPS_PROXY": setup.proxy.url,
            "https_proxy": setup.proxy.url,
            "NO_PROXY": "",
            "no_proxy": "",
        }
    )
    return env


def _run(samples: Path, sample: str, env: dict[str, str], cwd: Path) -> str:
    """Run one sample as it ships; its standard output (it must exit 0)."""
    script = samples / sample
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=SAMPLE_TIMEOUT,
    )
    assert result.returncode == 0, (
        f"{sample} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
        f"\n--- stderr\n{result.stderr[-8000:]}"
    )
    # The samples print the SDK's enums as f-strings format them: "RSA", or on some Pythons
    # "JsonWebKeyType.RSA".
    printed = SHOWN_ENUM.sub(lambda shown: ENUM_VALUES[shown[1].upper()], result.stdout)
    lines = [line.strip() for line in printed.splitlines() if line.strip()]
    wanted = EXPECTED[sample]
    shown = [line for line in lines if line in wanted]
    assert shown == wanted, f"{sample} printed:\n{result.stdout}"
    return printed


def _check_vault(setup: Setup, sample: str, vault: str, output: str) -> None:
    """What the sample left in its vault, read back through the SDK in this process."""
    suffix = "Async" if sample.endswith("_async.py") else ""
    client = setup.keys(vault)
    rsa, ec = f"rsaKeyName{suffix}", f"ecKeyName{suffix}"
    assert [k.name for k in client.list_properties_of_keys()] == []
    deleted = {d.name: d for d in client.list_deleted_keys()}
    if sample.startswith("key_rotation"):
        # Created, rotated on demand (a new version: the one deleted), deleted.
        name = "rotation-sample-key" + ("-async" if suffix else "")
        assert set(deleted) == {name}
        created = re.search(r"Created a key; new version is (\w+)", output)
        rotated = re.search(r"Rotated the key on-demand; new version is (\w+)", output)
        assert created and rotated and created[1] != rotated[1], output
        assert client.get_deleted_key(name).properties.version == rotated[1]
    elif sample.startswith("hello_world"):
        ec = f"ECKeyName{suffix}"
        assert set(deleted) == {rsa, ec}
        gone = client.get_deleted_key(ec)
        assert gone.key_type == "EC" and gone.key.crv == "P-256"
        assert gone.properties.enabled is False and gone.properties.expires_on is not None
        assert client.get_deleted_key(rsa).key_type == "RSA"
    elif sample.startswith("list_operations"):
        assert set(deleted) == {rsa, ec}
        # Two versions of the RSA key were listed; the newer, current one is 3072-bit.
        assert output.count(f"'{rsa}' has version: '") == 2, output
        assert len(client.get_deleted_key(rsa).key.n or b"") == 384
        assert client.get_deleted_key(ec).key.crv == "P-256"
    else:
        assert deleted == {}
        for name in (rsa, ec):
            with pytest.raises(ResourceNotFoundError):
                client.get_deleted_key(name)
    client.close()


# ------------------------------------------------------------------ the samples


@pytest.mark.parametrize("sample", SYNC)
def test_sync_sample_runs_with_default_azure_credential_through_az_login(
    sample: str, samples: Path, setup: Setup, az_login: AzLogin, live: LiveServer
) -> None:
    _run_through_az(sample, samples, setup, az_login)


@pytest.mark.parametrize("sample", ASYNC)
def test_async_sample_runs_with_default_azure_credential_from_the_environment(
    sample: str, samples: Path, setup: Setup, live: LiveServer
) -> None:
    vault = setup.vault()
    start = live.log_size()
    output = _run(samples, sample, _through_environment(setup, vault), setup.root)
    _check_vault(setup, sample, vault, output)
    assert f'"path":"/{TENANT}/oauth2/v2.0/token"' in live.log()[start:]


@pytest.mark.parametrize("sample", ASYNC)
def test_async_sample_runs_with_default_azure_credential_through_az_login(
    sample: str, samples: Path, setup: Setup, az_login: AzLogin, live: LiveServer
) -> None:
    _run_through_az(sample, samples, setup, az_login)


def _run_through_az(sample: str, samples: Path, setup: Setup, login: AzLogin) -> None:
    vault = setup.vault()
    before = len(login.called())
    output = _run(samples, sample, _through_az(setup, login, vault), setup.root)
    _check_vault(setup, sample, vault, output)
    # The token came from az: AzureCliCredential asked it for one for the vaults' resource.
    asked = login.called()[before:]
    wanted = f"--resource {setup.server.resource}"
    assert any("account get-access-token" in call and wanted in call for call in asked), asked
