"""Key release policies: their grammar, checked when a policy is set, and their evaluation
against the claims of a verified attestation token. Pure: no I/O, no clock.

A policy is UTF-8 JSON (content type ``application/json; charset=utf-8``) in the grammar Azure
Key Vault and Managed HSM document for secure key release (versions ``1.0.0`` and ``1.0.2``)::

    policy     = {"version": "1.0.0", "anyOf": [authority, ...]}
    authority  = {"authority": "<issuer URL>", "allOf" | "anyOf": [condition, ...]}
    condition  = claim | {"anyOf": [condition, ...]} | {"allOf": [condition, ...]}
    claim      = {"claim": "<name>", <operator>: <value>}

Operators (the grammar's): ``equals`` and ``notEquals`` (a string, number or boolean),
``less``, ``lessOrEquals``, ``greater``, ``greaterOrEquals`` (a number) and ``exists`` (a
boolean). Member names are matched without regard to case (``anyOf``, ``anyof``, ``AnyOf``);
every list must hold at least one element; a member the grammar does not name, a second
operator or a missing one is refused. A policy is at most ``MAX_POLICY_BYTES`` long, nests
``anyOf``/``allOf`` at most ``MAX_DEPTH`` deep and holds at most ``MAX_CONDITIONS`` conditions.
Every refusal is a 400 ``BadParameter`` naming where in the policy the problem is.

Evaluation, for a token whose issuer (``iss``) is one of the vault's trusted authorities (see
``vault.attestation``): the policy is satisfied when an authority entry that names the same
issuer has its condition hold on the token's claims. Authorities compare as URLs: scheme and
host without regard to case, a trailing ``/`` ignored, ``https://`` assumed when no scheme is
written. A claim name is a path into the claims: ``x-ms-isolation-tee.x-ms-attestation-type``
is member ``x-ms-attestation-type`` of the object ``x-ms-isolation-tee`` (``\\.`` is a dot
within a name). A condition on a claim that is absent fails, except ``exists: false``, which
holds exactly then. Values compare by JSON type: strings exactly (case matters), numbers by
value, booleans only with booleans (``true`` is not ``1``); ordering operators need a number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from customerkey.errors import BadParameter

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_POLICY_BYTES",
    "OPERATORS",
    "POLICY_CONTENT_TYPE",
    "POLICY_VERSIONS",
    "AllOf",
    "AnyOf",
    "AuthorityRule",
    "ClaimCondition",
    "Evaluation",
    "ReleasePolicyRules",
    "canonical_content_type",
    "claim_path",
    "evaluate",
    "lookup_claim",
    "normalize_authority",
    "parse_policy",
]

POLICY_CONTENT_TYPE = "application/json; charset=utf-8"
POLICY_VERSIONS = ("1.0.0", "1.0.2")
MAX_POLICY_BYTES = 16 * 1024
MAX_DEPTH = 8
MAX_CONDITIONS = 256
OPERATORS = ("equals", "notEquals", "less", "lessOrEquals", "greater", "greaterOrEquals", "exists")
_ORDERING = ("less", "lessOrEquals", "greater", "greaterOrEquals")
_OPERATOR_BY_LOWER = {op.lower(): op for op in OPERATORS}

Scalar = str | int | float | bool


@dataclass(frozen=True)
class ClaimCondition:
    claim: str  # as written
    path: tuple[str, ...]
    operator: str  # canonical spelling, one of OPERATORS
    value: Scalar


@dataclass(frozen=True)
class AnyOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class AllOf:
    conditions: tuple[Condition, ...]


Condition = ClaimCondition | AnyOf | AllOf


@dataclass(frozen=True)
class AuthorityRule:
    authority: str  # as written
    normalized: str
    condition: AnyOf | AllOf


@dataclass(frozen=True)
class ReleasePolicyRules:
    version: str
    authorities: tuple[AuthorityRule, ...]


@dataclass(frozen=True)
class Evaluation:
    satisfied: bool
    reason: str  # why not (empty when satisfied)


def _invalid(detail: str, where: str = "") -> BadParameter:
    place = f" (at {where})" if where else ""
    return BadParameter(f"The key release policy is not valid: {detail}{place}.")


def canonical_content_type(content_type: str | None) -> str:
    """The policy's content type: ``application/json; charset=utf-8`` (the default), however
    it is spaced or cased; ``BadParameter`` for any other."""
    if content_type is None:
        return POLICY_CONTENT_TYPE
    parts = [p.strip().lower() for p in content_type.split(";")]
    if parts == ["application/json"] or parts == ["application/json", "charset=utf-8"]:
        return POLICY_CONTENT_TYPE
    raise BadParameter(
        f"Release policy content type '{content_type}' is not supported; use "
        f"'{POLICY_CONTENT_TYPE}'."
    )


def normalize_authority(authority: str) -> str:
    """An authority or issuer as compared: ``scheme://host[:port]/path`` with scheme and host in
    lower case, no trailing ``/``, ``https://`` when no scheme is written."""
    text = authority.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def claim_path(name: str) -> tuple[str, ...]:
    """The members a claim name walks (``a.b`` is ``("a", "b")``; ``\\.`` is a literal dot);
    ``ValueError`` for an empty segment."""
    segments: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(name):
        char = name[index]
        if char == "\\" and index + 1 < len(name) and name[index + 1] == ".":
            current.append(".")
            index += 2
            continue
        if char == ".":
            segments.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    segments.append("".join(current))
    if any(not segment for segment in segments):
        raise ValueError("empty segment")
    return tuple(segments)


