"""A real ``customerkey serve`` whose home folder (SQLite database, blobs) is on a filesystem
that fills up, then gets space back.

The disk is a small tmpfs (``tests/support/small_disk.py``): full, it answers ENOSPC, so
SQLite fails with ``SQLITE_FULL`` and blob writes with ENOSPC, the paths a real full disk takes.
While it is full:

- every write is a 503 ``InsufficientStorage`` with ``Retry-After`` (database and blob writes);
- key operations fail closed with the same 503: their audit record cannot be written, and no
  audit record means no key use (docs/SECURITY.md);
- reads that write nothing go on: tokens, key and vault metadata, mailbox items (their DEP key
  in the cache), files lists, the audit log;
- ``/healthz`` answers 503 ``{"status": "degraded", "storage": "full"}``;
- nothing is a 500, and the server logs no unhandled error.

Once space is freed the health recovers without a client's write, the same requests succeed,
what was acknowledged before is all there, and the audit chain verifies.
"""

from __future__ import annotations

import base64
import io
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from customerkey.config import Settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from tests.support.live_servers import DOMAIN, LiveServer, start_server
from tests.support.mailfixtures import KEY_A, TENANT, VAULT_A, setup_policy
from tests.support.small_disk import SmallDisk, small_disk

ADMIN = "admin@contoso.com"
RETRY_AFTER = "7"
JOB_TIMEOUT = 30.0
SITE_URL = f"https://{TENANT}.sharepoint.local/sites/full"
KEPT = b"acknowledged before the disk filled up"
MESSAGE = b"From: a@contoso.com\r\nTo: b@contoso.com\r\nSubject: kept\r\n\r\nbody %d\r\n"


@dataclass
class Installation:
    server: LiveServer
    disk: SmallDisk
    token: str
    secret: str
    site: str
    version: str  # of KEY_A

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.server.admin(method, path, token=self.token, **kwargs)

    def keys(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.server.vault_url(VAULT_A)}{path}?api-version=7.5"
        headers = {"Authorization": f"Bearer {self.token}"}
        return self.server.http.request(method, url, headers=headers, **kwargs)


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[Installation]:
    with small_disk(tmp_path / "disk", 32) as disk:
        home = disk.path / "home"
        secret = _prepare(home)
        server = start_server(
            home,
            log_path=tmp_path / "serve.log",
            env={
                "CUSTOMERKEY_STORAGE_RETRY_AFTER_SECONDS": RETRY_AFTER,
                # Checkpoints only on demand: a periodic one would go to a file on this disk.
                "CUSTOMERKEY_AUDIT_CHECKPOINT_SECONDS": "0",
            },
        )
        install_loopback_resolver(DOMAIN)
        try:
            token = server.token(ADMIN, secret)
            site = server.admin("GET", f"/tenants/{TENANT}/sites", token=token).json()["value"]
            key = server.http.get(
                f"{server.vault_url(VAULT_A)}/keys/{KEY_A}?api-version=7.5",
                headers={"Authorization": f"Bearer {token}"},
            )
            version = key.json()["key"]["kid"].rsplit("/", 1)[1]
            yield Installation(server, disk, token, secret, site[0]["SiteId"], version)
        finally:
            uninstall_loopback_resolver(DOMAIN)
            status = server.stop()
            bugs = server.bugs()
        assert status == 0, server.log()[-4000:]
        assert not bugs, "the server logged unhandled errors:\n" + "\n".join(bugs)


def _prepare(home: Path) -> str:
    """Two mailboxes (one under a DEP) with mail, a site, and a tenant admin allowed to use
    the DEP's first root key; returns the admin's secret."""
    runtime = Runtime.open(Settings(home=home))
    try:
        setup_policy(runtime)
        admin, secret = runtime.principals.create(
            OPERATOR, ADMIN, tenant=TENANT, roles=["tenant-admin"]
        )
        runtime.vault.set_access_policy(
            OPERATOR, VAULT_A, admin.object_id, ["get", "list", "create", "wrapKey", "unwrapKey"]
        )
        for upn, policy in (("dep@contoso.com", "NA-DEP"), ("plain@contoso.com", None)):
            runtime.mail.create_mailbox(OPERATOR, TENANT, upn, policy=policy)
            for i in range(2):
                runtime.mail.add_message(OPERATOR, upn, MESSAGE % i)
        runtime.files.create_site(OPERATOR, SITE_URL)
        runtime.files.upload(OPERATOR, SITE_URL, "kept.txt", io.BytesIO(KEPT))
    finally:
        runtime.close()
    return secret


def _writes(inst: Installation, n: int) -> dict[str, httpx.Response]:
    """One of each kind of write; ``n`` keeps names apart between rounds."""
    return {
        "create vault": inst.admin(
            "POST",
            "/vaults",
            json={"name": f"full-vault-{n}", "subscription": "s", "region": "eastus"},
        ),
        "create key": inst.keys("POST", f"/keys/full-key-{n}/create", json={"kty": "EC"}),
        "create mailbox": inst.admin(
            "POST", f"/tenants/{TENANT}/mailboxes", json={"upn": f"new{n}@contoso.com"}
        ),
        "upload file": inst.admin(
            "PUT", f"/sites/{inst.site}/files/report-{n}.txt", content=b"quarterly " * 400
        ),
    }


