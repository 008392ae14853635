"""Retention rules and the expiry of stored values (R-RET-1).

A value is kept for the purposes that justify it. It expires only when the
retention period of **every** one of those purposes has run out and no
statutory minimum or legal hold still applies (the Hippocratic-database rule).
Everything here is a pure function of its arguments; the clock comes in as
``now=``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
import re

from collections.abc import Collection, Mapping

import attrs

from ._errors import ConfigurationError


__all__ = [
    "Anchor",
    "ExpiryAction",
    "LegalHold",
    "Period",
    "RetentionRule",
    "RetentionStatus",
    "resolve_retention",
]

_PERIOD = re.compile(
    r"^P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?"
    r"(?:(?P<days>\d+)D)?(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?"
    r"(?:(?P<seconds>\d+)S)?)?$"
)


#: The longest period a retention rule may state, in years (``P1000Y``).
MAX_PERIOD_YEARS = 1000


def _bounded(instance: Period, _attribute: object, _value: int) -> None:
    # A generous upper estimate of the length in days: no period past the
    # bound, and none that moves a date of this millennium past year 9999.
    days = (
        instance.years * 366
        + instance.months * 31
        + instance.days
        + instance.seconds // 86_400
    )
    if min(instance.years, instance.months, instance.days, instance.seconds) < 0:
        raise ConfigurationError(f"a period cannot be negative: {instance}")
    if days > MAX_PERIOD_YEARS * 366:
        raise ConfigurationError(
            f"the period {instance} is longer than {MAX_PERIOD_YEARS} years"
        )


@attrs.frozen(kw_only=True, order=False)
class Period:
    """A calendar period parsed from an ISO-8601 duration (``P7Y``, ``P1Y6M``, ``P30D``).

    Years and months are calendar units: adding ``P1M`` to 31 January gives the
    last day of February. Fractions are not accepted. A period is at most
    :data:`MAX_PERIOD_YEARS` (1,000) years long, so every rule's expiry is a
    date the calendar holds.

    Raises:
        ConfigurationError: On a negative part, or a period longer than
            1,000 years.
    """

    years: int = 0
    months: int = 0
    days: int = 0
    seconds: int = attrs.field(default=0, validator=_bounded)

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse an ISO-8601 duration.

        Raises:
            ValueError: If *text* is not a whole-number ISO-8601 duration.
            ConfigurationError: If it is longer than 1,000 years (a
                ``ValueError`` too).
        """
        match = _PERIOD.match(str(text))
        if match is None:
            msg = f"not an ISO-8601 duration like 'P7Y' or 'P30D': {text!r}"
            raise ValueError(msg)
        g = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
        return cls(
            years=g["years"],
            months=g["months"],
            days=g["weeks"] * 7 + g["days"],
            seconds=g["hours"] * 3600 + g["minutes"] * 60 + g["seconds"],
        )

    def after(self, start: dt.datetime) -> dt.datetime:
        """Return the instant this period after *start*.

        An instant past the calendar's end (year 9999) is its last instant:
        the value never expires in any calendar Python can hold.
        """
        try:
            return self._after(start)
        except (ValueError, OverflowError):
            return dt.datetime.max.replace(tzinfo=start.tzinfo)

    def _after(self, start: dt.datetime) -> dt.datetime:
        month_index = start.month - 1 + self.months + 12 * self.years
        year = start.year + month_index // 12
        month = month_index % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        moved = start.replace(year=year, month=month, day=day)
        return moved + dt.timedelta(days=self.days, seconds=self.seconds)

    def __str__(self) -> str:
        out = "P"
        out += f"{self.years}Y" if self.years else ""
        out += f"{self.months}M" if self.months else ""
        out += f"{self.days}D" if self.days else ""
        if self.seconds:
            out += f"T{self.seconds}S"
        return out if out != "P" else "P0D"


class Anchor(str, enum.Enum):
    """The event a retention period counts from."""

    ACQUIRED = "acquired"
    LAST_TRANSACTION = "last_transaction"
    CONTRACT_END = "contract_end"
    CUSTOM = "custom"


class ExpiryAction(str, enum.Enum):
    """What happens to a value when it expires."""

    DELETE = "delete"
    ANONYMISE = "anonymise"
    CRYPTO_SHRED = "crypto_shred"
    #: Replace the value by a keyed pseudonym, stable per subject and field,
    #: that cannot be traced back without the keyring (text fields).
    PSEUDONYMISE = "pseudonymise"


def _period(value: object) -> Period:
    return value if isinstance(value, Period) else Period.parse(str(value))


def _opt_period(value: object) -> Period | None:
    return None if value is None else _period(value)


