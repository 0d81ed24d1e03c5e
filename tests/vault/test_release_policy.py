"""Key release policies (``vault.release_policy``): every branch of the grammar, accepted and
evaluated; every malformed policy refused with a 400 that says what is wrong and where."""

from __future__ import annotations

import json
from typing import Any

import pytest

from customerkey.errors import BadParameter
from customerkey.vault.release_policy import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_POLICY_BYTES,
    POLICY_CONTENT_TYPE,
    AllOf,
    AnyOf,
    ClaimCondition,
    canonical_content_type,
    claim_path,
    evaluate,
    lookup_claim,
    normalize_authority,
    parse_policy,
)

AUTHORITY = "https://sharedweu.weu.attest.azure.net"
# Azure's confidential VM release policy.
CVM_POLICY = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": AUTHORITY + "/",
            "allOf": [
                {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                {
                    "claim": "x-ms-isolation-tee.x-ms-compliance-status",
                    "equals": "azure-compliant-cvm",
                },
            ],
        }
    ],
}
CVM_CLAIMS = {
    "iss": AUTHORITY,
    "x-ms-isolation-tee": {
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "azure-compliant-cvm",
    },
}


def _bytes(policy: Any) -> bytes:
    return json.dumps(policy).encode()


def _policy(*conditions: Any, group: str = "allOf", authority: str = AUTHORITY) -> bytes:
    return _bytes(
        {"version": "1.0.0", "anyOf": [{"authority": authority, group: list(conditions)}]}
    )


def _holds(policy: bytes, claims: dict[str, Any], issuer: str = AUTHORITY) -> bool:
    return evaluate(parse_policy(policy), issuer, claims).satisfied


# ---------------------------------------------------------------- accepted and evaluated


def test_the_confidential_vm_policy_parses_and_is_satisfied_by_its_claims() -> None:
    rules = parse_policy(_bytes(CVM_POLICY))
    assert rules.version == "1.0.0"
    (authority,) = rules.authorities
    assert authority.authority == AUTHORITY + "/"
    assert authority.normalized == AUTHORITY
    assert isinstance(authority.condition, AllOf)
    first = authority.condition.conditions[0]
    assert first == ClaimCondition(
        "x-ms-isolation-tee.x-ms-attestation-type",
        ("x-ms-isolation-tee", "x-ms-attestation-type"),
        "equals",
        "sevsnpvm",
    )
    assert evaluate(rules, AUTHORITY, CVM_CLAIMS).satisfied
    other = {
        "x-ms-isolation-tee": {**CVM_CLAIMS["x-ms-isolation-tee"], "x-ms-attestation-type": "tdxvm"}
    }  # type: ignore[dict-item]
    result = evaluate(rules, AUTHORITY, other)
    assert not result.satisfied
    assert "x-ms-isolation-tee.x-ms-attestation-type" in result.reason
    assert "equals" in result.reason


def test_version_1_0_2_and_member_names_in_any_case() -> None:
    policy = {
        "Version": "1.0.2",
        "AnyOf": [{"Authority": AUTHORITY, "ALLOF": [{"Claim": "tee", "EQUALS": "sgx"}]}],
    }
    rules = parse_policy(_bytes(policy))
    assert rules.version == "1.0.2"
    assert _holds(_bytes(policy), {"tee": "sgx"})
    assert not _holds(_bytes(policy), {"tee": "SGX"})  # values are case-sensitive


def test_authority_level_any_of() -> None:
    policy = _policy({"claim": "a", "equals": 1}, {"claim": "b", "equals": 2}, group="anyOf")
    assert isinstance(parse_policy(policy).authorities[0].condition, AnyOf)
    assert _holds(policy, {"a": 1})
    assert _holds(policy, {"b": 2})
    assert not _holds(policy, {"a": 2, "b": 1})
    assert "none of anyOf holds" in evaluate(parse_policy(policy), AUTHORITY, {}).reason


