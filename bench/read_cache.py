"""cold and warm read: read a 4 KiB mail item with an empty DEP-key cache and with a warm one.

In-process, on SQLite, through ``MailService.read_item`` as the mailbox's owner: the mailbox
is protected by a DEP over two RSA-2048 root keys in two vaults of this installation
(reached through the in-process key provider as the Exchange service principal, as
``customerkey serve`` does). A cold read clears the DEP-key cache first, so it unwraps the
DEP key through a root key (one RSA-OAEP-256 unwrap, with its audit record and usage count),
then the mailbox key (AES-KWP), then opens the envelope. A warm read finds the DEP key in the
cache. "vault calls" counts the resolver's calls to a root key, per read.

There is no baseline in the issue for this one; the figure that matters is that a warm read
makes no vault call at all.
"""

from __future__ import annotations

import time

from bench._common import DEP_NAME, TENANT, Row, open_runtime, percentile, setup_dep, temp_dir
from customerkey.vault.models import OPERATOR

NAME = "read_cache"
TITLE = "Cold and warm 4 KiB mail item read (DEP-key cache empty / warm)"

OWNER = "alice@contoso.com"
WARM_P50_TARGET_MS = 1.0


def _message(size: int) -> bytes:
    head = (
        f"From: sender@fabrikam.com\r\nTo: {OWNER}\r\nSubject: Quarterly numbers\r\n"
        "Date: Tue, 03 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@fabrikam.com>\r\n\r\n"
    ).encode()
    line = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head)]
    return head + body


def run(quick: bool) -> list[Row]:
    cold_reads, warm_reads = (30, 300) if quick else (300, 5000)
    rows: list[Row] = []
    with temp_dir("read") as tmp:
        rt = open_runtime(tmp / "home")
        try:
            setup_dep(rt)
            rt.mail.create_mailbox(OPERATOR, TENANT, OWNER, policy=DEP_NAME)
            message = _message(4096)
            item = rt.mail.add_message(OPERATOR, OWNER, message)
            # The mailbox's owner: the user principal of its tenant with its UPN.
            owner = rt.principals.create(OPERATOR, OWNER, tenant=TENANT)[0].actor("bench")
            resolver = rt.policies.resolver

            def timed(clear: bool) -> tuple[float, int]:
                if clear:
                    rt.key_cache.clear()
                calls = resolver.vault_calls
                start = time.perf_counter()
                data = rt.mail.read_item(owner, OWNER, item.id)
                elapsed = time.perf_counter() - start
                assert data == message
                return elapsed, resolver.vault_calls - calls

            cold = [timed(True) for _ in range(cold_reads)]
            timed(False)  # the cache is warm from here on
            warm = [timed(False) for _ in range(warm_reads)]
        finally:
            rt.close()
    for label, results in (("cold (empty DEP-key cache)", cold), ("warm", warm)):
        times = [t * 1000 for t, _ in results]
        calls = sum(c for _, c in results) / len(results)
        is_warm = label == "warm"
        rows.append(
            Row(
                NAME,
                f"4 KiB read, {label}",
                "p50 ms",
                percentile(times, 50),
                target=f"< {WARM_P50_TARGET_MS:.0f} ms" if is_warm else "",
                met=percentile(times, 50) < WARM_P50_TARGET_MS if is_warm else None,
                extra={"p99_ms": percentile(times, 99), "reads": len(times)},
            )
        )
        rows.append(Row(NAME, f"4 KiB read, {label}", "p99 ms", percentile(times, 99)))
        rows.append(
            Row(
                NAME,
                f"4 KiB read, {label}",
                "vault calls/read",
                calls,
                target="0" if is_warm else "",
                met=calls == 0 if is_warm else None,
            )
        )
    return rows
