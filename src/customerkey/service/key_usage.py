"""Where every root-key version is still used: which DEP generations it wraps and how many
mailboxes and items (and, for files policies, sites, files and file versions) depend on them,
so an admin knows when an old version may be disabled.

A version "protects data" while a live (not retired) generation is wrapped by it and some
mailbox key or site key still sits under that generation. The ``dependents`` of a version
always carry ``DepGenerations``, ``Policies``, ``Mailboxes`` and ``Items``; ``Sites``,
``Files`` and ``FileVersions`` are added when a files policy's generation (a TIK) is among
those it wraps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlalchemy import select

from customerkey.keyprovider.base import KeyUri
from customerkey.storage.database import Database
from customerkey.storage.models import GenerationRow, PolicyRow
from customerkey.vault.models import Actor, VersionUsage
from customerkey.vault.service import KeyVaultService
from customerkey.workloads.mail.service import MailService

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from customerkey.workloads.files.service import FilesService


@dataclass(frozen=True)
class GenerationUsage:
    policy_id: str
    policy_name: str
    generation_id: str
    seq: int
    key_uris: tuple[str, str]
    mailboxes: int
    items: int
    retired: bool
    kind: str = "mailbox"
    sites: int = 0
    files: int = 0
    file_versions: int = 0


class KeyUsageService:
    def __init__(
        self,
        db: Database,
        vault: KeyVaultService,
        mail: MailService,
        files: FilesService | None = None,
    ) -> None:
        self.db = db
        self._vault = vault
        self._mail = mail
        self._files = files

    def _usage(
        self, session: Session, policy: PolicyRow | None, generation: GenerationRow
    ) -> GenerationUsage:
        mailboxes, items = self._mail.generation_users(session, generation.id)
        kind = policy.kind if policy is not None else "mailbox"
        sites = files = versions = 0
        if kind == "files" and self._files is not None:
            sites, files, versions = self._files.generation_users(session, generation.id)
        return GenerationUsage(
            policy_id=generation.policy_id,
            policy_name=policy.name if policy else "",
            generation_id=generation.id,
            seq=generation.seq,
            key_uris=(generation.key_uri_1, generation.key_uri_2),
            mailboxes=mailboxes,
            items=items,
            retired=generation.retired_at is not None,
            kind=kind,
            sites=sites,
            files=files,
            file_versions=versions,
        )

    def _generations_of(self, vault: str, name: str) -> dict[str, list[GenerationUsage]]:
        """Live generations by the version of (vault, name) that wraps them."""
        found: dict[str, list[GenerationUsage]] = {}
        with self.db.transaction() as session:
            rows = session.execute(
                select(GenerationRow, PolicyRow).join(
                    PolicyRow, PolicyRow.id == GenerationRow.policy_id
                )
            ).all()
            for generation, policy in rows:
                for text in (generation.key_uri_1, generation.key_uri_2):
                    uri = KeyUri.parse(text)
                    if uri.vault != vault.lower() or uri.name.lower() != name.lower():
                        continue
                    found.setdefault(uri.version or "", []).append(
                        self._usage(session, policy, generation)
                    )
        return found

    def key_usage(self, actor: Actor, vault: str, name: str) -> list[VersionUsage]:
        versions = self._vault.key_usage(actor, vault, name)
        generations = self._generations_of(vault, name)
        result = []
        for usage in versions:
            live = [g for g in generations.get(usage.version, []) if not g.retired]
            dependents: dict[str, int | str] = {
                "DepGenerations": len(live),
                "Policies": ", ".join(sorted({g.policy_name for g in live})),
                "Mailboxes": sum(g.mailboxes for g in live),
                "Items": sum(g.items for g in live),
            }
            if any(g.kind == "files" for g in generations.get(usage.version, [])):
                dependents["Sites"] = sum(g.sites for g in live)
                dependents["Files"] = sum(g.files for g in live)
                dependents["FileVersions"] = sum(g.file_versions for g in live)
            result.append(replace(usage, dependents=dependents))
        return result

    def still_protects(
        self, actor: Actor, vault: str, name: str, version: str | None
    ) -> str | None:
        """What depends on a version (every version when None), in words, or None."""
        usages = self.key_usage(actor, vault, name)
        if version is not None:
            usages = [u for u in usages if u.version == version.lower()]
        lines = []
        for usage in usages:
            if int(usage.dependents.get("DepGenerations", 0) or 0) == 0:
                continue
            protecting = (
                f"{usage.dependents['Mailboxes']} mailbox(es) and {usage.dependents['Items']} "
                "item(s)"
            )
            if "Sites" in usage.dependents:
                protecting += (
                    f", {usage.dependents['Sites']} site(s) and {usage.dependents['Files']} file(s)"
                )
            lines.append(
                f"version {usage.version} wraps {usage.dependents['DepGenerations']} key "
                f"generation(s) of policy {usage.dependents['Policies']} protecting {protecting}"
            )
        if not lines:
            return None
        return (
            "; ".join(lines)
            + ". Without it that content is readable only through the policy's other root key "
            "(and unreadable if that one is lost too). Run 'customerkey dep refresh' first, or "
            "pass --force."
        )

    def policy_generations(self, policy_id: str) -> list[GenerationUsage]:
        with self.db.transaction() as session:
            policy = session.get(PolicyRow, policy_id)
            rows = list(
                session.scalars(
                    select(GenerationRow)
                    .where(GenerationRow.policy_id == policy_id)
                    .order_by(GenerationRow.seq)
                )
            )
            return [self._usage(session, policy, generation) for generation in rows]
