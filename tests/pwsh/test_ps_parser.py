"""The cmdlet shell's parser: every syntax rule the Customer Key documentation relies on, and
the PowerShell-like errors (with positions) for what it does not accept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customerkey.pwsh.language.lexer import ParseError
from customerkey.pwsh.language.parser import parse
from customerkey.pwsh.language.syntax import (
    ArrayLiteral,
    Assignment,
    Command,
    CommandParameter,
    ExpandableString,
    HashLiteral,
    IndexAccess,
    MemberAccess,
    NumberLiteral,
    Pipeline,
    StatementBlock,
    StringLiteral,
    SubExpression,
    VariableRef,
)

SEED = Path(__file__).resolve().parents[1] / "cli" / "seed" / "manage-customer-key.md"


def command(source: str) -> Command:
    (statement,) = parse(source).statements
    assert isinstance(statement, Pipeline)
    (element,) = statement.elements
    assert isinstance(element, Command)
    return element


def pipeline(source: str) -> Pipeline:
    (statement,) = parse(source).statements
    assert isinstance(statement, Pipeline)
    return statement


def error(source: str) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse(source)
    return caught.value


def shape(element: object) -> object:
    """A compact view of a command element, for comparisons."""
    if isinstance(element, CommandParameter):
        return ("-" + element.name, shape(element.argument) if element.argument else None)
    if isinstance(element, StringLiteral):
        return element.value
    if isinstance(element, ArrayLiteral):
        return [shape(i) for i in element.items]
    if isinstance(element, VariableRef):
        return "$" + element.name
    if isinstance(element, NumberLiteral):
        return element.value
    return type(element).__name__


# ------------------------------------------------------------------ commands and arguments


def test_named_parameters_and_bareword_values() -> None:
    cmd = command("Get-AzureRmKeyVault -VaultName Contoso-O365EX-NA-VaultA1")
    assert cmd.name == "Get-AzureRmKeyVault"
    assert [shape(e) for e in cmd.elements] == [("-VaultName", None), "Contoso-O365EX-NA-VaultA1"]
    value = cmd.elements[1]
    assert isinstance(value, StringLiteral) and value.bare


def test_names_keep_their_case_and_prefixes() -> None:
    cmd = command("get-azkeyvault -vaultn x")
    assert cmd.name == "get-azkeyvault"
    assert shape(cmd.elements[0]) == ("-vaultn", None)


def test_positional_arguments_and_switches() -> None:
    cmd = command("Set-DataEncryptionPolicy ContosoDEP -Refresh ")
    assert [shape(e) for e in cmd.elements] == ["ContosoDEP", ("-Refresh", None)]
    cmd = command("Remove-AzKeyVaultKey V K -Force -PassThru")
    assert [shape(e) for e in cmd.elements] == ["V", "K", ("-Force", None), ("-PassThru", None)]


def test_colon_values() -> None:
    cmd = command("Remove-AzKeyVaultKey -Force:$false -Confirm:$true -Name:key1 -Size: 2048")
    assert [shape(e) for e in cmd.elements] == [
        ("-Force", "$false"),
        ("-Confirm", "$true"),
        ("-Name", "key1"),
        ("-Size", "2048"),
    ]
    (force, *_) = cmd.elements
    assert isinstance(force, CommandParameter) and force.colon
    bare = command("Get-X -Name:")
    (param,) = bare.elements
    assert isinstance(param, CommandParameter) and param.colon and param.argument is None


def test_true_false_null_are_variables() -> None:
    cmd = command("Set-Mailbox m -DataEncryptionPolicy $null -Enabled $TRUE")
    assert [shape(e) for e in cmd.elements] == [
        "m",
        ("-DataEncryptionPolicy", None),
        "$null",
        ("-Enabled", None),
        "$TRUE",
    ]


def test_single_quoted_strings() -> None:
    cmd = command("Write-Output 'it''s $x' '' 'a  b'")
    assert [shape(e) for e in cmd.elements] == ["it's $x", "", "a  b"]
    value = cmd.elements[0]
    assert isinstance(value, StringLiteral) and not value.bare


def test_double_quoted_strings_expand_and_escape() -> None:
    cmd = command('Write-Output "say ""hi"" `$x `t" "v=$v!" "${a b}" "n=$($k.Name)" "$"')
    first, second, third, fourth, fifth = cmd.elements
    assert isinstance(first, StringLiteral) and first.value == 'say "hi" $x \t'
    assert isinstance(second, ExpandableString)
    assert second.parts[0] == "v=" and second.parts[2] == "!"
    assert isinstance(second.parts[1], VariableRef) and second.parts[1].name == "v"
    assert isinstance(third, ExpandableString) and isinstance(third.parts[0], VariableRef)
    assert third.parts[0].name == "a b"
    assert isinstance(fourth, ExpandableString) and isinstance(fourth.parts[1], StatementBlock)
    assert isinstance(fifth, StringLiteral) and fifth.value == "$"


def test_typographic_quotes_and_dashes_as_in_pasted_documentation() -> None:
    cmd = command(
        "New-DataEncryptionPolicy \u2013Name \u201cUS Mailboxes\u201d "
        "\u2014Description \u2018x\u2019"
    )
    assert [shape(e) for e in cmd.elements] == [
        ("-Name", None),
        "US Mailboxes",
        ("-Description", None),
        "x",
    ]


def test_arrays_with_at_parentheses() -> None:
    cmd = command("Add-AzureKeyVaultKey -KeyOps @('wrapKey','unwrapKey') -X @()")
    ops = cmd.elements[1]
    assert isinstance(ops, StatementBlock) and ops.array
    (inner,) = ops.statements
    assert isinstance(inner, Pipeline)
    assert shape(inner.elements[0]) == ["wrapKey", "unwrapKey"]
    empty = cmd.elements[3]
    assert isinstance(empty, StatementBlock) and empty.statements == ()


def test_comma_arrays_in_argument_mode() -> None:
    cmd = command("Set-AzKeyVaultAccessPolicy -PermissionsToKeys wrapKey,unwrapKey,get -V v")
    assert shape(cmd.elements[1]) == ["wrapKey", "unwrapKey", "get"]
    spaced = command(
        'New-DataEncryptionPolicy -AzureKeyIDs "https://a/keys/k" , "https://b/keys/k"'
    )
    assert shape(spaced.elements[1]) == ["https://a/keys/k", "https://b/keys/k"]
    wrapped = command("Set-X -P a,\n  b")
    assert shape(wrapped.elements[1]) == ["a", "b"]


def test_sub_expressions() -> None:
    cmd = command('Add-AzKeyVaultKey -NotBefore (Get-Date -Date "12/27/2016 12:01 AM")')
    sub = cmd.elements[1]
    assert isinstance(sub, SubExpression)
    (inner,) = sub.pipeline.elements
    assert isinstance(inner, Command) and inner.name == "Get-Date"
    assert [shape(e) for e in inner.elements] == [("-Date", None), "12/27/2016 12:01 AM"]
    dollar = command("Write-Output $(Get-Date; Get-Date)")
    block = dollar.elements[0]
    assert isinstance(block, StatementBlock) and not block.array and len(block.statements) == 2


def test_pipelines_into_formatting() -> None:
    line = pipeline("Get-MailboxStatistics -Identity a | fl DataEncryptionPolicyID")
    first, second = line.elements
    assert isinstance(first, Command) and isinstance(second, Command)
    assert second.name == "fl" and shape(second.elements[0]) == "DataEncryptionPolicyID"
    table = pipeline("Get-X | ft Name, Enabled | Out-Null")
    assert [e.name for e in table.elements if isinstance(e, Command)] == ["Get-X", "ft", "Out-Null"]
    star = pipeline("Get-X |\n  fl *")
    assert shape(star.elements[1].elements[0]) == "*"  # type: ignore[union-attr]


def test_assignment_and_property_access() -> None:
    statements = parse(
        "$k = Get-AzKeyVaultKey -VaultName v -Name k\n$k.Id\n$k.Attributes.Enabled"
    ).statements
    assignment, first, second = statements
    assert isinstance(assignment, Assignment) and assignment.variable == "k"
    assert isinstance(assignment.value.elements[0], Command)
    assert isinstance(first, Pipeline)
    access = first.elements[0]
    assert isinstance(access, MemberAccess) and access.member == "Id"
    assert isinstance(second, Pipeline)
    nested = second.elements[0]
    assert isinstance(nested, MemberAccess) and isinstance(nested.target, MemberAccess)


def test_property_access_in_argument_mode_and_indexing() -> None:
    cmd = command("New-DataEncryptionPolicy -Name d -AzureKeyIDs $a.Id, $b[0].Id")
    ids = cmd.elements[3]
    assert isinstance(ids, ArrayLiteral)
    first, second = ids.items
    assert isinstance(first, MemberAccess) and first.member == "Id"
    assert isinstance(second, MemberAccess) and isinstance(second.target, IndexAccess)
    assert parse("$x = (Get-X).Name").statements


def test_hash_literals() -> None:
    cmd = command("Add-AzKeyVaultKey -Tag @{Env='Prod'; 'Cost Center'=42\n Owner = \"a\"}")
    table = cmd.elements[1]
    assert isinstance(table, HashLiteral)
    keys = [shape(k) for k, _ in table.entries]
    assert keys == ["Env", "Cost Center", "Owner"]
    assert shape(table.entries[1][1].elements[0]) == 42


def test_expressions_first_in_a_pipeline() -> None:
    line = pipeline("$keys | Select-Object -First 1")
    assert isinstance(line.elements[0], VariableRef)
    assert shape(pipeline("1, 2kb, 0x10, -3, 1.5").elements[0]) == [1, 2048, 16, -3, 1.5]
    literal = pipeline("'a'").elements[0]
    assert isinstance(literal, StringLiteral) and literal.value == "a"


def test_statement_separators_comments_and_backticks() -> None:
    statements = parse(
        "Get-Date; Get-Date\n\n# a comment\nGet-Date # trailing\n<# block\ncomment #> Get-Date"
    ).statements
    assert len(statements) == 4
    continued = command("Get-AzKeyVault `\n  -VaultName v")
    assert [shape(e) for e in continued.elements] == [("-VaultName", None), "v"]
    hashed = command("Write-Output a#b")
    assert shape(hashed.elements[0]) == "a#b"


def test_a_line_starting_with_a_parameter_continues_the_command() -> None:
    """As Microsoft's document writes Remove-AzureRmKeyVaultAccessPolicy."""
    cmd = command(
        "Remove-AzureRmKeyVaultAccessPolicy -VaultName Contoso-O365EX-NA-VaultA1 \n"
        "-UserPrincipalName alice@contoso.com\n"
    )
    assert [shape(e) for e in cmd.elements] == [
        ("-VaultName", None),
        "Contoso-O365EX-NA-VaultA1",
        ("-UserPrincipalName", None),
        "alice@contoso.com",
    ]
    crlf = command("Get-X -A 1\r\n   \u2013B 2")
    assert [shape(e) for e in crlf.elements] == [("-A", None), "1", ("-B", None), "2"]
    # Anything else on the next line is a new statement.
    assert len(parse("Get-X -A 1\nGet-Y -B 2").statements) == 2
    assert len(parse("Get-X -A 1\n-5").statements) == 2


