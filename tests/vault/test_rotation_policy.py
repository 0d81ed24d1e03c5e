"""Key rotation policies (``customerkey.vault.rotation``): durations, the Key Vault JSON shape,
the validation rules at their exact boundaries, and when an action is due.

Pure functions, no vault: every rule is checked on both sides of its boundary, one second
apart, and every refusal by its whole message, since the message is what the API returns.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from customerkey.errors import BadParameter
from customerkey.vault.models import LifetimeAction, RotationPolicy
from customerkey.vault.rotation import (
    MAX_DURATION,
    MIN_BEFORE_EXPIRY,
    MIN_EXPIRY,
    MIN_ROTATE_AFTER_CREATE,
    due_actions,
    expiry_for_new_version,
    parse_duration,
    policy_from_json,
    policy_to_json,
    validate_policy,
)

CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def _refused(message: str) -> AbstractContextManager[pytest.ExceptionInfo[BadParameter]]:
    """A ``BadParameter`` whose message is exactly ``message``."""
    return pytest.raises(BadParameter, match=f"^{re.escape(message)}$")


def _rotate(
    after: str | None = None, before: str | None = None, kind: str = "Rotate"
) -> LifetimeAction:
    return LifetimeAction(action=kind, time_after_create=after, time_before_expiry=before)


def _policy(*actions: LifetimeAction, expiry: str | None = None) -> RotationPolicy:
    return RotationPolicy(lifetime_actions=actions, expiry_time=expiry)


# --- durations ---------------------------------------------------------------------------


def test_the_documented_limits() -> None:
    assert timedelta(days=28) == MIN_EXPIRY
    assert timedelta(days=7) == MIN_ROTATE_AFTER_CREATE == MIN_BEFORE_EXPIRY
    assert timedelta(days=36500) == MAX_DURATION


@pytest.mark.parametrize(
    "text,expected",
    [
        ("P90D", timedelta(days=90)),
        ("P2Y", timedelta(days=730)),  # a year counts 365 days
        ("P1M", timedelta(days=30)),  # a month counts 30 days
        ("P3W", timedelta(days=21)),
        ("PT12H", timedelta(hours=12)),
        ("PT1M", timedelta(minutes=1)),  # M after T is minutes, not months
        ("PT45S", timedelta(seconds=45)),
        ("P1Y2M3W4DT5H6M7S", timedelta(days=365 + 60 + 21 + 4, seconds=5 * 3600 + 6 * 60 + 7)),
        ("P0D", timedelta(0)),
        (" p7d ", timedelta(days=7)),  # surrounding blanks and lower case are accepted
        ("pt1h30m", timedelta(hours=1, minutes=30)),
        ("P100Y", timedelta(days=36500)),  # the longest allowed, exactly
        ("P36500D", timedelta(days=36500)),
        ("P" + "0" * 37 + "1D", timedelta(days=1)),  # 40 characters: still short enough
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "P", "PT", "P1DT", "90D", "P1.5D", "P-1D", "P1H", "PT1D", "P1D2Y", "xP1D", "P1Dx"]
)
def test_parse_duration_rejects_what_is_not_iso_8601(text: str) -> None:
    with _refused(f"'{text}' is not an ISO 8601 duration such as P90D or P2Y."):
        parse_duration(text)


def test_parse_duration_rejects_non_strings_and_cuts_long_input_short() -> None:
    with _refused("'90' is not an ISO 8601 duration such as P90D or P2Y."):
        parse_duration(cast(str, 90))
    with _refused("'None' is not an ISO 8601 duration such as P90D or P2Y."):
        parse_duration(cast(str, None))
    with _refused(f"'{'x' * 40}' is not an ISO 8601 duration such as P90D or P2Y."):
        parse_duration("x" * 100)


def test_parse_duration_caps_at_p100y() -> None:
    with _refused("Rotation policy durations must be at most P100Y, got 'P36500DT1S'."):
        parse_duration("P36500DT1S")
    with _refused("Rotation policy durations must be at most P100Y, got 'P101Y'."):
        parse_duration("P101Y")
    # Long digit strings are refused before they are turned into numbers.
    long = "P" + "0" * 38 + "1D"
    assert len(long) == 41
    with _refused(f"Rotation policy durations must be at most P100Y, got '{long[:40]}'."):
        parse_duration(long)
    with _refused(f"Rotation policy durations must be at most P100Y, got '{'P' + '9' * 39}'."):
        parse_duration("P" + "9" * 60 + "D")


# --- the JSON shape ------------------------------------------------------------------------


def test_policy_from_json_reads_the_key_vault_shape() -> None:
    body = {
        "lifetimeActions": [
            {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "rotate"}},
            {"trigger": {"timeBeforeExpiry": "P10D"}, "action": {"type": "NOTIFY"}},
        ],
        "attributes": {"expiryTime": "P90D"},
    }
    assert policy_from_json(body) == RotationPolicy(
        lifetime_actions=(
            LifetimeAction("Rotate", time_after_create="P30D"),
            LifetimeAction("Notify", time_before_expiry="P10D"),
        ),
        expiry_time="P90D",
    )


def test_policy_from_json_empty_and_null_parts_mean_no_policy() -> None:
    empty = RotationPolicy(lifetime_actions=(), expiry_time=None)
    assert policy_from_json({}) == empty
    assert policy_from_json({"lifetimeActions": None, "attributes": None}) == empty
    assert policy_from_json({"lifetimeActions": [], "attributes": {}}) == empty
    assert policy_from_json({"attributes": {"expiryTime": "P28D"}}) == RotationPolicy(
        expiry_time="P28D"
    )


def test_policy_from_json_a_missing_trigger_is_an_empty_one() -> None:
    with _refused(
        "Each lifetime action needs exactly one trigger: timeAfterCreate or timeBeforeExpiry."
    ):
        policy_from_json({"lifetimeActions": [{"action": {"type": "Rotate"}}]})


@pytest.mark.parametrize(
    "body,message",
    [
        pytest.param([], "The rotation policy must be a JSON object.", id="body-list"),
        pytest.param(
            {"attributes": ["P90D"]}, "'attributes' must be an object.", id="attributes-list"
        ),
        pytest.param(
            {"attributes": "P90D"}, "'attributes' must be an object.", id="attributes-string"
        ),
        pytest.param(
            {"attributes": {"expiryTime": 90}},
            "'attributes.expiryTime' must be an ISO 8601 duration string.",
            id="expiry-number",
        ),
        pytest.param(
            {"lifetimeActions": {"trigger": {}}},
            "'lifetimeActions' must be a list.",
            id="actions-object",
        ),
        pytest.param(
            {"lifetimeActions": ["Rotate"]},
            "Each lifetime action must be an object.",
            id="action-string",
        ),
        pytest.param(
            {"lifetimeActions": [{"trigger": "P30D", "action": {"type": "Rotate"}}]},
            "A lifetime action needs a 'trigger' and an 'action' object.",
            id="trigger-string",
        ),
        pytest.param(
            {"lifetimeActions": [{"trigger": ["P30D"], "action": {"type": "Rotate"}}]},
            "A lifetime action needs a 'trigger' and an 'action' object.",
            id="trigger-list",
        ),
        pytest.param(
            {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": "Rotate"}]},
            "A lifetime action needs a 'trigger' and an 'action' object.",
            id="action-not-object",
        ),
        pytest.param(
            {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}}]},
            "A lifetime action's type must be 'Rotate' or 'Notify'.",
            id="type-missing",
        ),
        pytest.param(
            {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": 1}}]},
            "A lifetime action's type must be 'Rotate' or 'Notify'.",
            id="type-number",
        ),
        pytest.param(
            {
                "lifetimeActions": [
                    {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Delete"}}
                ]
            },
            "A lifetime action's type must be 'Rotate' or 'Notify'.",
            id="type-unknown",
        ),
        pytest.param(
            {
                "lifetimeActions": [
                    {"trigger": {"timeAfterCreate": 30}, "action": {"type": "Rotate"}}
                ]
            },
            "Trigger times must be ISO 8601 duration strings.",
            id="after-number",
        ),
        pytest.param(
            {
                "lifetimeActions": [
                    {"trigger": {"timeBeforeExpiry": 7}, "action": {"type": "Notify"}}
                ],
                "attributes": {"expiryTime": "P90D"},
            },
            "Trigger times must be ISO 8601 duration strings.",
            id="before-number",
        ),
        pytest.param(
            {"attributes": {"expiryTime": "P27D"}},
            "The rotation policy's expiryTime must be at least 28 days (P28D).",
            id="validated",
        ),
    ],
)
def test_policy_from_json_refuses_malformed_bodies(body: Any, message: str) -> None:
    with _refused(message):
        policy_from_json(body)


def test_policy_to_json_gives_the_key_vault_shape() -> None:
    policy = _policy(_rotate(after="P30D"), _rotate(before="P10D", kind="Notify"), expiry="P90D")
    assert policy_to_json(policy) == {
        "lifetimeActions": [
            {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}},
            {"trigger": {"timeBeforeExpiry": "P10D"}, "action": {"type": "Notify"}},
        ],
        "attributes": {"expiryTime": "P90D"},
    }
    assert policy_to_json(RotationPolicy()) == {
        "lifetimeActions": [],
        "attributes": {"expiryTime": None},
    }
    assert policy_from_json(policy_to_json(policy)) == policy


# --- validation ----------------------------------------------------------------------------


def test_expiry_is_at_least_28_days() -> None:
    validate_policy(_policy(expiry="P28D"))
    validate_policy(_policy(expiry="P4W"))
    with _refused("The rotation policy's expiryTime must be at least 28 days (P28D)."):
        validate_policy(_policy(expiry="P27DT23H59M59S"))
    validate_policy(_policy(expiry=None))
    validate_policy(_policy(expiry=""))  # an empty expiry is no expiry


def test_at_most_one_action_of_a_type() -> None:
    validate_policy(
        _policy(_rotate(after="P30D"), _rotate(before="P7D", kind="Notify"), expiry="P90D")
    )
    with _refused("A rotation policy may hold only one 'Rotate' action."):
        validate_policy(_policy(_rotate(after="P30D"), _rotate(after="P60D")))
    with _refused("A rotation policy may hold only one 'Notify' action."):
        validate_policy(
            _policy(
                _rotate(before="P7D", kind="Notify"),
                _rotate(before="P8D", kind="Notify"),
                expiry="P90D",
            )
        )


@pytest.mark.parametrize(
    "action", [_rotate(), _rotate(after="P30D", before="P10D"), _rotate(kind="Notify")]
)
def test_each_action_has_exactly_one_trigger(action: LifetimeAction) -> None:
    with _refused(
        "Each lifetime action needs exactly one trigger: timeAfterCreate or timeBeforeExpiry."
    ):
        validate_policy(_policy(action, expiry="P90D"))


def test_notify_uses_time_before_expiry_only() -> None:
    with _refused("A 'Notify' action can only use timeBeforeExpiry."):
        validate_policy(_policy(_rotate(after="P30D", kind="Notify"), expiry="P90D"))
    validate_policy(_policy(_rotate(before="P30D", kind="Notify"), expiry="P90D"))


def test_rotate_after_create_is_at_least_7_days() -> None:
    validate_policy(_policy(_rotate(after="P7D")))
    validate_policy(_policy(_rotate(after="P1W")))
    with _refused("timeAfterCreate must be at least 7 days (P7D)."):
        validate_policy(_policy(_rotate(after="P6DT23H59M59S")))
    with _refused("'soon' is not an ISO 8601 duration such as P90D or P2Y."):
        validate_policy(_policy(_rotate(after="soon")))


def test_rotate_after_create_leaves_7_days_before_expiry() -> None:
    # expiry P28D: rotating at day 21 leaves exactly 7 days; one second later leaves fewer.
    validate_policy(_policy(_rotate(after="P21D"), expiry="P28D"))
    with _refused("timeAfterCreate must leave at least 7 days before the key expires."):
        validate_policy(_policy(_rotate(after="P21DT1S"), expiry="P28D"))
    with _refused("timeAfterCreate must leave at least 7 days before the key expires."):
        validate_policy(_policy(_rotate(after="P1Y"), expiry="P90D"))
    validate_policy(_policy(_rotate(after="P1Y")))  # no expiry: no upper bound


def test_time_before_expiry_needs_an_expiry() -> None:
    with _refused("timeBeforeExpiry needs attributes.expiryTime to be set."):
        validate_policy(_policy(_rotate(before="P7D")))
    with _refused("timeBeforeExpiry needs attributes.expiryTime to be set."):
        validate_policy(_policy(_rotate(before="P7D", kind="Notify"), expiry=""))


def test_time_before_expiry_is_at_least_7_days() -> None:
    validate_policy(_policy(_rotate(before="P7D"), expiry="P90D"))
    validate_policy(_policy(_rotate(before="PT168H", kind="Notify"), expiry="P90D"))
    with _refused("timeBeforeExpiry must be at least 7 days (P7D)."):
        validate_policy(_policy(_rotate(before="P6DT23H59M59S"), expiry="P90D"))
    with _refused("timeBeforeExpiry must be at least 7 days (P7D)."):
        validate_policy(_policy(_rotate(before="P6D", kind="Notify"), expiry="P90D"))
    with _refused("'P7' is not an ISO 8601 duration such as P90D or P2Y."):
        validate_policy(_policy(_rotate(before="P7"), expiry="P90D"))


def test_time_before_expiry_leaves_7_days_after_creation() -> None:
    # expiry P28D: 21 days before expiry is day 7 after creation, the earliest allowed.
    validate_policy(_policy(_rotate(before="P21D"), expiry="P28D"))
    with _refused("timeBeforeExpiry must leave at least 7 days after the key is created."):
        validate_policy(_policy(_rotate(before="P21DT1S"), expiry="P28D"))
    with _refused("timeBeforeExpiry must leave at least 7 days after the key is created."):
        validate_policy(_policy(_rotate(before="P90D", kind="Notify"), expiry="P90D"))


def test_expiry_is_checked_before_the_actions() -> None:
    with _refused("The rotation policy's expiryTime must be at least 28 days (P28D)."):
        validate_policy(_policy(_rotate(after="P1D"), expiry="P1D"))


# --- the newest version's expiry, and what is due -----------------------------------------


def test_expiry_for_new_version() -> None:
    assert expiry_for_new_version(None, CREATED) is None
    assert expiry_for_new_version(RotationPolicy(), CREATED) is None
    assert expiry_for_new_version(_policy(expiry=""), CREATED) is None
    assert expiry_for_new_version(_policy(expiry="P90D"), CREATED) == datetime(
        2026, 5, 30, 12, 0, tzinfo=UTC
    )
    assert expiry_for_new_version(_policy(expiry="P1Y"), CREATED) == CREATED + timedelta(days=365)


def test_rotate_after_create_is_due_from_its_exact_moment() -> None:
    policy = _policy(_rotate(after="P30D"))
    due_at = CREATED + timedelta(days=30)

    def due(now: datetime, expires: datetime | None = None) -> list[str]:
        return due_actions(policy, newest_created=CREATED, newest_expires=expires, now=now)

    assert due(due_at - SECOND) == []
    assert due(due_at) == ["Rotate"]
    assert due(due_at + timedelta(days=400)) == ["Rotate"]
    # An expiry does not matter to a timeAfterCreate trigger.
    assert due(due_at, expires=CREATED) == ["Rotate"]


@pytest.mark.parametrize("kind", ["Rotate", "Notify"])
def test_time_before_expiry_is_due_from_its_exact_moment(kind: str) -> None:
    policy = _policy(_rotate(before="P10D", kind=kind), expiry="P90D")
    expires = CREATED + timedelta(days=90)
    due_at = expires - timedelta(days=10)

    def due(now: datetime, newest_expires: datetime | None = expires) -> list[str]:
        return due_actions(policy, newest_created=CREATED, newest_expires=newest_expires, now=now)

    assert due(due_at - SECOND) == []
    assert due(due_at) == [kind]
    assert due(expires + timedelta(days=1)) == [kind]
    # The newest version has no expiry (made before the policy had one): nothing is due.
    assert due(due_at + timedelta(days=365), newest_expires=None) == []


def test_due_actions_come_in_policy_order() -> None:
    policy = _policy(_rotate(before="P10D", kind="Notify"), _rotate(after="P30D"), expiry="P90D")
    expires = CREATED + timedelta(days=90)
    assert due_actions(policy, newest_created=CREATED, newest_expires=expires, now=expires) == [
        "Notify",
        "Rotate",
    ]
    assert due_actions(
        policy, newest_created=CREATED, newest_expires=expires, now=CREATED + timedelta(days=30)
    ) == ["Rotate"]
    assert due_actions(
        policy,
        newest_created=CREATED,
        newest_expires=CREATED + timedelta(days=35),
        now=CREATED + timedelta(days=29),
    ) == ["Notify"]
    assert (
        due_actions(RotationPolicy(), newest_created=CREATED, newest_expires=expires, now=expires)
        == []
    )
