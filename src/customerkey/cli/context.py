"""What every command gets: the settings, a lazily opened runtime, who is acting, output mode.

The entry point imports this module before knowing which command runs, so the settings and
the runtime (pydantic, SQLAlchemy, the services) are imported only when a command asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from customerkey.actor import OPERATOR, Actor
from customerkey.errors import BadParameter, NotFound

if TYPE_CHECKING:
    import typer

    from customerkey.config import Settings
    from customerkey.runtime import Runtime


class NoInstallation(NotFound):
    code = "NoInstallation"


# The commands that may create an installation in a folder that holds none; every other
# command refuses such a folder, so a mistyped --home cannot start an empty installation.
CREATING_COMMANDS = frozenset({"init", "serve", "demo"})


@dataclass
class CliContext:
    home: Path | None = None
    as_json: bool = False
    acting_as: str | None = None
    may_create: bool = False
    _runtime: Runtime | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        from customerkey.config import load_settings

        return load_settings(home=self.home) if self.home else load_settings()

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            from customerkey.home import Home
            from customerkey.runtime import Runtime

            settings = self.settings()
            if not self.may_create and not Home(settings.home).exists():
                raise NoInstallation(
                    f"No installation at {settings.home}; run 'customerkey init' to create one "
                    "(or check --home / CUSTOMERKEY_HOME)."
                )
            self._runtime = Runtime.open(settings)
        return self._runtime

    @property
    def actor(self) -> Actor:
        if self.acting_as is None:
            return OPERATOR
        # Whoever holds the home folder is the operator; --as impersonates (for
        # administration and tests), and the audit log says so: "operator as <principal>".
        return self.runtime.principals.get(self.acting_as).actor(
            impersonated_by=OPERATOR.principal_id
        )

    @property
    def domain(self) -> str:
        return self.runtime.settings.domain

    @property
    def port(self) -> int:
        return self.runtime.settings.port

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


def cli_context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliContext)
    return obj


def tenant_of(c: CliContext, tenant: str | None) -> str:
    """The tenant a command is about: --tenant, else the acting principal's, else the only one."""
    if tenant:
        return tenant.lower()
    actor = c.actor
    if not actor.is_operator:
        return actor.tenant
    known = c.runtime.tenants.list()
    if len(known) == 1:
        return known[0].id
    raise BadParameter(
        "Say which tenant with --tenant"
        + (f" (one of: {', '.join(t.id for t in known)})." if known else "; none exists yet.")
    )


def tenant_for_upn(c: CliContext, upn: str, tenant: str | None) -> str:
    """The tenant of a new recipient: --tenant, else the one whose mail domain the UPN is in."""
    if tenant:
        return tenant.lower()
    domain = upn.rsplit("@", 1)[-1]
    return c.runtime.tenants.for_domain(domain).id


def parse_time(value: str | None, option: str) -> datetime | None:
    """ISO 8601 date or date-time; a time without a zone is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(
            f"{option} '{value}' is not an ISO 8601 date or time (e.g. 2027-01-31T00:00:00Z)."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_tags(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    tags: dict[str, str] = {}
    for item in values:
        if "=" not in item:
            raise BadParameter(f"Tag '{item}' must look like name=value.")
        name, value = item.split("=", 1)
        tags[name.strip()] = value.strip()
    return tags
