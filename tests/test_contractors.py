"""The contractor registry and joint use in the policy file; their checks (R-TPP-5, R-SEC-6)."""

from __future__ import annotations

import datetime as dt
import json
import sys

from pathlib import Path
from typing import Any

import pytest


sys.path.insert(0, str(Path(__file__).parent))
import custdata

from custdata.cli import main
from custdata.governance import contractor_findings
from provision_fixtures import EXAMPLE, example_data


TODAY = dt.date(2027, 1, 1)


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    """Write *data* as a policy file (tomli-w is not a dependency: a tiny writer)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, dt.date | int):
            return v.isoformat() if isinstance(v, dt.date) else str(v)
        if isinstance(v, list) and all(not isinstance(i, dict) for i in v):
            return "[" + ", ".join(value(i) for i in v) + "]"
        raise TypeError(type(v))

    def table(path: list[str], t: dict[str, Any]) -> None:
        simple = {
            k: v
            for k, v in t.items()
            if not isinstance(v, dict | list)
            or (isinstance(v, list) and all(not isinstance(i, dict) for i in v))
        }
        if path:
            lines.append("[" + ".".join(json.dumps(p) for p in path) + "]")
        lines.extend(f"{json.dumps(k)} = {value(v)}" for k, v in simple.items())
        for k, v in t.items():
            if isinstance(v, dict):
                table([*path, k], v)
            elif isinstance(v, list) and v and all(isinstance(i, dict) for i in v):
                for item in v:
                    lines.append(
                        "[[" + ".".join(json.dumps(p) for p in [*path, k]) + "]]"
                    )
                    lines.extend(
                        f"{json.dumps(a)} = {value(b)}" for a, b in item.items()
                    )

    table([], data)
    path = tmp_path / "custdata.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _policy(**changes: Any) -> custdata.Policy:
    data = example_data()
    data["third_party"]["contractors"]["hayate_delivery"].update(changes)
    return custdata.Policy.from_dict(data)


class TestPolicySection:
    """The ``[third_party]`` table of the policy file."""

    def test_example_registry_is_read(self) -> None:
        """Every R-TPP-5 field of the example contractor and the five joint-use items."""
        policy = custdata.Policy.from_toml(EXAMPLE)
        c = policy.third_party.contractors["hayate_delivery"]
        assert ("shipping",) == c.purposes
        assert dt.date(2026, 9, 1) == c.assessment_date
        assert "pass" == c.assessment_result
        assert "prior_approval" == c.re_outsourcing
        assert c.subcontractors[0].approved
        assert 24 == c.breach_notice_hours
        assert c.return_destruction
        assert "OUT-2026-007" == c.contract_id
        j = policy.third_party.joint_uses["sakura_group"]
        assert ("name", "contact.email") == j.items
        assert ("sakura_card",) == j.users
        assert ("marketing",) == j.purposes
        assert "株式会社さくら通販 (Sakura Mail Order Co., Ltd.)" == j.responsible_name
        assert j.responsible_address.startswith("東京都")
        assert j.responsible_representative.startswith("代表取締役")
        assert dt.date(2026, 10, 1) == j.notice_published

    def test_a_policy_without_the_section_has_an_empty_registry(self) -> None:
        """The section is optional."""
        data = example_data()
        del data["third_party"]
        assert {} == dict(custdata.Policy.from_dict(data).third_party.contractors)

    @pytest.mark.parametrize(
        ("change", "key_path"),
        [
            (
                {"purposes": ["resale"]},
                "third_party.contractors.hayate_delivery.purposes",
            ),
            (
                {"categories": ["nonsense"]},
                "third_party.contractors.hayate_delivery.categories",
            ),
            (
                {"re_outsourcing": "sometimes"},
                "third_party.contractors.hayate_delivery.re_outsourcing",
            ),
            (
                {"assessment_result": "ok"},
                "third_party.contractors.hayate_delivery.assessment_result",
            ),
            ({"colour": "red"}, "third_party.contractors.hayate_delivery.colour"),
            (
                {"next_review_due": "soon"},
                "third_party.contractors.hayate_delivery.next_review_due",
            ),
        ],
        ids=["purpose", "category", "re-outsourcing", "result", "unknown-key", "date"],
    )
    def test_invalid_entries_name_the_key_path(
        self, change: dict[str, Any], key_path: str
    ) -> None:
        """A bad registry entry fails at load time with its key path."""
        with pytest.raises(custdata.ConfigurationError) as info:
            _policy(**change)
        assert key_path == info.value.key_path

    def test_joint_use_needs_its_notice_items(self) -> None:
        """法27条5項3号: the responsible party is one of the five items."""
        data = example_data()
        del data["third_party"]["joint_use"]["sakura_group"]["responsible_name"]
        with pytest.raises(custdata.ConfigurationError) as info:
            custdata.Policy.from_dict(data)
        assert (
            "third_party.joint_use.sakura_group.responsible_name" == info.value.key_path
        )


class TestBuiltInPython:
    """Policy.build takes the section as objects and validates it the same way."""

    def _build(self, contractor: custdata.Contractor) -> custdata.Policy:
        example = custdata.Policy.from_toml(EXAMPLE)
        return custdata.Policy.build(
            organisation="Example KK",
            version="1",
            effective_date=dt.date(2026, 1, 1),
            next_review=dt.date(2027, 1, 1),
            purposes=list(example.purposes.values()),
            retention_rules=list(example.retention_rules.values()),
            persons=list(example.persons.values()),
            third_party=custdata.ThirdPartyPolicy(
                contractors={contractor.id: contractor}
            ),
        )

    def test_valid_contractor(self) -> None:
        """A contractor entrusted declared purposes and categories is accepted."""
        c = custdata.Contractor(
            id="c",
            name="C KK",
            address="Tokyo",
            purposes=["shipping"],
            categories=["name"],
        )
        assert c == self._build(c).third_party.contractors["c"]

    def test_undeclared_purpose_is_refused(self) -> None:
        """An entrusted purpose must be declared in the policy."""
        c = custdata.Contractor(
            id="c",
            name="C KK",
            address="Tokyo",
            purposes=["resale"],
            categories=["name"],
        )
        with pytest.raises(custdata.ConfigurationError) as info:
            self._build(c)
        assert "third_party.contractors.c.purposes" == info.value.key_path


class TestFindings:
    """contractor_findings: what check reports about the registry."""

    def test_example_registry_is_clean(self) -> None:
        """The example contractor is assessed, reviewed, approved and domestic."""
        assert [] == contractor_findings(
            custdata.Policy.from_toml(EXAMPLE), today=TODAY
        )

    def test_overdue_review(self) -> None:
        """法25条, GL 3-4-4 ③: a review past due is CTR001."""
        found = contractor_findings(
            _policy(next_review_due=dt.date(2026, 12, 31)), today=TODAY
        )
        assert ["CTR001"] == [f.code for f in found]
        assert "was due 2026-12-31" in found[0].message

    def test_missing_assessment(self) -> None:
        """GL 3-4-4 ①: no passed assessment is CTR002."""
        found = contractor_findings(_policy(assessment_result="fail"), today=TODAY)
        assert ["CTR002"] == [f.code for f in found]

    def test_unapproved_subcontractor(self) -> None:
        """GL 3-4-4 (再委託): an unapproved sub-contractor is CTR003."""
        sub = [{"name": "Z配送", "countries": ["JP"], "approved": False}]
        found = contractor_findings(_policy(subcontractors=sub), today=TODAY)
        assert [
            ("CTR003", "third_party.contractors.hayate_delivery.subcontractors[0]")
        ] == [(f.code, f.key_path) for f in found]

    def test_uncovered_countries_of_handling(self) -> None:
        """GL 10-7, PPC FAQ Q10-24: a country of handling (own or a sub-contractor's)
        that the published safety measures do not name is CTR004."""
        sub = [{"name": "VN Data", "countries": ["VN"], "approved": True}]
        found = contractor_findings(
            _policy(countries=["JP", "US"], subcontractors=sub), today=TODAY
        )
        assert ["CTR004", "CTR004"] == [f.code for f in found]
        assert ["US", "VN"] == [f.message.split()[4].rstrip(",") for f in found]
        data = example_data()
        data["notice"]["foreign_countries"] = ["US", "VN"]
        data["third_party"]["contractors"]["hayate_delivery"].update(
            countries=["JP", "US"], subcontractors=sub
        )
        assert [] == contractor_findings(custdata.Policy.from_dict(data), today=TODAY)


class TestCommands:
    """``custdata check`` and ``custdata contractors check`` fail on the registry's findings."""

    def _file(self, tmp_path: Path, **changes: Any) -> Path:
        data = example_data()
        data["third_party"]["contractors"]["hayate_delivery"].update(changes)
        return _write(tmp_path, data)

    def test_written_example_is_equivalent(self, tmp_path: Path) -> None:
        """The test's TOML writer reproduces the example policy (guards the helper)."""
        path = _write(tmp_path, example_data())
        assert (
            custdata.Policy.from_toml(path).third_party
            == custdata.Policy.from_toml(EXAMPLE).third_party
        )

    def test_check_fails_on_an_overdue_review(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """R-TPP-5: ``custdata check`` exits 1 and names the overdue contractor."""
        path = self._file(tmp_path, next_review_due=dt.date(2026, 6, 30))
        assert 1 == main(
            ["check", "--policy", str(path), "--today", "2027-01-01", "--json"]
        )
        codes = [f["code"] for f in json.loads(capsys.readouterr().out)["findings"]]
        assert ["CTR001"] == codes

    def test_check_fails_on_an_uncovered_country(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """R-SEC-6: a contractor handling data in X, X not published → check exits 1."""
        path = self._file(tmp_path, countries=["JP", "IN"])
        assert 1 == main(["check", "--policy", str(path), "--today", "2027-01-01"])
        assert "CTR004" in capsys.readouterr().out

    def test_contractors_check_exit_statuses(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """0 clean, 1 findings, 2 invalid policy (one line on stderr)."""
        assert 0 == main(
            ["contractors", "check", "--policy", str(EXAMPLE), "--today", "2027-01-01"]
        )
        assert "no findings" in capsys.readouterr().out
        bad = self._file(tmp_path, assessment_result="fail")
        assert 1 == main(["contractors", "check", "--policy", str(bad), "--json"])
        assert ["CTR002"] == [
            f["code"] for f in json.loads(capsys.readouterr().out)["findings"]
        ]
        broken = tmp_path / "broken.toml"
        broken.write_text("[policy\n", encoding="utf-8")
        assert 2 == main(["contractors", "check", "--policy", str(broken)])
        err = capsys.readouterr().err
        assert 1 == len(err.strip().splitlines())
        assert err.startswith("custdata contractors check:")
