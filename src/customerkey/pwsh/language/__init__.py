"""The PowerShell subset the cmdlet shell understands, pure (no I/O, no services): ``lexer``,
``parser`` and the ``syntax`` tree they build, ``values`` (PSObject and string conversion) and
``binding`` (parameters and PowerShell's binding rules)."""
