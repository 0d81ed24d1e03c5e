"""The master key sealed by this session's SoftHSM2 token (``hsm.master_seal``): after
``customerkey master-key seal`` the home holds master.key.sealed and no master.key, and
everything made before still opens (software keys sealed under the master key, RSA-HSM keys),
from in-process runtimes, one-shot CLI processes and a real ``customerkey serve``; a home
without its token (no module, another token, a wrong PIN) does not open and says which setting
to fix; an altered sealed file does not open and says nothing about why; ``unseal`` gives back
master.key byte for byte; a crash at every step of either move leaves a home that opens, and
the rerun finishes the move. CLI runs are subprocesses (they need the token's environment)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.errors import HsmNotReady, MasterKeyNotUnsealed
from customerkey.home import Home
from customerkey.hsm.master_seal import (
    SEAL_KEY_LABEL,
    SealedMasterKey,
    SealToken,
    seal_home,
    unseal_home,
)
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from tests.support.live_servers import start_server
from tests.support.servers import clean_env
from tests.support.softhsm import SoftHsm

VAULT = "seal-vault"
PLAIN = b"k" * 32


class Crash(SystemExit):
    """The process dies here."""


def _settings(home: Path, softhsm: SoftHsm | None, **extra: object) -> Settings:
    hsm: dict[str, object] = {}
    if softhsm is not None:
        hsm = {
            "pkcs11_module": softhsm.module,
            "pkcs11_token_label": softhsm.label,
            "pkcs11_pin_file": softhsm.pin_file,
        }
    return Settings(
        home=home, database_url=f"sqlite:///{home / 'customerkey.db'}", **{**hsm, **extra}
    )


def _open(home: Path, softhsm: SoftHsm | None, **extra: object) -> Runtime:
    return Runtime.open(_settings(home, softhsm, **extra), clock=FrozenClock(), rng=SystemRng())


def _cli(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "customerkey.cli.main", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env={**clean_env(), **(env or {})},
        timeout=120,
    )


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr + result.stdout
    loaded: dict[str, object] = json.loads(result.stdout)
    return loaded


def _error(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 1, result.stdout + result.stderr
    error: dict[str, str] = json.loads(result.stdout)["error"]
    return error


class Made:
    """A home with an RSA (software) key and an RSA-HSM key, and what each wrapped."""

    def __init__(self, home: Path, master_key: bytes, wrapped: dict[str, tuple[str, bytes]]):
        self.home = home
        self.master_key = master_key
        self.wrapped = wrapped

    def check(self, rt: Runtime) -> None:
        for name, (version, wrapped) in self.wrapped.items():
            opened = rt.vault.unwrap_key(OPERATOR, VAULT, name, version, "RSA-OAEP-256", wrapped)
            assert opened.value == PLAIN, name


@pytest.fixture
def made(softhsm: SoftHsm, tmp_path: Path) -> Iterator[Made]:
    home = tmp_path / "home"
    rt = _open(home, softhsm)
    try:
        rt.vault.create_vault(OPERATOR, VAULT, subscription="sub-1", region="eastus")
        wrapped = {}
        for name, kty in (("soft", "RSA"), ("hard", "RSA-HSM")):
            bundle = rt.vault.create_key(OPERATOR, VAULT, name, kty=kty)
            version = bundle.id.version
            wrapped[name] = (
                version,
                rt.vault.wrap_key(OPERATOR, VAULT, name, version, "RSA-OAEP-256", PLAIN).value,
            )
    finally:
        rt.close()
    yield Made(home, (home / "master.key").read_bytes(), wrapped)


def _token(rt: Runtime) -> SealToken:
    assert isinstance(rt.hsm, SealToken)
    return rt.hsm


def test_sealed_home_opens_everywhere_with_the_token_and_unseals_byte_for_byte(
    made: Made, softhsm: SoftHsm
) -> None:
    home = Home(made.home)
    refused = _cli(made.home, "--json", "master-key", "seal")  # no --yes and no terminal
    assert _error(refused)["code"] == "BadParameter" and home.master_key_form() == "file"

    sealed_view = _json(_cli(made.home, "--json", "master-key", "seal", "--yes", env=softhsm.env()))
    assert sealed_view["Form"] == "sealed" and sealed_view["SealKeyLabel"] == SEAL_KEY_LABEL
    assert not home.master_key_file.exists()
    assert stat.S_IMODE(home.sealed_master_key_file.stat().st_mode) == 0o600
    data = home.sealed_master_key_file.read_bytes()
    assert made.master_key not in data
    assert SealedMasterKey.from_bytes(data).object_id.hex() == sealed_view["SealKeyId"]
    assert _json(_cli(made.home, "--json", "master-key", "status"))["Form"] == "sealed"

    rt = _open(made.home, softhsm)  # in-process: keys made before sealing still open
    try:
        made.check(rt)
        with rt.db.transaction() as session:
            assert rt.audit.verify(session).ok
            seals = [r for r in rt.audit.records(session) if r.operation == "MasterKeySeal"]
        assert len(seals) == 1 and seals[0].details["sealKeyLabel"] == SEAL_KEY_LABEL
    finally:
        rt.close()
    assert not home.master_key_file.exists()  # opening never writes one back

    # A one-shot CLI process and a real server both unseal with the token.
    keys = _cli(made.home, "--json", "key", "list", VAULT, env=softhsm.env())
    assert keys.returncode == 0, keys.stderr
    server = start_server(made.home, env=softhsm.env())
    assert server.stop() == 0, server.log()[-3000:]

    # Without the token's settings, a copy of the home or the home itself does not open.
    copy = made.home.parent / "copy"
    shutil.copytree(made.home, copy)
    for where in (made.home, copy):
        error = _error(_cli(where, "--json", "vault", "list"))
        assert error["code"] == "HsmNotReady", error
        assert "CUSTOMERKEY_PKCS11_MODULE" in error["message"]
        assert not (where / "master.key").exists()
    with pytest.raises(HsmNotReady):
        _open(copy, None)
    assert not (copy / "master.key").exists()

    unsealed = _json(_cli(made.home, "--json", "master-key", "unseal", "--yes", env=softhsm.env()))
    assert unsealed["Form"] == "file"
    assert home.master_key_file.read_bytes() == made.master_key
    assert stat.S_IMODE(home.master_key_file.stat().st_mode) == 0o600
    assert not home.sealed_master_key_file.exists()
    rt = _open(made.home, softhsm)
    try:
        made.check(rt)
        with rt.db.transaction() as session:
            operations = [r.operation for r in rt.audit.records(session)]
        assert operations.count("MasterKeyUnseal") == 1
    finally:
        rt.close()


def test_a_wrong_pin_or_another_token_does_not_open_a_sealed_home(
    made: Made, softhsm: SoftHsm, tmp_path: Path
) -> None:
    rt = _open(made.home, softhsm)
    try:
        seal_home(Home(made.home), _token(rt), rt.rng, token_label=softhsm.label)
    finally:
        rt.close()
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("not-the-pin\n")
    wrong.chmod(0o600)
    error = _error(
        _cli(
            made.home,
            "--json",
            "vault",
            "list",
            env={**softhsm.env(), "CUSTOMERKEY_PKCS11_PIN_FILE": str(wrong)},
        )
    )
    assert error["code"] == "HsmNotReady" and "CUSTOMERKEY_PKCS11_PIN_FILE" in error["message"]
    assert softhsm.pin not in json.dumps(error)

    subprocess.run(
        [
            *("softhsm2-util", "--init-token", "--free", "--label", "other-token"),
            *("--pin", softhsm.pin, "--so-pin", "0000-so"),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(softhsm.conf)},
    )
    error = _error(
        _cli(
            made.home,
            "--json",
            "vault",
            "list",
            env={**softhsm.env(), "CUSTOMERKEY_PKCS11_TOKEN_LABEL": "other-token"},
        )
    )
    assert error["code"] == "HsmNotReady" and "holds no seal key" in error["message"]
    assert not (made.home / "master.key").exists()


@pytest.mark.parametrize(
    "where", ["magic", "label", "key-id", "nonce", "ciphertext", "tag", "truncated", "longer"]
)
def test_an_altered_sealed_file_does_not_open_and_says_nothing_about_why(
    made: Made, softhsm: SoftHsm, where: str
) -> None:
    rt = _open(made.home, softhsm)
    try:
        sealed = seal_home(Home(made.home), _token(rt), rt.rng, token_label=softhsm.label)
    finally:
        rt.close()
    data = bytearray(sealed.to_bytes())
    header = len(sealed.header())
    offsets = {
        "magic": 0,
        "label": 10 + len(sealed.object_id) + 1,
        "key-id": header - 1,
        "nonce": header,
        "ciphertext": header + 12,
        "tag": len(data) - 1,
    }
    if where == "truncated":
        data = data[:-1]
    elif where == "longer":
        data += b"\x00"
    else:
        data[offsets[where]] ^= 0x01
    path = made.home / "master.key.sealed"
    path.write_bytes(bytes(data))
    with pytest.raises(MasterKeyNotUnsealed) as raised:
        _open(made.home, softhsm)
    assert raised.value.message == "The sealed master key did not open."
    assert raised.value.status == 503
    assert not (made.home / "master.key").exists()


SEAL_STEPS = ["sealed-written", "folder-synced", "verified", "master-key-removed"]
UNSEAL_STEPS = ["master-key-written", "folder-synced", "verified", "sealed-removed"]


def _crash_at(name: str) -> Callable[[str], None]:
    def step(reached: str) -> None:
        if reached == name:
            raise Crash(name)

    return step


@pytest.mark.parametrize("crash", SEAL_STEPS)
def test_a_crash_at_any_step_of_seal_leaves_a_home_that_opens(
    made: Made, softhsm: SoftHsm, crash: str
) -> None:
    home = Home(made.home)
    rt = _open(made.home, softhsm)
    try:
        with pytest.raises(Crash):
            seal_home(home, _token(rt), rt.rng, token_label=softhsm.label, step=_crash_at(crash))
    finally:
        rt.close()
    assert home.master_key_form() in ("file", "both", "sealed")
    rt = _open(made.home, softhsm)
    try:
        made.check(rt)
        if home.master_key_form() != "sealed":  # the rerun finishes the move
            seal_home(home, _token(rt), rt.rng, token_label=softhsm.label)
    finally:
        rt.close()
    assert home.master_key_form() == "sealed"
    rt = _open(made.home, softhsm)
    try:
        made.check(rt)
    finally:
        rt.close()


@pytest.mark.parametrize("crash", UNSEAL_STEPS)
def test_a_crash_at_any_step_of_unseal_leaves_a_home_that_opens(
    made: Made, softhsm: SoftHsm, crash: str
) -> None:
    home = Home(made.home)
    rt = _open(made.home, softhsm)
    try:
        seal_home(home, _token(rt), rt.rng, token_label=softhsm.label)
    finally:
        rt.close()
    rt = _open(made.home, softhsm)
    try:
        with pytest.raises(Crash):
            unseal_home(home, _token(rt), token_label=softhsm.label, step=_crash_at(crash))
    finally:
        rt.close()
    assert home.master_key_form() in ("file", "both", "sealed")
    rt = _open(made.home, softhsm)
    try:
        made.check(rt)
        if home.master_key_form() != "file":
            unseal_home(home, _token(rt), token_label=softhsm.label)
    finally:
        rt.close()
    assert home.master_key_form() == "file"
    assert home.master_key_file.read_bytes() == made.master_key
