"""The cmdlet shell: Microsoft's Customer Key PowerShell lines, run verbatim.

``customerkey ps "<line>"`` and ``customerkey shell`` (interactive, or a script from a file or
standard input; the Typer commands are ``customerkey.cli.shell_commands``) accept the
Az.KeyVault / AzureRM, Exchange Online and SharePoint Online cmdlets that the Customer Key
documentation uses and print what the real cmdlets print.

- ``language``  the PowerShell subset, pure: ``lexer`` and ``parser`` (source text -> the
  ``syntax`` tree), ``values`` (PSObject, string conversion), ``binding`` (parameter metadata
  and PowerShell's binding rules)
- ``engine``    running it: ``session`` (the interpreter: variables, connections, errors),
  ``formatting`` (default views, Format-List / Format-Table / Select-Object), ``jobs`` (the
  jobs cmdlets start, through ``customerkey.jobs.runner``), ``repl`` (the prompt_toolkit
  prompt)
- ``cmdlets``   ``registry`` (what a cmdlet module depends on: the registry, ``Invocation``,
  the ``ShellContext`` the session implements) and one module per product: ``connect``
  (sign-in), ``keyvault`` and ``keyvault_keys`` (Az.KeyVault), ``exchange``, ``spo``, ``core``
  (the PowerShell built-ins)
- ``errors``    ``ShellError``, a failed statement as PowerShell prints it

Dependencies run one way: ``engine.session`` imports the registry; cmdlet modules import
``cmdlets.registry``, ``language`` and ``engine.formatting``, never the session.

Adding cmdlets (another product's, say) from another module::

    from customerkey.pwsh.cmdlets.registry import SPO, Invocation, Param, PSObject, cmdlet

    @cmdlet("Get-SPODataEncryptionPolicy", Param("Identity", position=0))
    def get_spo_policy(inv: Invocation) -> list[PSObject]:
        tenant = inv.tenant(SPO, "Connect-SPOService -Url <admin URL>")
        ...

then list the module in ``cmdlets.registry.CMDLET_MODULES`` and give its object types views
with ``formatting.register_view``.
"""