def test_nested_any_of_and_all_of() -> None:
    policy = _policy(
        {"claim": "tee", "equals": "sevsnpvm"},
        {
            "anyOf": [
                {"claim": "debuggable", "equals": False},
                {
                    "allOf": [
                        {"claim": "svn", "greaterOrEquals": 7},
                        {"claim": "lab", "exists": True},
                    ]
                },
            ]
        },
    )
    assert _holds(policy, {"tee": "sevsnpvm", "debuggable": False})
    assert _holds(policy, {"tee": "sevsnpvm", "debuggable": True, "svn": 7, "lab": "x"})
    assert not _holds(policy, {"tee": "sevsnpvm", "debuggable": True, "svn": 7})
    assert not _holds(policy, {"tee": "sevsnpvm", "debuggable": True, "svn": 6, "lab": 1})
    assert not _holds(policy, {"tee": "tdxvm", "debuggable": False})


@pytest.mark.parametrize(
    ("expected", "claim", "holds"),
    [
        ("sevsnpvm", "sevsnpvm", True),
        ("sevsnpvm", "tdxvm", False),
        ("1", 1, False),  # a string is not a number
        (1, 1, True),
        (1, 1.0, True),  # numbers compare by value
        (1, "1", False),
        (1, True, False),  # true is not 1
        (True, True, True),
        (True, 1, False),
        (False, False, True),
        (False, 0, False),
        (False, None, False),
        ("x", {"x": 1}, False),
    ],
)
def test_equals_compares_by_json_type(expected: Any, claim: Any, holds: bool) -> None:
    assert _holds(_policy({"claim": "c", "equals": expected}), {"c": claim}) is holds


def test_not_equals_needs_the_claim() -> None:
    policy = _policy({"claim": "c", "notEquals": "debug"})
    assert _holds(policy, {"c": "release"})
    assert not _holds(policy, {"c": "debug"})
    assert not _holds(policy, {})  # an absent claim fails every condition but exists: false
    assert _holds(_policy({"claim": "c", "notEquals": True}), {"c": 1})


@pytest.mark.parametrize(
    ("operator", "claim", "holds"),
    [
        ("less", 4, True),
        ("less", 5, False),
        ("lessOrEquals", 5, True),
        ("lessOrEquals", 6, False),
        ("greater", 6, True),
        ("greater", 5, False),
        ("greaterOrEquals", 5, True),
        ("greaterOrEquals", 4.5, False),
        ("greater", "9", False),  # ordering needs a number claim
        ("greater", True, False),
        ("less", None, False),
    ],
)
def test_ordering_operators(operator: str, claim: Any, holds: bool) -> None:
    assert _holds(_policy({"claim": "svn", operator: 5}), {"svn": claim}) is holds


def test_exists() -> None:
    present = _policy({"claim": "a.b", "exists": True})
    absent = _policy({"claim": "a.b", "exists": False})
    assert _holds(present, {"a": {"b": None}})
    assert not _holds(present, {"a": {}})
    assert not _holds(present, {"a": "b"})
    assert _holds(absent, {"a": {}})
    assert not _holds(absent, {"a": {"b": 0}})
    assert "is not absent" in evaluate(parse_policy(absent), AUTHORITY, {"a": {"b": 0}}).reason


def test_absent_claims_fail_and_say_so() -> None:
    result = evaluate(parse_policy(_policy({"claim": "tee", "equals": "x"})), AUTHORITY, {})
    assert not result.satisfied
    assert result.reason == "claim 'tee' is absent"


def test_claim_paths() -> None:
    assert claim_path("a") == ("a",)
    assert claim_path("x-ms-runtime.client-payload.nonce") == (
        "x-ms-runtime",
        "client-payload",
        "nonce",
    )
    assert claim_path(r"a\.b.c") == ("a.b", "c")
    for bad in ("", ".a", "a.", "a..b"):
        with pytest.raises(ValueError):
            claim_path(bad)
    assert lookup_claim({"a.b": {"c": 1}}, ("a.b", "c")) == (True, 1)
    assert lookup_claim({"a": [1]}, ("a", "0")) == (False, None)
    escaped = _policy({"claim": r"a\.b", "equals": 1})
    assert _holds(escaped, {"a.b": 1})
    assert not _holds(escaped, {"a": {"b": 1}})