@attrs.frozen(kw_only=True)
class RetentionRule:
    """How long data kept for a purpose may be kept, and what happens then.

    Attributes:
        id: The rule's identifier in the policy.
        period: How long after the anchor event the data is needed.
        anchor: The event the period counts from.
        custom_anchor: The name of the anchor when *anchor* is ``CUSTOM``.
        action: What the sweep does at expiry.
        legal_basis: Why this period (a statute, a contract clause), for documents.
        statutory_minimum: A period the law requires the data to be kept, counted
            from the same anchor; expiry never comes before it.
        next_review: When the rule must next be reviewed (R-GOV-2).
    """

    id: str
    period: Period = attrs.field(converter=_period)
    anchor: Anchor = attrs.field(converter=Anchor)
    custom_anchor: str | None = None
    action: ExpiryAction = attrs.field(converter=ExpiryAction)
    legal_basis: str = ""
    statutory_minimum: Period | None = attrs.field(default=None, converter=_opt_period)
    next_review: dt.date | None = None

    @property
    def anchor_name(self) -> str:
        """The anchor's name as looked up in the anchors mapping."""
        return self.custom_anchor or self.anchor.value

    def expires_at(self, anchors: Mapping[str, dt.datetime]) -> dt.datetime | None:
        """Return when data under this rule alone expires.

        Returns ``None`` when the anchor event has not happened yet (a contract
        that has not ended), which means "not expiring".
        """
        start = anchors.get(self.anchor_name)
        if start is None:
            return None
        end = self.period.after(start)
        if self.statutory_minimum is not None:
            end = max(end, self.statutory_minimum.after(start))
        return end


@attrs.frozen(kw_only=True)
class LegalHold:
    """A hold that blocks disposal, by subject or by case (R-RET-3).

    Attributes:
        id: The hold's identifier (a case number).
        reason: Why data is held.
        placed_at: When the hold began.
        released_at: When it was released, or ``None`` while in force.
    """

    id: str
    reason: str
    placed_at: dt.datetime
    released_at: dt.datetime | None = None

    def active(self, *, now: dt.datetime) -> bool:
        """Return whether the hold is in force at *now*."""
        return self.placed_at <= now and (
            self.released_at is None or now < self.released_at
        )


@attrs.frozen(kw_only=True)
class RetentionStatus:
    """The retention state of one value at one instant.

    Attributes:
        expires_at: When the value expires (the latest of its purposes' expiries),
            or ``None`` if some purpose keeps it indefinitely for now.
        expired: Whether it has expired at the instant asked about.
        held: Whether a legal hold keeps it although it has expired.
        action: What to do at expiry: the strongest action among the rules
            (crypto-shred over delete over anonymise over pseudonymise).
        governing_rule: The id of the rule that expires last.
    """

    expires_at: dt.datetime | None
    expired: bool
    held: bool
    action: ExpiryAction | None
    governing_rule: str | None

    @property
    def disposable(self) -> bool:
        """Whether the sweep may dispose of the value now."""
        return self.expired and not self.held


_STRENGTH = {
    ExpiryAction.PSEUDONYMISE: 0,
    ExpiryAction.ANONYMISE: 1,
    ExpiryAction.DELETE: 2,
    ExpiryAction.CRYPTO_SHRED: 3,
}


def resolve_retention(
    rules: Collection[RetentionRule],
    anchors: Mapping[str, dt.datetime],
    *,
    now: dt.datetime,
    holds: Collection[LegalHold] = (),
) -> RetentionStatus:
    """Decide whether a value kept under *rules* has expired at *now*.

    Args:
        rules: The retention rules of every purpose that justifies the value.
        anchors: The anchor events that have happened, by anchor name
            (``acquired``, ``last_transaction``, ``contract_end`` or a custom name).
        now: The instant to decide for.
        holds: Legal holds on the value's subject or case.

    Returns:
        The value's status. With no rules at all the value is not justified by
        any purpose, so it is expired at once (``expires_at`` is ``None``,
        ``expired`` is true): fail closed.
    """
    holds_active = any(h.active(now=now) for h in holds)
    if not rules:
        return RetentionStatus(
            expires_at=None,
            expired=True,
            held=holds_active,
            action=ExpiryAction.DELETE,
            governing_rule=None,
        )
    latest: dt.datetime | None = None
    governing: RetentionRule | None = None
    for rule in rules:
        end = rule.expires_at(anchors)
        if end is None:
            # One purpose still justifies the value indefinitely.
            latest, governing = None, rule
            break
        if latest is None or end > latest:
            latest, governing = end, rule
    action = max((r.action for r in rules), key=_STRENGTH.__getitem__)
    expired = latest is not None and now >= latest
    return RetentionStatus(
        expires_at=latest,
        expired=expired,
        held=expired and holds_active,
        action=action,
        governing_rule=governing.id if governing else None,
    )
