"""The job kinds a runtime knows: each workload registers its kinds and their handlers here,
and job payloads are typed.

A kind is registered as its handler, or as a ``JobKind`` that also says whether a job of it
may be cancelled part-way (the kinds whose every checkpoint leaves their data consistent and
whose work can be taken up again) and how to find the tenant a job's target belongs to (for
the audit record of a cancel).

A payload is a frozen dataclass of JSON-friendly fields. ``payload_dict`` turns one into
what ``JobQueue.enqueue`` stores; ``payload_of`` reads it back from a job, refusing (as a
permanent job failure) a stored payload that lacks a field the type needs, so a handler never
reads an untyped dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from customerkey.jobs.worker import Handler, PermanentJobError

P = TypeVar("P")


class StoredJob(Protocol):
    """A queued job or its row: what reading a payload needs."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def payload(self) -> Mapping[str, Any]: ...


def payload_dict(payload: Any) -> dict[str, Any]:
    """The stored form of a payload dataclass."""
    return dataclasses.asdict(payload)


def payload_of(job: StoredJob, cls: type[P]) -> P:
    """The job's payload as ``cls`` (fields the type does not know are ignored)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in job.payload.items() if k in fields}
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise PermanentJobError(f"Job {job.id} ({job.kind}) has no {', '.join(missing)}.")
    return cls(**values)


@dataclass(frozen=True)
class JobKind:
    """A job kind's handler and what may be done to its jobs from outside."""

    handler: Handler
    # Whether a job may be stopped part-way: every checkpoint leaves its data consistent.
    cancellable: bool = False
    # What a cancel leaves behind, said to whoever cancels.
    cancel_note: str = ""
    # The tenant the target (a job's ``target`` id) belongs to, None when it has none.
    tenant_of: Callable[[Session, str], str | None] | None = None


class JobRegistry:
    """Job kind → handler (and ``JobKind``); a kind is registered once."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, kind: str, handler: Handler | JobKind) -> None:
        if kind in self._kinds:
            raise ValueError(f"job kind {kind!r} is registered twice")
        self._kinds[kind] = handler if isinstance(handler, JobKind) else JobKind(handler)

    def register_all(self, handlers: Mapping[str, Handler | JobKind]) -> None:
        for kind, handler in handlers.items():
            self.register(kind, handler)

    def handlers(self) -> dict[str, Handler]:
        return {kind: entry.handler for kind, entry in self._kinds.items()}

    def kinds(self) -> dict[str, JobKind]:
        return dict(self._kinds)
