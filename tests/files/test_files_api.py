"""The files workload's admin API against a real ``customerkey serve``: register, status,
sites, streamed upload and download with versions, key roll, recycle bin, error shapes."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from customerkey.identity.workload_principals import SHAREPOINT
from tests.support.live_servers import LiveServer

VAULTS = (("ckf-api-a", "ckf-key-a", "eastus"), ("ckf-api-b", "ckf-key-b", "westus"))
SITE = "https://contoso.sharepoint.local/sites/apifinance"


def _uri(live: LiveServer, vault: str, key: str) -> str:
    return f"https://{vault}.vault.azure.net/keys/{key}"


def _wait_registered(live: LiveServer, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = live.admin("GET", "/tenants/contoso/files/policy").json()
        if view["State"] == "Registered" or time.monotonic() > deadline:
            return view
        time.sleep(0.2)


def test_files_policy_sites_and_streamed_files(live: LiveServer) -> None:
    live.cli("tenant", "create", "contoso", "--mail-domain", "contoso.com", check=False)
    for vault, key, region in VAULTS:
        live.create_vault(vault, region=region)
        live.cli("key", "create", vault, key, "--protection", "hsm", "--ops", "wrapKey,unwrapKey")
        live.grant(vault, SHAREPOINT.app_id, ["wrapKey", "unwrapKey", "get"])
    primary, secondary = (_uri(live, v, k) for v, k, _ in VAULTS)

    assert live.admin("GET", "/tenants/contoso/files/policy").json()["State"] == "Unregistered"
    created = live.admin("POST", "/tenants/contoso/sites", json={"Url": SITE, "Title": "Finance"})
    assert created.status_code == 201, created.text
    site_id = created.json()["SiteId"]
    # under the server's request size limit (4 MiB by default), which bounds API uploads
    data = os.urandom(3 * 1024 * 1024 + 5)
    put = live.admin("PUT", f"/sites/{site_id}/files/Shared Documents/a.bin", content=data[:1000])
    assert put.status_code == 201 and put.json()["Version"] == 1, put.text

    registered = live.admin(
        "POST",
        "/tenants/contoso/files/policy",
        json={"PrimaryKeyId": primary, "SecondaryKeyId": secondary},
    )
    assert registered.status_code == 202, registered.text
    again = live.admin(
        "POST",
        "/tenants/contoso/files/policy",
        json={"PrimaryKeyId": primary, "SecondaryKeyId": secondary},
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "Conflict"
    view = _wait_registered(live)
    assert view["State"] == "Registered" and view["PrimaryKeyName"] == "ckf-key-a"
    site_state = live.admin("GET", f"/sites/{site_id}/dataEncryptionPolicy").json()
    assert site_state["State"] == "Registered"

    # a second version, streamed back byte for byte; one past the size limit is refused
    put = live.admin("PUT", f"/sites/{site_id}/files/Shared Documents/a.bin", content=data)
    assert put.status_code == 201 and put.json()["Version"] == 2, put.text
    too_big = live.admin("PUT", f"/sites/{site_id}/files/b.bin", content=b"x" * (5 << 20))
    assert too_big.status_code == 413
    got = live.admin("GET", f"/sites/{site_id}/files/Shared Documents/a.bin")
    assert got.status_code == 200 and got.headers["X-Version"] == "2"
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    old = live.admin("GET", f"/sites/{site_id}/files/Shared Documents/a.bin?version=1")
    assert old.content == data[:1000]

    # a roll; a second one while it runs is refused (or, if it already finished, nothing new)
    live.cli("key", "rotate", VAULTS[0][0], VAULTS[0][1])
    rolled = live.admin(
        "POST", "/tenants/contoso/files/policy/roll", json={"KeyType": "Primary", "KeyId": primary}
    )
    assert rolled.status_code == 202, rolled.text
    assert _wait_registered(live)["KeyGenerations"] == 2
    assert live.admin("GET", f"/sites/{site_id}/files/Shared Documents/a.bin").content == data

    # recycle bin and errors in the Key Vault shape
    deleted = live.admin("DELETE", f"/sites/{site_id}/files/Shared Documents/a.bin")
    assert deleted.json()["State"] == "RecycleBin"
    missing = live.admin("GET", f"/sites/{site_id}/files/Shared Documents/a.bin")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "FileNotFound"
    restored = live.admin(
        "POST", f"/sites/{site_id}/recycleBin/restore", json={"File": "Shared Documents/a.bin"}
    )
    assert restored.status_code == 200 and restored.json()["Versions"] == 2
    bad = live.admin(
        "POST", "/tenants/contoso/files/policy/roll", json={"KeyType": "Third", "KeyId": primary}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "BadParameter"
    listed = live.admin("GET", "/tenants/contoso/sites").json()["value"]
    assert [s["Url"] for s in listed] == [SITE]
