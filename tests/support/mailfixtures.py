"""Building blocks for service-side tests: two vaults with root keys granted to the mail
workload, a tenant, a DEP, and generated mail stores."""

from __future__ import annotations

import email.message
import mailbox
from dataclasses import dataclass
from pathlib import Path

from customerkey.identity.workload_principals import EXCHANGE
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR

TENANT = "contoso"
VAULT_A = "Contoso-O365EX-NA-VaultA1"
VAULT_B = "Contoso-O365EX-NA-VaultA2"
KEY_A = "Contoso-O365EX-NA-VaultA1-Key001"
KEY_B = "Contoso-O365EX-NA-VaultA2-Key001"
URI_A = f"https://{VAULT_A.lower()}.vault.azure.net/keys/{KEY_A}"
URI_B = f"https://{VAULT_B.lower()}.vault.azure.net/keys/{KEY_B}"
GRANT = ["wrapKey", "unwrapKey", "get"]


@dataclass(frozen=True)
class Setup:
    policy_id: str
    generation_id: str


def setup_tenant_and_keys(rt: Runtime, *, grant: bool = True) -> None:
    rt.tenants.create(OPERATOR, TENANT, mail_domain="contoso.com")
    for vault, region, key in ((VAULT_A, "eastus", KEY_A), (VAULT_B, "westus", KEY_B)):
        rt.vault.create_vault(
            OPERATOR,
            vault,
            subscription="contoso-sub",
            region=region,
            tenant=TENANT,
            purge_protection=True,
        )
        rt.vault.create_key(OPERATOR, vault, key, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"])
        if grant:
            rt.vault.set_access_policy(OPERATOR, vault, EXCHANGE.app_id, GRANT)


def setup_policy(rt: Runtime, name: str = "NA-DEP") -> Setup:
    setup_tenant_and_keys(rt)
    policy = rt.policies.create(OPERATOR, TENANT, name, [URI_A, URI_B], description="NA")
    assert policy.current_generation_id is not None
    return Setup(policy.id, policy.current_generation_id)


def canary(i: int) -> str:
    return f"CANARY-{i:04d}-d41d8cd98f00b204"


def write_mbox(path: Path, count: int, *, big: bool = False) -> list[bytes]:
    """An mbox of ``count`` messages (plain, multipart, one >1 MiB when ``big``); returns
    each message's bytes as the mbox reader gives them back."""
    box = mailbox.mbox(str(path))
    for i in range(count):
        msg = email.message.EmailMessage()
        msg["From"] = f"sender{i}@fabrikam.com"
        msg["To"] = "alice@contoso.com"
        msg["Subject"] = f"Quarterly numbers {i} {canary(i)}"
        msg["Date"] = f"Tue, {1 + i % 28:02d} Nov 2026 10:00:00 +0000"
        body = f"Hello {canary(i)}\nFrom the finance team\n" + "lorem ipsum " * (i * 7)
        if big and i == 0:
            body += "Z" * (1_200_000)
        msg.set_content(body)
        if i % 3 == 1:
            msg.add_attachment(
                (canary(i) * 40).encode(),
                maintype="application",
                subtype="octet-stream",
                filename=f"report{i}.bin",
            )
        box.add(msg)
    box.flush()
    box.close()
    reread = mailbox.mbox(str(path), create=False)
    try:
        return [reread.get_bytes(k) for k in reread.iterkeys()]
    finally:
        reread.close()


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def assert_no_plaintext(root: Path, needles: list[bytes]) -> None:
    for path in files_under(root):
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"plaintext {needle[:30]!r} found in {path}"
