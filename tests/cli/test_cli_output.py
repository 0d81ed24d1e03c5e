"""Output through the CLI entry point (issue 17, items 6 and 7): ``--json`` has one shape
(PascalCase everywhere, errors as ``{"error": {"code", "message"}}`` on stdout with a non-zero
exit), global options work after the command, and tables at 80 columns split no GUID or
header word while piped output carries no padding."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from customerkey.cli.main import main

if TYPE_CHECKING:
    from tests.cli.conftest import Cli

SITE = "https://contoso.sharepoint.local/sites/finance"


def _keys_not_pascal(data: Any, where: str = "") -> list[str]:
    """Every object key, at any depth, that does not start with a capital (tags are the
    user's own names and stay as given)."""
    bad: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if not key[:1].isupper():
                bad.append(f"{where}.{key}")
            if key != "Tags":
                bad += _keys_not_pascal(value, f"{where}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            bad += _keys_not_pascal(value, f"{where}[{i}]")
    return bad


@pytest.fixture
def contoso(cli: Cli) -> None:
    cli.ok("init")
    cli.ok("tenant", "create", "contoso", "--mail-domain", "contoso.com")
    cli.create_principal("alice@contoso.com", "--roles", "tenant-admin", "--display-name", "Alice")


def test_every_json_object_is_pascal_case(cli: Cli, contoso: None, tmp_path: Path) -> None:
    upload = tmp_path / "a.txt"
    upload.write_text("hello")
    outputs = {
        "tenant show": cli.json("tenant", "show", "contoso"),
        "tenant list": cli.json("tenant", "list"),
        "principal list": cli.json("principal", "list"),
        "principal show": cli.json("principal", "show", "alice@contoso.com"),
        "principal reset-secret": cli.json("principal", "reset-secret", "alice@contoso.com"),
        "mailuser create": cli.json("mailuser", "create", "bob@contoso.com"),
        "site create": cli.json("site", "create", SITE),
        "file put": cli.json("file", "put", SITE, "Shared Documents/a.txt", str(upload)),
        "file get": cli.json(
            "file", "get", SITE, "Shared Documents/a.txt", str(tmp_path / "back.txt")
        ),
        "file list": cli.json("file", "list", SITE),
        "file versions": cli.json("file", "versions", SITE, "Shared Documents/a.txt"),
        "file delete": cli.json("file", "delete", SITE, "Shared Documents/a.txt"),
        "file purge": cli.json("file", "purge", SITE, "--yes"),
        "storage sweep": cli.json("storage", "sweep", "--dry-run"),
        "tick": cli.json("tick"),
        "audit verify": cli.json("audit", "verify"),
    }
    bad = {name: keys for name, out in outputs.items() if (keys := _keys_not_pascal(out))}
    assert bad == {}
    got = outputs["file get"]
    assert got["Message"].startswith("Wrote version 1 of Shared Documents/a.txt")
    assert got["Path"] == str(tmp_path / "back.txt") and got["Version"] == 1 and got["Size"] == 5
    assert outputs["file purge"]["Purged"] == 1


def test_errors_are_json_on_stdout_with_json(cli: Cli, contoso: None) -> None:
    for args in (
        ("--json", "principal", "show", "nobody@contoso.com"),
        ("principal", "show", "nobody@contoso.com", "--json"),
    ):
        result = cli.run(*args)
        assert result.code == 1 and result.err == ""
        error = json.loads(result.out)["error"]
        assert error["code"] == "PrincipalNotFound" and "nobody@contoso.com" in error["message"]
    # without --json: one plain line on stderr, nothing on stdout
    plain = cli.run("principal", "show", "nobody@contoso.com")
    assert plain.code == 1 and plain.out == ""
    assert plain.err.startswith("Error (PrincipalNotFound): ")


@pytest.mark.parametrize(
    "args",
    [
        ("--json", "principal", "show"),  # a missing argument
        ("tenant", "create", "x", "--bogus", "--json"),  # an unknown option
        ("--json", "tenats", "list"),  # an unknown command
    ],
)
def test_usage_errors_are_json_too_and_exit_2(cli: Cli, contoso: None, args: tuple[str]) -> None:
    result = cli.run(*args)
    assert result.code == 2 and result.err == ""
    body = json.loads(result.out)
    assert set(body) == {"error"} and body["error"]["code"] == "UsageError"
    assert body["error"]["message"]


def test_no_installation_is_a_json_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["tenant", "list", "--home", str(tmp_path / "typo"), "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 1 and body["error"]["code"] == "NoInstallation"
    assert not (tmp_path / "typo").exists()


def test_global_options_after_the_command(
    cli: Cli, contoso: None, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --home X and --home=X after the command, --json anywhere
    for home_args in (["--home", str(home)], [f"--home={home}"]):
        capsys.readouterr()
        assert main(["tenant", "show", "contoso", *home_args, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["Name"] == "contoso"
    # --as X and --as=X after the command: alice (a tenant admin) may not create tenants
    for as_args in (["--as", "alice@contoso.com"], ["--as=alice@contoso.com"]):
        result = cli.run("tenant", "create", "fabrikam", "--mail-domain", "f.com", *as_args)
        assert result.code == 1 and result.err.startswith("Error (Forbidden): "), result
    assert [t["Name"] for t in cli.json("tenant", "list")] == ["contoso"]


def test_hoisting_leaves_alone_what_is_not_a_global_option() -> None:
    from customerkey.cli.main import hoist_global_options

    assert hoist_global_options(["ps", "--", "Get-X", "--json"]) == ["ps", "--", "Get-X", "--json"]
    assert hoist_global_options(["demo", "--home", "d", "--json"]) == [
        "--json",
        "demo",
        "--home",
        "d",
    ]
    assert hoist_global_options(["--as", "vault", "vault", "list", "--json", "--json"]) == [
        "--as",
        "vault",
        "--json",
        "vault",
        "list",
    ]


def _wide_principals(cli: Cli) -> list[str]:
    """Three service principals (their ids are GUIDs) with long display names."""
    return [
        cli.create_principal(
            "--service", "--display-name", f"Reporting App Number {i} Of The Finance Team"
        )["Id"]
        for i in range(3)
    ]


def _assert_no_split_words(out: str, ids: list[str], headers: list[str]) -> None:
    for object_id in ids:
        assert object_id in out, f"{object_id} split in:\n{out}"
    for header in headers:
        assert re.search(rf"\b{header}\b", out), f"{header} split in:\n{out}"


@pytest.mark.parametrize("width", [80, 120])
def test_tables_on_a_terminal_split_no_guid_or_header(
    cli: Cli, contoso: None, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    ids = _wide_principals(cli)
    # a terminal this wide, without colours
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("COLUMNS", str(width))
    out = cli.ok("principal", "list", "--tenant", "contoso").out
    assert max(len(line) for line in out.splitlines()) <= width, out
    _assert_no_split_words(out, ids, ["DisplayName", "HasSecret", "Enabled", "Tenant"])
    assert out.count("Reporting App Number") == 3, out  # every row is there
    shown = cli.ok("principal", "show", ids[0]).out
    assert max(len(line) for line in shown.splitlines()) <= width, shown
    _assert_no_split_words(shown, [ids[0]], ["ObjectId", "DisplayName"])


def test_piped_output_has_no_trailing_padding(cli: Cli, contoso: None) -> None:
    _wide_principals(cli)
    for args in (
        ("principal", "list"),
        ("principal", "show", "alice@contoso.com"),
        ("tenant", "show", "contoso"),
        ("tenant", "list"),
    ):
        out = cli.ok(*args).out
        assert out.strip(), args
        padded = [line for line in out.splitlines() if line != line.rstrip()]
        assert padded == [], f"{args}: {padded}"
        # not a terminal: one line per row, however wide
        if args == ("principal", "list"):
            assert sum("Reporting App" in line for line in out.splitlines()) == 3, out
