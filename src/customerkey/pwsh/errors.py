"""``ShellError``: a statement that failed (an unknown command, bad arguments, a refusal from
the service), printed the way PowerShell prints an error record.

The engine raises it for what it finds itself; cmdlets raise it (``cmdlets.registry.fail``)
for what they refuse; a ``CustomerKeyError`` from the services becomes one with the category
``CATEGORIES`` gives its HTTP status.
"""

from __future__ import annotations

from customerkey.pwsh.language.lexer import caret_lines

CATEGORIES = {
    400: "InvalidArgument",
    401: "AuthenticationError",
    403: "PermissionDenied",
    404: "ObjectNotFound",
    408: "OperationTimeout",
    409: "ResourceExists",
    413: "LimitsExceeded",
    429: "LimitsExceeded",
    503: "ResourceUnavailable",
}


class ShellError(Exception):
    """A statement that failed: an unknown command, bad arguments, or a refusal from the
    service. Printed as PowerShell prints an error record."""

    def __init__(
        self,
        message: str,
        *,
        error_id: str,
        category: str = "NotSpecified",
        exception: str = "RuntimeException",
        target: str = "",
        command: str | None = None,
        cmdlet: str | None = None,
        start: int | None = None,
        end: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.category = category
        self.exception = exception
        self.target = target
        self.command = command  # the name as typed (the message's prefix)
        self.cmdlet = cmdlet  # the cmdlet's own name (in CategoryInfo)
        self.start = start
        self.end = end

    def render(self, source: str, file: str | None = None) -> str:
        head = f"{self.command} : {self.message}" if self.command else self.message
        lines = [head]
        if self.start is not None:
            offset = self.start
            line = source.count("\n", 0, offset) + 1
            column = offset - (source.rfind("\n", 0, offset) + 1) + 1
            where = f"At {file}:{line}" if file else f"At line:{line}"
            lines.append(f"{where} char:{column}")
            end = self.end if self.end is not None else offset + 1
            lines.extend(caret_lines(source, offset, end - offset))
        bracket = f"[{self.cmdlet}]" if self.cmdlet else "[]"
        target = f"({self.target})" if self.target else "(:)"
        lines.append(
            f"    + CategoryInfo          : {self.category}: {target} {bracket}, {self.exception}"
        )
        error_id = f"{self.error_id},{self.cmdlet}" if self.cmdlet else self.error_id
        lines.append(f"    + FullyQualifiedErrorId : {error_id}")
        return "\n".join(lines)
