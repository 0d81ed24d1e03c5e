"""The CLI's authorization matrix: each action against each kind of caller, every expected
outcome (exit status and ``Error (Code)``) written in the table, on one real home folder.

Callers (``--as``): a user of the tenant with no permission, the mail workload's service
principal (granted get/wrapKey/unwrapKey on both root-key vaults, as the Customer Key docs
say), another tenant's admin, the tenant admin (manages vaults, DEPs and mailboxes but holds no
key permission: Key Vault separates the management plane from key use), a principal with the
operator role, and the local operator (no ``--as``).

Every refusal (the commands run with ``--json``) is ``{"error": {"code", "message"}}`` on
stdout and nothing on stderr, and changes nothing (the state the action would change is read
back); every success prints what was asked for. Tenants see only their own: contoso's and
fabrikam's admins each read their own audit records, DEPs, vaults and mailboxes, and nothing
of the other's.
"""

from __future__ import annotations

import contextlib
import email.message
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from customerkey.cli.main import main
from customerkey.identity.workload_principals import EXCHANGE, SHAREPOINT

OK = 0
CALLERS = ("no_permission", "workload", "other_admin", "tenant_admin", "operator", "local")
PRINCIPALS: dict[str, str | None] = {
    "no_permission": "eve@contoso.com",
    "workload": EXCHANGE.app_id,
    "other_admin": "admin@fabrikam.com",
    "tenant_admin": "admin@contoso.com",
    "operator": "root@platform.example",
    "local": None,
}
VAULT_A, VAULT_B, KEY = "contoso-vault-a", "contoso-vault-b", "root"
FAB_A, FAB_B = "fabrikam-vault-a", "fabrikam-vault-b"
SITE = "https://contoso.sharepoint.local/sites/finance"
CONTOSO_VAULTS = {VAULT_A, VAULT_B}
FABRIKAM_VAULTS = {FAB_A, FAB_B}
SECRET_MAIL = b"quarterly numbers for contoso only, canary 5d41402abc4b2a76"
SECRET_FILE = b"contoso budget 2027, canary 7d793037a0760186"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass
class Home:
    path: Path
    work: Path  # outside the home: output files of backups, reads and downloads
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 10**6)))

    def run(self, *args: str, as_principal: str | None = None) -> Result:
        argv = ["--home", str(self.path), *(["--as", as_principal] if as_principal else [])]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*argv, *args])
        return Result(code, out.getvalue(), err.getvalue())

    def ok(self, *args: str) -> Any:
        result = self.run("--json", *args)
        assert result.code == 0, (args, result)
        return json.loads(result.out) if result.out.strip() else None

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"


def _dep(home: Home, tenant: str, name: str, vaults: tuple[str, str]) -> None:
    uris = [f"https://{v}.vault.azure.net/keys/{KEY}" for v in vaults]
    home.ok("dep", "create", name, "--tenant", tenant, "--key", uris[0], "--key", uris[1])


