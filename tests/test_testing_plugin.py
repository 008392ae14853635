"""custdata's pytest plugin: fixtures a host application's tests get for free."""

from __future__ import annotations

import subprocess
import sys

from pathlib import Path

import pytest

import custdata

from custdata.testing import RecordedDecisions, acting, assert_denied, assert_revealed


pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
POLICY = (EXAMPLES / "custdata.toml").read_text(encoding="utf-8")


def test_the_shop_example_suite_passes_with_the_plugin() -> None:
    """examples/shop/tests uses only the plugin's fixtures and passes."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        cwd=EXAMPLES / "shop",
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    assert "6 passed" in done.stdout


def test_fixtures_give_a_current_custodian_that_records(
    pytester: pytest.Pytester,
) -> None:
    """The custodian is current in the test only, and its decisions are kept."""
    pytester.makefile(".toml", custdata=POLICY)
    pytester.makepyfile(
        """
        import custdata
        import pytest
        from custdata.testing import assert_denied

        def test_inside(custdata_custodian, custdata_acting, custdata_decisions):
            assert custdata.current_custodian() is custdata_custodian
            assert custdata_custodian.audit is custdata_decisions
            with custdata_acting("u-1", role="support_agent", purpose="support"):
                pass
            assert [d.purpose for d in custdata_decisions.allowed] == ["support"]
            with pytest.raises(custdata.PurposeNotGrantedError):
                with custdata_acting("u-1", role="support_agent", purpose="billing"):
                    pass
            assert_denied(custdata_decisions, actor="u-1", purpose="billing")

        def test_outside():
            with pytest.raises(custdata.ConfigurationError):
                custdata.current_custodian()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_missing_policy_file_fails_with_a_message(pytester: pytest.Pytester) -> None:
    """No custdata.toml and no ini option: the test fails saying what to set."""
    pytester.makepyfile("def test_it(custdata_custodian):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no policy file at*set the custdata_policy ini*"])
    assert "Traceback" not in result.stdout.str()


def test_the_ini_option_names_the_policy(pytester: pytest.Pytester) -> None:
    """custdata_policy = path reads that file, relative to the root directory."""
    (pytester.path / "conf").mkdir()
    (pytester.path / "conf" / "policy.toml").write_text(POLICY, encoding="utf-8")
    pytester.makeini("[pytest]\ncustdata_policy = conf/policy.toml\n")
    pytester.makepyfile(
        "def test_it(custdata_policy):\n"
        "    assert 'support' in custdata_policy.purposes\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def _decision(**changes: object) -> custdata.AccessDecision:
    base: dict[str, object] = {
        "outcome": custdata.Outcome.DENIED,
        "reason": custdata.DenyReason.PURPOSE_NOT_PERMITTED,
        "action": custdata.Action.READ,
        "actor": "u-102",
        "role": "support_agent",
        "purpose": "support",
        "policy_version": "1",
        "entity": "customers",
        "fields": ("card",),
        "denied_fields": ("card",),
        "subjects": ("s-1",),
        "count": 1,
    }
    base.update(changes)
    return custdata.AccessDecision(**base)  # type: ignore[arg-type]


class TestAssertions:
    """assert_denied / assert_revealed match on every term they are given."""

    def test_match_returns_the_decision(self) -> None:
        recorded = RecordedDecisions()
        denied = _decision()
        allowed = _decision(
            outcome=custdata.Outcome.ALLOWED,
            reason=None,
            fields=("name",),
            denied_fields=(),
        )
        recorded.record_decision(denied)
        recorded.record_decision(allowed)
        assert denied is assert_denied(recorded, fields=["card"], subjects=["s-1"])
        assert allowed is assert_revealed(recorded, fields=["name"], actor="u-102")
        assert [denied] == recorded.denied
        assert [allowed] == recorded.allowed
        assert 2 == len(recorded)

    @pytest.mark.parametrize(
        "terms",
        [
            {"fields": ["name"]},
            {"actor": "someone-else"},
            {"purpose": "billing"},
            {"subjects": ["s-2"]},
            {"reason": custdata.DenyReason.NO_ACTOR},
            {"action": custdata.Action.WRITE},
        ],
    )
    def test_a_term_that_differs_fails(self, terms: dict[str, object]) -> None:
        recorded = RecordedDecisions()
        recorded.record_decision(_decision())
        with pytest.raises(AssertionError, match="no denied decision with"):
            assert_denied(recorded, **terms)  # type: ignore[arg-type]

    def test_an_allowed_decision_is_not_a_denial(self) -> None:
        recorded = RecordedDecisions()
        recorded.record_decision(
            _decision(outcome=custdata.Outcome.ALLOWED, reason=None)
        )
        with pytest.raises(AssertionError, match="recorded:\n  allowed read"):
            assert_denied(recorded)
        with pytest.raises(AssertionError, match=r"\(none\)"):
            assert_revealed(RecordedDecisions())

    def test_failure_lists_names_never_subject_ids(self) -> None:
        """The message lists decisions by names; subject ids (customer data) stay out."""
        recorded = RecordedDecisions()
        recorded.record_decision(_decision(subjects=("CANARY-SUBJECT-7731",)))
        with pytest.raises(AssertionError) as info:
            assert_revealed(recorded, subjects=["CANARY-SUBJECT-7731"])
        assert "CANARY-SUBJECT-7731" not in str(info.value)
        assert "denied read entity=customers fields=card" in str(info.value)

    def test_acting_claims_and_checks_on_entry(
        self, sample_policy: custdata.Policy
    ) -> None:
        recorded = RecordedDecisions()
        custodian = custdata.Custodian(policy=sample_policy, audit=recorded)
        with custodian.activate():
            with acting("u-1", role="support_agent", purpose="support") as ctx:
                assert ("u-1", "support") == (ctx.actor, ctx.purpose)
            with pytest.raises(custdata.PurposeNotGrantedError):
                with acting("u-1", role="support_agent", purpose="billing"):
                    pass
        assert ["support", "billing"] == [d.purpose for d in recorded]
