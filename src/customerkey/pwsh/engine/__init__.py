"""Running PowerShell lines: the ``session`` (interpreter), ``evaluation`` of values,
``formatting`` of output, ``jobs`` started by cmdlets, and the interactive ``repl``."""
