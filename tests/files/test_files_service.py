"""The files workload end to end: sites, streamed uploads and downloads, versions, the recycle
bin, Register/Update/Get-SPODataEncryptionPolicy with their job states, tampering, crashes,
recovery with the availability key, and the data purge path. Every test runs on SQLite and,
when configured, PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from customerkey.errors import (
    BadParameter,
    Conflict,
    CustomerKeyError,
    DecryptionFailed,
    Forbidden,
    KeyAccessDenied,
    NotFound,
)
from customerkey.identity.workload_principals import SHAREPOINT
from customerkey.jobs.queue import Job
from customerkey.keys.resolver import FALLBACK_ACTIVITY
from customerkey.runtime import Runtime
from customerkey.storage.models import (
    AuditRow,
    FileChunkRow,
    FileRow,
    FileVersionRow,
    GenerationRow,
    PolicyRow,
    SiteKeyRow,
)
from customerkey.vault.models import OPERATOR
from customerkey.workloads.files.service import (
    RECOVERY_ACTIVITY,
    FileNotFound,
    FilesPolicyStatus,
    SiteNotFound,
)
from tests.support.filesfixtures import (
    ADMIN_URL,
    FINANCE,
    GRANT,
    KEY_A,
    KEY_C,
    TENANT,
    URI_A,
    URI_B,
    URI_C,
    VAULT_A,
    VAULT_B,
    VAULT_C,
    blob_files,
    digest_of_file,
    digest_of_generated,
    generated_bytes,
    register,
    setup_tenant_and_vaults,
    site_url,
)

pytestmark = [pytest.mark.storage, pytest.mark.protectors]

CHUNK = 64 * 1024  # small chunks, so small files have many of them
SEGMENT = 16 * 1024
CANARY = b"CANARY-files-5f4dcc3b5aa765d61d83"


@pytest.fixture
def rt(runtime: Runtime) -> Runtime:
    runtime.files.chunk_size = CHUNK
    runtime.files.segment_size = SEGMENT
    return runtime


def put(rt: Runtime, site: str, path: str, data: bytes) -> int:
    return rt.files.upload(OPERATOR, site, path, io.BytesIO(data)).number


def get(rt: Runtime, site: str, path: str, version: int | None = None) -> bytes:
    out = io.BytesIO()
    rt.files.download(OPERATOR, site, path, out, version=version)
    return out.getvalue()


def status(rt: Runtime) -> FilesPolicyStatus:
    return rt.files.status(OPERATOR, TENANT)


def audit_count(rt: Runtime, operation: str | None = None) -> int:
    with rt.db.transaction() as session:
        query = select(func.count()).select_from(AuditRow)
        if operation is not None:
            query = query.where(AuditRow.operation == operation)
        return int(session.scalar(query) or 0)


def blob_digests(rt: Runtime) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in blob_files(rt)}


def populate(rt: Runtime, sites: int = 4) -> dict[tuple[str, str], list[bytes]]:
    """Sites with files of several sizes and versions; returns every version's content."""
    contents: dict[tuple[str, str], list[bytes]] = {}
    for i in range(sites):
        url = site_url(f"team{i}")
        rt.files.create_site(OPERATOR, url, title=f"Team {i}")
        for j, size in enumerate((0, 1000, CHUNK, 3 * CHUNK + 17)[: 1 + i]):
            path = f"Shared Documents/folder{j}/file{j}.bin"
            versions = [CANARY + generated_bytes(size, seed=100 * i + 10 * j + v) for v in (0, 1)]
            for data in versions:
                put(rt, url, path, data)
            contents[(url, path)] = versions
    return contents


def assert_all_readable(rt: Runtime, contents: dict[tuple[str, str], list[bytes]]) -> None:
    for (url, path), versions in contents.items():
        for number, data in enumerate(versions, start=1):
            assert get(rt, url, path, number) == data, (url, path, number)
        assert get(rt, url, path) == versions[-1]


def run_watching(rt: Runtime) -> tuple[list[Job], list[tuple[str, float | None]]]:
    """Run every queued job, recording Get-SPODataEncryptionPolicy after each checkpoint."""
    seen: list[tuple[str, float | None]] = []

    def watch(job: Job, done: int, total: int) -> None:
        now = status(rt)
        seen.append((now.state, now.percent_complete))

    return rt.worker(on_progress=watch).run_until_idle(), seen


# ---------------------------------------------------------------- content


