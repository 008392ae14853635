"""The policy's registers: handlers (strict mode), safety measures, prohibitions and review.

Strict handler mode is shown on SQLite, PostgreSQL and MariaDB: an unregistered
actor's read is refused with the documented error, recorded as a denial, and the
stored values stay intact.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid

from pathlib import Path

import attrs
import pytest

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

from custdata import (
    ConfigurationError,
    Custodian,
    DenyReason,
    Handler,
    HandlerNotRegisteredError,
    HandlerRegister,
    Outcome,
    Period,
    Policy,
)
from custdata.cli import main
from custdata.governance import register_findings, review_items, review_report


sys.path.insert(0, str(Path(__file__).parent))
from policy_variants import policy_variant
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    Models,
    Recorder,
    billing,
    engine,
    keyring,
    models,
    recorder,
    support,
)


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custdata.toml"
TODAY = dt.datetime.now(dt.timezone.utc).date()


def _strict(policy: Policy, **handlers: Handler) -> Policy:
    register = HandlerRegister(
        handlers=handlers, strict=True, training_valid_for=Period.parse("P1Y")
    )
    return attrs.evolve(
        policy, registers=attrs.evolve(policy.registers, handlers=register)
    )


def _handler(actor: str, role: str, *, trained_days_ago: int = 10) -> Handler:
    return Handler(
        actor=actor,
        roles=[role],
        effective_from=TODAY - dt.timedelta(days=30),
        trained_on=TODAY - dt.timedelta(days=trained_days_ago),
    )


class TestRegistersInThePolicy:
    def test_example_registers_load(self, sample_policy: Policy) -> None:
        """The example declares the notice, handlers, measures and prohibitions."""
        registers = sample_policy.registers
        assert {"u-101", "u-102", "u-201", "u-301"} == set(registers.handlers.handlers)
        assert Period.parse("P1Y") == registers.handlers.training_valid_for
        assert {"basic_policy", "training", "premises", "environment"} == set(
            registers.measures
        )
        assert {"special_care_marketing", "payment_marketing"} == set(
            registers.prohibitions
        )
        assert dt.date(2028, 3, 31) == sample_policy.purposes["billing"].next_review
        assert (
            dt.date(2028, 3, 31) == sample_policy.retention_rules["support"].next_review
        )

    @pytest.mark.parametrize(
        ("old", "new", "key_path"),
        [
            ('roles = ["billing_clerk"]', 'roles = ["clerk"]', "handlers.u-101.roles"),
            ('category = "human"', 'category = "moral"', "measures.training.category"),
            (
                'owner = "cs_manager"\nnext_review = 2028-03-31\n\n[measures',
                'owner = "nobody"\nnext_review = 2028-03-31\n\n[measures',
                "measures.premises.owner",
            ),
            (
                'categories = ["payment"]',
                'categories = ["payment.gold"]',
                "prohibitions.payment_marketing.categories",
            ),
            (
                'training_valid_for = "P1Y"',
                'training_valid_for = "one year"',
                "governance.training_valid_for",
            ),
            (
                "strict_handlers = false",
                'strict_handlers = "no"',
                "governance.strict_handlers",
            ),
            (
                'consultation = "essential.service"',
                'consultation = "essential.service"\nlottery = "marketing"',
                "fideslang.data_uses.lottery",
            ),
            ("[notice]\n", '[notice]\nmotto = "x"\n', "notice.motto"),
        ],
    )
    def test_bad_register_is_a_configuration_error(
        self, tmp_path: Path, old: str, new: str, key_path: str
    ) -> None:
        """A bad register entry fails at load time naming the file and key path."""
        path = policy_variant(tmp_path, old, new)
        with pytest.raises(ConfigurationError) as info:
            Policy.from_toml(path)
        assert key_path == info.value.key_path
        assert str(path) in str(info.value)


class TestStrictHandlers:
    def test_unregistered_actor_is_refused_and_recorded(
        self, sample_policy: Policy
    ) -> None:
        """An actor that is not a registered handler cannot claim a purpose."""
        recorder = Recorder()
        policy = _strict(sample_policy, **{"u-102": _handler("u-102", "support_agent")})
        custodian = Custodian(policy=policy, audit=recorder)
        with (
            custodian.activate(),
            custdata.acting_as("intruder-7", role="support_agent"),
            pytest.raises(
                HandlerNotRegisteredError, match="'intruder-7' is not a registered"
            ),
            custdata.purpose("support"),
        ):
            pass  # pragma: no cover - never reached
        decision = recorder.decisions[-1]
        assert (Outcome.DENIED, DenyReason.UNREGISTERED_HANDLER, "intruder-7") == (
            decision.outcome,
            decision.reason,
            decision.actor,
        )

    @pytest.mark.parametrize(
        ("handler", "role", "message"),
        [
            (_handler("u-102", "support_agent"), "support_agent", None),
            (
                _handler("u-102", "billing_clerk"),
                "support_agent",
                "not registered for role",
            ),
            (
                _handler("u-102", "support_agent", trained_days_ago=400),
                "support_agent",
                "no valid training",
            ),
            (
                attrs.evolve(
                    _handler("u-102", "support_agent"),
                    effective_until=TODAY - dt.timedelta(days=1),
                ),
                "support_agent",
                "not in force",
            ),
            (
                attrs.evolve(_handler("u-102", "support_agent"), trained_on=None),
                "support_agent",
                "no valid training",
            ),
        ],
    )
    def test_registration_role_and_training(
        self, sample_policy: Policy, handler: Handler, role: str, message: str | None
    ) -> None:
        """Only a handler in force, in its role, with valid training is allowed."""
        custodian = Custodian(policy=_strict(sample_policy, **{"u-102": handler}))
        with custodian.activate(), custdata.acting_as("u-102", role=role):
            if message is None:
                with custdata.purpose("support"):
                    assert "support" == custdata.current_access().purpose
            else:
                with pytest.raises(HandlerNotRegisteredError, match=message):
                    custdata.purpose("support").__enter__()

    def test_not_strict_allows_any_actor(self, sample_policy: Policy) -> None:
        """Without strict mode, the register is documentation: any actor may act."""
        custodian = Custodian(policy=sample_policy)
        assert not sample_policy.registers.handlers.strict
        with (
            custodian.activate(),
            custdata.acting_as("anyone", role="support_agent"),
            custdata.purpose("support"),
        ):
            assert "anyone" == custdata.current_access().actor

    def test_strict_mode_on_the_database(
        self,
        engine: Engine,
        models: Models,
        keyring: custdata.crypto.Keyring,
        recorder: Recorder,
        sample_policy: Policy,
    ) -> None:
        """On each database: a registered clerk writes and reads; an unregistered
        actor's read is refused, recorded, and leaves the stored values intact."""
        policy = _strict(
            sample_policy, **{"clerk-1": _handler("clerk-1", "billing_clerk")}
        )
        custodian = Custodian(policy=policy, keyring=keyring, audit=recorder)
        with custodian.activate(), Session(engine) as session:
            with billing():
                customer = models.Customer(
                    name=CANARIES["name"],
                    email=CANARIES["email"],
                    card=CANARIES["card"],
                )
                session.add(customer)
                session.commit()
                cid: uuid.UUID = customer.id
            session.expunge_all()
            with pytest.raises(HandlerNotRegisteredError) as info:
                with support():
                    session.get(models.Customer, cid)
            for canary in CANARIES.values():
                assert str(canary) not in str(info.value)
            denied = [d for d in recorder.decisions if d.outcome is Outcome.DENIED]
            assert ["agent-1"] == [d.actor for d in denied]
            session.expunge_all()
            with billing():
                again = session.get(models.Customer, cid)
                assert again is not None
                assert (CANARIES["name"], CANARIES["card"]) == (again.name, again.card)


