"""docs/CMDLETS.md, written from the registry and ``documented_parameters``: for each cmdlet
the page of Microsoft's documentation it was checked against and its parameters, implemented,
accepted with no effect, or refused. A test keeps the file equal to ``reference()``."""

from __future__ import annotations

from customerkey.pwsh.cmdlets.documented_parameters import DOCUMENTED
from customerkey.pwsh.cmdlets.registry import Registry

HEADER = """# The cmdlet shell's parameters

`customerkey ps` and `customerkey shell` take the lines of Microsoft's documentation. Each
cmdlet below was checked against the page linked; its parameters are:

- **implemented**: they do what Microsoft documents (ours are marked *customerkey*);
- **accepted, no effect**: they mean nothing here (a domain controller, an Azure context, a
  certificate for a sign-in that is local here...); the line runs and a warning says
  `WARNING: -DomainController has no effect here; ignored.`;
- **refused**: leaving them out would change the result (a filter, a Managed HSM, a
  cross-forest move), so the line stops before anything runs and says why.

A parameter Microsoft does not document fails as PowerShell fails it. Every cmdlet takes the
common parameters: `-ErrorAction`, `-WarningAction` and `-OutVariable` work; `-Verbose`,
`-Debug`, `-InformationAction`, `-ErrorVariable`, `-WarningVariable`, `-InformationVariable`,
`-OutBuffer` and `-PipelineVariable` are accepted with a warning. Where Microsoft documents
`-WhatIf` the cmdlet takes it and only says what it would do; `-Confirm:$false` is accepted
(this shell never prompts) and `-Confirm` is refused, since the shell cannot ask first.
`Get-Help <cmdlet>` shows the same lists.

This file is generated from `src/customerkey/pwsh/cmdlets/documented_parameters.py`
(`python -m customerkey.pwsh.cmdlets.parameter_reference > docs/CMDLETS.md`).
"""


def reference(registry: Registry) -> str:
    """The whole of docs/CMDLETS.md."""
    parts = [HEADER]
    for spec in registry.specs():
        entry = DOCUMENTED[spec.name]
        own = entry.own_names()
        params = spec.signature.params
        implemented = [
            f"`-{p.name}`" + (" (*customerkey*)" if p.name in own else "")
            for p in params
            if not (p.ignored or p.refused)
        ]
        if spec.signature.should_process:
            implemented.append("`-WhatIf`")
        rows = [
            ("implemented", ", ".join(implemented) or "none"),
            ("accepted, no effect", ", ".join(f"`-{p.name}`" for p in params if p.ignored)),
            ("refused", ", ".join(f"`-{p.name}`" for p in params if p.refused)),
        ]
        parts.append(f"## {spec.name}\n\n[Microsoft's page]({entry.url})\n")
        parts.append("| | parameters |\n|---|---|")
        parts += [f"| {label} | {text} |" for label, text in rows if text]
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    from customerkey.pwsh.cmdlets.registry import default_registry

    print(reference(default_registry()), end="")