def _message(path: Path, upn: str, body: bytes) -> Path:
    msg = email.message.EmailMessage()
    msg["From"] = "cfo@example.com"
    msg["To"] = upn
    msg["Subject"] = "numbers"
    msg.set_content(body.decode())
    path.mkdir()
    (path / "1.eml").write_bytes(bytes(msg))
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """Two tenants, each with two vaults, a DEP and a mailbox with one message; contoso has
    a site with a file; the callers' principals."""
    root = tmp_path_factory.mktemp("cli-authz")
    (root / "work").mkdir()
    h = Home(root / "home", root / "work")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("CUSTOMERKEY_") and name != "CUSTOMERKEY_TEST_POSTGRES_URL":
                patch.delenv(name)
        h.ok("init")
        for tenant, vaults in (("contoso", (VAULT_A, VAULT_B)), ("fabrikam", (FAB_A, FAB_B))):
            h.ok("tenant", "create", tenant, "--mail-domain", f"{tenant}.com")
            for vault, region in zip(vaults, ("eastus", "westus"), strict=True):
                h.ok(
                    "vault", "create", vault, "--subscription", f"{tenant}-sub",
                    "--region", region, "--tenant", tenant,
                )  # fmt: skip
                h.ok("key", "create", vault, KEY, "--protection", "hsm")
                for workload in (EXCHANGE, SHAREPOINT):
                    h.ok(
                        "vault", "access", "set", vault, "--spn", workload.app_id,
                        "--key-permissions", "wrapKey,unwrapKey,get",
                    )  # fmt: skip
            _dep(h, tenant, f"{tenant.upper()}-DEP", vaults)
        h.ok("mailbox", "create", "dana@contoso.com", "--dep", "CONTOSO-DEP")
        h.ok("mailbox", "create", "erin@fabrikam.com", "--dep", "FABRIKAM-DEP")
        for upn, body in (("dana@contoso.com", SECRET_MAIL), ("erin@fabrikam.com", b"fab only")):
            source = _message(root / f"{upn}-eml", upn, body)
            h.ok("mailbox", "import", upn, str(source), "--format", "eml")
        h.ok("site", "create", SITE)
        (root / "budget.txt").write_bytes(SECRET_FILE)
        h.ok("file", "put", SITE, "Shared Documents/budget.txt", str(root / "budget.txt"))
        for upn, tenant, roles in (
            ("eve@contoso.com", "contoso", ""),
            ("frank@contoso.com", "contoso", ""),  # granted by "vault access set"
            ("admin@fabrikam.com", "fabrikam", "tenant-admin"),
            ("admin@contoso.com", "contoso", "tenant-admin"),
            ("root@platform.example", "platform", "operator"),
        ):
            h.ok(
                "principal", "create", upn, "--tenant", tenant, *(["--roles", roles] * bool(roles))
            )
        yield h


# ---------------------------------------------------------------- the table


Check = Callable[[Home, list[str], Result, str], None]


@dataclass(frozen=True)
class Action:
    """``args(home, caller)`` builds the command line; ``expected`` maps each caller to
    OK (exit 0) or the error code of the one stderr line (exit 1); ``check`` looks at what a
    success printed or wrote; ``state`` reads back, as the local operator, what the action
    would change, so a refusal is seen to change nothing."""

    args: Callable[[Home, str], list[str]]
    expected: dict[str, int | str]
    check: Check = lambda home, args, result, caller: None
    state: Callable[[Home], Any] | None = None


def _json(result: Result) -> Any:
    return json.loads(result.out)


def _refused(result: Result) -> str:
    """A ``--json`` refusal as ``Error (Code): message``: stdout must hold exactly the error
    object, and stderr nothing."""
    body = json.loads(result.out)
    assert result.err == "" and set(body) == {"error"}, result
    assert set(body["error"]) == {"code", "message"}, body
    return f"Error ({body['error']['code']}): {body['error']['message']}"


def _visible_vaults(caller: str) -> set[str] | None:
    """The vaults whose records a caller's audit view may hold (None: all)."""
    return {"tenant_admin": CONTOSO_VAULTS, "other_admin": FABRIKAM_VAULTS}.get(caller)


def _check_audit(home: Home, args: list[str], result: Result, caller: str) -> None:
    records = _json(result)
    vaults = {r["Vault"] for r in records} - {None}
    visible = _visible_vaults(caller)
    if caller in ("operator", "local"):
        assert vaults >= CONTOSO_VAULTS | FABRIKAM_VAULTS
        assert {"TenantCreate", "VaultPut", "KeyCreate"} <= {r["Operation"] for r in records}
    elif visible is not None:
        assert vaults == visible, vaults  # its own vaults' records, all of them, nothing else
    else:
        # Neither operator nor admin: only its own calls and changes to itself or its grants.
        me = str(PRINCIPALS[caller]).lower()
        assert records
        for record in records:
            about = {record["Details"].get("principal"), record["Details"].get("id")}
            assert record["Principal"] in (me, f"operator as {me}") or me in about, record


def _shows(key: str, value: Any) -> Check:
    """A success whose JSON has ``key`` equal to ``value`` (or to ``value(args)``)."""

    def check(home: Home, args: list[str], result: Result, caller: str) -> None:
        wanted = value(args) if callable(value) else value
        assert _json(result)[key] == wanted, result.out

    return check


