"""The job kinds a runtime knows: each workload registers its kinds and their handlers here,
and job payloads are typed.

A payload is a frozen dataclass of JSON-friendly fields. ``payload_dict`` turns one into
what ``JobQueue.enqueue`` stores; ``payload_of`` reads it back from a job, refusing (as a
permanent job failure) a stored payload that lacks a field the type needs, so a handler never
reads an untyped dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

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


class JobRegistry:
    """Job kind → handler; a kind is registered once."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"job kind {kind!r} is registered twice")
        self._handlers[kind] = handler

    def register_all(self, handlers: Mapping[str, Handler]) -> None:
        for kind, handler in handlers.items():
            self.register(kind, handler)

    def handlers(self) -> dict[str, Handler]:
        return dict(self._handlers)