def test_authorities_compare_as_urls() -> None:
    assert normalize_authority("HTTPS://Attest.Contoso.COM/") == "https://attest.contoso.com"
    assert normalize_authority("attest.contoso.com") == "https://attest.contoso.com"
    assert normalize_authority("https://a.test/Tenant/") == "https://a.test/Tenant"
    policy = _policy({"claim": "c", "equals": 1}, authority="Attest.Contoso.com/")
    assert _holds(policy, {"c": 1}, issuer="https://attest.contoso.com")
    result = evaluate(parse_policy(policy), "https://other.test", {"c": 1})
    assert not result.satisfied
    assert "names no authority 'https://other.test'" in result.reason


def test_any_authority_entry_for_the_issuer_may_satisfy_it() -> None:
    policy = _bytes(
        {
            "version": "1.0.0",
            "anyOf": [
                {"authority": "https://other.test", "allOf": [{"claim": "c", "equals": 1}]},
                {"authority": AUTHORITY, "allOf": [{"claim": "c", "equals": 2}]},
                {"authority": AUTHORITY, "allOf": [{"claim": "c", "equals": 3}]},
            ],
        }
    )
    assert not _holds(policy, {"c": 1})  # that entry is another authority's
    assert _holds(policy, {"c": 2})
    assert _holds(policy, {"c": 3})
    assert _holds(policy, {"c": 1}, issuer="https://other.test")


def test_content_types() -> None:
    assert canonical_content_type(None) == POLICY_CONTENT_TYPE
    assert canonical_content_type("application/json") == POLICY_CONTENT_TYPE
    assert canonical_content_type("Application/JSON ;charset=UTF-8") == POLICY_CONTENT_TYPE
    for bad in ("text/plain", "application/json; charset=latin-1", ""):
        with pytest.raises(BadParameter, match="content type"):
            canonical_content_type(bad)


# ---------------------------------------------------------------- refused


