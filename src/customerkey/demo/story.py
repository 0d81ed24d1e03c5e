"""The story of the guided demo, chapter by chapter (``STORY``): each chapter is one step of
the document, run through the cmdlet shell (what is no cmdlet calls the services and says
so), and checks its documented effect.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from customerkey.demo.narrator import Demo, Ran, expect, list_fields, ps_quote
from customerkey.demo.scenario import (
    DEP,
    DOC_DATE,
    GRANT,
    GROUP,
    KEY_A,
    KEY_B,
    MAIL_DOMAIN,
    MESSAGES,
    SITE_NAMES,
    SPO_ADMIN,
    TENANT,
    USER,
    VAULT_A,
    VAULT_B,
    canary,
    key_id,
    write_mbox,
)
from customerkey.errors import CustomerKeyError
from customerkey.identity.workload_principals import EXCHANGE, SHAREPOINT
from customerkey.jobs.queue import Job
from customerkey.pwsh.engine.session import Session
from customerkey.vault.models import OPERATOR
from customerkey.workloads.mail.jobs import REKEY_JOB


def onboard(demo: Demo) -> None:
    with demo.step(
        "Onboard the tenant (not a cmdlet)", "tenant service", "tenant contoso owns contoso.com"
    ) as check:
        demo.say(
            "The provider onboards Contoso. That is no cmdlet of the document, so the demo calls "
            "the tenant service (what 'customerkey tenant create contoso --mail-domain "
            "contoso.com' does)."
        )
        demo.runtime.tenants.create(OPERATOR, TENANT, mail_domain=MAIL_DOMAIN)
        owner = demo.runtime.tenants.for_domain(MAIL_DOMAIN).id
        check.observed = expect(owner == TENANT, f"{MAIL_DOMAIN} belongs to tenant '{owner}'")


def vaults(demo: Demo) -> None:
    with demo.step(
        "Two vaults in two regions",
        "New-AzKeyVault",
        "2 vaults, 2 regions, 2 subscriptions, soft delete on",
    ) as check:
        demo.say(
            "Customer Key wants the two root keys of a DEP in two vaults, in two Azure regions "
            "and subscriptions. Soft delete is always on. Vault A1 is left without purge "
            "protection (the restore step needs to purge a key); A2 gets it."
        )
        demo.must(
            f"New-AzKeyVault -Name {VAULT_A} -ResourceGroupName {GROUP} -Location eastus "
            "-SubscriptionId contoso-sub-1"
        )
        demo.must(
            f"New-AzKeyVault -Name {VAULT_B} -ResourceGroupName {GROUP} -Location westus "
            "-SubscriptionId contoso-sub-2 -EnablePurgeProtection"
        )
        a, b = (demo.runtime.vault.get_vault(OPERATOR, v) for v in (VAULT_A, VAULT_B))
        check.observed = expect(
            a.region != b.region
            and a.subscription != b.subscription
            and a.soft_delete_enabled
            and b.soft_delete_enabled
            and (a.purge_protection, b.purge_protection) == (False, True),
            f"A1 {a.region}/{a.subscription}, A2 {b.region}/{b.subscription}, soft delete "
            f"{a.soft_delete_enabled and b.soft_delete_enabled}, purge protection "
            f"A1 {a.purge_protection}, A2 {b.purge_protection}",
        )


def keys(demo: Demo) -> None:
    with demo.step(
        "HSM root keys for wrapKey/unwrapKey only",
        "Add-AzKeyVaultKey",
        "RSA-HSM keys whose only operations are wrapKey, unwrapKey",
    ) as check:
        demo.say("One RSA key in each vault, HSM-protected, allowed to wrap and unwrap only.")
        for vault, key in ((VAULT_A, KEY_A), (VAULT_B, KEY_B)):
            demo.must(
                f"Add-AzKeyVaultKey -VaultName {vault} -Name {key} -Destination HSM "
                "-KeyOps @('wrapKey','unwrapKey')"
            )
        found = [
            demo.runtime.vault.get_key(OPERATOR, v, k)
            for v, k in ((VAULT_A, KEY_A), (VAULT_B, KEY_B))
        ]
        check.observed = expect(
            all(b.kty == "RSA-HSM" and b.key_ops == ("wrapKey", "unwrapKey") for b in found),
            "; ".join(f"{b.id.name}: {b.kty} {b.key_size}, {', '.join(b.key_ops)}" for b in found),
        )


def backups(demo: Demo) -> None:
    with demo.step(
        "Back up both keys", "Backup-AzKeyVaultKey", "a protected backup file per key"
    ) as check:
        demo.say("Back up each key right away: a backup is what Restore-AzureKeyVaultKey needs.")
        written = []
        for vault, key in ((VAULT_A, KEY_A), (VAULT_B, KEY_B)):
            path = demo.work / f"{key}-Backup-{DOC_DATE}.backup"
            ran = demo.must(
                f"Backup-AzKeyVaultKey -VaultName {vault} -Name {key} -OutputFile "
                f"{ps_quote(str(path))}"
            )
            expect(
                ran.out.strip() == str(path), f"Backup-AzKeyVaultKey printed {ran.out.strip()!r}"
            )
            written.append(path)
        check.observed = expect(
            all(p.is_file() and p.stat().st_size > 0 for p in written),
            ", ".join(f"{p.name} ({p.stat().st_size} bytes)" for p in written if p.exists()),
        )


def grants(demo: Demo) -> None:
    with demo.step(
        "Grant Exchange Online and SharePoint Online",
        "Set-AzKeyVaultAccessPolicy",
        "both workload principals hold get, wrapKey, unwrapKey on both vaults",
    ) as check:
        demo.say(
            "The workloads reach the keys as their service principals (Office 365 Exchange "
            f"Online {EXCHANGE.app_id}, SharePoint Online {SHAREPOINT.app_id}); each needs "
            "wrapKey, unwrapKey and get on both vaults."
        )
        for vault in (VAULT_A, VAULT_B):
            for principal in (EXCHANGE, SHAREPOINT):
                demo.must(
                    f"Set-AzKeyVaultAccessPolicy -VaultName {vault} -ServicePrincipalName "
                    f"{principal.app_id} -PermissionsToKeys {GRANT}"
                )
        held = {
            (vault, p.sign_in_name): set(p.key_permissions)
            for vault in (VAULT_A, VAULT_B)
            for p in demo.runtime.vault.get_vault(OPERATOR, vault).access_policies
        }
        wanted = {"get", "wrapKey", "unwrapKey"}
        wrong = [
            f"{principal.display_name} on {vault}: "
            f"{', '.join(sorted(held.get((vault, principal.app_id), set()))) or 'nothing'}"
            for vault in (VAULT_A, VAULT_B)
            for principal in (EXCHANGE, SHAREPOINT)
            if held.get((vault, principal.app_id)) != wanted
        ]
        check.observed = expect(
            not wrong,
            "; ".join(wrong)
            or "Exchange Online and SharePoint Online each hold get, unwrapKey, wrapKey on A1 "
            "and A2",
        )


def dep(demo: Demo) -> None:
    with demo.step(
        "A mailbox DEP over both root keys",
        "New-DataEncryptionPolicy",
        "an enabled DEP naming the two keys, its DEP key wrapped by both",
    ) as check:
        demo.say("The Exchange admin creates the data encryption policy over the two key ids.")
        demo.must(
            f'New-DataEncryptionPolicy -Name {DEP} -Description "Contoso mailboxes" '
            f'-AzureKeyIDs "{key_id(VAULT_A, KEY_A)}", "{key_id(VAULT_B, KEY_B)}"'
        )
        policy = demo.runtime.policies.get(OPERATOR, TENANT, DEP, kind="mailbox")
        (generation,) = demo.runtime.usage.policy_generations(policy.id)
        newest = [demo.newest(v, k) for v, k in ((VAULT_A, KEY_A), (VAULT_B, KEY_B))]
        check.observed = expect(
            policy.enabled
            and list(policy.azure_key_ids) == [key_id(VAULT_A, KEY_A), key_id(VAULT_B, KEY_B)]
            and all(u.endswith(f"/{v}") for u, v in zip(generation.key_uris, newest, strict=True)),
            f"{policy.name} enabled {policy.enabled}; its DEP key (generation "
            f"{generation.generation_id[:8]}...) wrapped by the newest version of both keys",
        )


def mail_user(demo: Demo) -> None:
    with demo.step(
        "Assign the DEP before migration",
        "New-MailUser, Set-MailUser",
        "the mail user is under the DEP (IsEncrypted True) with no mailbox yet",
    ) as check:
        demo.say(
            "FAQ: 'You can use Set-MailUser to assign a DEP to the user prior to migrating the "
            "mailbox' - its content is then encrypted under the DEP as it is migrated."
        )
        demo.must(f"New-MailUser -Name Megan -MicrosoftOnlineServicesID {USER}")
        demo.must(f"Set-MailUser -Identity {USER} -DataEncryptionPolicy {DEP}")
        stats = demo.runtime.mail.statistics(OPERATOR, USER)
        check.observed = expect(
            stats.mailbox.kind == "mailuser"
            and stats.mailbox.policy_name == DEP
            and stats.is_encrypted
            and stats.item_count == 0,
            f"{stats.mailbox.recipient_type} under {stats.mailbox.policy_name}, "
            f"IsEncrypted {stats.is_encrypted}, {stats.item_count} items",
        )


def migrate(demo: Demo) -> None:
    with demo.step(
        "Migrate the mailbox (not a cmdlet)",
        "mail import (service)",
        "every item encrypted under the DEP on arrival: no re-key, no plaintext on disk",
    ) as check:
        source = demo.work / "megan.mbox"
        demo.messages = write_mbox(source, MESSAGES)
        demo.say(
            f"The migration is not a cmdlet: the demo imports {source.name} ({MESSAGES} "
            "messages) with the mail service (what 'customerkey mailbox import' does)."
        )
        result = demo.runtime.mail.import_messages(OPERATOR, USER, source)
        demo.say(f"Imported {result.imported} messages ({result.bytes:,} bytes) into {USER}.")
        rekeys = demo.runtime.jobs.list_jobs(kind=REKEY_JOB)
        store = demo.runtime.mail.blobs  # the local folder or S3: what is at rest, either way
        canaries = [canary(n).encode() for n in range(MESSAGES)]
        leaked = [
            info.name
            for info in store.iter_blobs("mail")
            if any(needle in store.read_bytes(info.name) for needle in canaries)
        ]
        readable = demo.mail_intact()
        check.observed = expect(
            result.imported == MESSAGES and not rekeys and not leaked and readable,
            f"{result.imported} items, {len(rekeys)} re-key jobs, {len(leaked)} blobs with "
            f"plaintext, content reads back {'identical' if readable else 'DIFFERENT'}",
        )


def statistics(demo: Demo) -> None:
    with demo.step(
        "Is the mailbox encrypted, under which DEP?",
        "Get-MailboxStatistics | fl",
        "IsEncrypted True; DataEncryptionPolicyID is the DEP's current key GUID",
    ) as check:
        demo.say(
            "'the IsEncrypted property returns a value of true if the mailbox is encrypted'; "
            "DataEncryptionPolicyID is the GUID Get-DataEncryptionPolicy resolves to the DEP."
        )
        ran = demo.must(
            f"Get-MailboxStatistics -Identity {USER} | fl IsEncrypted, DataEncryptionPolicyID"
        )
        shown = list_fields(ran.out)
        guid = shown.get("DataEncryptionPolicyID", "")
        named = demo.must(f"Get-DataEncryptionPolicy {guid}") if guid else Ran(False, "", "")
        policy = demo.runtime.policies.get(OPERATOR, TENANT, DEP, kind="mailbox")
        demo.dep_ids.append(guid)
        check.observed = expect(
            shown.get("IsEncrypted") == "True"
            and guid == policy.current_generation_id
            and DEP in named.out,
            f"IsEncrypted {shown.get('IsEncrypted')}, DataEncryptionPolicyID {guid} "
            f"({'resolves to ' + DEP if DEP in named.out else 'not resolved'})",
        )


def register_files(demo: Demo) -> None:
    with demo.step(
        "Register the files DEP",
        "Register-SPODataEncryptionPolicy",
        "State Registered, 100 % of sites, the key versions named",
    ) as check:
        demo.say(
            "SharePoint content: four sites with a document each are created with the files "
            "service (sites and uploads are no cmdlets of the document); they start under "
            "service-managed keys."
        )
        for name in SITE_NAMES:
            url = f"https://contoso.{demo.runtime.files.domain}/sites/{name}"
            demo.runtime.files.create_site(OPERATOR, url)
            content = f"{name} plan\n".encode() * 2000
            demo.runtime.files.upload(
                OPERATOR, url, "Shared Documents/plan.docx", io.BytesIO(content)
            )
            demo.files[url] = content
        versions = [demo.newest(v, k) for v, k in ((VAULT_A, KEY_A), (VAULT_B, KEY_B))]
        demo.say(
            "The SharePoint admin registers the tenant's files DEP over the same two keys; the "
            "registration moves every site key under the new tenant intermediate key (TIK)."
        )
        demo.must(
            f"Register-SPODataEncryptionPolicy -Identity {SPO_ADMIN} -PrimaryKeyVaultName "
            f"{VAULT_A} -PrimaryKeyName {KEY_A} -PrimaryKeyVersion {versions[0]} "
            f"-SecondaryKeyVaultName {VAULT_B} -SecondaryKeyName {KEY_B} "
            f"-SecondaryKeyVersion {versions[1]}"
        )
        shown = list_fields(demo.must(f"Get-SPODataEncryptionPolicy -Identity {SPO_ADMIN}").out)
        sites = [demo.runtime.files.site_status(OPERATOR, url).state for url in demo.files]
        check.observed = expect(
            shown.get("State") == "Registered"
            and shown.get("PercentComplete") == "100"
            and [shown.get("PrimaryKeyVersion"), shown.get("SecondaryKeyVersion")] == versions
            and set(sites) == {"Registered"},
            f"State {shown.get('State')} {shown.get('PercentComplete')} %, "
            f"{sites.count('Registered')} of {len(sites)} sites Registered",
        )


def roll_key(demo: Demo) -> None:
    with demo.step(
        "Roll the key (a new version, -NotBefore)",
        "Add-AzKeyVaultKey -NotBefore",
        "a second version of Key001 not before 12/27/2016 12:01 AM; the first kept",
    ) as check:
        demo.say(
            "'When you roll a key, you are requesting a new version of an existing key' - the "
            "same cmdlet, the same name."
        )
        before = demo.versions(VAULT_A, KEY_A)
        demo.must(
            f"Add-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A} -Destination HSM -KeyOps "
            "@('wrapKey','unwrapKey') -NotBefore (Get-Date -Date \"12/27/2016 12:01 AM\")"
        )
        after = demo.versions(VAULT_A, KEY_A)
        newest = demo.runtime.vault.get_key(OPERATOR, VAULT_A, KEY_A)
        not_before = newest.attributes.not_before
        demo.say(
            "A backup holds the versions that existed when it was made, so back the key up "
            "again after the roll."
        )
        demo.backup = demo.work / f"{KEY_A}-Backup-20161227.backup"
        demo.must(
            f"Backup-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A} -OutputFile "
            f"{ps_quote(str(demo.backup))}"
        )
        kept = after[: len(before)] == before
        check.observed = expect(
            len(after) == len(before) + 1
            and kept
            and not_before is not None
            and not_before.isoformat().startswith("2016-12-27T00:01:00")
            and demo.backup.is_file(),
            f"{len(after)} versions (first kept: {kept}), newest {newest.id.version[:8]}... "
            f"not before {not_before.isoformat() if not_before else None}; backed up again",
        )


def refresh(demo: Demo) -> None:
    with demo.step(
        "Use the new key: refresh the DEP",
        "Set-DataEncryptionPolicy -Refresh",
        "the mailbox's DataEncryptionPolicyID changes to a key generation of the new version",
    ) as check:
        demo.say(
            "'you must run the following command to update the DEP' - the service re-wraps "
            "every mailbox key onto a new DEP key wrapped by the newest versions (no content "
            "is re-encrypted); the mailbox's DataEncryptionPolicyID 'will change once the "
            "updated key has been applied'."
        )
        demo.must(f"Set-DataEncryptionPolicy {DEP} -Refresh")
        shown = list_fields(
            demo.must(f"Get-MailboxStatistics -Identity {USER} | fl DataEncryptionPolicyID").out
        )
        now = shown.get("DataEncryptionPolicyID", "")
        before = demo.dep_ids[-1] if demo.dep_ids else ""
        newest = demo.newest(VAULT_A, KEY_A)
        policy = demo.runtime.policies.get(OPERATOR, TENANT, DEP, kind="mailbox")
        uses = {
            g.generation_id: g.key_uris for g in demo.runtime.usage.policy_generations(policy.id)
        }
        on_new = any(u.endswith(f"/{newest}") for u in uses.get(now, ()))
        demo.dep_ids.append(now)
        check.observed = expect(
            bool(now) and now != before and on_new and demo.mail_intact(),
            f"DataEncryptionPolicyID {before[:8]}... -> {now[:8]}... "
            f"({'changed' if now != before else 'UNCHANGED'}; "
            f"{'wrapped by the new version' if on_new else 'not on the new version'})",
        )


def roll_files(demo: Demo) -> None:
    with demo.step(
        "Use the new key in SharePoint: a key roll",
        "Update-SPODataEncryptionPolicy",
        "Rolling with a percent while it runs, one roll at a time, then Registered on the new "
        "version; no file rewritten",
    ) as check:
        newest = demo.newest(VAULT_A, KEY_A)
        secondary = demo.newest(VAULT_B, KEY_B)
        get_line = f"Get-SPODataEncryptionPolicy -Identity {SPO_ADMIN}"
        demo.say(
            "'This will start the key roll operation [...]. This action is not immediate.' "
            "No worker is running, so the roll runs here, one site per transaction. At its "
            "first step a second admin's shell looks at the progress, and tries to roll the "
            "secondary key too ('no more than one Key Roll operation to be in progress at a "
            "time')."
        )
        blobs = demo.file_blobs()
        mid: dict[str, str] = {}
        refused: list[Ran] = []
        other = Session(lambda: demo.runtime, out=io.StringIO(), err=io.StringIO())

        def second_admin(job: Job, done: int, total: int) -> None:
            if mid or done >= total:
                return
            demo.say(
                f"[italic]... meanwhile ({done} of {total} sites re-wrapped), in a second "
                "admin's shell:[/]"
            )
            mid.update(list_fields(demo.run(get_line, session=other, prompt="PS2>").out))
            refused.append(
                demo.run(
                    f"Update-SPODataEncryptionPolicy -Identity {SPO_ADMIN} -KeyVaultName "
                    f"{VAULT_B} -KeyName {KEY_B} -KeyVersion {secondary} -KeyType Secondary",
                    session=other,
                    prompt="PS2>",
                )
            )

        demo.session.on_job_progress = second_admin
        try:
            demo.must(
                f"Update-SPODataEncryptionPolicy -Identity {SPO_ADMIN} -KeyVaultName {VAULT_A} "
                f"-KeyName {KEY_A} -KeyVersion {newest} -KeyType Primary"
            )
        finally:
            demo.session.on_job_progress = None
        demo.say("The roll has finished:")
        after = list_fields(demo.must(get_line).out)
        percent = float(mid.get("PercentComplete") or "nan")
        one_at_a_time = any(not r.ok and "already in progress" in r.err for r in refused)
        untouched = demo.file_blobs() == blobs and demo.files_intact()
        check.observed = expect(
            mid.get("State") == "Rolling"
            and 0 < percent < 100
            and one_at_a_time
            and after.get("State") == "Registered"
            and after.get("PercentComplete") == "100"
            and after.get("PrimaryKeyVersion") == newest
            and untouched,
            f"mid-roll {mid.get('State')} {mid.get('PercentComplete')} %, second roll "
            f"{'refused' if one_at_a_time else 'NOT refused'}; then {after.get('State')} "
            f"{after.get('PercentComplete')} % on {after.get('PrimaryKeyVersion', '')[:8]}...; "
            f"files {'untouched' if untouched else 'CHANGED'}",
        )


def restore(demo: Demo) -> None:
    with demo.step(
        "Restore a lost key from its backup",
        "Remove-/Restore-AzureKeyVaultKey",
        "restore refused while the key exists; after loss, all versions and reads back",
    ) as check:
        backup = demo.backup or demo.work / f"{KEY_A}-Backup-{DOC_DATE}.backup"
        restore_line = (
            f"Restore-AzureKeyVaultKey -VaultName {VAULT_A} -InputFile {ps_quote(str(backup))}"
        )
        demo.say(
            "'If a key with the same name already exists in the key vault, the restore "
            "operation will fail':"
        )
        refused = demo.run(restore_line)
        expect(not refused.ok and "already exists" in refused.err, "the restore was not refused")
        versions = demo.versions(VAULT_A, KEY_A)
        demo.say(
            "Now the key is lost: deleted, and purged from the recycle bin. A key is only "
            "purgeable in a vault without purge protection, which is why this story uses A1 "
            "(with purge protection, as on A2, the deleted key could only be recovered with "
            "Undo-AzKeyVaultKeyRemoval, or the backup restored into another vault of the same "
            "subscription and geography). The DEP keeps working on the other root key."
        )
        demo.must(f"Remove-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A} -Force")
        demo.must(f"Remove-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A} -InRemovedState -Force")
        gone = demo.must(f"Get-AzKeyVaultKey -VaultName {VAULT_A}").out.strip() == ""
        still = demo.mail_intact() and demo.files_intact()
        demo.say(
            "'Restore-AzureKeyVaultKey restores all key versions and all metadata for the key':"
        )
        demo.must(restore_line)
        back = demo.versions(VAULT_A, KEY_A)
        reads = demo.mail_intact() and demo.files_intact()
        check.observed = expect(
            gone and still and back == versions and reads,
            f"refused while the key existed; purged: {'gone' if gone else 'STILL THERE'}, "
            f"content {'still read through the other root key' if still else 'UNREADABLE'}; "
            f"restored {len(back)} of {len(versions)} versions, content "
            f"{'reads' if reads else 'UNREADABLE'}",
        )


def revoke(demo: Demo) -> None:
    with demo.step(
        "Revoke Exchange Online's access",
        "Remove-AzureRmKeyVaultAccessPolicy",
        "reading the mailbox fails at once; SharePoint still reads",
    ) as check:
        demo.say(
            "Removing the Exchange Online principal from both vaults is revocation. The "
            "unwrapped DEP key sits in a cache for up to 15 minutes, but a change in our own "
            "vault clears it at once, so the next read needs the vault - and is refused."
        )
        for vault in (VAULT_A, VAULT_B):
            demo.must(
                f"Remove-AzureRmKeyVaultAccessPolicy -VaultName {vault} -ServicePrincipalName "
                f"{EXCHANGE.app_id}"
            )
        listed = demo.must(f"(Get-AzureRmKeyVault -VaultName {VAULT_A}).AccessPolicies.DisplayName")
        demo.say("Reading Megan's first message (a read by the service, not a cmdlet):")
        code = ""
        try:
            demo.runtime.mail.read_item(OPERATOR, USER, "1")
        except CustomerKeyError as refused:
            code = refused.code
            demo.console.print(f"Error ({code}: {refused.message})", style="red", markup=False)
        files_ok = demo.files_intact()
        check.observed = expect(
            code == "KeyAccessDenied" and EXCHANGE.app_id not in listed.out and files_ok,
            f"read refused ({code or 'NOT refused'}); SharePoint reads "
            f"{'still work' if files_ok else 'FAIL'}",
        )


def give_back(demo: Demo) -> None:
    with demo.step(
        "Give the access back",
        "Set-AzKeyVaultAccessPolicy",
        "the mailbox reads again, unchanged",
    ) as check:
        for vault in (VAULT_A, VAULT_B):
            demo.must(
                f"Set-AzKeyVaultAccessPolicy -VaultName {vault} -ServicePrincipalName "
                f"{EXCHANGE.app_id} -PermissionsToKeys {GRANT}"
            )
        same = demo.mail_intact()
        demo.say(f"Reading Megan's messages again: {'all identical' if same else 'DIFFERENT'}.")
        stats = demo.runtime.mail.statistics(OPERATOR, USER)
        check.observed = expect(
            same and stats.is_encrypted,
            f"{stats.item_count} items read back {'identical' if same else 'DIFFERENT'}; "
            f"IsEncrypted {stats.is_encrypted}",
        )


STORY: tuple[Callable[[Demo], None], ...] = (
    onboard,
    vaults,
    keys,
    backups,
    grants,
    dep,
    mail_user,
    migrate,
    statistics,
    register_files,
    roll_key,
    refresh,
    roll_files,
    restore,
    revoke,
    give_back,
)