def test_round_trips_versions_folders_and_no_plaintext_at_rest(rt: Runtime) -> None:
    setup_tenant_and_vaults(rt)
    site = rt.files.create_site(OPERATOR, "HTTPS://Contoso.SharePoint.local/sites/Finance/")
    assert site.url == FINANCE and site.tenant == TENANT and site.generation_id is None
    assert rt.files.site_status(OPERATOR, FINANCE).state == "Unregistered"
    sizes = [0, 1, SEGMENT, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 5 * CHUNK + 12345]
    expected: dict[str, bytes] = {}
    for size in sizes:
        data = (CANARY + generated_bytes(size, seed=size))[:size] if size else b""
        path = f"Shared Documents/sizes/{size}.bin"
        assert put(rt, FINANCE, path, data) == 1
        expected[path] = data
    for path, data in expected.items():
        assert get(rt, FINANCE, path) == data
    with rt.db.transaction() as session:
        counts = dict(
            session.execute(select(FileVersionRow.size, FileVersionRow.chunk_count)).all()
        )
    assert counts[0] == 1 and counts[CHUNK] == 1 and counts[CHUNK + 1] == 2
    assert counts[5 * CHUNK] == 5 and counts[5 * CHUNK + 12345] == 6

    # versions: every one stays readable, the newest is the default
    v1, v2, v3 = CANARY + b"one", CANARY + b"two" * 50_000, CANARY + b"three"
    for data in (v1, v2, v3):
        put(rt, FINANCE, "Shared Documents/Budget.xlsx", data)
    assert get(rt, FINANCE, "shared documents/budget.xlsx") == v3  # paths ignore case
    assert [get(rt, FINANCE, "Shared Documents/Budget.xlsx", n) for n in (1, 2, 3)] == [v1, v2, v3]
    versions = rt.files.versions(OPERATOR, FINANCE, "Shared Documents/Budget.xlsx")
    assert [(v.number, v.size, v.is_current) for v in versions] == [
        (1, len(v1), False),
        (2, len(v2), False),
        (3, len(v3), True),
    ]
    with pytest.raises(FileNotFound, match="no version 4"):
        get(rt, FINANCE, "Shared Documents/Budget.xlsx", 4)

    listed = rt.files.list_files(OPERATOR, FINANCE, folder="Shared Documents/sizes")
    assert sorted(f.name for f in listed) == sorted(f"{s}.bin" for s in sizes)
    assert len(rt.files.list_files(OPERATOR, FINANCE)) == len(sizes) + 1
    assert rt.files.get_site(OPERATOR, FINANCE).file_count == len(sizes) + 1

    # nothing readable at rest: not in the blobs, not in the database
    if rt.db.dialect == "sqlite":
        database = Path(rt.db.url.removeprefix("sqlite:///"))
        for stored in (database, database.with_name(database.name + "-wal")):
            assert not stored.exists() or CANARY not in stored.read_bytes()
    for path in blob_files(rt):
        assert CANARY not in path.read_bytes()


def test_recycle_bin_delete_restore_and_purge(rt: Runtime) -> None:
    setup_tenant_and_vaults(rt)
    rt.files.create_site(OPERATOR, FINANCE)
    put(rt, FINANCE, "a/report.docx", b"first")
    put(rt, FINANCE, "a/report.docx", b"second")
    put(rt, FINANCE, "a/keep.docx", b"keep")
    deleted = rt.files.delete(OPERATOR, FINANCE, "a/report.docx")
    assert deleted.state == "recycled" and deleted.deleted_by == "operator"
    with pytest.raises(FileNotFound):
        get(rt, FINANCE, "a/report.docx")
    assert [f.path for f in rt.files.list_files(OPERATOR, FINANCE)] == ["a/keep.docx"]
    assert [f.path for f in rt.files.list_files(OPERATOR, FINANCE, recycle_bin=True)] == [
        "a/report.docx"
    ]
    # a new file may take the path; restoring the old one over it is refused
    put(rt, FINANCE, "a/report.docx", b"newcomer")
    with pytest.raises(Conflict, match="already exists"):
        rt.files.restore(OPERATOR, FINANCE, "a/report.docx")
    rt.files.delete(OPERATOR, FINANCE, "a/report.docx")
    # by id: the first one deleted
    restored = rt.files.restore(OPERATOR, FINANCE, deleted.id)
    assert restored.version == 2 and restored.state == "active"
    assert get(rt, FINANCE, "a/report.docx", 1) == b"first"
    assert get(rt, FINANCE, "a/report.docx") == b"second"
    before = len(list(blob_files(rt)))
    assert rt.files.purge_recycled(OPERATOR, FINANCE) == 1  # the newcomer
    assert len(list(blob_files(rt))) == before - 1
    assert rt.files.list_files(OPERATOR, FINANCE, recycle_bin=True) == []
    assert get(rt, FINANCE, "a/report.docx") == b"second"