def _refused(data: bytes, *fragments: str) -> None:
    with pytest.raises(BadParameter) as caught:
        parse_policy(data)
    message = caught.value.message
    assert message.startswith("The key release policy is not valid: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert caught.value.status == 400


def _deep(levels: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"claim": "c", "equals": 1}
    for _ in range(levels):
        condition = {"allOf": [condition]}
    return condition


CLAIM = {"claim": "c", "equals": 1}
V = "1.0.0"


def _with(*conditions: Any) -> dict[str, Any]:
    """A policy with one authority entry whose allOf holds ``conditions``."""
    return {"version": V, "anyOf": [{"authority": "a", "allOf": list(conditions)}]}


def _entry(**entry: Any) -> dict[str, Any]:
    """A policy with one authority entry."""
    return {"version": V, "anyOf": [entry]}


NAN_POLICY = b'{"version": "1.0.0", "anyOf": [{"authority": "a", "allOf": [{"claim": "c", '
NAN_POLICY += b'"equals": NaN}]}]}'


@pytest.mark.parametrize(
    ("policy", "fragments"),
    [
        (b"not json", ("not JSON",)),
        (b"\xff\xfe", ("UTF-8",)),
        (b"[]", ("a policy is a JSON object",)),
        (b'{"version": "1.0.0", "version": "1.0.0", "anyOf": []}', ("appears twice",)),
        (NAN_POLICY, ("not JSON",)),
        ({"version": V, "anyOf": [], "Version": V}, ("the same name",)),
        ({**_with(CLAIM), "x": 1}, ("unknown member 'x'",)),
        ({"anyOf": _with(CLAIM)["anyOf"]}, ("'version' is missing",)),
        ({**_with(CLAIM), "version": "2.0"}, ('version "2.0" is not supported',)),
        ({**_with(CLAIM), "version": 1}, ("version 1 is not supported",)),
        ({"version": V}, ("'anyOf' (the list of authorities) is missing",)),
        ({"version": V, "anyOf": []}, ("at least one element", "at anyOf")),
        ({"version": V, "anyOf": {"authority": "a"}}, ("at least one element", "at anyOf")),
        ({"version": V, "anyOf": ["a"]}, ("an authority entry is an object", "at anyOf[0]")),
        (_entry(allOf=[CLAIM]), ("'authority'", "is missing", "anyOf[0]")),
        (_entry(authority=" ", allOf=[CLAIM]), ("'authority'",)),
        (_entry(authority=7, allOf=[CLAIM]), ("'authority'",)),
        (_entry(authority="a"), ("exactly one of 'allOf' and 'anyOf'",)),
        (_entry(authority="a", allOf=[CLAIM], anyOf=[CLAIM]), ("exactly one of",)),
        (_entry(authority="a", allOf=[CLAIM], claim="c"), ("unknown member 'claim'",)),
        (_entry(authority="a", allOf=[]), ("at least one element", "anyOf[0].allOf")),
        (_with(7), ("a condition is an object", "anyOf[0].allOf[0]")),
        (_with({}), ("this one has nothing",)),
        (_with({"equals": 1}), ("this one has equals",)),
        (_with({"allOf": [CLAIM], "anyOf": [CLAIM]}), ("this one has allOf, anyOf",)),
        (_with({"allOf": []}), ("at least one element", "allOf[0].allOf")),
        (_with({"claim": "c"}), ("exactly one operator",)),
        (_with({"claim": "c", "equals": 1, "notEquals": 2}), ("exactly one operator",)),
        (_with({"claim": "c", "matches": "x"}), ("'matches' is not a condition operator",)),
        (_with({"claim": "", "equals": 1}), ("'claim' must name a claim",)),
        (_with({"claim": 3, "equals": 1}), ("'claim' must name a claim",)),
        (_with({"claim": "a..b", "equals": 1}), ("empty segment",)),
        (_with({"claim": "c", "equals": None}), ("string, number or boolean",)),
        (_with({"claim": "c", "notEquals": [1]}), ("string, number or boolean",)),
        (_with({"claim": "c", "equals": {"a": 1}}), ("string, number or boolean",)),
        (_with({"claim": "c", "less": "5"}), ("compares with a number",)),
        (_with({"claim": "c", "greater": True}), ("compares with a number",)),
        (_with({"claim": "c", "exists": "yes"}), ("'exists' takes true or false",)),
        (_with({"claim": "c", "Equals": 1, "equals": 2}), ("the same name",)),
        (_with(_deep(MAX_DEPTH)), (f"nest at most {MAX_DEPTH} deep",)),
        (_with(*[CLAIM] * (MAX_CONDITIONS + 1)), (f"at most {MAX_CONDITIONS} conditions",)),
    ],
)
def test_malformed_policies_are_refused_saying_what_and_where(
    policy: Any, fragments: tuple[str, ...]
) -> None:
    _refused(policy if isinstance(policy, bytes) else _bytes(policy), *fragments)


def test_the_deepest_nesting_allowed_is_accepted() -> None:
    parse_policy(
        _bytes({"version": "1.0.0", "anyOf": [{"authority": "a", "allOf": [_deep(MAX_DEPTH - 1)]}]})
    )
    parse_policy(
        _bytes(
            {"version": "1.0.0", "anyOf": [{"authority": "a", "allOf": [CLAIM] * MAX_CONDITIONS}]}
        )
    )


def test_size_and_json_nesting_limits() -> None:
    _refused(b" " * (MAX_POLICY_BYTES + 1), f"at most {MAX_POLICY_BYTES} bytes")
    _refused(b"[" * 6_000 + b"]" * 6_000, "nest at most")  # deeper than json's recursion
