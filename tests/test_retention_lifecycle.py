"""Purpose lifecycle (R-PUR-7) and My Number (R-DEF-4)."""

from __future__ import annotations

import datetime as dt
import json

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

import custdata

from custdata import Action, FieldPolicy, Policy
from custdata._lifecycle import compare_policies, lifecycle_window
from custdata.cli import main


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custdata.toml"
JST = dt.timezone(dt.timedelta(hours=9))


def _clock(day: dt.date) -> Callable[[], dt.datetime]:
    return lambda: dt.datetime(day.year, day.month, day.day, 12, tzinfo=JST)


def _with(policy: Policy, pid: str, **changes: Any) -> Policy:
    """*policy* with purpose *pid* changed."""
    purposes = dict(policy.purposes)
    purposes[pid] = attrs.evolve(purposes[pid], **changes)
    return attrs.evolve(policy, purposes=purposes)


class _Recorder:
    def __init__(self) -> None:
        self.decisions: list[custdata.AccessDecision] = []

    @property
    def allowed(self) -> bool:
        """Whether every decision recorded was allowed (and there was one)."""
        return bool(self.decisions) and all(d.allowed for d in self.decisions)

    def record_decision(self, decision: custdata.AccessDecision) -> None:
        self.decisions.append(decision)


def _claim(policy: Policy, day: dt.date, role: str, purpose: str) -> _Recorder:
    recorder = _Recorder()
    custodian = custdata.Custodian(policy=policy, audit=recorder, clock=_clock(day))
    with custodian.activate(), custdata.acting_as("u-1", role=role):
        with custdata.purpose(purpose):
            pass
    return recorder


class TestLifecycle:
    """A purpose or policy not yet effective, or retired, is refused."""

    def test_future_purpose_refused_until_its_day(self, sample_policy: Policy) -> None:
        """A purpose effective from 2035 is refused in 2026 and usable from 2035."""
        policy = _with(sample_policy, "billing", effective_from=dt.date(2035, 1, 1))
        with pytest.raises(
            custdata.PurposeViolationError, match="not effective until 2035-01-01"
        ):
            _claim(policy, dt.date(2026, 12, 1), "billing_clerk", "billing")
        assert _claim(policy, dt.date(2035, 1, 1), "billing_clerk", "billing").allowed

    def test_refusal_is_recorded(self, sample_policy: Policy) -> None:
        """The refusal is a recorded denial with its own reason."""
        policy = _with(sample_policy, "billing", effective_from=dt.date(2035, 1, 1))
        recorder = _Recorder()
        custodian = custdata.Custodian(
            policy=policy, audit=recorder, clock=_clock(dt.date(2026, 12, 1))
        )
        with (
            custodian.activate(),
            custdata.acting_as("u-1", role="billing_clerk"),
            pytest.raises(custdata.PurposeViolationError),
            custdata.purpose("billing"),
        ):
            pass
        (decision,) = recorder.decisions
        assert (custdata.DenyReason.PURPOSE_NOT_EFFECTIVE, Action.CLAIM) == (
            decision.reason,
            decision.action,
        )

    def test_retired_purpose_refused_from_its_day(self, sample_policy: Policy) -> None:
        """A purpose retired on a day is usable the day before, refused from it."""
        policy = _with(sample_policy, "marketing", retired_on=dt.date(2027, 4, 1))
        # Retiring the parent retires the child the marketer claims.
        assert _claim(
            policy, dt.date(2027, 3, 31), "marketer", "marketing.email"
        ).allowed
        with pytest.raises(
            custdata.PurposeViolationError, match="retired on 2027-04-01"
        ):
            _claim(policy, dt.date(2027, 4, 1), "marketer", "marketing.email")

    def test_policy_not_yet_effective(self, sample_policy: Policy) -> None:
        """A policy version whose effective date is ahead is refused for every purpose."""
        policy = attrs.evolve(
            sample_policy,
            effective_date=dt.date(2030, 1, 1),
            next_review=dt.date(2031, 1, 1),
        )
        with pytest.raises(custdata.PurposeViolationError, match="policy version"):
            _claim(policy, dt.date(2029, 12, 31), "support_agent", "support")

    def test_window_takes_the_tightest_bounds(self, sample_policy: Policy) -> None:
        """The window starts at the latest start and ends at the earliest retirement."""
        policy = _with(
            _with(sample_policy, "marketing", retired_on=dt.date(2028, 1, 1)),
            "marketing.email",
            effective_from=dt.date(2027, 1, 1),
            retired_on=dt.date(2029, 1, 1),
        )
        assert (dt.date(2027, 1, 1), dt.date(2028, 1, 1)) == lifecycle_window(
            policy, "marketing.email"
        )

    def test_retired_before_effective_is_a_configuration_error(
        self, tmp_path: Path
    ) -> None:
        """retired_on must come after effective_from: the policy does not load."""
        path = _write(
            tmp_path,
            "p.toml",
            'retention = "accounting"\ncategories',
            'retention = "accounting"\nretired_on = 2026-09-01\ncategories',
        )
        with pytest.raises(
            custdata.ConfigurationError, match=r"purposes\.billing\.retired_on"
        ):
            Policy.from_toml(path)


