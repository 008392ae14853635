"""``custdata check``: the policy lint as a CI gate."""

from __future__ import annotations

import datetime as dt
import json

from pathlib import Path

import pytest

from custdata import Policy
from custdata._check import check_policy
from custdata.cli import main


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custdata.toml"


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "custdata.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


class TestCheckPolicy:
    def test_example_is_clean(self, sample_policy: Policy) -> None:
        """The shipped example policy has no findings before its review date."""
        assert [] == check_policy(sample_policy, today=dt.date(2027, 1, 1))

    @pytest.mark.parametrize(
        ("old", "new", "code", "key_path"),
        [
            (
                'text_en = "To ship orders and tell you about their delivery"',
                'text_en = "  "',
                "POL001",
                "purposes.shipping.text_en",
            ),
            (
                'owner = "sales_manager"\neffective_from = 2026-10-01\nretention = "support"',
                'effective_from = 2026-10-01\nretention = "support"',
                "POL002",
                "purposes.shipping.owner",
            ),
            (
                'responsible = "cs_manager"\ndescription = "Answers',
                'description = "Answers',
                "POL004",
                "roles.support_agent.responsible",
            ),
            (
                'categories = ["name", "name.kana", "contact.email"',
                'categories = ["special_care.medical_history", "name.kana", "contact.email"',
                "POL005",
                "purposes.support.categories",
            ),
            ('cpo = "cpo"', "", "POL006", "policy.cpo"),
        ],
        ids=[
            "blank-text",
            "no-owner",
            "role-without-responsible",
            "special-care-without-consent",
            "no-cpo",
        ],
    )
    def test_findings(
        self, tmp_path: Path, old: str, new: str, code: str, key_path: str
    ) -> None:
        """Each kind of finding is reported with its code and key path."""
        policy = Policy.from_toml(_variant(tmp_path, old, new))
        findings = check_policy(policy, today=dt.date(2027, 1, 1))
        assert [(code, key_path)] == [(f.code, f.key_path) for f in findings]

    def test_overdue_review(self, sample_policy: Policy) -> None:
        """A review date in the past is a finding."""
        [finding] = check_policy(sample_policy, today=dt.date(2027, 10, 1))
        assert ("POL003", "policy.next_review") == (finding.code, finding.key_path)

    def test_consent_inherited_from_parent(self, tmp_path: Path) -> None:
        """A child of a consent-required purpose needs consent too, so no finding."""
        path = tmp_path / "custdata.toml"
        path.write_text(
            EXAMPLE.read_text(encoding="utf-8")
            + '\n[purposes."marketing.survey"]\nparent = "marketing"\n'
            'text_ja = "アンケートのため"\ntext_en = "For surveys"\nowner = "sales_manager"\n'
            'categories = ["special_care.creed"]\n',
            encoding="utf-8",
        )
        policy = Policy.from_toml(path)
        assert not policy.purposes["marketing.survey"].consent_required
        assert [] == check_policy(policy, today=dt.date(2027, 1, 1))


class TestCommand:
    def test_clean_exit_zero(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A clean policy exits 0."""
        assert 0 == main(["check", "--policy", str(EXAMPLE), "--today", "2027-01-01"])
        assert "no findings" in capsys.readouterr().out

    def test_findings_exit_one_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Findings exit 1; --json prints them machine-readably."""
        assert 1 == main(
            ["check", "--policy", str(EXAMPLE), "--today", "2028-01-01", "--json"]
        )
        out = json.loads(capsys.readouterr().out)
        assert [
            {
                "code": "POL003",
                "key_path": "policy.next_review",
                "message": "the review due on 2027-09-30 is overdue",
            }
        ] == out["findings"]

    def test_invalid_policy_exit_two(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An invalid policy exits 2 naming the file and key path."""
        path = _variant(tmp_path, 'retention = "accounting"', 'retention = "forever"')
        assert 2 == main(["check", "--policy", str(path)])
        err = capsys.readouterr().err
        assert (
            f"{path}: purposes.billing.retention: unknown retention rule 'forever'"
            in err
        )

    def test_bad_models_spec_exit_two(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A malformed --models value is a usage error."""
        assert 2 == main(
            ["check", "--policy", str(EXAMPLE), "--models", "no_colon_here"]
        )
        assert "MODULE:BASE" in capsys.readouterr().err