def test_barewords_join_quotes_and_variables() -> None:
    cmd = command('Write-Output Key$n a"b c"d alice@contoso.com 12/27/2016')
    expanded, joined, upn, date = cmd.elements
    assert isinstance(expanded, ExpandableString)
    assert expanded.parts[0] == "Key" and isinstance(expanded.parts[1], VariableRef)
    assert shape(joined) == "ab cd"
    assert shape(upn) == "alice@contoso.com" and shape(date) == "12/27/2016"


def test_positions_are_offsets_into_the_source() -> None:
    source = "Get-X -Name v1 | fl"
    line = pipeline(source)
    first = line.elements[0]
    assert isinstance(first, Command)
    param = first.elements[0]
    assert source[param.start : param.end] == "-Name"
    assert source[first.start : first.name_end] == "Get-X"


def test_every_seed_code_block_parses() -> None:
    text = SEED.read_text(encoding="utf-8")
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    assert len(blocks) == 13
    for block in blocks:
        substituted = re.sub(r"<[^>]+>", "x", block)
        assert parse(substituted).statements, block


# ------------------------------------------------------------------ errors


def test_unterminated_strings() -> None:
    caught = error('Get-X -Name "abc')
    assert caught.message == 'The string is missing the terminator: ".'
    assert (caught.line, caught.column, caught.incomplete) == (1, 13, True)
    assert caught.error_id == "TerminatorExpectedAtEndOfString"
    single = error("Get-X\nGet-Y 'abc")
    assert single.message == "The string is missing the terminator: '."
    assert (single.line, single.column) == (2, 7)