def _check_backup(home: Home, args: list[str], result: Result, caller: str) -> None:
    assert _output_file(args).stat().st_size > 1000  # a sealed backup of the key's versions


def _output_file(args: list[str]) -> Path:
    return Path(args[args.index("--out") + 1] if "--out" in args else args[-1])


def _check_file(content: bytes) -> Callable[[Home, list[str], Result, str], None]:
    def check(home: Home, args: list[str], result: Result, caller: str) -> None:
        assert _output_file(args).read_bytes().endswith(content)

    return check


ACTIONS: dict[str, Action] = {
    "vault show": Action(
        lambda h, c: ["vault", "show", VAULT_A],
        {
            "no_permission": "Forbidden",
            # a principal named in an access policy reads the vault, with its own policy
            # only (the admin API refuses it: that needs the operator or tenant-admin role)
            "workload": OK,
            "other_admin": "Forbidden",
            "tenant_admin": OK,
            "operator": OK,
            "local": OK,
        },
        check=_shows("VaultName", VAULT_A),
    ),
    "vault access set": Action(
        lambda h, c: [
            "vault",
            "access",
            "set",
            VAULT_A,
            "--upn",
            "frank@contoso.com",
            "--key-permissions",
            "list",
        ],
        {
            "no_permission": "Forbidden",
            "workload": "Forbidden",
            "other_admin": "Forbidden",
            "tenant_admin": OK,
            "operator": OK,
            "local": OK,
        },
        state=lambda h: h.ok("vault", "show", VAULT_A)["AccessPolicies"],
    ),
    "key create": Action(
        lambda h, c: ["key", "create", VAULT_A, h.fresh(f"new-{c.replace('_', '-')}-")],
        {
            "no_permission": "Forbidden",
            "workload": "Forbidden",
            "other_admin": "Forbidden",
            "tenant_admin": "Forbidden",  # management plane only: no keys/create
            "operator": OK,
            "local": OK,
        },
        check=_shows("Name", lambda args: args[-1]),
        state=lambda h: sorted(k["Name"] for k in h.ok("key", "list", VAULT_A)),
    ),
    "key show": Action(
        lambda h, c: ["key", "show", VAULT_A, KEY],
        {
            "no_permission": "Forbidden",
            "workload": OK,  # granted get
            "other_admin": "Forbidden",
            "tenant_admin": "Forbidden",
            "operator": OK,
            "local": OK,
        },
        check=_shows("Name", KEY),
    ),
    "key backup": Action(
        lambda h, c: ["key", "backup", VAULT_A, KEY, "--out", str(h.work / h.fresh(c))],
        {
            "no_permission": "Forbidden",
            "workload": "Forbidden",
            "other_admin": "Forbidden",
            "tenant_admin": "Forbidden",
            "operator": OK,
            "local": OK,
        },
        check=_check_backup,
    ),
    "dep show": Action(
        lambda h, c: ["dep", "show", "CONTOSO-DEP", "--tenant", "contoso"],
        {
            "no_permission": "Forbidden",
            "workload": "Forbidden",
            "other_admin": "Forbidden",
            "tenant_admin": OK,
            "operator": OK,
            "local": OK,
        },
        check=_shows("Name", "CONTOSO-DEP"),
    ),
    "dep show (own tenant)": Action(
        lambda h, c: ["dep", "show", "CONTOSO-DEP"],
        {
            "no_permission": "Forbidden",
            "workload": "Forbidden",
            # looked up in fabrikam: the name of contoso's DEP is not even confirmed
            "other_admin": "DataEncryptionPolicyNotFound",
            "tenant_admin": OK,
            "operator": "BadParameter",  # two tenants: say which
            "local": "BadParameter",
        },
        check=_shows("Name", "CONTOSO-DEP"),
    ),
    "dep create": Action(
        lambda h, c: [
            "dep",
            "create",
            h.fresh(f"dep-{c.replace('_', '-')}-"),
            "--tenant",
            "contoso",
            "--key",
            f"https://{VAULT_A}.vault.azure.net/keys/{KEY}",
            "--key",
            f"https://{VAULT_B}.vault.azure.net/keys/{KEY}",
        ],
        {
            "no_permission": "Forbidden",
            "workload": "Forbidden",
            "other_admin": "Forbidden",
            "tenant_admin": OK,
            "operator": OK,
            "local": OK,
        },
        check=_shows("Name", lambda args: args[3]),
        state=lambda h: sorted(p["Name"] for p in h.ok("dep", "list", "--tenant", "contoso")),
    ),
    "mailbox stats": Action(
        lambda h, c: ["mailbox", "stats", "dana@contoso.com"],
        {
            "no_permission": "Forbidden",
            "workload": "MailboxNotFound",  # not a principal of the tenant
            "other_admin": "MailboxNotFound",  # cannot tell it from a missing one
            "tenant_admin": OK,
            "operator": OK,
            "local": OK,
        },
        check=_shows("ItemCount", 1),
    ),
    "mailbox read": Action(
        lambda h, c: [
            "mailbox",
            "read",
            "dana@contoso.com",
            "1",
            "--out",
            str(h.work / h.fresh(c)),
        ],
        {
            "no_permission": "Forbidden",
            "workload": "MailboxNotFound",  # it unwraps keys; it does not even see mail
            "other_admin": "MailboxNotFound",  # cannot tell it from a missing one
            "tenant_admin": OK,
            "operator": OK,
            "local": OK,
        },
        check=_check_file(SECRET_MAIL + b"\n"),
    ),
    "file get": Action(
        lambda h, c: [
            "file",
            "get",
            SITE,
            "Shared Documents/budget.txt",
            str(h.work / h.fresh(c)),
        ],
        {
            "no_permission": "Forbidden",
            "workload": "Forbidden",
            "other_admin": "Forbidden",
            "tenant_admin": OK,
            "operator": OK,
            "local": OK,
        },
        check=_check_file(SECRET_FILE),
    ),
    "audit show": Action(
        lambda h, c: ["audit", "show", "--limit", "100000"],
        {
            "no_permission": OK,  # its own records only
            "workload": OK,  # its own records only
            "other_admin": OK,  # fabrikam's vaults only
            "tenant_admin": OK,  # contoso's vaults only
            "operator": OK,
            "local": OK,
        },
        check=_check_audit,
    ),
    "audit verify": Action(
        lambda h, c: ["audit", "verify"],
        {
            "no_permission": "Forbidden",
            "workload": "Forbidden",
            "other_admin": "Forbidden",
            "tenant_admin": "Forbidden",  # the whole chain holds every tenant's records
            "operator": OK,
            "local": OK,
        },
        check=_shows("Ok", True),
    ),
    "tenant create": Action(
        lambda h, c: [
            "tenant",
            "create",
            (name := h.fresh("northwind")),
            "--mail-domain",
            f"{name}.com",
        ],
        {
            "no_permission": "Forbidden",
            "workload": "Forbidden",
            "other_admin": "Forbidden",
            "tenant_admin": "Forbidden",
            "operator": OK,
            "local": OK,
        },
        check=_shows("Name", lambda args: args[3]),
        state=lambda h: sorted(t["Name"] for t in h.ok("tenant", "list")),
    ),
}

