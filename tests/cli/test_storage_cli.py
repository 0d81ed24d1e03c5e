"""``customerkey storage sweep`` through the CLI entry point, on a real home folder: the
operator (local, or a principal with the operator role) sweeps; a tenant admin is refused and
nothing is removed. The CLI runs on the system clock, so the orphans are made old with
``os.utime``."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from customerkey.storage.blobs import temp_name
from tests.cli.conftest import TENANT, Cli
from tests.support.crash_harness import dead_pid

TENANT_ADMIN = "admin@contoso.com"
OPERATOR_PRINCIPAL = "root@platform.example"
TWO_HOURS = 2 * 3600


def make_orphans(home: Path) -> dict[str, Path]:
    """An old mail blob and an old file chunk that no row names, a dead writer's staging
    file, and a recent unreferenced blob (a writer that has not committed yet)."""
    blobs = home / "blobs"
    mailbox, site = uuid.uuid4(), uuid.uuid4()
    paths = {
        "mail": blobs / "mail" / str(mailbox) / f"{uuid.uuid4()}.1",
        "chunk": blobs / "files" / str(site) / str(uuid.uuid4()) / str(uuid.uuid4()) / "000000",
        "staging": blobs / "mail" / str(mailbox) / temp_name(f"{uuid.uuid4()}.1", dead_pid()),
        "recent": blobs / "mail" / str(mailbox) / f"{uuid.uuid4()}.1",
    }
    old = time.time() - TWO_HOURS
    for kind, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(kind.encode() * 10)
        if kind != "recent":
            os.utime(path, (old, old))
    return paths


def relative(home: Path, path: Path) -> str:
    return str(path.relative_to(home / "blobs"))


def test_operator_sweeps_with_a_dry_run_first(cli: Cli, home: Path) -> None:
    cli.ok("init")
    cli.create_principal(OPERATOR_PRINCIPAL, "--roles", "operator")
    paths = make_orphans(home)
    gone = {relative(home, paths[k]) for k in ("mail", "chunk", "staging")}

    dry = cli.json("storage", "sweep", "--dry-run", as_principal=OPERATOR_PRINCIPAL)
    assert dry["DryRun"] is True and set(dry["Removed"]) == gone
    assert (dry["OrphanBlobs"], dry["TempFiles"], dry["Recent"]) == (2, 1, 1)
    assert dry["BytesReclaimed"] == sum(
        paths[k].stat().st_size for k in ("mail", "chunk", "staging")
    )
    assert all(p.exists() for p in paths.values())
    human = cli.run("storage", "sweep", "--dry-run")  # a progress bar on stderr
    assert human.code == 0 and "sweeping blob folders" in human.err and "2/2" in human.err
    assert "Would remove 3 file(s)" in human.out and relative(home, paths["mail"]) in human.out
    assert all(p.exists() for p in paths.values())

    done = cli.json("storage", "sweep")
    assert done["DryRun"] is False and set(done["Removed"]) == gone
    assert {k: done[k] for k in ("OrphanBlobs", "TempFiles", "BytesReclaimed")} == {
        k: dry[k] for k in ("OrphanBlobs", "TempFiles", "BytesReclaimed")
    }
    assert [k for k, p in paths.items() if p.exists()] == ["recent"]
    assert "Nothing to remove." in cli.run("storage", "sweep").out

    (record,) = cli.json("audit", "show", "--operation", "BlobSweep")
    assert record["Principal"] == "operator" and record["Result"] == "success"
    assert cli.json("audit", "verify")["Ok"] is True


def test_a_tenant_admin_is_refused_and_nothing_is_removed(cli: Cli, home: Path) -> None:
    cli.ok("init")
    cli.ok("tenant", "create", TENANT, "--mail-domain", "contoso.com")
    cli.create_principal(TENANT_ADMIN, "--roles", "tenant-admin")
    paths = make_orphans(home)
    audit_before = cli.audit_count()
    for args in (
        ("storage", "sweep"),
        ("storage", "sweep", "--dry-run"),
        ("--json", "storage", "sweep"),
    ):
        message = cli.fail(*args, error="Forbidden", as_principal=TENANT_ADMIN)
        assert "operator" in message
    assert all(p.exists() for p in paths.values())
    assert cli.audit_count() == audit_before
