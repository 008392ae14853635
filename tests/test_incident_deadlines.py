"""The deadline engine (issue 14, R-INC-3, R-INC-5) on a frozen clock.

Days count in Japan time from the day the business knew, the day itself not
counted; deadlines fall at 23:59:59 JST; month ends and leap years are safe;
category 3 gets 60 days; an incident under APPI and GDPR has both clocks.
"""

from __future__ import annotations

import datetime as dt
import sys

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hypothesis import given
from hypothesis import strategies as st

from custdata import ReportingRoutes
from custdata.governance import classify, deadlines, reminders


sys.path.insert(0, str(Path(__file__).resolve().parent))

from incident_fixtures import CUSTODY, JST, incident


UTC = dt.timezone.utc


def _eod(y: int, m: int, d: int) -> dt.datetime:
    return dt.datetime(y, m, d, 23, 59, 59, tzinfo=JST)


def _due(known: dt.datetime, **kw: object) -> dict[str, dt.datetime | None]:
    subject = incident(detected_at=known, **kw)  # type: ignore[arg-type]
    items = deadlines(subject, classify(subject, custody=CUSTODY))
    return {i.key: i.due_at for i in items}


class TestAppiClocks:
    @pytest.mark.parametrize(
        ("known", "preliminary", "final"),
        [
            (
                dt.datetime(2026, 2, 2, 10, 0, tzinfo=JST),
                _eod(2026, 2, 5),
                _eod(2026, 3, 4),
            ),
            # 31 January + 30 days is 2 March in a common year...
            (
                dt.datetime(2026, 1, 31, 10, 0, tzinfo=JST),
                _eod(2026, 2, 3),
                _eod(2026, 3, 2),
            ),
            # ... and 1 March in a leap year.
            (
                dt.datetime(2028, 1, 31, 10, 0, tzinfo=JST),
                _eod(2028, 2, 3),
                _eod(2028, 3, 1),
            ),
            # 16:00 UTC on 31 January is already 1 February in Japan.
            (
                dt.datetime(2026, 1, 31, 16, 0, tzinfo=UTC),
                _eod(2026, 2, 4),
                _eod(2026, 3, 3),
            ),
            # 14:59 UTC is still 31 January in Japan.
            (
                dt.datetime(2026, 1, 31, 14, 59, tzinfo=UTC),
                _eod(2026, 2, 3),
                _eod(2026, 3, 2),
            ),
            # Across the year end.
            (
                dt.datetime(2026, 12, 31, 23, 0, tzinfo=JST),
                _eod(2027, 1, 3),
                _eod(2027, 1, 30),
            ),
            # 28 February in a common year.
            (
                dt.datetime(2027, 2, 28, 9, 0, tzinfo=JST),
                _eod(2027, 3, 3),
                _eod(2027, 3, 30),
            ),
        ],
        ids=[
            "plain",
            "31 Jan",
            "31 Jan leap year",
            "UTC evening is JST next day",
            "UTC just before JST midnight",
            "year end",
            "28 Feb",
        ],
    )
    def test_preliminary_and_final(
        self, known: dt.datetime, preliminary: dt.datetime, final: dt.datetime
    ) -> None:
        """速報 in 3 days, 確報 in 30, counted in JST calendar days."""
        due = _due(known, subjects=1001)
        assert preliminary == due["ppc_preliminary"]
        assert final == due["ppc_final"]
        assert due["appi_subject_notice"] is None

    def test_category_3_gets_60_days(self) -> None:
        """A malicious act moves the 確報 to 60 days (31 Jan → 1 April)."""
        known = dt.datetime(2026, 1, 31, 10, 0, tzinfo=JST)
        due = _due(known, malicious=True, kind="damage")
        assert _eod(2026, 4, 1) == due["ppc_final"]
        assert _eod(2026, 2, 3) == due["ppc_preliminary"]

    def test_preliminary_alert_at_five_days(self) -> None:
        """The 速報 carries a hard alert at 5 days."""
        subject = incident(subjects=1001)
        (item,) = [
            i
            for i in deadlines(subject, classify(subject))
            if i.key == "ppc_preliminary"
        ]
        assert _eod(2026, 2, 7) == item.alert_at
        assert "appi-2024-04" == item.basis

    def test_not_reportable_has_no_appi_clock(self) -> None:
        """1,000 e-mails: no APPI due items."""
        assert {} == _due(dt.datetime(2026, 2, 2, 10, 0, tzinfo=JST), subjects=1000)

    def test_exemption_candidate_keeps_its_clocks(self) -> None:
        """Until a person confirms the exemption, the clocks run."""
        due = _due(
            dt.datetime(2026, 2, 2, 10, 0, tzinfo=JST), subjects=1001, encrypted=True
        )
        assert {"ppc_preliminary", "ppc_final", "appi_subject_notice"} == set(due)