CASES = [(action, caller) for action in ACTIONS for caller in CALLERS]


def test_every_cell_is_written_down() -> None:
    for name, action in ACTIONS.items():
        assert set(action.expected) == set(CALLERS), name


@pytest.mark.parametrize(("action", "caller"), CASES)
def test_cli_matrix(home: Home, action: str, caller: str) -> None:
    spec = ACTIONS[action]
    expected = spec.expected[caller]
    args = ["--json", *spec.args(home, caller)]
    before = spec.state(home) if spec.state else None
    result = home.run(*args, as_principal=PRINCIPALS[caller])
    if expected == OK:
        assert (result.code, result.err) == (0, ""), (action, caller, result)
        spec.check(home, args, result, caller)
        return
    assert result.code == 1, (action, caller, result)
    assert _refused(result).startswith(f"Error ({expected}): "), (action, caller, result)
    if "--out" in args or action == "file get":
        assert not _output_file(args).exists()  # nothing written, not even a partial file
    if spec.state is not None:
        assert spec.state(home) == before, f"{action} refused for {caller} changed something"


def test_the_workload_principal_only_reads_key_and_vault_properties(home: Home) -> None:
    allowed = {name for name, spec in ACTIONS.items() if spec.expected["workload"] == OK}
    assert allowed == {"vault show", "key show", "audit show"}  # audit: its own records only
    # what it does use its grant for, it can only do through the keys API; through the CLI
    # as elsewhere it cannot list, create, back up or read anything
    listing = home.run("--json", "key", "list", VAULT_A, as_principal=EXCHANGE.app_id)
    assert listing.code == 1 and _refused(listing).startswith("Error (Forbidden): ")
    # reading the vault shows it its own access policy, not who else has access
    everyone = json.loads(home.run("--json", "vault", "access", "show", VAULT_A).out)
    assert len(everyone) > 1
    own = home.run("--json", "vault", "access", "show", VAULT_A, as_principal=EXCHANGE.app_id)
    assert own.code == 0, own
    assert [p["PrincipalName"] for p in json.loads(own.out)] == [EXCHANGE.app_id.lower()]
    shown = json.loads(
        home.run("--json", "vault", "show", VAULT_A, as_principal=EXCHANGE.app_id).out
    )
    assert len(shown["AccessPolicies"]) == 1, shown


