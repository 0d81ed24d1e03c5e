"""Key Vault key permissions and the check that an access policy grants one."""

from __future__ import annotations

from collections.abc import Iterable

KEY_PERMISSIONS: tuple[str, ...] = (
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
_BY_LOWER = {p.lower(): p for p in KEY_PERMISSIONS}


def normalize_permissions(names: Iterable[str]) -> tuple[str, ...]:
    """Canonical spelling, in the standard order; ``all`` expands to every permission.

    Raises ValueError naming the first unknown permission.
    """
    wanted: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name.lower() == "all":
            wanted.update(KEY_PERMISSIONS)
            continue
        canonical = _BY_LOWER.get(name.lower())
        if canonical is None:
            raise ValueError(
                f"'{name}' is not a key permission; valid permissions are: "
                + ", ".join(KEY_PERMISSIONS)
                + ", all"
            )
        wanted.add(canonical)
    return tuple(p for p in KEY_PERMISSIONS if p in wanted)
