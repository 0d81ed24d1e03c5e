"""What a cmdlet module depends on: the registry of cmdlets, the ``Invocation`` a cmdlet is
called with, and ``ShellContext``, the little of the shell a cmdlet may use.

Each cmdlet is a function of an ``Invocation`` returning its output objects, registered with
its parameters::

    @cmdlet("Get-Thing", Param("Name", position=0, mandatory=True), aliases=("Get-OldThing",))
    def get_thing(inv: Invocation) -> list[object]:
        return [thing_object(inv.runtime.things.get(inv.actor("Az"), inv.args.get("Name")))]

That decorator (or ``REGISTRY.register(CmdletSpec(...))``) is the extension point: a module of
cmdlets registers its own on import and is listed in ``CMDLET_MODULES`` so that
``default_registry()`` imports it (in that order, which is the order ``Get-Command`` lists
them); views for its object types go through ``formatting.register_view``.

The session (``customerkey.pwsh.engine.session``) implements ``ShellContext`` and imports this
module; nothing here imports the engine's session, so cmdlets and the interpreter do not
depend on each other.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from customerkey.pwsh.cmdlets.documented_parameters import documented, with_documented
from customerkey.pwsh.engine.formatting import Field, register_view
from customerkey.pwsh.errors import ShellError
from customerkey.pwsh.language.binding import COMMON_NAMES, BoundArguments, Param, Signature
from customerkey.pwsh.language.values import PSObject

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from customerkey.jobs.queue import Job
    from customerkey.runtime import Runtime
    from customerkey.vault.models import Actor

CmdletFn = Callable[["Invocation"], Iterable[Any] | None]
SHOULD_PROCESS_VERBS = frozenset(
    {"New", "Set", "Remove", "Add", "Update", "Undo", "Backup", "Restore"}
)
AZ = "Az"
EXO = "ExchangeOnline"
SPO = "SPO"
EXO_HINT = "Connect-ExchangeOnline -UserPrincipalName <admin UPN>"
AZ_HINT = "Connect-AzAccount -Tenant <tenant> (or -Tenant on the cmdlet)"


@dataclass(frozen=True)
class CmdletSpec:
    name: str
    signature: Signature
    run: CmdletFn
    aliases: tuple[str, ...] = ()
    synopsis: str = ""
    module: str = "customerkey"


class Registry:
    """Cmdlets by name and alias, case-insensitive."""

    def __init__(self) -> None:
        self._by_name: dict[str, CmdletSpec] = {}
        self._specs: list[CmdletSpec] = []

    def register(self, spec: CmdletSpec) -> CmdletSpec:
        names = (spec.name, *spec.aliases)
        for name in names:
            if name.lower() in self._by_name:
                raise ValueError(f"cmdlet name {name} is already registered")
        for name in names:
            self._by_name[name.lower()] = spec
        self._specs.append(spec)
        return spec

    def resolve(self, name: str) -> CmdletSpec | None:
        return self._by_name.get(name.lower())

    def specs(self) -> list[CmdletSpec]:
        return list(self._specs)

    def names(self) -> list[str]:
        """Every name a cmdlet answers to (for completion)."""
        return sorted({n for s in self._specs for n in (s.name, *s.aliases)}, key=str.lower)


REGISTRY = Registry()
# The modules of cmdlets of the default registry, each registering its own on import.
CMDLET_MODULES: list[str] = [
    "customerkey.pwsh.cmdlets.connect",
    "customerkey.pwsh.cmdlets.keyvault",
    "customerkey.pwsh.cmdlets.keyvault_keys",
    "customerkey.pwsh.cmdlets.exchange",
    "customerkey.pwsh.cmdlets.core",
    "customerkey.pwsh.cmdlets.spo",
]


def default_registry() -> Registry:
    """``REGISTRY`` with every module of ``CMDLET_MODULES`` imported."""
    for module in CMDLET_MODULES:
        importlib.import_module(module)
    # Common parameters are listed on every cmdlet; keep their names out of cmdlet parameters.
    assert not any(p.name in COMMON_NAMES for s in REGISTRY.specs() for p in s.signature.params)
    return REGISTRY


def cmdlet(
    name: str,
    *params: Param,
    aliases: Sequence[str] = (),
    default_set: str | None = None,
    should_process: bool | None = None,
    synopsis: str = "",
    module: str = "customerkey",
    registry: Registry | None = None,
) -> Callable[[CmdletFn], CmdletFn]:
    """Register the decorated function as cmdlet ``name``; the parameters Microsoft documents
    for it and it does not implement are added from ``documented_parameters``."""
    verb = name.split("-", 1)[0]
    process = verb in SHOULD_PROCESS_VERBS if should_process is None else should_process
    entry = documented(name)
    if entry is not None and entry.should_process:
        process = True

    def decorate(fn: CmdletFn) -> CmdletFn:
        (registry or REGISTRY).register(
            CmdletSpec(
                name=name,
                signature=Signature(with_documented(name, tuple(params)), default_set, process),
                run=fn,
                aliases=tuple(aliases),
                synopsis=synopsis or (fn.__doc__ or "").strip().split("\n")[0],
                module=module,
            )
        )
        return fn

    return decorate


@dataclass
class Connection:
    """What one ``Connect-*`` established."""

    service: str  # "Az" | "ExchangeOnline" | "SPO"
    actor: Actor
    account: str
    tenant: str | None
    details: dict[str, str] = field(default_factory=dict)
    principal_found: bool = False  # the named principal exists (and is who the lines act as)


class ShellContext(Protocol):
    """What a cmdlet may ask of the shell running it (the session implements it)."""

    registry: Registry
    connections: dict[str, Connection]

    @property
    def runtime(self) -> Runtime: ...

    @property
    def enumeration_limit(self) -> int: ...

    def actor_for(self, service: str) -> Actor: ...

    def connect(
        self,
        service: str,
        *,
        principal: str | None = None,
        tenant: str | None = None,
        details: dict[str, str] | None = None,
    ) -> Connection: ...

    def disconnect(self, service: str) -> None: ...

    def connected_tenant(self, service: str) -> str | None: ...

    def tenant_for(self, service: str, connect_hint: str) -> str: ...

    def host(self, text: str) -> None: ...

    def warning(self, text: str, *, action: str | None = None) -> None: ...

    def now(self) -> datetime: ...

    def path(self, text: str) -> Path: ...

    def run_jobs(self, jobs: Sequence[Job], activity: str) -> list[Job]: ...


@dataclass
class Invocation:
    """One run of a cmdlet: its bound arguments, its pipeline input, the session."""

    session: ShellContext
    spec: CmdletSpec
    args: BoundArguments
    input: list[Any]
    invoked_as: str

    @property
    def runtime(self) -> Runtime:
        return self.session.runtime

    def actor(self, service: str) -> Actor:
        return self.session.actor_for(service)

    def tenant(self, service: str, hint: str) -> str:
        return self.session.tenant_for(service, hint)

    @property
    def domain(self) -> str:
        return self.runtime.settings.domain

    @property
    def port(self) -> int:
        return self.runtime.settings.port

    def warn(self, text: str) -> None:
        action = self.args.get("WarningAction")
        self.session.warning(text, action=str(action) if action else None)

    def run_jobs(self, jobs: Sequence[Job | None], activity: str) -> list[Job]:
        pending = [j for j in jobs if j is not None]
        return self.session.run_jobs(pending, activity) if pending else []


def fail(message: str, error_id: str, category: str = "InvalidArgument") -> Exception:
    """The error a cmdlet raises to refuse (``raise fail(...)``)."""
    return ShellError(message, error_id=error_id, category=category)


def matches(pattern: str | None, value: str) -> bool:
    """Does ``value`` match the wildcard ``pattern`` (any case)? No pattern matches all."""
    if pattern is None:
        return True
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


# What a module of more cmdlets needs.
__all__ = [
    "AZ",
    "EXO",
    "SPO",
    "CmdletSpec",
    "Field",
    "Invocation",
    "PSObject",
    "Param",
    "Registry",
    "cmdlet",
    "default_registry",
    "fail",
    "register_view",
]
