"""Parameter binding the PowerShell way: names, aliases, prefixes, positions, switches,
parameter sets, mandatory parameters and type conversion, with PowerShell's messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from customerkey.pwsh.language.binding import (
    BindingError,
    BoundArguments,
    NamedArgument,
    Param,
    PositionalArgument,
    Signature,
    bind,
    convert,
    missing_mandatory,
    parse_datetime,
)
from customerkey.pwsh.language.values import PSObject

ADD_KEY = Signature(
    (
        Param("VaultName", position=0, mandatory=True),
        Param("Name", aliases=("KeyName",), position=1, mandatory=True),
        Param("Destination", position=2, choices=("HSM", "Software")),
        Param("KeyOps", "string[]"),
        Param("NotBefore", "datetime"),
        Param("Size", "int"),
        Param("Disable", "switch"),
        Param("Tag", "hashtable"),
    ),
    should_process=True,
)

ACCESS = Signature(
    (
        Param("VaultName", position=0, mandatory=True),
        Param("UserPrincipalName", sets=("ByUpn",), mandatory=True),
        Param("ServicePrincipalName", aliases=("SPN",), sets=("BySpn",), mandatory=True),
        Param("PermissionsToKeys", "string[]"),
    ),
    default_set="ByUpn",
)


def named(name: str, value: Any = None, *, colon: bool = False) -> NamedArgument:
    return NamedArgument(name, value, has_value=colon or value is not None)


def flag(name: str) -> NamedArgument:
    return NamedArgument(name)


def pos(value: Any) -> PositionalArgument:
    return PositionalArgument(value)


def bind_args(signature: Signature, *args: Any, **kwargs: Any) -> BoundArguments:
    """Arguments as the parser gives them: ``-name`` then its value as the next element."""
    items: list[NamedArgument | PositionalArgument] = []
    for arg in args:
        if isinstance(arg, NamedArgument | PositionalArgument):
            items.append(arg)
        elif isinstance(arg, str) and arg.startswith("-"):
            items.append(NamedArgument(arg[1:]))
        else:
            items.append(PositionalArgument(arg))
    return bind(signature, items, **kwargs)


def failure(signature: Signature, *args: Any, **kwargs: Any) -> BindingError:
    with pytest.raises(BindingError) as caught:
        bind_args(signature, *args, **kwargs)
    return caught.value


# ------------------------------------------------------------------ names


def test_names_are_case_insensitive_and_aliases_work() -> None:
    bound = bind_args(ADD_KEY, "-vaultname", "v", "-KEYNAME", "k")
    assert bound.values == {"VaultName": "v", "Name": "k"}


def test_unambiguous_prefixes() -> None:
    bound = bind_args(
        ADD_KEY, "-Va", "v", "-Na", "k", "-Des", "hsm", "-KeyO", "wrapKey", "-Si", 4096
    )
    assert bound.values == {
        "VaultName": "v",
        "Name": "k",
        "Destination": "HSM",
        "KeyOps": ["wrapKey"],
        "Size": 4096,
    }


def test_ambiguous_prefix_names_the_candidates() -> None:
    caught = failure(ADD_KEY, "-N", "x")
    assert caught.message == (
        "Parameter cannot be processed because the parameter name 'N' is ambiguous. Possible "
        "matches include: -Name -NotBefore."
    )
    assert caught.error_id == "AmbiguousParameter"
    # The common parameters take part, as in PowerShell.
    assert "-VaultName -Verbose" in failure(ADD_KEY, "-V", "x").message


def test_unknown_parameter() -> None:
    caught = failure(ADD_KEY, NamedArgument("Bogus", start=10, end=16))
    assert caught.message == "A parameter cannot be found that matches parameter name 'Bogus'."
    assert (caught.error_id, caught.start, caught.end) == ("NamedParameterNotFound", 10, 16)


def test_an_exact_name_beats_a_longer_one() -> None:
    signature = Signature((Param("Name"), Param("NameSuffix")))
    assert bind_args(signature, "-Name", "a").values == {"Name": "a"}
    assert bind_args(signature, "-NameS", "b").values == {"NameSuffix": "b"}


def test_specified_twice() -> None:
    caught = failure(ADD_KEY, "-Name", "a", "-KeyName", "b")
    assert caught.message.startswith(
        "Cannot bind parameter because parameter 'Name' is specified more than once."
    )


def test_common_and_should_process_parameters() -> None:
    bound = bind_args(ADD_KEY, "v", "k", "-WhatIf", "-ErrorAction", "silentlycontinue", "-cf")
    assert bound.values["WhatIf"] is True and bound.values["Confirm"] is True
    assert bound.values["ErrorAction"] == "SilentlyContinue"
    plain = Signature((Param("Name"),))
    assert "'WhatIf'" in failure(plain, "-WhatIf").message


# ------------------------------------------------------------------ values and positions


def test_missing_argument() -> None:
    caught = failure(ADD_KEY, "-VaultName", "-Name", "k")
    assert caught.message == (
        "Missing an argument for parameter 'VaultName'. Specify a parameter of type "
        "'System.String' and try again."
    )
    assert "'Size'" in failure(ADD_KEY, "v", "k", "-Size").message


def test_positional_binding_in_position_order() -> None:
    bound = bind_args(ADD_KEY, "v", "k", "Software")
    assert bound.values == {"VaultName": "v", "Name": "k", "Destination": "Software"}
    mixed = bind_args(ADD_KEY, "-Name", "k", "v")
    assert mixed.values == {"Name": "k", "VaultName": "v"}


def test_extra_positional_argument() -> None:
    caught = failure(ADD_KEY, "v", "k", "HSM", "extra")
    assert caught.message == "A positional parameter cannot be found that accepts argument 'extra'."
    assert "argument 'System.Object[]'" in failure(ADD_KEY, "v", "k", "HSM", ["a", "b"]).message


def test_remaining_arguments() -> None:
    signature = Signature((Param("InputObject", "object", position=0, remaining=True),))
    assert bind_args(signature, "a", "b", 3).values == {"InputObject": ["a", "b", 3]}


def test_switches_take_no_value_unless_given_a_colon_value() -> None:
    assert bind_args(ADD_KEY, "v", "k", "-Disable").values["Disable"] is True
    assert bind(ADD_KEY, [pos("v"), pos("k"), named("Disable", False)]).values["Disable"] is False
    # -Switch $false: the $false is a positional argument, as in PowerShell.
    caught = failure(ADD_KEY, "v", "k", "HSM", "-Disable", False)
    assert caught.message == "A positional parameter cannot be found that accepts argument 'False'."
    refused = failure(ADD_KEY, "v", "k", named("Disable", "no", colon=True))
    assert "Boolean parameters accept only Boolean values and numbers" in refused.message


# ------------------------------------------------------------------ conversion


def test_bool_parameters_accept_booleans_and_numbers_only() -> None:
    enabled = Param("Enabled", "bool")
    assert convert(enabled, True) is True and convert(enabled, 0) is False
    with pytest.raises(BindingError) as caught:
        convert(enabled, "false")
    assert caught.value.message == (
        "Cannot process argument transformation on parameter 'Enabled'. Cannot convert value "
        '"System.String" to type "System.Boolean". Boolean parameters accept only Boolean '
        "values and numbers, such as $True, $False, 1 or 0."
    )


def test_int_conversion() -> None:
    size = Param("Size", "int")
    assert convert(size, "4096") == 4096 and convert(size, 2.6) == 3 and convert(size, "0x10") == 16
    with pytest.raises(BindingError) as caught:
        convert(size, "big")
    assert caught.value.message == (
        'Cannot bind parameter \'Size\'. Cannot convert value "big" to type "System.Int32". '
        'Error: "Input string was not in a correct format."'
    )


def test_datetime_conversion() -> None:
    when = Param("NotBefore", "datetime")
    expected = datetime(2016, 12, 27, 0, 1, tzinfo=UTC)
    assert convert(when, "12/27/2016 12:01 AM") == expected
    assert convert(when, "2016-12-27T00:01:00Z") == expected
    assert convert(when, datetime(2016, 12, 27, 0, 1)) == expected
    with pytest.raises(BindingError) as caught:
        convert(when, "27/12/2016")
    assert caught.value.message.endswith(
        'to type "System.DateTime". Error: "String was not recognized as a valid DateTime."'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12/27/2016", datetime(2016, 12, 27, tzinfo=UTC)),
        ("1/2/2017 3:04 PM", datetime(2017, 1, 2, 15, 4, tzinfo=UTC)),
        ("12/31/9999 23:59:59", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("2017-08-02 10:00", datetime(2017, 8, 2, 10, 0, tzinfo=UTC)),
        ("December 27, 2016", datetime(2016, 12, 27, tzinfo=UTC)),
        ("2016-12-27T01:01:00+01:00", datetime(2016, 12, 27, 0, 1, tzinfo=UTC)),
        ("not a date", None),
        ("", None),
    ],
)
def test_parse_datetime(text: str, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


def test_string_arrays_and_validate_set() -> None:
    ops = Param("KeyOps", "string[]", choices=("wrapKey", "unwrapKey"))
    assert convert(ops, "WRAPKEY") == ["wrapKey"]
    assert convert(ops, ["wrapkey", "unwrapkey"]) == ["wrapKey", "unwrapKey"]
    with pytest.raises(BindingError) as caught:
        convert(Param("Destination", choices=("HSM", "Software")), "Cloud")
    assert caught.value.message == (
        "Cannot validate argument on parameter 'Destination'. The argument \"Cloud\" does not "
        'belong to the set "HSM,Software" specified by the ValidateSet attribute. Supply an '
        "argument that is in the set and then try the command again."
    )


def test_strings_from_other_values() -> None:
    name = Param("Name")
    assert convert(name, 42) == "42" and convert(name, True) == "True"
    assert convert(name, ["only"]) == "only"
    assert convert(name, datetime(2016, 12, 27, 0, 1, tzinfo=UTC)) == "12/27/2016 00:01:00"
    assert convert(name, PSObject("T", {}, display="megan@contoso.com")) == "megan@contoso.com"
    with pytest.raises(BindingError) as caught:
        convert(name, ["a", "b"])
    assert caught.value.message == (
        "Cannot convert 'System.Object[]' to the type 'System.String' required by parameter "
        "'Name'. Specified method is not supported."
    )


def test_hashtables() -> None:
    tag = Param("Tag", "hashtable")
    assert convert(tag, {"Env": "Prod"}) == {"Env": "Prod"}
    with pytest.raises(BindingError) as caught:
        convert(tag, "Env=Prod")
    assert '"System.Collections.Hashtable"' in caught.value.message


def test_null_values() -> None:
    assert convert(Param("DataEncryptionPolicy", allow_null=True), None) is None
    assert convert(Param("Description"), None) is None
    with pytest.raises(BindingError) as caught:
        convert(Param("Identity", mandatory=True), None)
    assert (
        caught.value.message == "Cannot bind argument to parameter 'Identity' because it is null."
    )
    with pytest.raises(BindingError) as empty:
        convert(Param("Identity", mandatory=True), "")
    assert "because it is an empty string" in empty.value.message


# ------------------------------------------------------------------ sets and mandatory


def test_missing_mandatory_parameters() -> None:
    caught = failure(ADD_KEY, "-Size", 2048)
    assert caught.message == (
        "Cannot process command because of one or more missing mandatory parameters: "
        "VaultName Name."
    )
    assert caught.error_id == "MissingMandatoryParameter"


def test_parameter_sets() -> None:
    by_upn = bind_args(ACCESS, "v", "-UserPrincipalName", "alice@contoso.com")
    assert by_upn.parameter_set == "ByUpn"
    by_spn = bind_args(ACCESS, "v", "-SPN", "00000002-0000-0ff1-ce00-000000000000")
    assert by_spn.parameter_set == "BySpn"
    both = failure(ACCESS, "v", "-UserPrincipalName", "a@b.com", "-SPN", "x")
    assert both.message.startswith(
        "Parameter set cannot be resolved using the specified named parameters."
    )
    neither = failure(ACCESS, "v", "-PermissionsToKeys", "get")
    assert neither.message.endswith("missing mandatory parameters: UserPrincipalName.")


def test_sets_with_a_default() -> None:
    signature = Signature(
        (
            Param("Identity", position=0, mandatory=True),
            Param("Refresh", "switch", sets=("RefreshKey",), mandatory=True),
            Param("Enabled", "bool", sets=("Default",)),
        ),
        default_set="Default",
    )
    assert bind_args(signature, "dep").parameter_set == "Default"
    assert bind_args(signature, "dep", "-Refresh").parameter_set == "RefreshKey"
    assert "cannot be resolved" in failure(signature, "dep", "-Refresh", "-Enabled", True).message


def test_pipeline_parameters_may_wait_for_input() -> None:
    signature = Signature((Param("Identity", position=0, mandatory=True, pipeline=True),))
    bound = bind_args(signature, expects_input=True)
    assert missing_mandatory(signature, bound) == ["Identity"]
    assert missing_mandatory(signature, bound.with_value("Identity", "megan")) == []
    assert "Identity" in failure(signature).message
