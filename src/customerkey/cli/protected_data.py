"""What the CLI says when deleting a key or a vault, or disabling a key version, would take away
a root key that data still depends on: what depends (``keys.usage``, in domain words) and the
commands that end the dependency. Advice that cannot work is worse than none, so it follows the
facts: a refresh moves a policy onto the newest version of the *same* key, so it frees an old
version, never the key itself nor its newest version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from customerkey.errors import StillProtectsData

if TYPE_CHECKING:  # the CLI starts without the service layers (see cli.main)
    from customerkey.keys.usage import Dependent


def described(dependents: Sequence[Dependent]) -> str | None:
    from customerkey.keys.usage import describe_dependents

    return describe_dependents(dependents)


def _policy(d: Dependent) -> str:
    return f"DEP '{d.policy_name}'" if d.kind == "mailbox" else f"the files policy of {d.tenant}"


def _free_the_key(d: Dependent) -> str:
    if d.kind == "mailbox":
        return (
            f"give the mailboxes of {_policy(d)} a DEP on other root keys ('customerkey mailbox "
            f"set UPN --dep OTHER-DEP'), or purge its data ('customerkey dep purge-request "
            f"{d.policy_name} --tenant {d.tenant}')"
        )
    return (
        f"roll {_policy(d)} onto a key in another vault ('customerkey files roll --tenant "
        f"{d.tenant} --key-type primary|secondary --key URI'), or purge its data ('customerkey "
        f"files purge-request --tenant {d.tenant}')"
    )


def _free_the_version(d: Dependent, version: str, newest: str) -> str:
    if d.current_version != version:
        job = "dep-refresh" if d.kind == "mailbox" else "files"
        return (
            f"{_policy(d)} is already on a newer version but its keys are not all re-wrapped: "
            f"let its {job} job finish ('customerkey jobs list')"
        )
    if d.kind == "mailbox":
        move = (
            f"refresh {_policy(d)} ('customerkey dep refresh {d.policy_name} --tenant {d.tenant}')"
        )
    else:
        move = (
            f"roll {_policy(d)} onto the newer version ('customerkey files roll --tenant "
            f"{d.tenant} --key-type primary|secondary --key KEY-URI')"
        )
    if version == newest:
        return (
            f"version {version} is the newest of key {d.key}: add a version first ('customerkey "
            f"key rotate {d.vault} {d.key}'), then {move}"
        )
    return move


def refuse_deleting(what: str, dependents: Sequence[Dependent]) -> StillProtectsData:
    """The error for deleting ``what`` (a key or a vault) while ``dependents`` keep data."""
    steps = "; ".join(dict.fromkeys(_free_the_key(d) for d in dependents))
    return StillProtectsData(
        f"{what} still protects data: {described(dependents)} A refresh does not free "
        f"a key (it moves a policy onto the key's newest version). To free it: {steps}; or "
        "pass --force to delete anyway."
    )


def refuse_disabling(
    version: str, newest: str, dependents: Sequence[Dependent]
) -> StillProtectsData:
    """The error for disabling ``version`` (``newest`` is the key's newest version)."""
    steps = "; ".join(dict.fromkeys(_free_the_version(d, version, newest) for d in dependents))
    return StillProtectsData(
        f"Version {version} still protects data: {described(dependents)} To free it: "
        f"{steps}; or pass --force to disable it anyway."
    )