def lookup_claim(claims: Mapping[str, Any], path: Sequence[str]) -> tuple[bool, Any]:
    """(found, value) of the claim at ``path``."""
    current: Any = claims
    for segment in path:
        if not isinstance(current, Mapping) or segment not in current:
            return False, None
        current = current[segment]
    return True, current


# ---------------------------------------------------------------- parsing


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"member '{key}' appears twice")
        seen[key] = value
    return seen


def _members(obj: Mapping[str, Any], where: str) -> dict[str, tuple[str, Any]]:
    """The object's members by lower-case name: (name as written, value)."""
    out: dict[str, tuple[str, Any]] = {}
    for key, value in obj.items():
        lower = key.lower()
        if lower in out:
            raise _invalid(f"members '{out[lower][0]}' and '{key}' are the same name", where)
        out[lower] = (key, value)
    return out


class _Parser:
    def __init__(self) -> None:
        self.count = 0

    def policy(self, document: Any) -> ReleasePolicyRules:
        if not isinstance(document, dict):
            raise _invalid("a policy is a JSON object with 'version' and 'anyOf'")
        members = _members(document, "")
        unknown = sorted(
            written for lower, (written, _) in members.items() if lower not in {"version", "anyof"}
        )
        if unknown:
            raise _invalid(f"unknown member '{unknown[0]}'; a policy has 'version' and 'anyOf'")
        if "version" not in members:
            raise _invalid(f"'version' is missing; use one of: {', '.join(POLICY_VERSIONS)}")
        version = members["version"][1]
        if version not in POLICY_VERSIONS:
            raise _invalid(
                f"version {json.dumps(version)} is not supported; use one of: "
                + ", ".join(POLICY_VERSIONS)
            )
        if "anyof" not in members:
            raise _invalid("'anyOf' (the list of authorities) is missing")
        authorities = self._list(members["anyof"][1], "anyOf")
        return ReleasePolicyRules(
            version=str(version),
            authorities=tuple(
                self.authority(item, f"anyOf[{i}]") for i, item in enumerate(authorities)
            ),
        )

    def authority(self, item: Any, where: str) -> AuthorityRule:
        if not isinstance(item, dict):
            raise _invalid(
                "an authority entry is an object with 'authority' and 'allOf' or 'anyOf'", where
            )
        members = _members(item, where)
        allowed = {"authority", "anyof", "allof"}
        unknown = sorted(written for lower, (written, _) in members.items() if lower not in allowed)
        if unknown:
            raise _invalid(
                f"unknown member '{unknown[0]}'; an authority entry has 'authority' and 'allOf' "
                "or 'anyOf'",
                where,
            )
        authority = members.get("authority", ("", None))[1]
        if not isinstance(authority, str) or not authority.strip():
            raise _invalid("'authority' (the attestation authority's URL) is missing", where)
        if ("anyof" in members) == ("allof" in members):
            raise _invalid("an authority entry has exactly one of 'allOf' and 'anyOf'", where)
        condition = self.group(members, where, depth=1)
        return AuthorityRule(authority, normalize_authority(authority), condition)

    def group(self, members: dict[str, tuple[str, Any]], where: str, depth: int) -> AnyOf | AllOf:
        if depth > MAX_DEPTH:
            raise _invalid(f"'anyOf' and 'allOf' nest at most {MAX_DEPTH} deep", where)
        lower = "anyof" if "anyof" in members else "allof"
        name = "anyOf" if lower == "anyof" else "allOf"
        items = self._list(members[lower][1], f"{where}.{name}")
        conditions = tuple(
            self.condition(item, f"{where}.{name}[{i}]", depth) for i, item in enumerate(items)
        )
        return AnyOf(conditions) if lower == "anyof" else AllOf(conditions)

    def condition(self, item: Any, where: str, depth: int) -> Condition:
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise _invalid(f"a policy holds at most {MAX_CONDITIONS} conditions", where)
        if not isinstance(item, dict):
            raise _invalid("a condition is an object: a claim condition, 'anyOf' or 'allOf'", where)
        members = _members(item, where)
        if "claim" in members:
            return self.claim(members, where)
        if set(members) in ({"anyof"}, {"allof"}):
            return self.group(members, where, depth + 1)
        names = ", ".join(sorted(written for written, _ in members.values())) or "nothing"
        raise _invalid(
            f"a condition is a claim condition ('claim' and one operator), 'anyOf' or 'allOf'; "
            f"this one has {names}",
            where,
        )

    def claim(self, members: dict[str, tuple[str, Any]], where: str) -> ClaimCondition:
        name = members["claim"][1]
        if not isinstance(name, str) or not name:
            raise _invalid("'claim' must name a claim", where)
        try:
            path = claim_path(name)
        except ValueError:
            raise _invalid(f"claim name '{name}' has an empty segment", where) from None
        rest = {lower: pair for lower, pair in members.items() if lower != "claim"}
        unknown = sorted(
            written for lower, (written, _) in rest.items() if lower not in _OPERATOR_BY_LOWER
        )
        if unknown:
            raise _invalid(
                f"'{unknown[0]}' is not a condition operator; use one of: " + ", ".join(OPERATORS),
                where,
            )
        if len(rest) != 1:
            raise _invalid(
                "a claim condition has exactly one operator, one of: " + ", ".join(OPERATORS),
                where,
            )
        lower, (_, value) = next(iter(rest.items()))
        operator = _OPERATOR_BY_LOWER[lower]
        if operator == "exists":
            if not isinstance(value, bool):
                raise _invalid("'exists' takes true or false", where)
        elif operator in _ORDERING:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _invalid(f"'{operator}' compares with a number", where)
        elif not isinstance(value, str | int | float | bool):
            raise _invalid(f"'{operator}' takes a string, number or boolean", where)
        return ClaimCondition(name, path, operator, value)

    @staticmethod
    def _list(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise _invalid("must be a list of at least one element", where)
        return value


def parse_policy(data: bytes) -> ReleasePolicyRules:
    """The rules of a policy's bytes; ``BadParameter`` saying what is wrong and where."""
    if len(data) > MAX_POLICY_BYTES:
        raise _invalid(f"a policy is at most {MAX_POLICY_BYTES} bytes; this one is {len(data)}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("a policy is UTF-8 JSON") from None
    try:
        document = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
        )
    except RecursionError:
        raise _invalid(f"'anyOf' and 'allOf' nest at most {MAX_DEPTH} deep") from None
    except ValueError as exc:
        raise _invalid(f"not JSON ({exc})") from None
    return _Parser().policy(document)


# ---------------------------------------------------------------- evaluation


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(claim: Any, expected: Scalar) -> bool:
    if isinstance(expected, bool) or isinstance(claim, bool):
        return isinstance(claim, bool) and isinstance(expected, bool) and claim == expected
    if _is_number(expected):
        return _is_number(claim) and not math.isnan(claim) and claim == expected
    return isinstance(claim, str) and claim == expected


def _compare(operator: str, claim: Any, expected: Scalar) -> bool:
    if not _is_number(claim):
        return False
    bound = float(expected)
    value = float(claim)
    if operator == "less":
        return value < bound
    if operator == "lessOrEquals":
        return value <= bound
    if operator == "greater":
        return value > bound
    return value >= bound


def _claim_holds(condition: ClaimCondition, claims: Mapping[str, Any]) -> Evaluation:
    found, value = lookup_claim(claims, condition.path)
    expected = json.dumps(condition.value)
    if condition.operator == "exists":
        holds = found == condition.value
        wanted = "present" if condition.value else "absent"
        return Evaluation(holds, "" if holds else f"claim '{condition.claim}' is not {wanted}")
    if not found:
        return Evaluation(False, f"claim '{condition.claim}' is absent")
    if condition.operator == "equals":
        holds = _equal(value, condition.value)
    elif condition.operator == "notEquals":
        holds = not _equal(value, condition.value)
    else:
        holds = _compare(condition.operator, value, condition.value)
    reason = f"claim '{condition.claim}' does not satisfy {condition.operator} {expected}"
    return Evaluation(holds, "" if holds else reason)


def _holds(condition: Condition, claims: Mapping[str, Any]) -> Evaluation:
    if isinstance(condition, ClaimCondition):
        return _claim_holds(condition, claims)
    if isinstance(condition, AllOf):
        for part in condition.conditions:
            result = _holds(part, claims)
            if not result.satisfied:
                return result
        return Evaluation(True, "")
    reasons = []
    for part in condition.conditions:
        result = _holds(part, claims)
        if result.satisfied:
            return result
        reasons.append(result.reason)
    return Evaluation(False, "none of anyOf holds: " + "; ".join(reasons))


def evaluate(rules: ReleasePolicyRules, issuer: str, claims: Mapping[str, Any]) -> Evaluation:
    """Whether the claims of a token from ``issuer`` satisfy the policy, and if not, why."""
    wanted = normalize_authority(issuer)
    matching = [rule for rule in rules.authorities if rule.normalized == wanted]
    if not matching:
        named = ", ".join(rule.authority for rule in rules.authorities)
        return Evaluation(False, f"the policy names no authority '{issuer}' (it names: {named})")
    reasons = []
    for rule in matching:
        result = _holds(rule.condition, claims)
        if result.satisfied:
            return result
        reasons.append(result.reason)
    return Evaluation(False, "; ".join(reasons))
