"""Help for the parameters many commands share (``--tenant``, ``--no-wait``, a group's
``NAME``...), written once so every command says the same thing.

``fill_parameter_help`` gives each parameter of a command group that has no help of its own
the most specific entry of ``PARAMETER_HELP``: ``(group, command, parameter)``, then
``(group, "*", parameter)``, then ``("*", "*", parameter)``. A ``help=`` on the parameter
itself always wins; a parameter of one command only gets its help where it is declared.
"""

from __future__ import annotations

from typing import Any

_TENANT = "The tenant, by name (default: the acting principal's, or the only one)."

PARAMETER_HELP: dict[tuple[str, str, str], str] = {
    ("*", "*", "tenant"): _TENANT,
    ("*", "*", "no_wait"): "Queue the job, print its id and return without waiting.",
    ("*", "*", "display_name"): "A friendly name to show (default: the name itself).",
    ("*", "*", "description"): "A free-text description.",
    ("*", "*", "disabled"): "Create it disabled.",
    ("*", "*", "reason"): "Why the data is to be purged (recorded in the audit log).",
    ("*", "*", "contact"): "Whom to contact about the purge request (recorded).",
    ("principal", "create", "tenant"): "The tenant of the new principal (default: yours).",
    ("principal", "list", "tenant"): "Only this tenant's principals.",
    ("principal", "*", "principal_id"): "A user's UPN, an application id or an object id.",
    ("mailuser", "create", "tenant"): "The tenant (default: the one whose mail domain the "
    "UPN is in).",
    ("mailuser", "create", "upn"): "The mail user's UPN, e.g. alice@contoso.com.",
    ("vault", "create", "tenant"): "The tenant that owns the vault (default: yours).",
    ("vault", "*", "name"): "The vault's name.",
    ("key", "*", "vault"): "The vault that holds the key.",
    ("key", "*", "name"): "The key's name.",
    ("key", "*", "enable"): "Enable or disable the key.",
    ("tenant", "*", "name"): "The tenant's name (lowercase, used in ids and URLs).",
    ("dep", "*", "name"): "The policy's name.",
    ("dep", "*", "identity"): "The policy: name, DEP GUID or key-generation GUID.",
    ("dep", "*", "enable"): "Enable or disable the policy.",
    ("site", "*", "url"): "The site's URL: https://<tenant>.sharepoint.local/sites/<name>.",
    ("file", "*", "site"): "The site's URL: https://<tenant>.sharepoint.local/sites/<name>.",
    ("file", "*", "path"): "Path in the site, e.g. 'Shared Documents/a.xlsx'.",
}


def _lookup(group: str, command: str, parameter: str) -> str | None:
    for key in ((group, command, parameter), (group, "*", parameter), ("*", "*", parameter)):
        if key in PARAMETER_HELP:
            return PARAMETER_HELP[key]
    return None


def fill_parameter_help(group: str, command: Any, path: str = "") -> None:
    """Give the parameters of ``command`` (and of its sub-commands) their shared help."""
    for param in getattr(command, "params", []):
        if getattr(param, "help", None) or param.name is None:
            continue
        text = _lookup(group, path or "*", param.name)
        if text is not None:
            param.help = text
    for name, child in getattr(command, "commands", {}).items():
        fill_parameter_help(group, child, f"{path} {name}".strip() if path else name)
