"""A shell session: variables, who the lines act as, and running scripts.

``Session.run(source)`` parses the whole script first (a script that does not parse runs
nothing), then runs it statement by statement, printing each statement's output as
PowerShell's Out-Default would and each error the way PowerShell prints an error record.
A failing statement changes nothing and the script goes on with the next one, unless
``$ErrorActionPreference = 'Stop'``.

Within a pipeline every command is looked up and bound before any of them runs, so an
unknown cmdlet or a bad parameter anywhere in it stops the whole pipeline.

Connections (``Connect-AzAccount``, ``Connect-ExchangeOnline``, ``Connect-SPOService``) set
who the following lines act as: by default the local operator (or the principal given with
``customerkey --as``); with a user name, that principal when it exists. The Exchange cmdlets
work in the connected user's tenant (the principal's, or the tenant owning the UPN's mail
domain), else in the only tenant there is.

Jobs that the real service runs in the background (a DEP refresh, a move request, a DEP
change on a mailbox with content, a SharePoint registration or key roll) are run here to
completion when no worker is live, and waited for when one is, as the service eventually does
on its own (``engine.jobs``, over ``customerkey.jobs.runner``). ``on_job_progress`` is told
every committed step of a job run here, so a caller (the demo, a test) can look at the state
mid-way, as a second admin's shell would.

The session implements ``cmdlets.registry.ShellContext`` and looks cmdlets up in a
``Registry`` (by default ``default_registry()``); the cmdlets never import this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from customerkey.errors import CustomerKeyError, Forbidden, PrincipalNotFound
from customerkey.identity.tenants import TenantNotFound
from customerkey.jobs.queue import Job
from customerkey.pwsh.cmdlets.registry import (
    CmdletSpec,
    Connection,
    Invocation,
    Registry,
    default_registry,
)
from customerkey.pwsh.engine.evaluation import collapse, enumerate_value, index, member
from customerkey.pwsh.engine.formatting import ENUMERATION_LIMIT, render, to_jsonable
from customerkey.pwsh.engine.jobs import run_jobs
from customerkey.pwsh.errors import CATEGORIES, ShellError
from customerkey.pwsh.language import syntax as ast
from customerkey.pwsh.language.binding import (
    Argument,
    BindingError,
    BoundArguments,
    NamedArgument,
    PositionalArgument,
    bind,
    convert,
    missing_mandatory,
)
from customerkey.pwsh.language.lexer import ParseError
from customerkey.pwsh.language.parser import parse
from customerkey.pwsh.language.values import to_ps_string
from customerkey.vault.models import OPERATOR, Actor

if TYPE_CHECKING:
    from customerkey.runtime import Runtime

_CONSTANTS: dict[str, Any] = {"true": True, "false": False, "null": None}


class _Stop(Exception):
    """``$ErrorActionPreference = 'Stop'`` and an error happened: end the script."""


class Session:
    """The interpreter, and the ``ShellContext`` its cmdlets run in."""

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        *,
        actor: Callable[[], Actor] | None = None,
        out: TextIO,
        err: TextIO,
        registry: Registry | None = None,
        as_json: bool = False,
        on_job_progress: Callable[[Job, int, int], None] | None = None,
    ) -> None:
        self._runtime_factory = runtime
        self._runtime: Runtime | None = None
        self._base_actor = actor or (lambda: OPERATOR)
        self.out = out
        self.err = err
        self.registry = registry or default_registry()
        self.as_json = as_json
        # Told each committed step of a job this session runs (after the progress display):
        # what sees a key roll mid-way, as a second admin running Get-* would.
        self.on_job_progress = on_job_progress
        self.variables: dict[str, tuple[str, Any]] = {}
        self.set_variable("ErrorActionPreference", "Continue")
        self.set_variable("WarningPreference", "Continue")
        self.set_variable("FormatEnumerationLimit", ENUMERATION_LIMIT)
        self.connections: dict[str, Connection] = {}
        self.errors = 0
        self.last_error: ShellError | None = None
        self._json: list[Any] = []
        self._source = ""
        self._file: str | None = None

    # ------------------------------------------------------------------ context

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = self._runtime_factory()
        return self._runtime

    def base_actor(self) -> Actor:
        return self._base_actor()

    def actor_for(self, service: str) -> Actor:
        connection = self.connections.get(service)
        return connection.actor if connection is not None else self.base_actor()

    def connect(
        self,
        service: str,
        *,
        principal: str | None = None,
        tenant: str | None = None,
        details: dict[str, str] | None = None,
    ) -> Connection:
        """Act as ``principal`` (when it exists) in ``tenant`` for ``service``'s cmdlets."""
        runtime = self.runtime
        actor = self.base_actor()
        account = principal or actor.principal_id
        resolved: str | None = None
        found = None
        if principal:
            try:
                found = runtime.principals.get(principal)
            except PrincipalNotFound:
                found = None
            if found is not None and found.object_id != actor.object_id:
                # Only the local operator may act as someone else (impersonation, audited as
                # "operator as <principal>"); a principal stays itself.
                if actor.kind != "operator":
                    raise Forbidden(
                        f"Signed in as '{actor.principal_id}'; only the platform operator can "
                        f"act as '{found.id}'."
                    )
                actor = found.actor(impersonated_by=actor.principal_id)
            if found is not None:
                resolved = found.tenant
            elif "@" in principal:
                try:
                    resolved = runtime.tenants.for_domain(principal.rsplit("@", 1)[1]).id
                except TenantNotFound:
                    resolved = None
        if tenant:
            resolved = runtime.tenants.get(tenant).id
        if resolved is None and not actor.is_operator:
            resolved = actor.tenant
        connection = Connection(
            service, actor, account, resolved, dict(details or {}), found is not None
        )
        self.connections[service] = connection
        return connection

    def disconnect(self, service: str) -> None:
        self.connections.pop(service, None)

    def connected_tenant(self, service: str) -> str | None:
        """The tenant a connection (or a non-operator acting principal) implies, if any."""
        connection = self.connections.get(service)
        if connection is not None and connection.tenant:
            return connection.tenant
        actor = self.actor_for(service)
        return None if actor.is_operator else actor.tenant

    def tenant_for(self, service: str, connect_hint: str) -> str:
        """The tenant ``service``'s cmdlets work in; an error saying how to connect if it is
        not clear."""
        tenant = self.connected_tenant(service)
        if tenant:
            return tenant
        known = self.runtime.tenants.list()
        if len(known) == 1:
            return known[0].id
        if not known:
            raise ShellError(
                "No tenant exists yet; create one first with 'customerkey tenant create <name> "
                "--mail-domain <domain>'.",
                error_id="NoTenant",
                category="ObjectNotFound",
            )
        raise ShellError(
            f"There are {len(known)} tenants ({', '.join(t.id for t in known)}); say which one "
            f"these lines are for with {connect_hint}.",
            error_id="NotConnected",
            category="InvalidOperation",
        )

    # ------------------------------------------------------------------ variables

    def set_variable(self, name: str, value: Any) -> None:
        if name.lower() in _CONSTANTS:
            raise ShellError(
                f"Cannot overwrite variable {name} because it is read-only or constant.",
                error_id="VariableNotWritable",
                category="WriteError",
                exception="SessionStateUnauthorizedAccessException",
                target=name,
            )
        self.variables[name.lower()] = (name, value)

    def get_variable(self, name: str) -> Any:
        lower = name.lower()
        if lower in _CONSTANTS:
            return _CONSTANTS[lower]
        if lower.startswith("env:"):
            return os.environ.get(name[4:])
        entry = self.variables.get(lower)
        return entry[1] if entry is not None else None

    @property
    def enumeration_limit(self) -> int:
        value = self.get_variable("FormatEnumerationLimit")
        return value if isinstance(value, int) and not isinstance(value, bool) else 4

    # ------------------------------------------------------------------ host

    def write_lines(self, lines: Sequence[str]) -> None:
        if lines:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()

    def host(self, text: str) -> None:
        """Write-Host: straight to the console (stderr under ``--json``)."""
        stream = self.err if self.as_json else self.out
        stream.write(text + "\n")
        stream.flush()

    def warning(self, text: str, *, action: str | None = None) -> None:
        preference = action or to_ps_string(self.get_variable("WarningPreference"))
        if preference.lower() in ("silentlycontinue", "ignore"):
            return
        self.err.write(f"WARNING: {text}\n")
        self.err.flush()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def path(self, text: str) -> Path:
        """A file name as given, relative to the current folder."""
        return Path(os.path.expanduser(text))

    # ------------------------------------------------------------------ jobs

    def run_jobs(self, jobs: Sequence[Job], activity: str) -> list[Job]:
        """Run ``jobs`` here (no live worker) or wait for the worker running them."""

        def observe(job: Job, done: int, total: int) -> None:
            if self.on_job_progress is not None:
                self.on_job_progress(job, done, total)

        return run_jobs(self.runtime, jobs, activity, err=self.err, on_progress=observe)

    # ------------------------------------------------------------------ running

    def run(self, source: str, *, file: str | None = None) -> bool:
        """Run a script; True when every statement succeeded."""
        self._source, self._file = source, file
        before = self.errors
        self.last_error = None
        try:
            script = parse(source)
        except ParseError as error:
            self.variables["?"] = ("?", False)
            self._report_text(error.render(file))
            return False
        try:
            for statement in script.statements:
                self._statement(statement)
        except _Stop:
            pass
        finally:
            if self.as_json and self._json:
                self.out.write(json.dumps(to_jsonable(self._json), indent=2) + "\n")
                self._json = []
        return self.errors == before

    def _report_text(self, text: str) -> None:
        self.errors += 1
        self.err.write(text + "\n")
        self.err.flush()

    def _statement(self, statement: ast.Statement) -> None:
        try:
            if isinstance(statement, ast.Assignment):
                value = collapse(self.pipeline(statement.value))
                self.set_variable(statement.variable, value)
            else:
                self._emit(self.pipeline(statement))
        except ShellError as error:
            if error.start is None:
                error.start, error.end = statement.start, statement.end
            self.last_error = error
            self.variables["?"] = ("?", False)
            self._report_text(error.render(self._source, self._file))
            if to_ps_string(self.get_variable("ErrorActionPreference")).lower() == "stop":
                raise _Stop() from None
            return
        self.variables["?"] = ("?", True)

    def _emit(self, items: list[Any]) -> None:
        if self.as_json:
            self._json.extend(items)
            return
        self.write_lines(render(items, limit=self.enumeration_limit))

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, node: ast.Expression) -> Any:
        if isinstance(node, ast.StringLiteral):
            return node.value
        if isinstance(node, ast.NumberLiteral):
            return node.value
        if isinstance(node, ast.ExpandableString):
            return "".join(
                part if isinstance(part, str) else to_ps_string(self.evaluate(part))
                for part in node.parts
            )
        if isinstance(node, ast.VariableRef):
            return self.get_variable(node.name)
        if isinstance(node, ast.MemberAccess):
            return member(self.evaluate(node.target), node.member)
        if isinstance(node, ast.IndexAccess):
            return index(self.evaluate(node.target), self.evaluate(node.index))
        if isinstance(node, ast.ArrayLiteral):
            return [self.evaluate(item) for item in node.items]
        if isinstance(node, ast.SubExpression):
            return collapse(self.pipeline(node.pipeline))
        if isinstance(node, ast.StatementBlock):
            found: list[Any] = []
            for statement in node.statements:
                if isinstance(statement, ast.Assignment):
                    self.set_variable(statement.variable, collapse(self.pipeline(statement.value)))
                else:
                    found.extend(self.pipeline(statement))
            return found if node.array else collapse(found)
        if isinstance(node, ast.HashLiteral):
            table: dict[str, Any] = {}
            for key, value in node.entries:
                table[to_ps_string(self.evaluate(key))] = collapse(self.pipeline(value))
            return table
        raise AssertionError(f"unknown node {node!r}")

    def _arguments(self, command: ast.Command) -> list[Argument]:
        arguments: list[Argument] = []
        for element in command.elements:
            if isinstance(element, ast.CommandParameter):
                has_value = element.argument is not None
                value = self.evaluate(element.argument) if element.argument is not None else None
                if element.colon and not has_value:
                    arguments.append(NamedArgument(element.name, None, False, element.start))
                    continue
                arguments.append(
                    NamedArgument(element.name, value, has_value, element.start, element.end)
                )
            else:
                arguments.append(
                    PositionalArgument(self.evaluate(element), element.start, element.end)
                )
        return arguments

    def resolve(self, command: ast.Command) -> CmdletSpec:
        spec = self.registry.resolve(command.name)
        if spec is None:
            raise ShellError(
                f"The term '{command.name}' is not recognized as the name of a cmdlet, function, "
                "script file, or operable program. Check the spelling of the name, or if a path "
                "was included, verify that the path is correct and try again.",
                error_id="CommandNotFoundException",
                category="ObjectNotFound",
                exception="CommandNotFoundException",
                target=f"{command.name}:String",
                command=command.name,
                start=command.start,
                end=command.name_end,
            )
        return spec

    def _binding_error(
        self, error: BindingError, command: ast.Command, spec: CmdletSpec
    ) -> ShellError:
        return ShellError(
            error.message,
            error_id=error.error_id,
            category="InvalidArgument",
            exception="ParameterBindingException",
            command=command.name,
            cmdlet=spec.name,
            start=error.start if error.start is not None else command.start,
            end=error.end if error.start is not None else command.name_end,
        )

    def pipeline(self, pipeline: ast.Pipeline) -> list[Any]:
        stages: list[tuple[ast.Command | ast.Expression, CmdletSpec | None]] = []
        for element in pipeline.elements:
            if isinstance(element, ast.Command):
                stages.append((element, self.resolve(element)))
            else:
                stages.append((element, None))
        bound: list[BoundArguments | None] = []
        for position, (element, spec) in enumerate(stages):
            if spec is None or not isinstance(element, ast.Command):
                bound.append(None)
                continue
            given = self._arguments(element)
            self._refuse(element, spec, given)
            try:
                bound.append(bind(spec.signature, given, expects_input=position > 0))
            except BindingError as error:
                raise self._binding_error(error, element, spec) from None
        items: list[Any] = []
        for position, ((element, spec), arguments) in enumerate(zip(stages, bound, strict=True)):
            if isinstance(element, ast.Command):
                assert spec is not None and arguments is not None
                items = self._invoke(element, spec, arguments, items, first=position == 0)
            else:
                items = enumerate_value(self.evaluate(element))
        return items

    def _invoke(
        self,
        command: ast.Command,
        spec: CmdletSpec,
        arguments: BoundArguments,
        items: list[Any],
        *,
        first: bool,
    ) -> list[Any]:
        feeder = spec.signature.pipeline_param()
        if not first and feeder is not None and feeder.name not in arguments:
            if not items:
                return []
            out: list[Any] = []
            for item in items:
                try:
                    value = convert(feeder, item)
                except BindingError as error:
                    raise self._binding_error(error, command, spec) from None
                each = arguments.with_value(feeder.name, value)
                self._check_mandatory(command, spec, each)
                out.extend(self._call(command, spec, each, [item]))
            return out
        self._check_mandatory(command, spec, arguments)
        return self._call(command, spec, arguments, items)

    def _check_mandatory(
        self, command: ast.Command, spec: CmdletSpec, arguments: BoundArguments
    ) -> None:
        absent = missing_mandatory(spec.signature, arguments)
        if absent:
            raise self._binding_error(
                BindingError(
                    "Cannot process command because of one or more missing mandatory "
                    f"parameters: {' '.join(absent)}.",
                    error_id="MissingMandatoryParameter",
                ),
                command,
                spec,
            )

    def _refuse(self, command: ast.Command, spec: CmdletSpec, given: list[Argument]) -> None:
        """Stop a line naming a parameter this shell cannot honour, before anything runs (and
        before a missing mandatory parameter it stands in for is reported)."""
        for argument in given:
            if not isinstance(argument, NamedArgument):
                continue
            try:
                param = spec.signature.lookup(argument.name)
            except BindingError:
                continue  # binding reports it
            if not param.refused or (argument.has_value and not argument.value):
                continue
            raise ShellError(
                f"Microsoft documents -{param.name} for {spec.name}, but this shell does not "
                f"support it: {param.refused}",
                error_id="ParameterNotSupported",
                category="NotImplemented",
                exception="ParameterBindingException",
                command=command.name,
                cmdlet=spec.name,
                start=argument.start,
                end=argument.end,
            )

    def _drop_ignored(self, spec: CmdletSpec, arguments: BoundArguments) -> BoundArguments:
        """Warn about the parameters that have no effect here and leave them out."""
        ignored = [
            p.name
            for p in spec.signature.all_params
            if p.ignored
            and p.name in arguments
            and not (p.type == "switch" and not arguments.flag(p.name))
        ]
        if not ignored:
            return arguments
        action = arguments.get("WarningAction")
        for name in ignored:
            self.warning(
                f"-{name} has no effect here; ignored.", action=str(action) if action else None
            )
        kept = {k: v for k, v in arguments.values.items() if k not in ignored}
        return BoundArguments(kept, arguments.parameter_set)

    def _call(
        self,
        command: ast.Command,
        spec: CmdletSpec,
        arguments: BoundArguments,
        items: list[Any],
    ) -> list[Any]:
        arguments = self._drop_ignored(spec, arguments)
        if arguments.flag("WhatIf") and spec.signature.should_process:
            target = next(
                (
                    to_ps_string(arguments.get(name))
                    for name in ("Identity", "Name", "VaultName")
                    if name in arguments
                ),
                "",
            )
            self.host(f'What if: Performing the operation "{spec.name}" on target "{target}".')
            return []
        action = to_ps_string(
            arguments.get("ErrorAction") or self.get_variable("ErrorActionPreference")
        ).lower()
        invocation = Invocation(self, spec, arguments, items, command.name)
        try:
            try:
                result = spec.run(invocation)
                output = list(result) if result is not None else []
            except CustomerKeyError as failure:
                raise ShellError(
                    failure.message,
                    error_id=failure.code,
                    category=CATEGORIES.get(failure.status, "NotSpecified"),
                    exception=type(failure).__name__,
                ) from None
            except OSError as failure:  # a file named on the line cannot be read or written
                where = f" ({failure.filename})" if failure.filename else ""
                raise ShellError(
                    f"{failure.strerror or failure}{where}.",
                    error_id="IOError",
                    category="WriteError",
                    exception="IOException",
                ) from None
        except ShellError as error:
            if action in ("silentlycontinue", "ignore"):
                return []
            error.command = error.command or command.name
            error.cmdlet = error.cmdlet or spec.name
            if error.start is None:
                error.start, error.end = command.start, command.end
            raise
        variable = arguments.get("OutVariable")
        if variable:
            self.set_variable(str(variable).lstrip("$"), collapse(output))
        return output
