"""Where every root-key version is still used: which DEP generations it wraps and what each
workload still keeps under them, so an admin knows when an old version may be disabled.

A version "protects data" while a live (not retired) generation is wrapped by it and some
container key still sits under that generation (a policy nothing is kept under yet protects
no data). ``protected_by`` lists, per policy and root key, the data that still needs a key, one
version of it or any key of a vault; the vault service refuses to delete a key or a vault while
there is some (``guard``, registered with it), and front ends turn the list into advice. Each
workload reports its own counts through
a ``UsageCounter`` (mail: ``Mailboxes``, ``Items``; files: ``Sites``, ``Files``,
``FileVersions``); this module knows none of them. The ``dependents`` of a version always
carry ``DepGenerations`` and ``Policies``, plus the counts of every counter that applies to
all policy kinds, plus those of counters for a kind among the generations it wraps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class Dependent:
    """A policy that keeps data under a root key: the versions of the key that wrap its live
    generations (oldest first), the one wrapping its current generation if this key does
    (a refresh moves everything onto the current generation), and what is kept."""

    policy_id: str
    policy_name: str
    tenant: str
    kind: str  # "mailbox" (a DEP) or "files"
    vault: str
    key: str
    versions: tuple[str, ...]
    current_version: str | None
    counts: Mapping[str, int]
    described: str  # the counts in words: "2 mailbox(es) and 5 item(s)"


def describe_dependents(dependents: Sequence[Dependent]) -> str | None:
    """What depends, in words a domain error may carry (no front end's commands), or None."""
    if not dependents:
        return None
    parts = [
        f"{'DEP' if d.kind == 'mailbox' else 'files policy'} '{d.policy_name}' of tenant "
        f"{d.tenant} keeps {d.described} under key {d.key} of vault {d.vault} (version(s) "
        f"{', '.join(d.versions)})"
        for d in dependents
    ]
    return (
        "; ".join(parts)
        + ". Without it that content is readable only through the policy's other root key "
        "(and unreadable if that one is lost too)."
    )


@dataclass
class _Found:
    """A policy's live generations under one key, gathered for ``Dependent``."""

    policy: PolicyRow
    key: str
    versions: list[str] = field(default_factory=list)
    current_version: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, version: str, counts: Mapping[str, int], is_current: bool) -> None:
        if version not in self.versions:
            self.versions.append(version)
        if is_current:
            self.current_version = version
        for label, value in counts.items():
            self.counts[label] = self.counts.get(label, 0) + value

    def dependent(self, vault: str, counters: Sequence[UsageCounter]) -> Dependent:
        described = [
            counter.describe(self.counts)
            for counter in counters
            if all(label in self.counts for label in counter.labels)
            and any(self.counts[label] for label in counter.labels)
        ]
        return Dependent(
            policy_id=self.policy.id,
            policy_name=self.policy.name,
            tenant=self.policy.tenant_id,
            kind=self.policy.kind,
            vault=vault.lower(),
            key=self.key,
            versions=tuple(self.versions),
            current_version=self.current_version,
            counts=dict(self.counts),
            described=" and ".join(described),
        )


def _applies(counter: UsageCounter, kind: str) -> bool:
    return counter.policy_kinds is None or kind in counter.policy_kinds


class KeyUsageService:
    def __init__(
        self, db: Database, vault: KeyVaultService, counters: Sequence[UsageCounter]
    ) -> None:
        self.db = db
        self._vault = vault
        self._counters = list(counters)
        vault.add_deletion_guard(self.guard)

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

    def _dependents_in(
        self, session: Session, vault: str, key: str | None, version: str | None
    ) -> list[Dependent]:
        rows = session.execute(
            select(GenerationRow, PolicyRow)
            .join(PolicyRow, PolicyRow.id == GenerationRow.policy_id)
            .where(GenerationRow.retired_at.is_(None))
            .order_by(GenerationRow.policy_id, GenerationRow.seq)
        ).all()
        current = {generation.policy_id: generation.id for generation, _ in rows}  # newest
        found: dict[tuple[str, str], _Found] = {}
        for generation, policy in rows:
            for text in (generation.key_uri_1, generation.key_uri_2):
                uri = KeyUri.parse(text)
                if (
                    uri.vault != vault.lower()
                    or (key is not None and uri.name.lower() != key.lower())
                    or (version is not None and (uri.version or "") != version.lower())
                ):
                    continue
                usage = self._usage(session, policy, generation)
                if not any(usage.counts.values()):
                    continue  # nothing is kept under it: no data to lose
                entry = found.setdefault((policy.id, uri.name.lower()), _Found(policy, uri.name))
                entry.add(uri.version or "", usage.counts, current[policy.id] == generation.id)
        return [entry.dependent(vault, self._counters) for entry in found.values()]

    def protected_by(
        self, vault: str, key: str | None = None, version: str | None = None
    ) -> list[Dependent]:
        """The policies keeping data under a vault's keys, one key, or one version of it. It
        checks no caller: a front end asks after the vault authorized the operation."""
        with self.db.transaction() as session:
            return self._dependents_in(session, vault, key, version)

    def guard(self, session: Session, vault: str, key: str | None) -> str | None:
        """The vault service's deletion guard: what deleting the vault (or one key of it)
        would take away, in words, inside the deleting transaction; None if nothing."""
        return describe_dependents(self._dependents_in(session, vault, key, None))

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
        self._vault.key_usage(actor, vault, name)  # the caller may read the key's usage
        return describe_dependents(self.protected_by(vault, name, version))

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
