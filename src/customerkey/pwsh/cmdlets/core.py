"""The PowerShell built-ins the Customer Key documentation uses: ``Get-Date``,
``Format-List``/``Format-Table`` (``fl``/``ft``), ``Select-Object``, ``Write-Output``,
``Write-Host``, ``Out-Null``, ``Get-Command`` and ``Get-Help``. The formatting itself is
``customerkey.pwsh.engine.formatting``.
"""

from __future__ import annotations

import textwrap
from datetime import datetime
from typing import Any

from customerkey.pwsh.cmdlets.documented_parameters import documented
from customerkey.pwsh.cmdlets.registry import CmdletSpec, Invocation, cmdlet, fail, matches
from customerkey.pwsh.engine.formatting import (
    FormattedOutput,
    format_list,
    format_table,
    register_view,
    select_object,
)
from customerkey.pwsh.language.binding import Param
from customerkey.pwsh.language.values import PSObject, to_ps_string

COMMAND_TYPE = "System.Management.Automation.CmdletInfo"

register_view(COMMAND_TYPE, table_view=["CommandType", "Name", "Source"])


# ====================================================================== PowerShell built-ins


@cmdlet(
    "Get-Date",
    Param("Date", "datetime", position=0),
    synopsis="The current time, or the time -Date names (times without a zone are UTC).",
)
def get_date(inv: Invocation) -> list[Any]:
    value = inv.args.get("Date")
    return [value if isinstance(value, datetime) else inv.session.now()]


def _no_format_input(inv: Invocation) -> None:
    if any(isinstance(i, FormattedOutput) for i in inv.input):
        raise fail(
            'The object of type "Microsoft.PowerShell.Commands.Internal.Format.FormatStartData" '
            "is not valid or not in the correct sequence. This is likely caused by a "
            f'user-specified "{inv.spec.name}" command which is conflicting with the default '
            "formatting.",
            "ConsoleLineOutputOutOfSequencePacket",
            "InvalidData",
        )


@cmdlet(
    "Format-List",
    Param("Property", "string[]", position=0),
    aliases=("fl",),
    synopsis="Show objects as 'Name : Value' lines (the properties named, or all: *).",
)
def format_list_cmdlet(inv: Invocation) -> list[Any]:
    _no_format_input(inv)
    if not inv.input:
        return []
    return [format_list(inv.input, inv.args.get("Property"), limit=inv.session.enumeration_limit)]


@cmdlet(
    "Format-Table",
    Param("Property", "string[]", position=0),
    Param("AutoSize", "switch", help="Tables are always sized to their content."),
    Param("Wrap", "switch", help="Cells are never cut."),
    Param("HideTableHeaders", "switch"),
    aliases=("ft",),
    synopsis="Show objects as a table (the properties named, or the default columns).",
)
def format_table_cmdlet(inv: Invocation) -> list[Any]:
    _no_format_input(inv)
    if not inv.input:
        return []
    return [
        format_table(
            inv.input,
            inv.args.get("Property"),
            headers=not inv.args.flag("HideTableHeaders"),
            limit=inv.session.enumeration_limit,
        )
    ]


@cmdlet(
    "Select-Object",
    Param("Property", "string[]", position=0),
    Param("ExpandProperty"),
    Param("First", "int"),
    Param("Last", "int"),
    Param("Skip", "int"),
    aliases=("select",),
    synopsis="Keep some properties (or -ExpandProperty one), or the -First/-Last objects.",
)
def select_object_cmdlet(inv: Invocation) -> list[Any]:
    _no_format_input(inv)
    try:
        return select_object(
            inv.input,
            inv.args.get("Property"),
            expand=inv.args.get("ExpandProperty"),
            first=inv.args.get("First"),
            last=inv.args.get("Last"),
            skip=inv.args.get("Skip") or 0,
        )
    except KeyError as missing:
        raise fail(
            f'Property "{missing.args[0]}" cannot be found.',
            "ExpandPropertyNotFound",
            "InvalidArgument",
        ) from None


@cmdlet(
    "Write-Output",
    Param("InputObject", "object", position=0, remaining=True),
    aliases=("echo", "write"),
    synopsis="Send objects down the pipeline.",
)
def write_output(inv: Invocation) -> list[Any]:
    given = inv.args.get("InputObject")
    out: list[Any] = []
    for value in given if isinstance(given, list) else [given]:
        if isinstance(value, list):
            out.extend(value)
        elif value is not None:
            out.append(value)
    return out


