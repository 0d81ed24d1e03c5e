"""The cmdlet shell: Microsoft's Customer Key PowerShell lines, run verbatim.

``customerkey ps "<line>"`` and ``customerkey shell`` (interactive, or a script from a file or
standard input) accept the Az.KeyVault / AzureRM, Exchange Online and SharePoint Online cmdlets
that the Customer Key documentation uses and print what the real cmdlets print.

- ``parser``     tokenizer and parser: source text -> syntax tree (pure)
- ``binding``    parameter metadata and PowerShell's binding rules (pure)
- ``formatting`` output objects, default views, Format-List / Format-Table / Select-Object
- ``cmdlets``    the registry and the cmdlets, calling the Runtime's services
- ``spo_cmdlets`` the SharePoint Online Customer Key cmdlets (an extension module)
- ``session``    variables, connections (who the lines act as), running scripts, errors
- ``repl``       the prompt_toolkit prompt (history, completion)

Adding cmdlets (the SharePoint Online ones, say) from another module::

    from customerkey.cli.shell.cmdlets import SPO, Invocation, Param, PSObject, cmdlet

    @cmdlet("Get-SPODataEncryptionPolicy", Param("Identity", position=0))
    def get_spo_policy(inv: Invocation) -> list[PSObject]:
        tenant = inv.tenant(SPO, "Connect-SPOService -Url <admin URL>")
        ...

then list the module in ``cmdlets.EXTENSION_MODULES`` and give its object types views with
``formatting.register_view``.
"""
