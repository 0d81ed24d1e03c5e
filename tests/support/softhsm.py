"""A private SoftHSM2 token per test session, for the PKCS#11 key protector's tests.

``session_token`` writes a ``softhsm2.conf`` whose ``directories.tokendir`` is a temporary
folder, points ``SOFTHSM2_CONF`` at it (SoftHSM reads it when the module is first loaded in a
process, so one token folder serves the whole session), and initialises a token with
``softhsm2-util --init-token --free``. Without SoftHSM2 (the Debian package ``softhsm2``) the
tests that need it skip, or fail when ``CUSTOMERKEY_REQUIRE_SOFTHSM=1`` (CI sets it).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import clean_env

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
LABEL = "customerkey-test"
PIN = "4711-user-pin"
SO_PIN = "0815-so-pin"
# More tokens in the same folder, for tests of several installations (a process sees only the
# tokens present when it first loads the module, so they are made with the first one).
OTHER_LABELS = (
    "customerkey-dr-a",
    "customerkey-dr-b",
    "customerkey-dr-c",
    "customerkey-dr-sdk",
    SUITE_LABEL := "customerkey-suite",
)


@dataclass(frozen=True)
class SoftHsm:
    conf: Path
    pin_file: Path
    module: str = MODULE
    label: str = LABEL
    pin: str = PIN

    def other(self, label: str) -> SoftHsm:
        """The token ``label`` (one of ``OTHER_LABELS``) of this session's folder."""
        assert label in OTHER_LABELS
        return SoftHsm(conf=self.conf, pin_file=self.pin_file, label=label)

    @property
    def so_pin_file(self) -> Path:
        return self.pin_file.with_name("so-pin")

    def env(self) -> dict[str, str]:
        """What a ``customerkey`` process needs to keep its HSM keys in this token."""
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "CUSTOMERKEY_PKCS11_MODULE": self.module,
            "CUSTOMERKEY_PKCS11_TOKEN_LABEL": self.label,
            "CUSTOMERKEY_PKCS11_PIN_FILE": str(self.pin_file),
        }


def require_softhsm() -> None:
    util = shutil.which("softhsm2-util")
    missing = util is None or not Path(MODULE).exists()
    if missing:
        reason = "SoftHSM2 is not installed (apt-get install softhsm2)"
        if os.environ.get("CUSTOMERKEY_REQUIRE_SOFTHSM") == "1":
            pytest.fail(reason + ", and CUSTOMERKEY_REQUIRE_SOFTHSM=1")
        pytest.skip(reason)


def session_token(folder: Path) -> SoftHsm:
    """A fresh token in ``folder``; sets ``SOFTHSM2_CONF`` for this process."""
    require_softhsm()
    tokens = folder / "tokens"
    tokens.mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            LABEL,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    for label in OTHER_LABELS:
        subprocess.run(
            [
                *("softhsm2-util", "--init-token", "--free", "--label", label),
                *("--pin", PIN, "--so-pin", SO_PIN),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        )
    pin_file = folder / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    (folder / "so-pin").write_text(SO_PIN + "\n")
    (folder / "so-pin").chmod(0o600)
    return SoftHsm(conf=conf, pin_file=pin_file)


def hsm_cli(token: SoftHsm, home: Path, *args: str) -> dict[str, Any]:
    """``customerkey --json ARGS`` in a process of its own on ``token`` (with the SO PIN file,
    which only the security-domain commands read); its JSON answer."""
    env = {
        **clean_env(),
        **token.env(),
        "CUSTOMERKEY_HOME": str(home),
        "CUSTOMERKEY_PKCS11_SO_PIN_FILE": str(token.so_pin_file),
    }
    done = subprocess.run(
        [sys.executable, "-m", "customerkey", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def suite_token(softhsm: SoftHsm, work: Path) -> SoftHsm:
    """The token the vault, mail and files suites keep their HSM keys in when they run on the
    PKCS#11 protector: it holds a security domain, so HSM keys back up as on a real one."""
    token = softhsm.other(SUITE_LABEL)
    if hsm_cli(token, work, "hsm", "security-domain", "show")["SecurityDomain"] is None:
        hsm_cli(token, work, "hsm", "security-domain", "create")
    return token


def stored_version(home: Path, version: str) -> tuple[bytes, str | None]:
    """(sealed private key, token object id) of a key version in the SQLite database of a
    server's home."""
    db = sqlite3.connect(home / "customerkey.db")
    try:
        row = db.execute(
            "SELECT sealed_private_key, hsm_object_id FROM key_versions WHERE version = ?",
            (version,),
        ).fetchone()
    finally:
        db.close()
    assert row is not None
    return bytes(row[0]), row[1]
