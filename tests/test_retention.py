"""Retention rules and expiry (R-RET-1 semantics)."""

from __future__ import annotations

import datetime as dt

import pytest

from custdata import (
    Anchor,
    ExpiryAction,
    FieldPolicy,
    LegalHold,
    Period,
    Policy,
    RetentionRule,
    resolve_retention,
)


T0 = dt.datetime(2020, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
BILLING = RetentionRule(
    id="billing", period="P7Y", anchor="last_transaction", action="crypto_shred"
)
SUPPORT = RetentionRule(
    id="support", period="P1Y", anchor="last_transaction", action="delete"
)


def years(n: int, *, days: int = 0) -> dt.datetime:
    return T0.replace(year=T0.year + n) + dt.timedelta(days=days)


class TestPeriod:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("P7Y", Period(years=7)),
            ("P1Y6M", Period(years=1, months=6)),
            ("P2W", Period(days=14)),
            ("P30D", Period(days=30)),
            ("PT12H", Period(seconds=43200)),
            ("P1DT1M", Period(days=1, seconds=60)),
        ],
    )
    def test_parse(self, text: str, expected: Period) -> None:
        """ISO-8601 durations parse into calendar periods."""
        assert expected == Period.parse(text)

    @pytest.mark.parametrize(
        "text", ["", "P", "7Y", "P1.5Y", "PT", "P-1Y", "1 year", "P1Y2"]
    )
    def test_parse_rejects(self, text: str) -> None:
        """Anything else is a ValueError naming the expected form."""
        with pytest.raises(ValueError, match="ISO-8601"):
            Period.parse(text)

    def test_month_end_clamps(self) -> None:
        """P1M after 31 January is the last day of February."""
        assert dt.datetime(2024, 2, 29) == Period(months=1).after(
            dt.datetime(2024, 1, 31)
        )

    def test_leap_day_years(self) -> None:
        """P1Y after 29 February is 28 February."""
        assert dt.datetime(2025, 2, 28) == Period(years=1).after(
            dt.datetime(2024, 2, 29)
        )


class TestResolve:
    def test_billing_and_support(self) -> None:
        """{billing 7y, support 1y}: alive at 2 years, expired at 7 years and a day."""
        anchors = {"last_transaction": T0}
        at_two = resolve_retention([BILLING, SUPPORT], anchors, now=years(2))
        at_seven = resolve_retention([BILLING, SUPPORT], anchors, now=years(7, days=1))
        assert (False, years(7), "billing") == (
            at_two.expired,
            at_two.expires_at,
            at_two.governing_rule,
        )
        assert at_seven.expired
        assert at_seven.disposable
        assert ExpiryAction.CRYPTO_SHRED == at_seven.action

    def test_statutory_minimum_extends(self) -> None:
        """A statutory minimum keeps a value beyond its purpose's period."""
        rule = RetentionRule(
            id="tax",
            period="P1Y",
            anchor="acquired",
            action="delete",
            statutory_minimum="P7Y",
        )
        status = resolve_retention([rule], {"acquired": T0}, now=years(3))
        assert (False, years(7)) == (status.expired, status.expires_at)

    def test_legal_hold_blocks_disposal(self) -> None:
        """An active hold keeps an expired value; a released one does not."""
        hold = LegalHold(id="case-1", reason="litigation", placed_at=years(1))
        held = resolve_retention(
            [SUPPORT], {"last_transaction": T0}, now=years(3), holds=[hold]
        )
        released = resolve_retention(
            [SUPPORT],
            {"last_transaction": T0},
            now=years(3),
            holds=[
                LegalHold(
                    id="case-1",
                    reason="litigation",
                    placed_at=years(1),
                    released_at=years(2),
                )
            ],
        )
        assert (True, True, False) == (held.expired, held.held, held.disposable)
        assert released.disposable

    def test_anchor_not_happened(self) -> None:
        """A purpose whose anchor has not happened keeps the value indefinitely."""
        contract = RetentionRule(
            id="c", period="P1Y", anchor="contract_end", action="delete"
        )
        status = resolve_retention(
            [SUPPORT, contract], {"last_transaction": T0}, now=years(10)
        )
        assert (None, False) == (status.expires_at, status.expired)

    def test_custom_anchor(self) -> None:
        """A custom anchor is looked up by its own name."""
        rule = RetentionRule(
            id="w",
            period="P6M",
            anchor=Anchor.CUSTOM,
            custom_anchor="warranty_end",
            action="delete",
        )
        status = resolve_retention(
            [rule], {"warranty_end": T0}, now=T0 + dt.timedelta(days=200)
        )
        assert status.expired

    def test_no_rules_fail_closed(self) -> None:
        """A value no purpose justifies is expired at once."""
        assert resolve_retention([], {}, now=T0).expired


class TestPolicyRetention:
    def test_field_under_example_policy(self, sample_policy: Policy) -> None:
        """An e-mail kept for billing (7y) and support (3y) expires after 7 years."""
        email = FieldPolicy(category="contact.email", purposes=["billing", "support"])
        anchors = {"last_transaction": T0}
        assert years(7) == sample_policy.expires_at(email, anchors, now=years(2))
        assert not sample_policy.retention_status(email, anchors, now=years(2)).expired
        assert sample_policy.retention_status(
            email, anchors, now=years(7, days=1)
        ).expired

    def test_child_purpose_inherits_rule(self, sample_policy: Policy) -> None:
        """support.identity_check has no rule of its own and inherits support's."""
        birth = FieldPolicy(
            category="demographic.birth_date", purposes=["support.identity_check"]
        )
        assert ("support",) == tuple(
            r.id for r in sample_policy.retention_rules_for(birth)
        )

    def test_field_override(self, sample_policy: Policy) -> None:
        """A field's own retention rule overrides its purposes'."""
        note = FieldPolicy(
            category="inquiry.contents", purposes=["support"], retention="marketing"
        )
        assert ("marketing",) == tuple(
            r.id for r in sample_policy.retention_rules_for(note)
        )

    def test_held_value_does_not_expire(self, sample_policy: Policy) -> None:
        """expires_at is None while a legal hold applies to an expired value."""
        email = FieldPolicy(category="contact.email", purposes=["support"])
        hold = LegalHold(id="case-7", reason="dispute", placed_at=T0)
        assert (
            sample_policy.expires_at(
                email, {"last_transaction": T0}, now=years(5), holds=[hold]
            )
            is None
        )