def test_bad_input_is_refused_and_changes_nothing(rt: Runtime) -> None:
    setup_tenant_and_vaults(rt)
    rt.files.create_site(OPERATOR, FINANCE)
    put(rt, FINANCE, "doc.txt", b"x")
    records = audit_count(rt)
    blobs = blob_digests(rt)
    bad_sites = [
        "http://contoso.sharepoint.local/sites/x",
        "https://contoso.sharepoint.com/sites/x",
        "https://contoso.sharepoint.local/sites",
        "https://contoso.sharepoint.local/lists/x",
        "https://contoso.sharepoint.local/sites/x?y=1",
        "https://contoso-admin.sharepoint.local",
        "https://contoso-my.sharepoint.local/sites/x",
        "https://contoso.sharepoint.local/sites/bad name",
        "https://contoso.sharepoint.local:8443/sites/x",
        "not a url",
    ]
    for url in bad_sites:
        with pytest.raises(BadParameter):
            rt.files.create_site(OPERATOR, url)
    with pytest.raises(Conflict, match="already exists"):
        rt.files.create_site(OPERATOR, FINANCE)
    with pytest.raises(NotFound, match="No tenant"):
        rt.files.create_site(OPERATOR, "https://fabrikam.sharepoint.local/sites/x")
    for path in ("", "/", "a//b", "../x", "a/./b", "a/b:c", "a/<b>", "a /b", "a\x01"):
        with pytest.raises(BadParameter):
            put(rt, FINANCE, path, b"data")
    with pytest.raises(SiteNotFound):
        put(rt, site_url("nosuch"), "doc.txt", b"data")
    with pytest.raises(FileNotFound):
        get(rt, FINANCE, "missing.txt")
    with pytest.raises(FileNotFound):
        rt.files.restore(OPERATOR, FINANCE, "doc.txt")
    stranger = rt.principals.create(OPERATOR, "eve@contoso.com", tenant=TENANT)[0].actor()
    with pytest.raises(Forbidden):
        rt.files.upload(stranger, FINANCE, "doc.txt", io.BytesIO(b"evil"))
    with pytest.raises(Forbidden):
        rt.files.download(stranger, FINANCE, "doc.txt", io.BytesIO())
    with pytest.raises(Forbidden):
        rt.files.register(stranger, TENANT, URI_A, URI_B)
    # register: same vault twice, a key the principal cannot use, an unknown tenant
    with pytest.raises(BadParameter, match="different vaults"):
        rt.files.register(OPERATOR, TENANT, URI_A, URI_A)
    rt.vault.remove_access_policy(OPERATOR, VAULT_B, SHAREPOINT.app_id)
    with pytest.raises(BadParameter, match="cannot be read by the service principal"):
        rt.files.register(OPERATOR, TENANT, URI_A, URI_B)
    rt.vault.set_access_policy(OPERATOR, VAULT_B, SHAREPOINT.app_id, ["get"])
    with pytest.raises(BadParameter, match="lacks wrapKey, unwrapKey"):
        rt.files.register(OPERATOR, TENANT, URI_A, URI_B)
    rt.vault.set_access_policy(OPERATOR, VAULT_B, SHAREPOINT.app_id, GRANT)
    with pytest.raises(BadParameter, match="admin site"):
        rt.files.resolve_tenant(None, "https://contoso.sharepoint.local")
    with pytest.raises(Conflict, match="no files data encryption policy"):
        rt.files.roll(OPERATOR, TENANT, "primary", URI_A)
    # an upload that fails half-way leaves nothing behind

    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = 0

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            if self.sent > 3 * CHUNK:
                raise OSError("connection reset")
            self.sent += len(buffer)
            buffer[:] = b"z" * len(buffer)
            return len(buffer)

    with pytest.raises(OSError, match="connection reset"):
        rt.files.upload(OPERATOR, FINANCE, "doc.txt", Broken())  # type: ignore[arg-type]
    assert status(rt).state == "Unregistered"
    assert blob_digests(rt) == blobs
    assert get(rt, FINANCE, "doc.txt") == b"x"
    assert len(rt.files.versions(OPERATOR, FINANCE, "doc.txt")) == 1
    # only the principal, the vault access changes and the vault's refusals were recorded
    with rt.db.transaction() as session:
        later = list(session.scalars(select(AuditRow).where(AuditRow.seq > records)))
    assert [(r.operation, r.result) for r in later] == [
        ("PrincipalCreate", "success"),
        ("VaultAccessPolicyRemove", "success"),
        ("KeyGet", "denied"),
        ("VaultAccessPolicySet", "success"),
        ("VaultAccessPolicySet", "success"),
    ]


