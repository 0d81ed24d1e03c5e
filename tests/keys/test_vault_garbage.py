"""A vault returning garbage: reads keep their promised behaviour.

Two ``customerkey serve`` clouds (``remote_vaults.Cloud``) hold the DEP's root keys, each
behind a ``garbage_vault.GarbageVault``: a real TLS reverse proxy on the cloud's public
address that relays to the cloud and, when switched, corrupts the cloud's unwrapKey answers
(invalid JSON, JSON of the wrong shape, bad base64url, HTML with 200, a body cut short,
random keys of the right and a wrong length, a 4 MiB body). The platform under test is a
``Runtime`` in this process with the real Azure SDK, on SQLite (and PostgreSQL when
configured), set up by the fixtures of ``tests.support.mail_vault_faults`` (a mail user on the DEP
with a generated mbox). The DEP is made while both proxies pass answers through; then, for
every garbage mode:

- vault a garbage, vault b healthy: uncached reads decrypt to the original bytes in both
  orders (root key a asked first or not), no availability-key fallback, and the key cached is
  the DEP key;
- both garbage: reads decrypt through the availability key, each audited "Fallback to
  Availability Key" with both failures naming their key URI; nothing is cached; without the
  availability key (the files workload's rule) the answer is ``KeyProviderUnavailable``;
- both back to ``pass``, nothing cleared: the root keys answer and the cache holds the DEP key.

Once more with vault a garbage and cloud b stopped. Garbage in the answers a DEP is made from
(get, wrap) refuses a new DEP with a clear error. All in one test, so that one pair of clouds
serves it (starting and provisioning them costs more than every mode together). Neither cloud
logs a 5xx or a traceback, the proxies none of their own, and the platform logs no error.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from customerkey.azure import resolve_to_loopback
from customerkey.crypto.key_check import key_check_value
from customerkey.errors import BadParameter, KeyProviderUnavailable
from customerkey.vault.models import OPERATOR
from tests.support import mail_vault_faults as faults
from tests.support.garbage_vault import GARBAGE_MODES, UPSTREAM_HOST, GarbageVault
from tests.support.remote_vaults import (
    DOMAIN,
    TENANT,
    Cloud,
    make_ready,
    provision,
    stop_clouds,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.storage

# The mail fixtures of the vault-faults tests, over this module's clouds (``clouds`` below).
source = faults.source
platform = faults.platform
mail = faults.mail


@dataclass
class Garbage:
    clouds: list[Cloud]
    proxies: list[GarbageVault]


@pytest.fixture(scope="module")
def garbage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Garbage]:
    base = tmp_path_factory.mktemp("garbage-clouds")
    port_a = free_port()
    port_b = free_port()
    while port_b == port_a:
        port_b = free_port()
    pair = [
        Cloud(
            "a",
            base / "cloud-a",
            port_a,
            "contoso-vault-a",
            "contoso-root-a",
            "mailapp-a",
            listen_host=UPSTREAM_HOST,
        ),
        Cloud(
            "b",
            base / "cloud-b",
            port_b,
            "contoso-vault-b",
            "contoso-root-b",
            "mailapp-a",
            listen_host=UPSTREAM_HOST,
        ),
    ]
    rng = random.Random(20261201)
    proxies = [GarbageVault(cloud, rng=rng) for cloud in pair]
    try:
        with resolve_to_loopback(DOMAIN):
            for cloud in pair:
                cloud.spawn()
            for proxy in proxies:
                proxy.start()
            for cloud in pair:
                cloud.wait_ready()  # through the proxy: its certificate is the cloud's
            provision(pair)
            yield Garbage(pair, proxies)
            stop_clouds(pair)
    finally:
        for proxy in proxies:
            proxy.stop()
        for cloud in pair:
            cloud.kill()
    for cloud in pair:
        assert not cloud.bugs(), f"cloud {cloud.name} logged errors:\n" + "\n".join(cloud.bugs())
    for proxy in proxies:
        assert not proxy.errors, "\n".join(proxy.errors)


@pytest.fixture
def clouds(garbage: Garbage) -> list[Cloud]:
    """Both clouds running with the mail application's access in place, proxies passing."""
    for proxy in garbage.proxies:
        proxy.set("pass")
    make_ready(garbage.clouds)
    return garbage.clouds


