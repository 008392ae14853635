"""The incident register (issue 14, R-INC-1, R-INC-4, R-INC-5, R-INC-6).

An append-only timeline; classification replayed from the packs it recorded;
the exemption decided by a person; reporting routes with acknowledgements and
reminders; reports staged 速報/確報 and compared with golden files; the 35条5項
flag the request workflow reads.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

from pathlib import Path

import pytest

import custdata

from custdata import ReportingRoutes, RouteStep
from custdata.governance import (
    IncidentRegister,
    InMemoryIncidentStore,
    Reportability,
    ReportKind,
    TimelineAction,
)


sys.path.insert(0, str(Path(__file__).resolve().parent))

from incident_fixtures import CUSTODY, JST, KNOWN, incident


GOLDEN = Path(__file__).resolve().parent / "golden" / "incidents"
HOUR = dt.timedelta(hours=1)

ROUTES = ReportingRoutes(
    steps=(
        RouteStep(id="manager", recipient="support_manager", label="部門責任者"),
        RouteStep(id="cpo", recipient="cpo", label="個人情報保護管理者"),
        RouteStep(
            id="ppc",
            recipient="ppc",
            label="個人情報保護委員会",
            item="ppc_preliminary",
        ),
    ),
    reminder_offsets=(dt.timedelta(hours=24),),
    dpo_contact="privacy@example.co.jp",
)

#: What the business learnt about the ransomware case, item by item.
FACTS = {
    "cause": "VPN機器の脆弱性を突いた不正アクセスにより、顧客管理サーバーがランサムウェアに感染した。",
    "secondary_damage": "現時点で二次被害は確認されていない。",
    "subject_response": "対象の本人全員に電子メールで通知した。",
    "publication": "2026年2月6日に当社ウェブサイトで公表した。",
    "recurrence_prevention": "VPN機器の更新、多要素認証の導入、バックアップの隔離保管。",
    "other": "警察に被害を相談済み。",
    "consequences": "Loss of availability of contact records; no exfiltration found.",
    "measures": "Systems restored from isolated backups; VPN patched; MFA enforced.",
}


def ransomware(**kw: object) -> custdata.governance.Incident:
    """The docs' case: ransomware on the customer server, 10 rows, APPI and GDPR."""
    values: dict[str, object] = {
        "incident_id": "INC-20260202-ransom",
        "kind": "damage",
        "malicious": True,
        "cause": "ランサムウェア感染（調査中）",
        "jurisdictions": {"appi", "gdpr"},
        "refs": tuple(f"sr_{n:02d}" for n in range(10)),
    }
    values.update(kw)
    return incident(("contact.email", "name"), 10, **values)  # type: ignore[arg-type]


@pytest.fixture
def register() -> IncidentRegister:
    """A register over an in-memory store with the test routes."""
    return IncidentRegister(
        InMemoryIncidentStore(), routes=ROUTES, organisation="株式会社サンプル"
    )


