"""Naming rules for vaults and keys."""

from __future__ import annotations

import re

from customerkey.errors import BadParameter

_VAULT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,61}[A-Za-z0-9]$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9-]{1,127}$")
_VERSION = re.compile(r"^[0-9a-fA-F]{32}$")


def validate_vault_name(name: str) -> str:
    """Return the vault's canonical (lower-case) name, or raise BadParameter saying why.

    A vault name is a DNS label: 3-63 letters, digits and hyphens, starting with a letter,
    not ending with a hyphen, with no two hyphens in a row. (Azure stops at 24; the seed's own
    example names are 25 characters long.) Names are case-insensitive.
    """
    if not 3 <= len(name) <= 63:
        raise BadParameter(
            f"The vault name '{name}' is invalid: it must be 3 to 63 characters long."
        )
    if not _VAULT_NAME.match(name) or "--" in name:
        raise BadParameter(
            f"The vault name '{name}' is invalid: use letters, digits and single hyphens, "
            "start with a letter and end with a letter or digit."
        )
    return name.lower()


def validate_key_name(name: str) -> str:
    """Key names: 1-127 letters, digits and hyphens, case-insensitive."""
    if not _KEY_NAME.match(name):
        raise BadParameter(
            f"The key name '{name}' is invalid: use 1 to 127 letters, digits and hyphens."
        )
    return name


def validate_version(version: str) -> str:
    if not _VERSION.match(version):
        raise BadParameter(f"The key version '{version}' is invalid: expected 32 hex characters.")
    return version.lower()