def _key_operations(inst: Installation, wrapped: str) -> dict[str, httpx.Response]:
    path = f"/keys/{KEY_A}/{inst.version}"
    return {
        "wrapKey": inst.keys(
            "POST", f"{path}/wrapKey", json={"alg": "RSA-OAEP-256", "value": "AAAA"}
        ),
        "unwrapKey": inst.keys(
            "POST", f"{path}/unwrapKey", json={"alg": "RSA-OAEP-256", "value": wrapped}
        ),
    }


def _reads(inst: Installation) -> dict[str, httpx.Response]:
    reads = {
        "token": inst.server.token_response(ADMIN, inst.secret),
        "get key": inst.keys("GET", f"/keys/{KEY_A}"),
        "list keys": inst.keys("GET", "/keys"),
        "list vaults": inst.admin("GET", "/vaults"),
        "audit log": inst.admin("GET", "/audit", params={"limit": 5}),
        "list files": inst.admin("GET", f"/sites/{inst.site}/files"),
        "download file": inst.admin("GET", f"/sites/{inst.site}/files/kept.txt"),
    }
    for upn in ("dep@contoso.com", "plain@contoso.com"):
        items = inst.admin("GET", f"/mailboxes/{upn}/items")
        reads[f"list {upn}"] = items
        for item in items.json()["value"]:
            reads[f"read {upn} {item['Seq']}"] = inst.admin(
                "GET", f"/mailboxes/{upn}/items/{item['Id']}"
            )
    return reads


def _mail(inst: Installation) -> dict[str, bytes]:
    found = {}
    for upn in ("dep@contoso.com", "plain@contoso.com"):
        for item in inst.admin("GET", f"/mailboxes/{upn}/items").json()["value"]:
            read = inst.admin("GET", f"/mailboxes/{upn}/items/{item['Id']}")
            assert read.status_code == 200, read.text
            found[item["Id"]] = read.content
    return found


def _run_job(inst: Installation) -> dict[str, object]:
    """Put the plain mailbox under the DEP (a re-key job) and wait for the job to end."""
    queued = inst.admin(
        "PUT",
        "/mailboxes/plain@contoso.com/dataEncryptionPolicy",
        json={"data_encryption_policy": "NA-DEP"},
    )
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["job"]["Id"]
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        job: dict[str, object] = inst.admin("GET", f"/jobs/{job_id}").json()
        if job["State"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)  # polling the job's state


def _truncate_wal(home: Path) -> None:
    # An idle server's WAL may still hold room from earlier writes, which a new write would
    # reuse: empty it, so that every write needs a page the full disk does not have.
    with sqlite3.connect(home / "customerkey.db") as connection:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


def test_a_full_disk_is_a_503_with_retry_after_and_nothing_is_lost(
    installation: Installation,
) -> None:
    inst = installation
    mail_before = _mail(inst)  # also puts the DEP key in the server's cache
    assert len(mail_before) == 4
    wrapped = _key_operations(inst, "AAAA")["wrapKey"].json()["value"]
    assert inst.server.http.get(f"{inst.server.url}/healthz").json()["storage"] == "ok"

    _truncate_wal(inst.server.home)
    inst.disk.fill()
    log_start = inst.server.log_size()

    refused = {**_writes(inst, 1), **_key_operations(inst, wrapped)}
    for what, response in refused.items():
        assert response.status_code == 503, (what, response.status_code, response.text)
        assert response.json()["error"]["code"] == "InsufficientStorage", what
        assert response.headers.get("retry-after") == RETRY_AFTER, what
    for what, response in _reads(inst).items():
        assert response.status_code == 200, (what, response.status_code, response.text)
    health = inst.server.http.get(f"{inst.server.url}/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert health.json()["storage"] == "full"
    assert health.headers.get("retry-after") == RETRY_AFTER
    assert not inst.server.bugs(log_start)

    inst.disk.free()
    health = inst.server.http.get(f"{inst.server.url}/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["storage"] == "ok"
    for what, response in {**_writes(inst, 1), **_key_operations(inst, wrapped)}.items():
        assert response.status_code in (200, 201), (what, response.status_code, response.text)
    unwrapped = _key_operations(inst, wrapped)["unwrapKey"].json()["value"]
    assert base64.urlsafe_b64decode(unwrapped + "==") == b"\0\0\0"

    # Nothing acknowledged was lost, nothing refused was half done.
    mail_after = _mail(inst)
    assert {k: mail_after[k] for k in mail_before} == mail_before
    keys = inst.keys("GET", "/keys").json()["value"]
    names = {k["kid"].split("/keys/", 1)[1].split("/")[0] for k in keys}
    assert {KEY_A, "full-key-1"} <= names
    files = inst.admin("GET", f"/sites/{inst.site}/files").json()["value"]
    assert len(files) == 2
    assert inst.admin("GET", f"/sites/{inst.site}/files/kept.txt").content == KEPT
    # The server's job worker lived through it: a job queued now runs to the end.
    assert _run_job(inst)["State"] == "succeeded"
    inst.server.stop()
    verified = inst.server.cli_json("audit", "verify")
    assert verified["Ok"] is True, verified