def test_missing_closing_parentheses() -> None:
    caught = error('Add-X -NotBefore (Get-Date -Date "x"')
    assert caught.message == "Missing closing ')' in expression."
    assert caught.incomplete and caught.column == 18
    array = error("Add-X -KeyOps @('a'")
    assert array.message == "Missing closing ')' in subexpression." and array.incomplete
    assert error("Get-X ()").message == "An expression was expected after '('."


def test_empty_pipe_elements() -> None:
    trailing = error("Get-X |")
    assert trailing.message == "An empty pipe element is not allowed." and trailing.incomplete
    middle = error("Get-X | | fl")
    assert middle.message == "An empty pipe element is not allowed." and not middle.incomplete
    assert middle.column == 7


def test_unsubstituted_placeholder() -> None:
    caught = error("Get-AzureRmKeyVault -VaultName <vaultname>")
    assert caught.message == "The '<' operator is reserved for future use."
    assert caught.column == 32
    assert "redirection" in error("Get-X > out.txt").message.lower()


def test_expressions_only_first_in_a_pipeline() -> None:
    caught = error("Get-X | $y")
    assert caught.message == "Expressions are only allowed as the first element of a pipeline."


def test_unexpected_tokens() -> None:
    assert error("Get-X )").message == "Unexpected token ')' in expression or statement."
    assert error("'a' 'b'").message == "Unexpected token ''b'' in expression or statement."
    assert error("$a.b = 1").message == "Only a variable can be assigned to ($name = ...)."


