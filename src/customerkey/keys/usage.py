"""Where every root-key version is still used: which DEP generations it wraps and what each
workload still keeps under them, so an admin knows when an old version may be disabled.

A version "protects data" while a live (not retired) generation is wrapped by it and some
container key still sits under that generation. Each workload reports its own counts through
a ``UsageCounter`` (mail: ``Mailboxes``, ``Items``; files: ``Sites``, ``Files``,
``FileVersions``); this module knows none of them. The ``dependents`` of a version always
carry ``DepGenerations`` and ``Policies``, plus the counts of every counter that applies to
all policy kinds, plus those of counters for a kind among the generations it wraps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from customerkey.keyprovider.base import KeyUri
from customerkey.storage.database import Database
from customerkey.storage.models import GenerationRow, PolicyRow
from customerkey.vault.models import Actor, VersionUsage
from customerkey.vault.service import KeyVaultService


class UsageCounter(Protocol):
    """What one workload keeps under a DEP generation.

    ``policy_kinds`` names the DEP kinds whose generations it counts (None: every kind, so
    its counts always show). ``labels`` are the display names of its counts, in order;
    ``count`` returns a value for each label, inside the caller's transaction; ``describe``
    puts counts in words ("2 mailbox(es) and 5 item(s)")."""

    @property
    def policy_kinds(self) -> frozenset[str] | None: ...

    @property
    def labels(self) -> tuple[str, ...]: ...

    def count(self, session: Session, generation_id: str) -> Mapping[str, int]: ...

    def describe(self, counts: Mapping[str, int]) -> str: ...


@dataclass(frozen=True)
class GenerationUsage:
    policy_id: str
    policy_name: str
    generation_id: str
    seq: int
    key_uris: tuple[str, str]
    retired: bool
    kind: str
    counts: Mapping[str, int]


def _applies(counter: UsageCounter, kind: str) -> bool:
    return counter.policy_kinds is None or kind in counter.policy_kinds


class KeyUsageService:
    def __init__(
        self, db: Database, vault: KeyVaultService, counters: Sequence[UsageCounter]
    ) -> None:
        self.db = db
        self._vault = vault
        self._counters = list(counters)

    def _usage(
        self, session: Session, policy: PolicyRow | None, generation: GenerationRow
    ) -> GenerationUsage:
        kind = policy.kind if policy is not None else "mailbox"
        counts: dict[str, int] = {}
        for counter in self._counters:
            if _applies(counter, kind):
                counts.update(counter.count(session, generation.id))
        return GenerationUsage(
            policy_id=generation.policy_id,
            policy_name=policy.name if policy else "",
            generation_id=generation.id,
            seq=generation.seq,
            key_uris=(generation.key_uri_1, generation.key_uri_2),
            retired=generation.retired_at is not None,
            kind=kind,
            counts=counts,
        )

    def _generations_of(self, vault: str, name: str) -> dict[str, list[GenerationUsage]]:
        """Generations by the version of (vault, name) that wraps them."""
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

    def _dependents(self, generations: Sequence[GenerationUsage]) -> dict[str, int | str]:
        """A version's dependents: its live generations and, for every counter for all kinds
        or for a kind among its generations (retired ones included, so the columns stay
        put), the sums over the live ones."""
        live = [g for g in generations if not g.retired]
        kinds = {g.kind for g in generations}
        dependents: dict[str, int | str] = {
            "DepGenerations": len(live),
            "Policies": ", ".join(sorted({g.policy_name for g in live})),
        }
        for counter in self._counters:
            if counter.policy_kinds is not None and not kinds & counter.policy_kinds:
                continue
            for label in counter.labels:
                dependents[label] = sum(g.counts.get(label, 0) for g in live)
        return dependents

    def key_usage(self, actor: Actor, vault: str, name: str) -> list[VersionUsage]:
        versions = self._vault.key_usage(actor, vault, name)
        generations = self._generations_of(vault, name)
        return [
            replace(usage, dependents=self._dependents(generations.get(usage.version, [])))
            for usage in versions
        ]

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
            described = [
                counter.describe(
                    {
                        label: int(usage.dependents[label])
                        for label in counter.labels
                        if label in usage.dependents
                    }
                )
                for counter in self._counters
                if all(label in usage.dependents for label in counter.labels)
            ]
            lines.append(
                f"version {usage.version} wraps {usage.dependents['DepGenerations']} key "
                f"generation(s) of policy {usage.dependents['Policies']} protecting "
                + ", ".join(described)
            )
        if not lines:
            return None
        return (
            "; ".join(lines)
            + ". Without it that content is readable only through the policy's other root key "
            "(and unreadable if that one is lost too). Refresh the policy onto a newer version "
            "first."
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