def test_nobody_reads_another_tenants_data(home: Home) -> None:
    """Each tenant's admin, on everything it may list or read, sees only its own tenant."""
    dana, erin = "dana@contoso.com", "erin@fabrikam.com"
    sides = {
        "admin@contoso.com": ("contoso", CONTOSO_VAULTS, dana, erin),
        "admin@fabrikam.com": ("fabrikam", FABRIKAM_VAULTS, erin, dana),
    }
    for admin, (tenant, vaults, own_mailbox, other_mailbox) in sides.items():
        other = "fabrikam" if tenant == "contoso" else "contoso"
        other_vaults = FABRIKAM_VAULTS if tenant == "contoso" else CONTOSO_VAULTS

        def run(*args: str, admin: str = admin) -> Result:
            return home.run("--json", *args, as_principal=admin)

        assert {v["VaultName"] for v in _json(run("vault", "list"))} == vaults
        assert {p["Name"] for p in _json(run("dep", "list"))} >= {f"{tenant.upper()}-DEP"}
        assert all(not p["Name"].startswith(other.upper()) for p in _json(run("dep", "list")))
        assert {m["UserPrincipalName"] for m in _json(run("mailbox", "list"))} == {own_mailbox}
        assert {p["Tenant"] for p in _json(run("principal", "list"))} == {tenant}
        records = _json(run("audit", "show", "--limit", "100000"))
        assert {r["Vault"] for r in records} - {None} == vaults
        assert _json(run("mailbox", "stats", own_mailbox))["ItemCount"] == 1
        for args in (
            ("mailbox", "list", "--tenant", other),
            ("dep", "list", "--tenant", other),
            ("mailbox", "stats", other_mailbox),
            ("mailbox", "items", other_mailbox),
            ("mailbox", "read", other_mailbox, "1", "--out", str(home.work / "stolen")),
            ("mailbox", "export", other_mailbox, str(home.work / "stolen.mbox")),
            ("dep", "show", f"{other.upper()}-DEP", "--tenant", other),
            ("principal", "list", "--tenant", other),
            *(("vault", "show", v) for v in sorted(other_vaults)),
            *(("key", "list", v) for v in sorted(other_vaults)),
            *(("audit", "show", "--vault", v) for v in sorted(other_vaults)),
        ):
            result = run(*args)
            if args[0] == "audit":
                # listing its own vaults' records: allowed, and empty of the other tenant
                assert result.code == 0 and _json(result) == [], (admin, args, result)
                continue
            # another tenant's mailbox is not found, exactly as a missing one (issue 17.17)
            refusal = (
                "MailboxNotFound" if args[0] == "mailbox" and args[1] != "list" else "Forbidden"
            )
            assert result.code == 1 and _refused(result).startswith(f"Error ({refusal}): "), (
                admin,
                args,
                result,
            )
        assert not (home.work / "stolen").exists() and not (home.work / "stolen.mbox").exists()