def test_unsupported_syntax_is_refused_not_misread() -> None:
    assert "operator '-eq'" in error("$a -eq 1").message
    assert "operator '+'" in error("1 + 2").message
    assert "Method invocation ('.ToString()')" in error("$a.ToString()").message
    assert "Script blocks" in error("Get-X { 1 }").message
    assert "Type literals ('[datetime]')" in error("[datetime]'2020-01-01'").message
    assert "call operator" in error("& 'Get-Date'").message
    assert "Static member" in error("$a::Now").message


def test_missing_values() -> None:
    comma = error("Set-X -P a,")
    assert comma.message == "Missing expression after ','." and comma.incomplete
    assignment = error("$k = ")
    assert assignment.message.startswith("You must provide a value expression")
    assert assignment.incomplete
    assert error("Set-X -P a, -Q").message == "Missing expression after ','."


def test_hash_literal_errors() -> None:
    assert error("Set-X @{a}").message == "Missing '=' operator after key in hash literal."
    open_table = error("Set-X @{a=1")
    assert open_table.message == "The hash literal was incomplete." and open_table.incomplete


def test_render_is_powershell_like() -> None:
    caught = error("Get-AzKeyVault -VaultName <v>")
    assert caught.render() == "\n".join(
        [
            "At line:1 char:27",
            "+ Get-AzKeyVault -VaultName <v>",
            "+                           ~",
            "The '<' operator is reserved for future use.",
            "    + CategoryInfo          : ParserError: (:) [], ParentContainsErrorRecordException",
            "    + FullyQualifiedErrorId : RedirectionNotSupported",
        ]
    )
    assert caught.render("setup.ps1").startswith("At setup.ps1:1 char:27")


_PIECES = st.sampled_from(
    [*"ab-$@(){}[]'\"`|;,.:=#<>&\n \t09", "\u2013", "\u201c", "-Name", "$x", "@(", "$(", "@{"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join))
def test_any_input_parses_or_raises_parse_error(source: str) -> None:
    try:
        parse(source)
    except ParseError as caught:
        assert caught.render().count("\n") == 5
        assert 1 <= caught.line <= source.count("\n") + 1