class TestMyNumber:
    """個人番号 is refused for every purpose not marked as a My Number Act purpose."""

    @pytest.fixture
    def policy(self, sample_policy: Policy) -> Policy:
        return _with(sample_policy, "billing", my_number_act=True)

    def test_builtin_category(self, sample_policy: Policy) -> None:
        """my_number is a built-in category, a direct identifier."""
        cat = sample_policy.taxonomy["my_number"]
        assert custdata.Identifiability.DIRECT_IDENTIFIER == cat.identifiability

    def test_declaring_for_another_purpose_fails(self, policy: Policy) -> None:
        """A My Number field tagged with a non-Act purpose fails at declaration."""
        field = FieldPolicy(category="my_number", purposes=["billing", "support"])
        with pytest.raises(custdata.ConfigurationError, match="'support'"):
            policy.validate_field(field, where="customers.my_number")
        policy.validate_field(
            FieldPolicy(category="my_number", purposes=["billing"]),
            where="customers.my_number",
        )

    def test_refused_at_run_time_outside_the_act(self, policy: Policy) -> None:
        """A read of a My Number field for a non-Act purpose is refused, even if tagged."""
        field = FieldPolicy(category="my_number", purposes=["billing", "support"])
        custodian = custdata.Custodian(policy=policy)
        with (
            custodian.activate(),
            custdata.acting_as("a-1", role="support_agent"),
            custdata.purpose("support"),
            pytest.raises(custdata.PurposeViolationError, match="My Number"),
        ):
            custodian.authorize(
                action=Action.READ,
                entity="customers",
                fields={"my_number": field},
                subjects=("s",),
                count=1,
            )
        with (
            custodian.activate(),
            custdata.acting_as("c-1", role="billing_clerk"),
            custdata.purpose("billing"),
        ):
            assert custodian.authorize(
                action=Action.READ,
                entity="customers",
                fields={"my_number": field},
                subjects=("s",),
                count=1,
            ).allowed

    def test_masking_does_not_reveal_it(self, policy: Policy) -> None:
        """on_violation="mask" does not turn the My Number refusal into a mask."""
        field = FieldPolicy(
            category="my_number", purposes=["billing", "support"], on_violation="mask"
        )
        custodian = custdata.Custodian(policy=policy)
        with (
            custodian.activate(),
            custdata.acting_as("a-1", role="support_agent"),
            custdata.purpose("support"),
            pytest.raises(custdata.PurposeViolationError),
        ):
            custodian.authorize(
                action=Action.READ, entity="c", fields={"n": field}, count=1
            )


def _write(tmp_path: Path, name: str, old: str = "", new: str = "") -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    if old:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


SUPPORT_TEXT = 'text_en = "To answer your inquiries and provide after-sales service"'


class TestComparePolicies:
    """custdata check --previous: purpose changes against the published policy."""

    def test_same_policy_no_findings(self, sample_policy: Policy) -> None:
        """A policy compared with itself has no findings."""
        assert [] == compare_policies(sample_policy, sample_policy)

    @pytest.mark.parametrize(
        ("changes", "codes"),
        [
            ({"text_en": "Something else"}, ["POL101"]),
            ({"text_en": "Something else", "version": 2}, []),
            (
                {"categories": ("name", "contact.email", "payment.card"), "version": 2},
                ["POL102"],
            ),
            (
                {"appi_basis": custdata.AppiBasis.CONSENT, "version": 2},
                ["POL103"],
            ),
        ],
        ids=["text-no-version", "text-new-version", "scope", "basis"],
    )
    def test_changes(
        self, sample_policy: Policy, changes: dict[str, Any], codes: list[str]
    ) -> None:
        """Each kind of change gives its code on the changed purpose."""
        new = _with(sample_policy, "support", **changes)
        findings = compare_policies(sample_policy, new)
        assert codes == [f.code for f in findings]
        assert all(f.key_path.startswith("purposes.support.") for f in findings)

    def test_scope_change_of_consent_purpose_needs_consent(
        self, sample_policy: Policy
    ) -> None:
        """Widening a consent-based purpose asks for consent, not notification."""
        new = _with(
            sample_policy,
            "marketing.email",
            categories=("name", "contact.email", "contact.phone"),
            version=2,
        )
        (finding,) = compare_policies(sample_policy, new)
        assert "need consent" in finding.message

    def test_removed_purpose(self, sample_policy: Policy) -> None:
        """A purpose removed instead of retired is flagged."""
        purposes = dict(sample_policy.purposes)
        del purposes["support.identity_check"]
        new = attrs.evolve(sample_policy, purposes=purposes)
        assert ["POL104"] == [f.code for f in compare_policies(sample_policy, new)]

    def test_cli_previous(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """custdata check --previous exits 1 naming the changed purpose, 0 when unchanged."""
        old = _write(tmp_path, "old.toml")
        new = _write(tmp_path, "new.toml", SUPPORT_TEXT, 'text_en = "Changed"')
        args = ["check", "--policy", str(new), "--today", "2026-12-01", "--json"]
        assert 1 == main([*args, "--previous", str(old)])
        out = json.loads(capsys.readouterr().out)
        assert [("POL101", "purposes.support.version")] == [
            (f["code"], f["key_path"]) for f in out["findings"]
        ]
        assert 0 == main(
            [
                "check",
                "--policy",
                str(old),
                "--previous",
                str(old),
                "--today",
                "2026-12-01",
            ]
        )

    def test_cli_previous_missing_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing previous policy is a usage error on one line, exit 2."""
        old = _write(tmp_path, "old.toml")
        status = main(
            ["check", "--policy", str(old), "--previous", str(tmp_path / "nope.toml")]
        )
        err = capsys.readouterr().err
        assert 2 == status
        assert 1 == len(err.strip().splitlines())
        assert "Traceback" not in err
