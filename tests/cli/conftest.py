"""CLI test harness: every call goes through ``customerkey.cli.main.main(argv)`` in-process,
against a real home folder (master key, SQLite database) under ``tmp_path``.

``cli.ok(...)`` expects exit 0, ``cli.json(...)`` also parses stdout as JSON, ``cli.fail(...)``
expects a failure and checks that stderr is one ``Error (Code): message`` line (with
``--json``: that stdout is ``{"error": {"code", "message"}}``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from customerkey.cli.main import main

VAULT = "Contoso-O365EX-NA-VaultA1"
KEY = "Contoso-O365EX-NA-VaultA1-Key001"
SUBSCRIPTION = "contoso-sub-1"
REGION = "eastus"
TENANT = "contoso"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUSTOMERKEY_* setting of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith("CUSTOMERKEY_") and name != "CUSTOMERKEY_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def data(self) -> Any:
        return json.loads(self.out)


class Cli:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = home
        self._capsys = capsys

    def run(self, *args: str, as_principal: str | None = None) -> Result:
        argv = ["--home", str(self.home)]
        if as_principal is not None:
            argv += ["--as", as_principal]
        self._capsys.readouterr()  # drop anything printed before this call
        code = main([*argv, *args])
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *args: str, as_principal: str | None = None) -> Result:
        result = self.run(*args, as_principal=as_principal)
        assert result.code == 0, f"{args} exited {result.code}: {result.err}"
        assert result.err == "", result.err
        return result

    def json(self, *args: str, as_principal: str | None = None) -> Any:
        return self.ok("--json", *args, as_principal=as_principal).data()

    def fail(
        self, *args: str, code: int = 1, error: str | None = None, as_principal: str | None = None
    ) -> str:
        """Run a command that must fail; returns its one-line error message."""
        result = self.run(*args, as_principal=as_principal)
        assert result.code == code, f"{args} exited {result.code}, expected {code}: {result}"
        options = args[: args.index("--")] if "--" in args else args
        if "--json" in options:  # the error is JSON on stdout: {"error": {"code", "message"}}
            body = result.data()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
            assert error is None or body["error"]["code"] == error, body
            return f"Error ({body['error']['code']}): {body['error']['message']}"
        if code == 1:
            lines = result.err.strip().splitlines()
            assert len(lines) == 1, f"expected one error line, got: {result.err!r}"
            assert lines[0].startswith("Error ("), lines[0]
            assert "Traceback" not in result.err
            if error is not None:
                assert lines[0].startswith(f"Error ({error}): "), lines[0]
            return lines[0]
        return result.err

    # ---- state, read back after a failure to show that nothing changed

    def vault_names(self, *, deleted: bool = False) -> list[str]:
        args = ["vault", "list"] + (["--deleted"] if deleted else [])
        return sorted(v["VaultName"] for v in self.json(*args))

    def versions(self, vault: str = VAULT, key: str = KEY) -> list[str]:
        return [k["Version"] for k in self.json("key", "versions", vault, key)]

    def key_names(self, vault: str = VAULT, *, deleted: bool = False) -> list[str]:
        args = ["key", "list", vault] + (["--deleted"] if deleted else [])
        return sorted(k["Name"] for k in self.json(*args))

    def audit_count(self) -> int:
        with sqlite3.connect(self.home / "customerkey.db") as conn:
            (count,) = conn.execute("SELECT count(*) FROM audit_records").fetchone()
        return int(count)

    # ---- common set-ups

    def create_vault(
        self,
        name: str = VAULT,
        *extra: str,
        subscription: str = SUBSCRIPTION,
        region: str = REGION,
    ) -> Any:
        return self.json(
            "vault",
            "create",
            name,
            "--subscription",
            subscription,
            "--region",
            region,
            "--tenant",
            TENANT,
            *extra,
        )

    def create_key(self, vault: str = VAULT, name: str = KEY, *extra: str) -> Any:
        return self.json(
            "key",
            "create",
            vault,
            name,
            "--protection",
            "hsm",
            "--ops",
            "wrapKey,unwrapKey",
            *extra,
        )

    def create_principal(self, principal: str, *extra: str) -> Any:
        return self.json("principal", "create", principal, "--tenant", TENANT, *extra)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    yield Cli(home, capsys)


@pytest.fixture
def vault(cli: Cli) -> Any:
    """An initialised home with the quickstart's purge-protected vault."""
    cli.ok("init")
    return cli.create_vault(VAULT, "--purge-protection")


@pytest.fixture
def key(cli: Cli, vault: Any) -> Any:
    """The quickstart's key (one version) in the quickstart's vault."""
    return cli.create_key()
