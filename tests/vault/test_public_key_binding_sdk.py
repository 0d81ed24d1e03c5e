"""Issue 13, finding 10, through a real ``customerkey serve`` and the unmodified SDK.

Someone who can write the server's database, but does not hold ``master.key``, replaces a key
version's public modulus with their own. Before public-key tags, ``KeyClient.get_key`` served
the attacker's modulus and ``CryptographyClient`` wrapped data keys locally under it, for the
attacker to unwrap. Now every way of reading or using that version fails with a deliberate
500 ``KeyIntegrityFailure`` naming the key (no traceback in the server's log, nothing written),
and putting the genuine modulus back makes the key work again.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from customerkey.crypto.rsa import b64url_encode
from tests.support.live_servers import ADMIN, BUG_MARKERS, DOMAIN, TENANT, LiveServer

VAULT, KEY = "pk-binding", "root-key"
ALG = KeyWrapAlgorithm.rsa_oaep_256
# No retries: the SDK retries a GET that answers 500 three times with back-off (about 5 s);
# the answer is the same, so the test does not wait for it.
NO_RETRY = {"retry_total": 0}


@pytest.fixture
def server(server_factory: Callable[[], LiveServer]) -> Iterator[LiveServer]:
    """A server of this test's own: its log is expected to hold the deliberate 500s, which the
    shared ``live`` fixture would (rightly) count as bugs."""
    started = server_factory()
    install_loopback_resolver(DOMAIN)
    try:
        started.admin_view = started.cli_json(
            "principal", "create", ADMIN, "--tenant", TENANT, "--roles", "tenant-admin"
        )
        started.admin_secret = started.admin_view["ClientSecret"]
        yield started
    finally:
        uninstall_loopback_resolver(DOMAIN)


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _set_modulus(server: LiveServer, version: str, n: str) -> None:
    """The attacker: write access to the database file, nothing else."""
    with sqlite3.connect(server.home / "customerkey.db", timeout=30) as db:
        changed = db.execute(
            "UPDATE key_versions SET public_n = ? WHERE version = ?", (n, version)
        ).rowcount
    assert changed == 1


def log_paths(server: LiveServer, since: int) -> str:
    """The request paths the server logged after byte ``since`` (lower-cased)."""
    return "\n".join(
        line.lower() for line in server.log()[since:].splitlines() if '"path":' in line
    )


def _refused(call: Callable[[], object], key_label: str, attacker_n: str) -> None:
    with pytest.raises(HttpResponseError) as refused:
        call()
    assert refused.value.status_code == 500
    assert refused.value.error is not None and refused.value.error.code == "KeyIntegrityFailure"
    assert key_label in str(refused.value.message)
    assert refused.value.response is not None
    assert attacker_n not in refused.value.response.text()


def test_replaced_modulus_is_refused_not_served_through_the_sdk(server: LiveServer) -> None:
    server.create_vault(VAULT)
    server.grant(VAULT, ADMIN, ["all"])
    app = server.credential(ADMIN, server.admin_secret)
    ca = str(server.ca)
    try:
        keys = KeyClient(server.vault_url(VAULT), app, connection_verify=ca, **NO_RETRY)
        key = keys.create_rsa_key(KEY, size=2048)
        assert key.id is not None and key.properties.version is not None
        version = key.properties.version
        genuine_n = b64url_encode(key.key.n)  # type: ignore[arg-type]
        secret = os.urandom(32)
        before = CryptographyClient(key.id, app, connection_verify=ca, **NO_RETRY)
        wrapped = before.wrap_key(ALG, secret).encrypted_key  # locally, under the genuine key
        assert before.unwrap_key(ALG, wrapped).key == secret

        attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        attacker_n = b64url_encode(attacker.public_key().public_numbers().n.to_bytes(256, "big"))
        log_start = server.log_size()
        _set_modulus(server, version, attacker_n)
        label = f"{VAULT}/{KEY}/{version}"

        # the key is not served: not the newest, not by version
        _refused(lambda: keys.get_key(KEY), label, attacker_n)
        _refused(lambda: keys.get_key(KEY, version), label, attacker_n)
        # a client that wraps locally cannot get the attacker's key: its get fails, so it
        # falls back to the server's wrapKey, which refuses the version too (before the fix
        # it wrapped locally under the attacker's key, and the attacker unwrapped the result)
        fresh = CryptographyClient(key.id, app, connection_verify=ca, **NO_RETRY)
        with pytest.raises(HttpResponseError) as wrap_refused:
            result = fresh.wrap_key(ALG, secret)
            pytest.fail(
                "wrapped under the stored key; the attacker unwraps it: "
                f"{attacker.decrypt(result.encrypted_key, _oaep()) == secret}"
            )
        assert wrap_refused.value.status_code == 500
        assert wrap_refused.value.error is not None
        assert wrap_refused.value.error.code == "KeyIntegrityFailure"
        server.log_after(log_start, "/wrapkey")  # its access line follows the response
        assert "/wrapkey" in log_paths(server, log_start)  # the server was asked to wrap
        # unwrap (always server-side) and backup refuse the version as well
        _refused(lambda: fresh.unwrap_key(ALG, wrapped), label, attacker_n)
        _refused(lambda: keys.backup_key(KEY), label, attacker_n)

        # deliberate refusals: no traceback, no unhandled error, only this key's requests
        log = server.log()[log_start:]
        lines = server.log().splitlines()
        assert not [line for line in lines if any(marker in line for marker in BUG_MARKERS)]
        five_hundreds = [line for line in log.splitlines() if '"status":500' in line]
        assert five_hundreds and all(f"/keys/{KEY}" in line for line in five_hundreds)
        assert "failed its public-key integrity check" in log

        # nothing was written: the genuine modulus back, and the key works again
        _set_modulus(server, version, genuine_n)
        assert keys.get_key(KEY).key.n == key.key.n
        assert fresh.unwrap_key(ALG, wrapped).key == secret
    finally:
        app.close()