class TestBothRegimes:
    def test_appi_and_gdpr_clocks(self) -> None:
        """An incident in both regimes yields the PPC and the 72-hour clocks."""
        known = dt.datetime(2026, 1, 31, 16, 30, tzinfo=UTC)
        due = _due(known, categories=("payment.card",), jurisdictions={"appi", "gdpr"})
        assert known + dt.timedelta(hours=72) == due["gdpr_authority"]
        assert _eod(2026, 2, 4) == due["ppc_preliminary"]
        assert _eod(2026, 3, 3) == due["ppc_final"]
        # Card numbers are a high risk: the subjects are told promptly too.
        assert due["gdpr_subject_notice"] is None
        assert due["appi_subject_notice"] is None

    def test_72_hours_across_the_month_end(self) -> None:
        """72 hours from 23:00 UTC on 28 February 2026 is 23:00 UTC on 3 March."""
        known = dt.datetime(2026, 2, 28, 23, 0, tzinfo=UTC)
        due = _due(known, jurisdictions={"gdpr"})
        assert dt.datetime(2026, 3, 3, 23, 0, tzinfo=UTC) == due["gdpr_authority"]

    def test_contractor_sla(self) -> None:
        """As a contractor, the principal is due within the policy's SLA hours."""
        subject = incident(principal="principal-co")
        routes = ReportingRoutes(principal_sla_hours=24)
        items = {i.key: i for i in deadlines(subject, classify(subject), routes=routes)}
        assert (
            subject.detected_at + dt.timedelta(hours=24)
            == items["principal_notice"].due_at
        )
        assert "contract" == items["principal_notice"].regime

    def test_items_are_ordered(self) -> None:
        """ "Promptly" items first, then by deadline."""
        subject = incident(
            ("payment.card",), malicious=True, jurisdictions={"appi", "gdpr"}
        )
        keys = [i.key for i in deadlines(subject, classify(subject))]
        assert [
            "appi_subject_notice",
            "gdpr_subject_notice",
            "gdpr_authority",
            "ppc_preliminary",
            "ppc_final",
        ] == keys


class TestReminders:
    def test_reminders_at_configured_offsets(self) -> None:
        """A simulated clock produces each reminder once its offset is reached."""
        subject = incident(subjects=1001, jurisdictions={"appi", "gdpr"})
        items = deadlines(subject, classify(subject))
        offsets = (dt.timedelta(hours=24), dt.timedelta(hours=4))
        gdpr_due = subject.detected_at + dt.timedelta(hours=72)

        def at(
            now: dt.datetime, done: tuple[str, ...] = ()
        ) -> list[tuple[str, dt.timedelta]]:
            return [
                (r.item, r.before)
                for r in reminders(items, offsets=offsets, now=now, done=done)
                if r.item == "gdpr_authority"
            ]

        assert [] == at(gdpr_due - dt.timedelta(hours=25))
        assert [("gdpr_authority", dt.timedelta(hours=24))] == at(
            gdpr_due - dt.timedelta(hours=24)
        )
        assert [
            ("gdpr_authority", dt.timedelta(hours=24)),
            ("gdpr_authority", dt.timedelta(hours=4)),
        ] == at(gdpr_due - dt.timedelta(hours=3))
        assert [] == at(gdpr_due - dt.timedelta(hours=3), done=("gdpr_authority",))
        # The 速報's first reminder comes 24 hours before its deadline.
        eve = _eod(2026, 2, 5) - dt.timedelta(hours=24)
        early = reminders(items, offsets=offsets, now=eve - dt.timedelta(seconds=1))
        late = reminders(items, offsets=offsets, now=eve)
        assert "ppc_preliminary" not in {r.item for r in early}
        assert ("ppc_preliminary", eve) in {(r.item, r.remind_at) for r in late}

    def test_naive_now_is_refused(self) -> None:
        """A naive clock is a ValueError."""
        with pytest.raises(ValueError, match="aware"):
            reminders((), offsets=(), now=dt.datetime(2026, 1, 1))


class TestClockProperties:
    @given(
        known=st.datetimes(
            min_value=dt.datetime(2024, 4, 1),
            max_value=dt.datetime(2040, 12, 31),
            timezones=st.sampled_from(
                [UTC, JST, ZoneInfo("Europe/Berlin"), ZoneInfo("America/Los_Angeles")]
            ),
        ),
        malicious=st.booleans(),
    )
    def test_deadlines_for_any_moment(
        self, known: dt.datetime, malicious: bool
    ) -> None:
        """For any moment of knowing, in any zone: JST day + N days at 23:59:59, and 72 hours."""
        subject = incident(
            subjects=1001,
            detected_at=known,
            malicious=malicious,
            jurisdictions={"appi", "gdpr"},
        )
        due = {i.key: i.due_at for i in deadlines(subject, classify(subject))}
        day = known.astimezone(JST).date()
        days = 60 if malicious else 30
        for key, n in (("ppc_preliminary", 3), ("ppc_final", days)):
            at = due[key]
            assert at is not None
            local = at.astimezone(JST)
            assert day + dt.timedelta(days=n) == local.date()
            assert dt.time(23, 59, 59) == local.time()
        assert known + dt.timedelta(hours=72) == due["gdpr_authority"]