def _platform_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.slow
def test_garbage_from_a_vault_never_reaches_a_read(
    mail: faults.Mail, garbage: Garbage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    rt = mail.rt
    generation = mail.generation_id
    proxy_a, proxy_b = garbage.proxies
    cloud_b = garbage.clouds[1]
    kind, wrapped = rt.policies.wrapped_generation(generation)
    # The generation carries the check value of the DEP key the root keys gave at import.
    assert wrapped.key_check == key_check_value(mail.dep_key, generation)
    uris = (str(wrapped.uri_1), str(wrapped.uri_2))
    fallbacks = 0

    def read_intact(n: int, request_id: str | None = None) -> None:
        item = mail.items[n % len(mail.items)]
        actor = dataclasses.replace(OPERATOR, request_id=request_id)
        assert faults._sha(faults._read(mail, item, actor)) == mail.digests[item.id], mode

    def fallback_record(request_id: str) -> dict[str, object]:
        records = faults._fallbacks(mail)
        assert len(records) == fallbacks, (mode, len(records))
        (record,) = [r for r in records if r.request_id == request_id]
        return record.details

    for n, mode in enumerate(GARBAGE_MODES):
        # 1. Vault a answers garbage, vault b is healthy: the other root key answers.
        proxy_a.set(mode)
        corrupted = proxy_a.corrupted()
        seen = faults._read_in_both_orders(mail, at_least=2)
        assert seen[2] > 0, mode  # root key a was asked first at least once...
        assert proxy_a.corrupted() > corrupted, mode  # ...and answered garbage
        assert rt.key_cache.peek(generation) == mail.dep_key, mode
        assert len(faults._fallbacks(mail)) == fallbacks, mode

        # 2. Both answer garbage: the availability key answers, audited, not cached.
        proxy_b.set(mode)
        rt.key_cache.clear()
        request_id = f"req-garbage-{mode}"
        read_intact(n, request_id)
        fallbacks += 1
        details = fallback_record(request_id)
        assert details["Reason"] == "system-errors", mode
        assert details["ScopeKeyVersionId"] == generation
        failures = details["Failures"]
        assert isinstance(failures, list) and len(failures) == 2, (mode, failures)
        assert sorted(f.split(": ", 1)[0] for f in failures) == sorted(uris), failures
        assert len(rt.key_cache) == 0, mode
        # Without the availability key (the files workload's rule) it is an outage.
        with pytest.raises(KeyProviderUnavailable) as failed:
            rt.policies.resolver.resolve(
                rt.policies.provider(kind), wrapped, allow_availability=False
            )
        assert all(uri in failed.value.message for uri in uris), failed.value.message
        assert len(rt.key_cache) == 0, mode

        # 3. Both healthy again, nothing cleared: the root keys answer; the DEP key is cached.
        proxy_a.set("pass")
        proxy_b.set("pass")
        read_intact(n + 1)
        assert rt.key_cache.peek(generation) == mail.dep_key, mode
        assert len(faults._fallbacks(mail)) == fallbacks, mode

    # One vault answering garbage, the other stopped (its proxy answers 502).
    proxy_a.set("random-key-32")
    stop_clouds([cloud_b])
    rt.key_cache.clear()
    read_intact(0, "req-garbage-and-down")
    fallbacks += 1
    failures = fallback_record("req-garbage-and-down")["Failures"]
    assert isinstance(failures, list)
    assert any("does not match this generation" in f for f in failures), failures
    assert any("502" in f for f in failures), failures
    assert len(rt.key_cache) == 0
    proxy_a.set("pass")
    faults._read_all_intact(mail)
    assert rt.key_cache.peek(generation) == mail.dep_key
    assert len(faults._fallbacks(mail)) == fallbacks
    assert proxy_b.counts["upstream-down"] > 0
    make_ready(garbage.clouds)

    # Garbage in the answers a DEP is made from (get, wrapKey): a clear refusal naming the key.
    a, b = garbage.clouds
    for mode in ("wrong-shape", "html-200", "random-key-short"):
        proxy_a.set(mode, scope="keys")
        with pytest.raises(BadParameter, match=r"contoso-root-a.*(be read|holds no|names no)"):
            rt.policies.create(OPERATOR, TENANT, "GARBAGE-DEP", [a.key_uri, b.key_uri])
    assert [p.name for p in rt.policies.list_policies(OPERATOR, TENANT)] == [faults.POLICY]
    proxy_a.set("pass")
    policy = rt.policies.create(OPERATOR, TENANT, "GARBAGE-DEP", [a.key_uri, b.key_uri])
    assert policy.generation_count == 1

    assert rt.audit_log.verify(OPERATOR).ok
    assert not _platform_errors(caplog), _platform_errors(caplog)
