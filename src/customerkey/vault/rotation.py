"""Key rotation policies: parsing, Key Vault's validation rules, and when an action is due.

Pure logic; the vault service persists policies and its scheduler tick calls ``due_actions``.
Rules (as Key Vault enforces them): ``expiryTime`` is at least 28 days; a ``Rotate`` action
fires no sooner than 7 days after creation (``timeAfterCreate`` >= P7D) and no later than 7
days before expiry (``timeBeforeExpiry`` >= P7D, which needs ``expiryTime``); ``Notify`` only
uses ``timeBeforeExpiry``; each action has exactly one trigger; at most one action of a type.
Durations are ISO 8601 (``P90D``, ``P2Y``, ``P1M``, ``PT12H``); a year counts 365 days and a
month 30.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from customerkey.errors import BadParameter
from customerkey.vault.models import LifetimeAction, RotationPolicy

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)
MIN_EXPIRY = timedelta(days=28)
MIN_ROTATE_AFTER_CREATE = timedelta(days=7)
MIN_BEFORE_EXPIRY = timedelta(days=7)
MAX_DURATION = timedelta(days=100 * 365)  # P100Y: far past any key's life, far inside a date


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration, at most P100Y (longer ones would overflow dates computed from it)."""
    match = _DURATION.match(text.strip().upper()) if isinstance(text, str) else None
    if not match:
        raise BadParameter(f"'{str(text)[:40]}' is not an ISO 8601 duration such as P90D or P2Y.")
    if len(text) > 40:
        raise BadParameter(f"Rotation policy durations must be at most P100Y, got '{text[:40]}'.")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    days = parts.get("y", 0) * 365 + parts.get("mo", 0) * 30 + parts.get("w", 0) * 7
    days += parts.get("d", 0)
    seconds = days * 86400 + parts.get("h", 0) * 3600 + parts.get("mi", 0) * 60
    seconds += parts.get("s", 0)
    if seconds > MAX_DURATION.total_seconds():
        raise BadParameter(f"Rotation policy durations must be at most P100Y, got '{text}'.")
    return timedelta(seconds=seconds)


def policy_from_json(body: Mapping[str, Any]) -> RotationPolicy:
    """Parse and validate the Key Vault JSON shape of a rotation policy."""
    if not isinstance(body, Mapping):
        raise BadParameter("The rotation policy must be a JSON object.")
    attributes = body.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise BadParameter("'attributes' must be an object.")
    expiry = attributes.get("expiryTime")
    if expiry is not None and not isinstance(expiry, str):
        raise BadParameter("'attributes.expiryTime' must be an ISO 8601 duration string.")
    raw_actions = body.get("lifetimeActions") or []
    if not isinstance(raw_actions, list):
        raise BadParameter("'lifetimeActions' must be a list.")
    actions: list[LifetimeAction] = []
    for raw in raw_actions:
        if not isinstance(raw, Mapping):
            raise BadParameter("Each lifetime action must be an object.")
        trigger = raw.get("trigger") or {}
        action = raw.get("action") or {}
        if not isinstance(trigger, Mapping) or not isinstance(action, Mapping):
            raise BadParameter("A lifetime action needs a 'trigger' and an 'action' object.")
        kind = action.get("type")
        if not isinstance(kind, str) or kind.lower() not in ("rotate", "notify"):
            raise BadParameter("A lifetime action's type must be 'Rotate' or 'Notify'.")
        after = trigger.get("timeAfterCreate")
        before = trigger.get("timeBeforeExpiry")
        for value in (after, before):
            if value is not None and not isinstance(value, str):
                raise BadParameter("Trigger times must be ISO 8601 duration strings.")
        actions.append(
            LifetimeAction(
                action="Rotate" if kind.lower() == "rotate" else "Notify",
                time_after_create=after,
                time_before_expiry=before,
            )
        )
    policy = RotationPolicy(lifetime_actions=tuple(actions), expiry_time=expiry)
    validate_policy(policy)
    return policy


def validate_policy(policy: RotationPolicy) -> None:
    expiry = parse_duration(policy.expiry_time) if policy.expiry_time else None
    if expiry is not None and expiry < MIN_EXPIRY:
        raise BadParameter("The rotation policy's expiryTime must be at least 28 days (P28D).")
    seen: set[str] = set()
    for action in policy.lifetime_actions:
        if action.action in seen:
            raise BadParameter(f"A rotation policy may hold only one '{action.action}' action.")
        seen.add(action.action)
        if (action.time_after_create is None) == (action.time_before_expiry is None):
            raise BadParameter(
                "Each lifetime action needs exactly one trigger: timeAfterCreate or "
                "timeBeforeExpiry."
            )
        if action.time_after_create is not None:
            if action.action == "Notify":
                raise BadParameter("A 'Notify' action can only use timeBeforeExpiry.")
            after = parse_duration(action.time_after_create)
            if after < MIN_ROTATE_AFTER_CREATE:
                raise BadParameter("timeAfterCreate must be at least 7 days (P7D).")
            if expiry is not None and after > expiry - MIN_BEFORE_EXPIRY:
                raise BadParameter(
                    "timeAfterCreate must leave at least 7 days before the key expires."
                )
        if action.time_before_expiry is not None:
            if expiry is None:
                raise BadParameter("timeBeforeExpiry needs attributes.expiryTime to be set.")
            before = parse_duration(action.time_before_expiry)
            if before < MIN_BEFORE_EXPIRY:
                raise BadParameter("timeBeforeExpiry must be at least 7 days (P7D).")
            if before > expiry - MIN_ROTATE_AFTER_CREATE:
                raise BadParameter(
                    "timeBeforeExpiry must leave at least 7 days after the key is created."
                )


def policy_to_json(policy: RotationPolicy) -> dict[str, Any]:
    actions = []
    for action in policy.lifetime_actions:
        trigger = (
            {"timeAfterCreate": action.time_after_create}
            if action.time_after_create is not None
            else {"timeBeforeExpiry": action.time_before_expiry}
        )
        actions.append({"trigger": trigger, "action": {"type": action.action}})
    return {"lifetimeActions": actions, "attributes": {"expiryTime": policy.expiry_time}}


def expiry_for_new_version(policy: RotationPolicy | None, created: datetime) -> datetime | None:
    if policy is None or not policy.expiry_time:
        return None
    return created + parse_duration(policy.expiry_time)


def due_actions(
    policy: RotationPolicy,
    *,
    newest_created: datetime,
    newest_expires: datetime | None,
    now: datetime,
) -> list[str]:
    """The actions (``Rotate``/``Notify``) whose trigger has passed for the newest version."""
    due: list[str] = []
    for action in policy.lifetime_actions:
        if action.time_after_create is not None:
            if now >= newest_created + parse_duration(action.time_after_create):
                due.append(action.action)
        elif action.time_before_expiry is not None and newest_expires is not None:
            if now >= newest_expires - parse_duration(action.time_before_expiry):
                due.append(action.action)
    return due