class TestRegisterFindings:
    def test_example_is_clean(self, sample_policy: Policy) -> None:
        """The example's registers have no findings before their review dates."""
        assert [] == register_findings(sample_policy, today=dt.date(2027, 1, 1))

    def test_prohibition_fails_with_reason(self, tmp_path: Path) -> None:
        """Special-care data used for marketing breaks the prohibition rule (REG003)."""
        path = policy_variant(
            tmp_path,
            'categories = ["name", "contact.email", "transaction.history", "demographic.birth_date"]',
            'categories = ["name", "contact.email", "special_care.medical_history"]',
        )
        findings = register_findings(Policy.from_toml(path), today=dt.date(2027, 1, 1))
        assert [("REG003", "purposes.marketing.categories")] == [
            (f.code, f.key_path) for f in findings
        ]
        assert "special_care_marketing" in findings[0].message
        assert "special-care data is never used for marketing" in findings[0].message

    def test_overdue_items_and_expired_training(self, tmp_path: Path) -> None:
        """Past a review date each item is REV001; in strict mode old training is REG001."""
        path = policy_variant(
            tmp_path, "strict_handlers = false", "strict_handlers = true"
        )
        findings = register_findings(Policy.from_toml(path), today=dt.date(2028, 4, 1))
        codes = {(f.code, f.key_path) for f in findings}
        assert ("REV001", "purposes.billing.next_review") in codes
        assert ("REV001", "retention.accounting.next_review") in codes
        assert ("REV001", "measures.training.next_review") in codes
        assert ("REV001", "notice.next_review") in codes
        assert ("REV001", "handlers.u-102.next_review") in codes
        assert ("REG001", "handlers.u-102.trained_on") in codes

    def test_missing_measure_category(self, tmp_path: Path) -> None:
        """A guideline category without any registered measure is REG002."""
        path = policy_variant(tmp_path, 'category = "physical"', 'category = "human"')
        findings = register_findings(Policy.from_toml(path), today=dt.date(2027, 1, 1))
        assert [("REG002", "measures")] == [(f.code, f.key_path) for f in findings]
        assert "'physical'" in findings[0].message

    def test_check_fails_on_overdue_item(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``custdata check`` exits 1 naming an overdue measure (frozen date)."""
        path = policy_variant(
            tmp_path,
            'owner = "cs_manager"\nnext_review = 2028-03-31',
            'owner = "cs_manager"\nnext_review = 2026-11-30',
        )
        assert 1 == main(["check", "--policy", str(path), "--today", "2026-12-01"])
        out = capsys.readouterr().out
        assert "measures.premises.next_review: REV001" in out
        assert 0 == main(["check", "--policy", str(path), "--today", "2026-11-30"])


class TestReview:
    def test_review_items_status(self, sample_policy: Policy) -> None:
        """Each dated item is ok, due soon or overdue on the day asked."""
        items = {
            i.key_path: i.status
            for i in review_items(sample_policy, today=dt.date(2027, 9, 15))
        }
        assert "due soon" == items["policy.next_review"]
        assert "ok" == items["measures.training.next_review"]
        items = {
            i.key_path: i.status
            for i in review_items(sample_policy, today=dt.date(2027, 10, 1))
        }
        assert "overdue" == items["policy.next_review"]

    def test_report_lists_changes_since_previous(
        self, sample_policy: Policy, tmp_path: Path
    ) -> None:
        """The second review names what was added and changed since the first."""
        _, first = review_report(sample_policy, today=dt.date(2027, 1, 1))
        changed = Policy.from_toml(
            policy_variant(
                tmp_path,
                'roles = ["marketer"]',
                'roles = ["marketer", "support_agent"]',
            )
        )
        report, _ = review_report(changed, today=dt.date(2027, 6, 1), previous=first)
        assert "- Previous review: 2027-01-01" in report
        assert "- handlers `u-201` changed" in report

    def test_review_command_with_frozen_clock(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``custdata review --today`` writes the dated report and snapshot; the next
        review compares with it; an overdue item makes the exit status 1."""
        out = tmp_path / "reviews"
        argv = ["review", "--policy", str(EXAMPLE), "--out", str(out)]
        assert 0 == main([*argv, "--today", "2027-01-01"])
        first = out / "review-2027-01-01.md"
        assert str(first) in capsys.readouterr().out
        text = first.read_text(encoding="utf-8")
        assert text.startswith("# Review of the customer-data regulation — 2027-01-01")
        assert "no previous review: this report is the baseline" in text
        assert (
            "2027-01-01"
            == json.loads((out / "review-2027-01-01.json").read_text(encoding="utf-8"))[
                "date"
            ]
        )
        assert 1 == main([*argv, "--today", "2027-10-01"])
        second = (out / "review-2027-10-01.md").read_text(encoding="utf-8")
        assert "- Previous review: 2027-01-01" in second
        assert (
            "| the regulation (policy) | `policy.next_review` | 2027-09-30 | overdue |"
            in second
        )
        assert "`POL003` `policy.next_review`" in second

    def test_review_command_bad_policy(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An invalid policy: exit 2, one line on stderr, no report."""
        bad = policy_variant(tmp_path, 'category = "human"', 'category = "moral"')
        out = tmp_path / "reviews"
        assert 2 == main(["review", "--policy", str(bad), "--out", str(out)])
        assert 1 == len(capsys.readouterr().err.strip().splitlines())
        assert not out.exists()
