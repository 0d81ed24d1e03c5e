"""Key Vault key permissions (``customerkey.vault.permissions``): the canonical list and how an
access policy's permission names are normalized.

What an access policy grants is decided from the normalized tuple, so each test checks the
exact tuple: a blank entry that swallowed the rest, or an unknown name let through after
``all``, would widen or narrow a grant without any other symptom.
"""

from __future__ import annotations

import re

import pytest

from customerkey.vault.permissions import KEY_PERMISSIONS, normalize_permissions

# Key Vault's key permissions, in the standard order every normalized tuple follows.
EXPECTED = (
    "get",
    "list",
    "update",
    "create",
    "import",
    "delete",
    "recover",
    "backup",
    "restore",
    "purge",
    "decrypt",
    "encrypt",
    "unwrapKey",
    "wrapKey",
    "sign",
    "verify",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
    "release",
)
VALID = ", ".join(EXPECTED) + ", all"


def _unknown(name: str) -> str:
    return (
        "^" + re.escape(f"'{name}' is not a key permission; valid permissions are: {VALID}") + "$"
    )


def test_the_permission_list() -> None:
    assert KEY_PERMISSIONS == EXPECTED


def test_names_get_their_canonical_spelling_and_the_standard_order() -> None:
    assert normalize_permissions(["WRAPKEY", "Get", "unwrapkey"]) == ("get", "unwrapKey", "wrapKey")
    assert normalize_permissions(["GetRotationPolicy", "release"]) == (
        "getrotationpolicy",
        "release",
    )
    assert normalize_permissions(["list", "get", "LIST", "get"]) == ("get", "list")


def test_blank_entries_are_skipped_and_the_rest_still_counts() -> None:
    assert normalize_permissions(["get", " ", "list"]) == ("get", "list")
    assert normalize_permissions(["", "wrapKey", "\t", "unwrapKey", ""]) == ("unwrapKey", "wrapKey")
    assert normalize_permissions([" get ", "\tlist\n"]) == ("get", "list")
    assert normalize_permissions(["", " "]) == ()
    assert normalize_permissions([]) == ()


def test_all_expands_to_every_permission() -> None:
    assert normalize_permissions(["all"]) == EXPECTED
    assert normalize_permissions([" ALL "]) == EXPECTED
    assert normalize_permissions(["get", "All", "wrapKey"]) == EXPECTED
    assert normalize_permissions(["all", "", "get"]) == EXPECTED


def test_an_unknown_name_is_refused_wherever_it_is() -> None:
    with pytest.raises(ValueError, match=_unknown("getKey")):
        normalize_permissions(["getKey"])
    with pytest.raises(ValueError, match=_unknown("bogus")):
        normalize_permissions(["get", " bogus ", "list"])
    # After "all" too: "all" does not end the checking of the names that follow it.
    with pytest.raises(ValueError, match=_unknown("bogus")):
        normalize_permissions(["all", "bogus"])
    with pytest.raises(ValueError, match=_unknown("al")):
        normalize_permissions(["al"])


def test_the_first_unknown_name_is_the_one_named() -> None:
    with pytest.raises(ValueError, match=_unknown("first")):
        normalize_permissions(["get", "first", "second"])