def test_chunk_tampering_truncation_and_swaps_are_detected(rt: Runtime) -> None:
    setup_tenant_and_vaults(rt)
    register(rt)
    rt.files.create_site(OPERATOR, FINANCE)
    data = generated_bytes(4 * CHUNK + 100)
    put(rt, FINANCE, "big.bin", data)
    put(rt, FINANCE, "big.bin", generated_bytes(4 * CHUNK + 100, seed=9))
    put(rt, FINANCE, "other.bin", generated_bytes(2 * CHUNK))
    with rt.db.transaction() as session:
        rows = session.execute(
            select(FileVersionRow.number, FileChunkRow.position, FileChunkRow.blob, FileChunkRow.id)
            .join(FileChunkRow, FileChunkRow.version_id == FileVersionRow.id)
            .join(FileRow, FileRow.id == FileVersionRow.file_id)
            .where(FileRow.path == "big.bin")
        ).all()
    root = rt.home.blobs_dir
    ids = {pos: cid for number, pos, _, cid in rows if number == 1}
    v1 = {pos: root / blob for number, pos, blob, _ in rows if number == 1}
    v2 = {pos: root / blob for number, pos, blob, _ in rows if number == 2}
    assert sorted(v1) == [0, 1, 2, 3, 4] and all(p.exists() for p in v1.values())

    def refuses() -> None:
        with pytest.raises(DecryptionFailed):
            get(rt, FINANCE, "big.bin", 1)

    assert get(rt, FINANCE, "big.bin", 1) == data
    saved = {pos: path.read_bytes() for pos, path in v1.items()}

    def put_back() -> None:
        for pos, blob in saved.items():
            v1[pos].write_bytes(blob)
        assert get(rt, FINANCE, "big.bin", 1) == data

    # one flipped bit in the middle chunk
    flipped = bytearray(saved[2])
    flipped[len(flipped) // 2] ^= 0x01
    v1[2].write_bytes(bytes(flipped))
    refuses()
    put_back()
    # a chunk cut at a segment boundary; the last chunk cut short
    v1[3].write_bytes(saved[3][: len(saved[3]) - SEGMENT - 16])
    refuses()
    put_back()
    v1[4].write_bytes(saved[4][:-5])
    refuses()
    put_back()
    # two chunks swapped; a chunk of another version in its place; a missing chunk blob
    v1[0].write_bytes(saved[1])
    v1[1].write_bytes(saved[0])
    refuses()
    put_back()
    v1[1].write_bytes(v2[1].read_bytes())
    refuses()
    put_back()
    v1[1].unlink()
    refuses()
    put_back()
    # the database loses the last chunk (and its count): the sizes no longer add up; with the
    # count lowered too, the version's size gives it away
    with rt.db.transaction() as session:
        session.execute(update(FileChunkRow).where(FileChunkRow.id == ids[4]).values(position=9))
    refuses()
    with rt.db.transaction() as session:
        session.execute(update(FileChunkRow).where(FileChunkRow.id == ids[4]).values(position=4))
        session.execute(
            update(FileChunkRow).where(FileChunkRow.id == ids[1]).values(wrapped_key=b"\0" * 40)
        )
    with pytest.raises(CustomerKeyError):
        get(rt, FINANCE, "big.bin", 1)
    # the other files were never affected
    assert get(rt, FINANCE, "other.bin") == generated_bytes(2 * CHUNK)


# ---------------------------------------------------------------- register and roll


def test_register_shows_registering_percent_then_registered(rt: Runtime) -> None:
    setup_tenant_and_vaults(rt)
    contents = populate(rt, sites=4)
    assert status(rt).state == "Unregistered" and status(rt).percent_complete is None
    blobs = blob_digests(rt)
    rt.files.rewrap_batch = 1
    job = rt.files.register(OPERATOR, TENANT, URI_A, URI_B, identity=ADMIN_URL)
    assert job.progress_total == 4
    queued = status(rt)
    assert (queued.state, queued.percent_complete, queued.job_id) == ("Registering", 0.0, job.id)
    with pytest.raises(Conflict, match="one is allowed per tenant"):
        rt.files.register(OPERATOR, TENANT, URI_A, URI_B)
    with pytest.raises(Conflict, match="still in progress"):
        rt.files.roll(OPERATOR, TENANT, "primary", URI_A)
    assert_all_readable(rt, contents)  # readable before the job runs

    done, seen = run_watching(rt)
    assert [j.state for j in done] == ["succeeded"]
    assert seen == [("Registering", p) for p in (25.0, 50.0, 75.0, 100.0)]
    final = status(rt)
    assert final.state == "Registered" and final.percent_complete == 100.0
    assert final.primary_key_uri == URI_A and final.secondary_key_uri == URI_B
    assert final.primary_key_version_uri is not None
    assert final.primary_key_version_uri.startswith(URI_A + "/")
    assert blob_digests(rt) == blobs  # no content rewritten
    assert_all_readable(rt, contents)
    for url, _ in contents:
        site = rt.files.site_status(OPERATOR, url)
        assert site.state == "Registered" and site.generation_id == final.generation_id
    # a new site starts under the TIK
    rt.files.create_site(OPERATOR, site_url("late"))
    assert rt.files.site_status(OPERATOR, site_url("late")).state == "Registered"
    assert status(rt).state == "Registered"
    # the files policy is a DEP of kind files, validated for the SharePoint principal
    policy = rt.policies.get(OPERATOR, TENANT, str(final.policy_id))
    assert policy.kind == "files" and policy.generation_count == 1


def test_roll_one_at_a_time_and_every_version_readable_after_two_rolls(rt: Runtime) -> None:
    setup_tenant_and_vaults(rt, third=True)
    register(rt)
    contents = populate(rt, sites=4)
    put(rt, site_url("team3"), "Recycled/old.bin", CANARY + b"recycled")
    rt.files.delete(OPERATOR, site_url("team3"), "Recycled/old.bin")
    blobs = blob_digests(rt)
    first = status(rt)
    old_version = rt.vault.get_key(OPERATOR, VAULT_A, KEY_A).id.version
    rt.files.rewrap_batch = 2

    # nothing to roll to yet; bad key types and vaults are refused, changing nothing
    with pytest.raises(Conflict, match="nothing to roll"):
        rt.files.roll(OPERATOR, TENANT, "Primary", URI_A)
    with pytest.raises(BadParameter, match="Primary or Secondary"):
        rt.files.roll(OPERATOR, TENANT, "tertiary", URI_C)
    with pytest.raises(BadParameter, match="different vault than the secondary"):
        rt.files.roll(OPERATOR, TENANT, "primary", URI_B)
    assert status(rt).generation_count == 1

    # roll 1: the primary key gets a new version in its vault
    rolled = rt.vault.rotate_key(OPERATOR, VAULT_A, KEY_A)
    job = rt.files.roll(OPERATOR, TENANT, "primary", URI_A)
    assert job.progress_total == 4
    rolling = status(rt)
    assert rolling.state == "Rolling" and rolling.percent_complete == 0.0
    assert rolling.roll_key_type == "primary" and rolling.job_id == job.id
    assert rolling.primary_key_version_uri == f"{URI_A}/{rolled.id.version}"
    with pytest.raises(Conflict) as refused:
        rt.files.roll(OPERATOR, TENANT, "secondary", URI_C)
    message = refused.value.message
    assert job.id in message and "rolling the primary key" in message
    assert "one key roll at a time" in message
    assert status(rt).generation_count == 2  # the refused roll made no generation
    assert_all_readable(rt, contents)  # mid-roll: old and new generations both work

    done, seen = run_watching(rt)
    assert [j.state for j in done] == ["succeeded"]
    assert seen == [("Rolling", 50.0), ("Rolling", 100.0)]
    after_first = status(rt)
    assert after_first.state == "Registered" and after_first.generation_id != first.generation_id
    generations = rt.policies.generations(str(first.policy_id))
    assert [g.retired_at is not None for g in generations] == [True, False]

    # roll 2: the secondary key moves to another key in a third vault, at an exact version
    version_c = rt.vault.get_key(OPERATOR, VAULT_C, KEY_C).id.version
    job = rt.files.roll(OPERATOR, TENANT, "Secondary", f"{URI_C}/{version_c}")
    run_watching(rt)
    final = status(rt)
    assert final.state == "Registered" and final.generation_count == 3
    assert final.secondary_key_uri == f"{URI_C}/{version_c}"
    assert final.secondary_key_version_uri == f"{URI_C}/{version_c}"
    assert final.primary_key_version_uri == f"{URI_A}/{rolled.id.version}"

    # every version of every file, and the recycle bin, still open; not one blob rewritten
    assert blob_digests(rt) == blobs
    assert_all_readable(rt, contents)
    rt.files.restore(OPERATOR, site_url("team3"), "Recycled/old.bin")
    assert get(rt, site_url("team3"), "Recycled/old.bin") == CANARY + b"recycled"

    # key usage: the old primary version protects nothing; the live ones report sites and files
    usage = {u.version: u.dependents for u in rt.usage.key_usage(OPERATOR, VAULT_A, KEY_A)}
    assert usage[old_version]["DepGenerations"] == 0
    assert usage[rolled.id.version]["DepGenerations"] == 1
    assert usage[rolled.id.version]["Sites"] == 4
    assert usage[rolled.id.version]["Files"] == len(contents) + 1
    assert usage[rolled.id.version]["FileVersions"] == 2 * len(contents) + 1
    assert usage[rolled.id.version]["Mailboxes"] == 0
    assert rt.usage.still_protects(OPERATOR, VAULT_A, KEY_A, old_version) is None
    warning = rt.usage.still_protects(OPERATOR, VAULT_A, KEY_A, rolled.id.version)
    assert warning is not None and "4 site(s)" in warning
    assert (
        rt.usage.still_protects(OPERATOR, VAULT_B, "Contoso-O365SP-NA-VaultA2-Key001", None) is None
    )
    # the old primary version can be disabled with everything readable
    rt.vault.update_key(OPERATOR, VAULT_A, KEY_A, old_version, enabled=False)
    rt.key_cache.clear()
    assert_all_readable(rt, contents)


def test_crash_during_a_roll_resumes_to_registered(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from customerkey.jobs.queue import JobQueue

    setup_tenant_and_vaults(rt)
    register(rt)
    contents = populate(rt, sites=4)
    rt.vault.rotate_key(OPERATOR, VAULT_B, "Contoso-O365SP-NA-VaultA2-Key001")
    rt.files.rewrap_batch = 1
    job = rt.files.roll(OPERATOR, TENANT, "secondary", URI_B)
    real = JobQueue.checkpoint
    calls = {"n": 0}

    def dies_on_third(self: JobQueue, *args: object, **kwargs: object) -> None:
        # The checkpoint commits with its batch: dying in the third one leaves two moved.
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("killed mid-roll")
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JobQueue, "checkpoint", dies_on_third)
    with pytest.raises(SystemExit):
        rt.worker(worker_id="doomed").run_one()
    monkeypatch.setattr(JobQueue, "checkpoint", real)
    assert rt.jobs.get(job.id).state == "running"
    halfway = status(rt)
    assert halfway.state == "Rolling" and halfway.percent_complete == 50.0
    assert_all_readable(rt, contents)  # two sites on each generation, all readable
    with pytest.raises(Conflict, match="already in progress"):
        rt.files.roll(OPERATOR, TENANT, "primary", URI_A)
    assert rt.worker(worker_id="too-early").run_one() is None  # the lease still holds
    rt.clock.advance(rt.jobs.lease.total_seconds() + 1)  # type: ignore[attr-defined]
    done = rt.worker(worker_id="rescuer").run_one()
    assert done is not None and done.id == job.id and done.state == "succeeded"
    final = status(rt)
    assert final.state == "Registered" and final.percent_complete == 100.0
    with rt.db.transaction() as session:
        on = set(session.scalars(select(SiteKeyRow.generation_id)))
        retired = session.scalar(
            select(func.count())
            .select_from(GenerationRow)
            .where(GenerationRow.retired_at.is_not(None))
        )
    assert on == {final.generation_id} and retired == 1
    assert_all_readable(rt, contents)


def test_a_roll_that_fails_is_reported_blocks_other_rolls_and_resumes(rt: Runtime) -> None:
    setup_tenant_and_vaults(rt, third=True)
    register(rt)
    contents = populate(rt, sites=2)
    rt.vault.rotate_key(OPERATOR, VAULT_A, KEY_A)
    job = rt.files.roll(OPERATOR, TENANT, "primary", URI_A)
    # both vaults refuse the SharePoint principal while the roll runs: every attempt fails
    rt.vault.remove_access_policy(OPERATOR, VAULT_A, SHAREPOINT.app_id)
    rt.vault.remove_access_policy(OPERATOR, VAULT_B, SHAREPOINT.app_id)
    rt.key_cache.clear()
    rt.worker().run_until_idle()
    assert rt.jobs.get(job.id).state == "failed"
    stalled = status(rt)
    assert stalled.state == "Rolling" and stalled.percent_complete == 0.0
    assert stalled.last_error is not None and "refused access" in stalled.last_error
    with pytest.raises(Conflict, match="resume it to finish it"):
        rt.files.roll(OPERATOR, TENANT, "secondary", URI_C)
    rt.vault.set_access_policy(OPERATOR, VAULT_A, SHAREPOINT.app_id, GRANT)
    rt.vault.set_access_policy(OPERATOR, VAULT_B, SHAREPOINT.app_id, GRANT)
    resumed = rt.files.resume(OPERATOR, TENANT)
    assert resumed is not None and resumed.kind == "files-roll"
    with pytest.raises(Conflict, match="needs no resuming"):
        rt.files.resume(OPERATOR, TENANT)
    rt.worker().run_until_idle()
    assert status(rt).state == "Registered"
    assert rt.files.resume(OPERATOR, TENANT) is None  # nothing left to do
    assert_all_readable(rt, contents)


# ---------------------------------------------------------------- availability key


def test_files_never_fall_back_to_the_availability_key_and_recovery_is_explicit(
    rt: Runtime,
) -> None:
    setup_tenant_and_vaults(rt, third=True)
    rt.vault.create_vault(
        OPERATOR,
        "Contoso-O365SP-NA-VaultA4",
        subscription="contoso-sub",
        region="northeurope",
        tenant=TENANT,
        purge_protection=True,
    )
    rt.vault.create_key(
        OPERATOR,
        "Contoso-O365SP-NA-VaultA4",
        "Key004",
        kty="RSA-HSM",
        key_ops=["wrapKey", "unwrapKey"],
    )
    rt.vault.set_access_policy(OPERATOR, "Contoso-O365SP-NA-VaultA4", SHAREPOINT.app_id, GRANT)
    uri_d = "https://contoso-o365sp-na-vaulta4.vault.azure.net/keys/Key004"
    register(rt)
    contents = populate(rt, sites=2)
    # the customer's root keys are gone: both vaults refuse the SharePoint principal
    rt.vault.remove_access_policy(OPERATOR, VAULT_A, SHAREPOINT.app_id)
    rt.vault.remove_access_policy(OPERATOR, VAULT_B, SHAREPOINT.app_id)
    rt.key_cache.clear()
    url, path = next(iter(contents))
    with pytest.raises(KeyAccessDenied):
        get(rt, url, path)
    with pytest.raises(KeyAccessDenied):
        put(rt, url, path, b"new")
    with pytest.raises(KeyAccessDenied):  # a system operation does not fall back either
        rt.policies.generation_key(str(status(rt).generation_id), system=True)
    assert audit_count(rt, FALLBACK_ACTIVITY) == 0

    admin = rt.principals.create(
        OPERATOR, "admin1@contoso.com", tenant=TENANT, roles=["tenant-admin"]
    )[0].actor()
    with pytest.raises(Forbidden, match="platform operator"):
        rt.files.recover(admin, TENANT, URI_C, uri_d, with_availability_key=True, reason="lost")
    with pytest.raises(BadParameter, match="--with-availability-key"):
        rt.files.recover(OPERATOR, TENANT, URI_C, uri_d, with_availability_key=False, reason="x")
    with pytest.raises(BadParameter, match="reason"):
        rt.files.recover(OPERATOR, TENANT, URI_C, uri_d, with_availability_key=True, reason=" ")
    assert status(rt).generation_count == 1
    job = rt.files.recover(
        OPERATOR, TENANT, URI_C, uri_d, with_availability_key=True, reason="ticket 4711"
    )
    assert status(rt).state == "Rolling"
    done = rt.worker().run_until_idle()
    assert [j.id for j in done] == [job.id] and done[0].state == "succeeded"
    final = status(rt)
    assert final.state == "Registered"
    assert (final.primary_key_uri, final.secondary_key_uri) == (URI_C, uri_d)
    assert audit_count(rt, RECOVERY_ACTIVITY) == 1  # one TIK generation was recovered
    assert audit_count(rt, "SPODataEncryptionPolicyRecover") == 1
    assert audit_count(rt, FALLBACK_ACTIVITY) == 0
    rt.key_cache.clear()
    assert_all_readable(rt, contents)


# ---------------------------------------------------------------- purge


def test_purge_path_destroys_every_key_and_the_content(rt: Runtime) -> None:
    setup_tenant_and_vaults(rt)
    register(rt)
    contents = populate(rt, sites=3)
    requester = rt.principals.create(
        OPERATOR, "admin1@contoso.com", tenant=TENANT, roles=["tenant-admin"]
    )[0].actor()
    approver = rt.principals.create(
        OPERATOR, "admin2@contoso.com", tenant=TENANT, roles=["tenant-admin", "purge-approver"]
    )[0].actor()
    with pytest.raises(Conflict, match="still holds wrapKey, unwrapKey"):
        rt.files.request_purge(requester, TENANT, reason="leaving", contact="sec@contoso.com")
    rt.vault.remove_access_policy(OPERATOR, VAULT_A, SHAREPOINT.app_id)
    rt.vault.remove_access_policy(OPERATOR, VAULT_B, SHAREPOINT.app_id)
    with pytest.raises(Conflict, match="no permanent data purge"):
        rt.files.approve_purge(approver, TENANT, "admin2@contoso.com")
    requested = rt.files.request_purge(
        requester, TENANT, reason="leaving", contact="sec@contoso.com"
    )
    assert requested.state == "PurgeRequested" and requested.purge_reason == "leaving"
    with pytest.raises(Conflict, match="purge"):
        rt.files.create_site(OPERATOR, site_url("late"))
    with pytest.raises(Forbidden, match="different principal than the requester"):
        rt.files.approve_purge(requester, TENANT, "admin1@contoso.com")
    with pytest.raises(Forbidden, match="as themselves"):
        rt.files.approve_purge(requester, TENANT, "admin2@contoso.com")
    with pytest.raises(Forbidden, match="not a principal of tenant"):
        rt.files.approve_purge(OPERATOR, TENANT, "nobody@contoso.com")
    kept = {p: p.read_bytes() for p in blob_files(rt)}  # what a thief copied before
    assert kept
    job = rt.files.approve_purge(approver, TENANT, "admin2@contoso.com")
    assert rt.worker().run_until_idle()[0].state == "succeeded"
    assert rt.jobs.get(job.id).state == "succeeded"

    assert list(blob_files(rt)) == []
    with rt.db.transaction() as session:
        policy = session.scalar(select(PolicyRow).where(PolicyRow.kind == "files"))
        assert policy is not None and policy.state == "purged"
        assert policy.sealed_availability_key is None
        for generation in session.scalars(select(GenerationRow)):
            assert generation.wrapped_1 is None and generation.wrapped_2 is None
            assert generation.wrapped_availability is None
        assert all(k.wrapped is None for k in session.scalars(select(SiteKeyRow)))
        assert session.scalar(select(func.count()).select_from(FileChunkRow)) == 0
    url, path = next(iter(contents))
    with pytest.raises(SiteNotFound):
        get(rt, url, path)
    assert status(rt).state == "Unregistered"
    assert audit_count(rt, "SPODataEncryptionPolicyPurged") == 1
    # the copied ciphertext is all that is left, and no key that could open it exists: not even
    # the vault keys, were access granted back, since no wrapped TIK remains anywhere
    assert all(CANARY not in data for data in kept.values())
    # the tenant can start again from scratch
    rt.vault.set_access_policy(OPERATOR, VAULT_A, SHAREPOINT.app_id, GRANT)
    rt.vault.set_access_policy(OPERATOR, VAULT_B, SHAREPOINT.app_id, GRANT)
    rt.files.create_site(OPERATOR, url)
    register(rt)
    put(rt, url, path, b"fresh")
    assert get(rt, url, path) == b"fresh"


# ---------------------------------------------------------------- a file larger than memory

BIG = 300 * 1024 * 1024

_BIG_SCRIPT = r"""
import json, sys, time
from pathlib import Path
from customerkey.config import Settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from tests.support.filesfixtures import FINANCE, Generated

home, url, size, dest = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak():
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


rt = Runtime.open(Settings(home=Path(home), database_url=url))
files = rt.files
import io
files.upload(OPERATOR, FINANCE, "warmup.bin", io.BytesIO(b"w" * 100_000))
files.download(OPERATOR, FINANCE, "warmup.bin", io.BytesIO())
reset_peak()
base_up = status("VmRSS")
start = time.perf_counter()
version = files.upload(OPERATOR, FINANCE, "Shared Documents/big.bin", Generated(size, seed=7))
up_seconds = time.perf_counter() - start
peak_up = status("VmHWM")
reset_peak()
base_down = status("VmRSS")
start = time.perf_counter()
with open(dest, "wb") as handle:
    files.download(OPERATOR, FINANCE, "Shared Documents/big.bin", handle)
down_seconds = time.perf_counter() - start
peak_down = status("VmHWM")
rt.close()
print(json.dumps({
    "chunks": version.chunk_count, "size": version.size,
    "up_seconds": up_seconds, "down_seconds": down_seconds,
    "up_growth": peak_up - base_up, "down_growth": peak_down - base_down,
}))
"""


@pytest.mark.software_protector  # memory bounds of streaming; its child opens the home alone
def test_a_300_mb_file_streams_in_and_out_in_bounded_memory(
    runtime: Runtime, db_url: str, tmp_path: Path
) -> None:
    setup_tenant_and_vaults(runtime)
    register(runtime)
    runtime.files.create_site(OPERATOR, FINANCE)
    dest = tmp_path / "big.out"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")])}
    result = subprocess.run(
        [sys.executable, "-c", _BIG_SCRIPT, str(runtime.home.path), db_url, str(BIG), str(dest)],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"\n300 MB file: upload {BIG / report['up_seconds'] / 2**20:.0f} MiB/s, download "
        f"{BIG / report['down_seconds'] / 2**20:.0f} MiB/s, peak RSS growth "
        f"{report['up_growth'] / 2**20:.1f} MiB up / {report['down_growth'] / 2**20:.1f} MiB down"
    )
    assert report["size"] == BIG and report["chunks"] == BIG // (8 << 20) + 1
    # held whole, the file would need 300 MB; streamed, a chunk's buffers and little else
    assert report["up_growth"] < 64 * 2**20, report
    assert report["down_growth"] < 64 * 2**20, report
    assert dest.stat().st_size == BIG
    assert digest_of_file(dest) == digest_of_generated(BIG, seed=7)
    # and back through this process: a single version, unreadable at rest
    stored = sum(p.stat().st_size for p in blob_files(runtime))
    assert stored > BIG
    dest.unlink()