@cmdlet(
    "Write-Host",
    Param("Object", "object", position=0, remaining=True),
    synopsis="Print text to the console (not to the pipeline).",
)
def write_host(inv: Invocation) -> None:
    given = inv.args.get("Object")
    inv.session.host(
        " ".join(to_ps_string(v) for v in (given if isinstance(given, list) else [given]))
    )


@cmdlet("Out-Null", synopsis="Discard the pipeline's output.")
def out_null(inv: Invocation) -> None:
    return None


@cmdlet(
    "Get-Command",
    Param("Name", position=0),
    aliases=("gcm",),
    synopsis="List the cmdlets this shell knows (wildcards allowed).",
)
def get_command(inv: Invocation) -> list[Any]:
    pattern = inv.args.get("Name")
    found = []
    for spec in inv.session.registry.specs():
        for name in (spec.name, *spec.aliases):
            if matches(pattern or "*", name):
                found.append(
                    PSObject(
                        COMMAND_TYPE,
                        {
                            "CommandType": "Cmdlet" if name == spec.name else "Alias",
                            "Name": name if name == spec.name else f"{name} -> {spec.name}",
                            "Source": spec.module,
                            "Synopsis": spec.synopsis,
                        },
                        display=name,
                    )
                )
    if pattern and not found and not any(c in pattern for c in "*?["):
        raise fail(
            f"The term '{pattern}' is not recognized as the name of a cmdlet.",
            "CommandNotFoundException",
            "ObjectNotFound",
        )
    return found


def syntax(spec: CmdletSpec) -> list[str]:
    """PowerShell-style syntax lines, one per parameter set."""
    lines = []
    for set_name in spec.signature.sets:
        parts = [spec.name]
        params = [
            p for p in spec.signature.params if p.in_set(set_name) and not (p.ignored or p.refused)
        ]
        params.sort(key=lambda p: (p.position is None, p.position or 0))
        for param in params:
            value = "" if param.type == "switch" else f" <{param.type_name.split('.')[-1]}>"
            name = f"-{param.name}"
            if param.position is not None:
                name = f"[{name}]"
            text = f"{name}{value}"
            if not param.mandatory_in(set_name):
                text = f"[{text}]"
            parts.append(text)
        if spec.signature.should_process:
            parts += ["[-WhatIf]", "[-Confirm]"]
        parts.append("[<CommonParameters>]")
        lines.append(" ".join(parts))
    return lines


@cmdlet(
    "Get-Help",
    Param("Name", position=0),
    aliases=("help",),
    synopsis="A cmdlet's syntax and aliases.",
)
def get_help(inv: Invocation) -> list[Any]:
    name = inv.args.get("Name")
    if not name:
        return [
            "Run Get-Command to list the cmdlets, and Get-Help <cmdlet> for one cmdlet's syntax.",
        ]
    spec = inv.session.registry.resolve(str(name))
    if spec is None:
        raise fail(
            f"Get-Help could not find {name} in a help file in this session.",
            "HelpNotFound",
            "ResourceUnavailable",
        )
    lines = ["", "NAME", f"    {spec.name}", "", "SYNOPSIS", f"    {spec.synopsis}", "", "SYNTAX"]
    for line in syntax(spec):
        lines += [f"    {line}", ""]
    params = spec.signature.params
    described = [p for p in params if p.help]
    if described:
        lines.append("PARAMETERS")
        lines += [f"    -{p.name}: {p.help}" for p in described]
        lines.append("")
    for title, chosen in (
        ("ACCEPTED WITH NO EFFECT HERE (a warning says so)", [p for p in params if p.ignored]),
        ("DOCUMENTED BY MICROSOFT, NOT SUPPORTED HERE", [p for p in params if p.refused]),
    ):
        if chosen:
            text = " ".join(f"-{p.name}" for p in chosen)
            lines += [
                title,
                *textwrap.wrap(text, 88, initial_indent="    ", subsequent_indent="    "),
                "",
            ]
    if spec.aliases:
        lines += ["ALIASES", *(f"    {a}" for a in spec.aliases), ""]
    entry = documented(spec.name)
    if entry is not None:
        lines += ["RELATED LINKS", f"    {entry.url}", ""]
    return ["\n".join(lines)]