class TestTimeline:
    def test_opening_records_the_timeline(self, register: IncidentRegister) -> None:
        """Opening stores the record and an ``opened`` entry by the actor."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        (entry,) = register.store.timeline("INC-20260202-ransom")
        assert (1, TimelineAction.OPENED, "u-sec", KNOWN) == (
            entry.seq,
            entry.action,
            entry.actor,
            entry.at,
        )

    def test_timeline_is_append_only(self, register: IncidentRegister) -> None:
        """Entries only accumulate; earlier ones are returned unchanged."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        first = register.store.timeline("INC-20260202-ransom")
        register.record_fact(
            "INC-20260202-ransom", "cause", "x", actor="u-sec", now=KNOWN + HOUR
        )
        register.record_fact(
            "INC-20260202-ransom", "cause", "y", actor="u-sec", now=KNOWN + 2 * HOUR
        )
        after = register.store.timeline("INC-20260202-ransom")
        assert first == after[:1]
        assert [1, 2, 3] == [e.seq for e in after]
        assert {"cause": "y"} == register.facts("INC-20260202-ransom")
        assert not hasattr(register.store, "update")
        assert not hasattr(register.store, "delete")

    def test_a_second_open_is_refused(self, register: IncidentRegister) -> None:
        """The same id cannot be opened twice; the first record stays."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        with pytest.raises(custdata.IncidentError, match="already exists"):
            register.open(ransomware(cause="other"), actor="u-x", now=KNOWN)
        assert (
            "ランサムウェア感染（調査中）"
            == register.store.get("INC-20260202-ransom").cause
        )

    def test_opened_cannot_be_recorded_again(self, register: IncidentRegister) -> None:
        """``opened`` is only ever the first entry."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        with pytest.raises(custdata.IncidentError, match="opened only once"):
            register.record("INC-20260202-ransom", TimelineAction.OPENED, actor="u")

    def test_unknown_incident(self, register: IncidentRegister) -> None:
        """An unknown id is UnknownIncidentError, a LookupError."""
        with pytest.raises(custdata.UnknownIncidentError) as info:
            register.record_fact("INC-none", "cause", "x", actor="u")
        assert isinstance(info.value, LookupError)

    def test_detail_must_be_json(self, register: IncidentRegister) -> None:
        """A detail that cannot be stored is a typed error, and nothing is appended."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        with pytest.raises(custdata.IncidentError, match="JSON"):
            register.record(
                "INC-20260202-ransom", TimelineAction.NOTE, {"x": object()}, actor="u"
            )
        assert 1 == len(register.store.timeline("INC-20260202-ransom"))

    def test_every_incident_is_kept(self, register: IncidentRegister) -> None:
        """A not-reportable incident is recorded like any other (GDPR 33(5))."""
        register.open(
            incident(subjects=3, incident_id="INC-small"), actor="u", now=KNOWN
        )
        result = register.classify("INC-small", actor="u", now=KNOWN)
        assert result.appi is not None
        assert Reportability.NOT_REPORTABLE == result.appi.status
        assert ("INC-small",) == tuple(
            i.incident_id for i in register.store.incidents()
        )


class TestClassificationOnTheTimeline:
    def test_classification_is_recorded_with_its_packs(
        self, register: IncidentRegister
    ) -> None:
        """The ``classified`` entry names the packs and the categories."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        register.classify("INC-20260202-ransom", actor="cpo", now=KNOWN + HOUR)
        entry = register.store.timeline("INC-20260202-ransom")[-1]
        assert TimelineAction.CLASSIFIED == entry.action
        assert ["appi-2024-04", "gdpr-2018-05"] == entry.detail["packs"]
        assert [3] == [c["number"] for c in entry.detail["appi"]["categories"]]
        assert register.classification("INC-20260202-ransom").pack_ids == (
            "appi-2024-04",
            "gdpr-2018-05",
        )

    def test_replay_equals_the_recorded_decision(
        self, register: IncidentRegister
    ) -> None:
        """A GDPR-only encrypted leak replays with the custody evidence it was decided on."""
        register.open(
            incident(encrypted=True, jurisdictions={"gdpr"}, incident_id="INC-g"),
            actor="u",
            now=KNOWN,
        )
        decided = register.classify("INC-g", actor="u", custody=CUSTODY, now=KNOWN)
        assert decided.gdpr is not None
        assert not decided.gdpr.notify_authority
        assert decided == register.classification("INC-g")
        assert () == register.deadlines("INC-g")

    def test_unclassified_incident(self, register: IncidentRegister) -> None:
        """Asking for the deadlines of an unclassified incident is a typed error."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        with pytest.raises(custdata.IncidentError, match="not been classified"):
            register.deadlines("INC-20260202-ransom")

    @pytest.mark.parametrize(
        ("confirmed", "status", "clocks"),
        [
            (True, Reportability.NOT_REPORTABLE, False),
            (False, Reportability.REPORTABLE, True),
        ],
    )
    def test_exemption_decided_by_a_person(
        self,
        register: IncidentRegister,
        confirmed: bool,
        status: Reportability,
        clocks: bool,
    ) -> None:
        """A confirmed candidate stops the APPI clocks; a rejected one keeps them."""
        register.open(
            incident(subjects=1001, encrypted=True, incident_id="INC-enc"),
            actor="u",
            now=KNOWN,
        )
        first = register.classify("INC-enc", actor="u", custody=CUSTODY, now=KNOWN)
        assert first.appi is not None
        assert Reportability.EXEMPTION_CANDIDATE == first.appi.status
        register.decide_exemption(
            "INC-enc",
            confirmed=confirmed,
            reason="KMS keys intact",
            actor="cpo",
            now=KNOWN + HOUR,
        )
        now = register.classification("INC-enc")
        assert now.appi is not None
        assert status == now.appi.status
        assert clocks == any(i.regime == "appi" for i in register.deadlines("INC-enc"))


class TestRoutes:
    def test_acknowledgements_and_reminders(self, register: IncidentRegister) -> None:
        """Steps record acknowledgements; a notified item stops its reminders."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        register.classify("INC-20260202-ransom", actor="u-sec", now=KNOWN)
        register.acknowledge(
            "INC-20260202-ransom", "manager", actor="support_manager", now=KNOWN + HOUR
        )
        status = {s.step: s for s in register.route_status("INC-20260202-ransom")}
        assert "support_manager" == status["manager"].acknowledged_by
        assert KNOWN + HOUR == status["manager"].acknowledged_at
        assert status["cpo"].acknowledged_at is None
        assert status["ppc"].notified_at is None

        eve = dt.datetime(2026, 2, 4, 23, 59, 59, tzinfo=JST)
        due = register.reminders("INC-20260202-ransom", now=eve)
        assert {"ppc_preliminary", "gdpr_authority"} <= {r.item for r in due}

        register.notified(
            "INC-20260202-ransom",
            "ppc_preliminary",
            actor="cpo",
            recipient="ppc",
            now=eve,
        )
        after = register.reminders("INC-20260202-ransom", now=eve)
        assert "ppc_preliminary" not in {r.item for r in after}
        ppc = {s.step: s for s in register.route_status("INC-20260202-ransom")}["ppc"]
        assert eve == ppc.notified_at

    @pytest.mark.parametrize(
        ("call", "message"),
        [
            (
                lambda r: r.acknowledge("INC-20260202-ransom", "ceo", actor="u"),
                "no step",
            ),
            (
                lambda r: r.notified(
                    "INC-20260202-ransom", "ppc", actor="u", recipient="ppc"
                ),
                "not a due item",
            ),
            (
                lambda r: r.record_fact("INC-20260202-ransom", "mood", "x", actor="u"),
                "not a report item",
            ),
            (
                lambda r: r.record_fact(
                    "INC-20260202-ransom", "cause", "  ", actor="u"
                ),
                "has text",
            ),
        ],
        ids=["unknown step", "unknown due item", "unknown report item", "empty fact"],
    )
    def test_bad_entries_are_refused(
        self, register: IncidentRegister, call: object, message: str
    ) -> None:
        """Entries naming unknown steps, items or no text are typed errors; nothing is appended."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        with pytest.raises(custdata.IncidentError, match=message):
            call(register)  # type: ignore[operator]
        assert 1 == len(register.store.timeline("INC-20260202-ransom"))

    def test_routes_from_the_policy_file(self) -> None:
        """``[reporting]`` in a policy becomes Policy.reporting."""
        policy = custdata.Policy.from_dict(_policy_with(_REPORTING))
        assert ("manager", "cpo", "ppc") == tuple(s.id for s in policy.reporting.steps)
        assert (dt.timedelta(hours=48), dt.timedelta(hours=4)) == (
            policy.reporting.reminder_offsets
        )
        assert 24 == policy.reporting.principal_sla_hours
        assert "ppc_preliminary" == policy.reporting.step("ppc").item

    @pytest.mark.parametrize(
        ("reporting", "where"),
        [
            ({"reminder_offsets_hours": ["soon"]}, "reporting.reminder_offsets_hours"),
            ({"route": [{"recipient": "x"}]}, "reporting.route[0].id"),
            (
                {
                    "route": [
                        {"id": "a", "recipient": "x"},
                        {"id": "a", "recipient": "y"},
                    ]
                },
                "reporting.route[1].id",
            ),
            ({"principal_sla_hours": -1}, "reporting.principal_sla_hours"),
            (
                {"route": [{"id": "a", "recipient": "x", "item": "ppc_soon"}]},
                "reporting.route[0].item",
            ),
            ({"escalate": True}, "reporting.escalate"),
        ],
    )
    def test_bad_routes_fail_at_load(
        self, reporting: dict[str, object], where: str
    ) -> None:
        """A bad ``[reporting]`` table is a ConfigurationError naming the key path."""
        with pytest.raises(custdata.ConfigurationError) as info:
            custdata.Policy.from_dict(_policy_with(reporting))
        assert where in str(info.value)


class TestReports:
    def _ready(self, register: IncidentRegister) -> None:
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        register.classify("INC-20260202-ransom", actor="cpo", now=KNOWN + HOUR)
        for n, (item, text) in enumerate(FACTS.items()):
            register.record_fact(
                "INC-20260202-ransom",
                item,
                text,
                actor="cpo",
                now=KNOWN + (n + 2) * HOUR,
            )

    def test_final_report_missing_item_8(self, register: IncidentRegister) -> None:
        """A 確報 without recurrence prevention (item ⑧) is refused, naming it."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        register.classify("INC-20260202-ransom", actor="cpo", now=KNOWN)
        for item, text in FACTS.items():
            if item != "recurrence_prevention":
                register.record_fact(
                    "INC-20260202-ransom", item, text, actor="cpo", now=KNOWN
                )
        with pytest.raises(custdata.IncidentReportIncompleteError) as info:
            register.report("INC-20260202-ransom", stage="final")
        assert ("recurrence_prevention",) == info.value.missing
        preliminary = register.report("INC-20260202-ransom", stage="preliminary")
        assert ("recurrence_prevention",) == preliminary.missing

    def test_preliminary_may_be_partial(self, register: IncidentRegister) -> None:
        """A 速報 right after opening has the record's items and leaves the rest open."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        register.classify("INC-20260202-ransom", actor="cpo", now=KNOWN)
        report = register.report("INC-20260202-ransom", stage="preliminary")
        assert (
            "secondary_damage",
            "subject_response",
            "publication",
            "recurrence_prevention",
            "other",
        ) == report.missing
        assert 9 == len(report.items)

    @pytest.mark.parametrize(
        ("kind", "lang", "name"),
        [
            (ReportKind.PPC, "ja", "ppc_final_ja.txt"),
            (ReportKind.PPC, "en", "ppc_final_en.txt"),
            (ReportKind.SUBJECT_NOTICE, "ja", "subject_notice_ja.txt"),
            (ReportKind.GDPR_AUTHORITY, "en", "gdpr_art33_en.txt"),
        ],
    )
    def test_rendered_reports_match_golden_files(
        self, register: IncidentRegister, kind: ReportKind, lang: str, name: str
    ) -> None:
        """The rendered reports of the ransomware case are byte-for-byte the golden files."""
        self._ready(register)
        text = register.report("INC-20260202-ransom", kind=kind).render(lang)
        _golden(name, text)

    def test_json_matches_golden_file(self, register: IncidentRegister) -> None:
        """The PPC 確報 as JSON is the golden file."""
        self._ready(register)
        report = register.report("INC-20260202-ransom")
        _golden("ppc_final.json", report.to_json() + "\n")
        assert [] == json.loads(report.to_json())["missing"]

    def test_subject_notice_has_the_five_items(
        self, register: IncidentRegister
    ) -> None:
        """The subject notice carries items ①②④⑤⑨ of the report."""
        self._ready(register)
        report = register.report("INC-20260202-ransom", kind="subject_notice")
        assert (
            "overview",
            "data_items",
            "cause",
            "secondary_damage",
            "other",
        ) == tuple(i.key for i in report.items)

    def test_gdpr_report_needs_a_gdpr_classification(
        self, register: IncidentRegister
    ) -> None:
        """An APPI-only incident has no Art. 33 notification."""
        register.open(ransomware(jurisdictions={"appi"}), actor="u", now=KNOWN)
        register.classify("INC-20260202-ransom", actor="u", now=KNOWN)
        with pytest.raises(custdata.IncidentError, match="GDPR"):
            register.report(
                "INC-20260202-ransom", kind="gdpr_authority", stage="preliminary"
            )


class TestCessation:
    def test_subjects_of_a_reportable_incident_are_eligible(
        self, register: IncidentRegister
    ) -> None:
        """35条5項: a subject in a reportable incident's scope has grounds; others not."""
        register.open(ransomware(), actor="u-sec", now=KNOWN)
        register.classify("INC-20260202-ransom", actor="cpo", now=KNOWN)
        register.open(
            incident(subjects=2, refs=("sr_00", "sr_99"), incident_id="INC-minor"),
            actor="u",
            now=KNOWN,
        )
        register.classify("INC-minor", actor="u", now=KNOWN)
        assert ("INC-20260202-ransom",) == register.cessation_grounds("sr_00")
        assert () == register.cessation_grounds("sr_99")
        assert () == register.cessation_grounds("sr_unknown")


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CUSTDATA_REGENERATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text


_REPORTING: dict[str, object] = {
    "reminder_offsets_hours": [48, 4],
    "principal_sla_hours": 24,
    "dpo_contact": "privacy@example.co.jp",
    "route": [
        {"id": "manager", "recipient": "support_manager", "label": "部門責任者"},
        {"id": "cpo", "recipient": "cpo", "label": "個人情報保護管理者"},
        {"id": "ppc", "recipient": "ppc", "item": "ppc_preliminary"},
    ],
}


def _policy_with(reporting: dict[str, object]) -> dict[str, object]:
    return {
        "policy": {
            "organisation": "株式会社サンプル",
            "version": "1",
            "effective_date": dt.date(2026, 1, 1),
            "next_review": dt.date(2027, 1, 1),
        },
        "reporting": reporting,
    }
