"""The Contoso scenario of Microsoft's Customer Key documentation, as the guided demo plays
it: the tenant and its mail domain, the two vaults and root keys, the DEP, the user and the
SharePoint sites, and the mailbox content migrated (an mbox whose messages carry canary words).
"""

from __future__ import annotations

import email.message
import hashlib
import mailbox
from pathlib import Path

TENANT = "contoso"
MAIL_DOMAIN = "contoso.com"
GROUP = "Contoso-O365EX-NA-RG"
VAULT_A = "Contoso-O365EX-NA-VaultA1"
VAULT_B = "Contoso-O365EX-NA-VaultA2"
KEY_A = "Contoso-O365EX-NA-VaultA1-Key001"
KEY_B = "Contoso-O365EX-NA-VaultA2-Key001"
DEP = "ContosoMailboxDEP"
USER = "megan@contoso.com"
SPO_ADMIN = "https://contoso-admin.sharepoint.com"
SITE_NAMES = ("finance", "hr", "legal", "research")
MESSAGES = 6
GRANT = "wrapKey,unwrapKey,get"
DOC_DATE = "20170802"


def key_id(vault: str, key: str) -> str:
    """A root key's id as the document writes it (no version)."""
    return f"https://{vault.lower()}.vault.azure.net/keys/{key}"


def canary(number: int) -> str:
    return f"CANARY-{hashlib.sha256(f'demo-{number}'.encode()).hexdigest()[:16]}"


def write_mbox(path: Path, count: int) -> list[bytes]:
    """An mbox of ``count`` messages, each carrying a canary word; returns each message as
    the mbox reader gives it back (what reading the migrated item must return)."""
    box = mailbox.mbox(str(path))
    for number in range(count):
        message = email.message.EmailMessage()
        message["From"] = f"sender{number}@fabrikam.com"
        message["To"] = USER
        message["Subject"] = f"Quarterly numbers {number}"
        message["Date"] = f"Tue, {1 + number:02d} Nov 2016 10:00:00 +0000"
        message.set_content(f"Hello Megan,\n{canary(number)}\n" + "budget line\n" * 40)
        box.add(message)
    box.flush()
    box.close()
    reread = mailbox.mbox(str(path), create=False)
    try:
        return [reread.get_bytes(key).replace(b"\r\n", b"\n") for key in reread.iterkeys()]
    finally:
        reread.close()
