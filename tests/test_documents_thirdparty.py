"""The documents' third-party, foreign-country and incident sections, and the report's
recipients and open incidents, rendered from the registers (issue 16).

Contractors (R-TPP-5), joint use (APPI 27条5項3号, R-TPP-6), the foreign
countries of handling (GL 10-7, PPC FAQ Q10-24) and the reporting routes
(R-INC-5) come from the policy; provision records (法29条) from a store; open
incidents with their deadlines from the incident register.
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid

from pathlib import Path
from typing import Any

import pytest

import custdata

from custdata._check import check_policy
from custdata.governance import (
    IncidentRegister,
    InMemoryIncidentStore,
    ProvisionRecord,
    contractor_findings,
    data_map,
    notice_drift,
    open_incidents,
    render_document,
    render_report,
)
from custdata.governance._documents import country_name


sys.path.insert(0, str(Path(__file__).parent))
from incident_fixtures import KNOWN, incident
from provision_fixtures import example_data


TODAY = dt.date(2027, 1, 1)
CANARY_SUBJECT = "subj-CANARY-7f3e"


def _policy(data: dict[str, Any]) -> custdata.Policy:
    return custdata.Policy.from_dict(data, source="test.toml")


def _abroad() -> custdata.Policy:
    """The example with its delivery contractor's sub-contractor in Viet Nam, published."""
    data = example_data()
    data["notice"]["foreign_countries"] = ["VN"]
    data["third_party"]["contractors"]["hayate_delivery"]["subcontractors"] = [
        {"name": "Saigon Sort Co.", "countries": ["VN"], "approved": True}
    ]
    return _policy(data)


class TestContractorsAndJointUse:
    @pytest.mark.parametrize("lang", ["ja", "en"])
    def test_regulation_lists_each_contractor_with_task_countries_and_review(
        self, sample_policy: custdata.Policy, lang: str
    ) -> None:
        """Clause 6 names every contractor, its task (the purpose's published text),
        where it handles the data, its assessment, re-outsourcing rule and review date."""
        text = render_document(sample_policy, "regulation", lang=lang)  # type: ignore[arg-type]
        clause = text.split("## 第6条" if lang == "ja" else "## Article 6")[1]
        clause = clause.split("\n## ")[0]
        c = sample_policy.third_party.contractors["hayate_delivery"]
        shipping = sample_policy.purposes["shipping"]
        assert c.name in clause
        assert (shipping.text_ja if lang == "ja" else shipping.text_en) in clause
        assert c.contract_id in clause
        assert f"{c.assessment_date} ({c.assessment_result})" in clause
        assert str(c.next_review_due) in clause
        assert c.subcontractors[0].name in clause
        assert ("事前承認" if lang == "ja" else "with prior approval") in clause
        assert "extension point" not in clause

    def test_a_second_contractor_is_listed_too(self) -> None:
        """The table has one row per registered contractor, not a fixed text."""
        data = example_data()
        data["third_party"]["contractors"]["mailhouse"] = {
            **data["third_party"]["contractors"]["hayate_delivery"],
            "name": "Mailhouse | Pte <Ltd>",
            "country": "SG",
            "countries": ["SG"],
            "purposes": ["marketing.email"],
            "categories": ["name", "contact.email"],
            "subcontractors": [],
        }
        data["notice"]["foreign_countries"] = ["SG"]
        text = render_document(_policy(data), "regulation", lang="en")
        rows = [line for line in text.splitlines() if line.startswith("| ")]
        mailhouse = next(r for r in rows if "Mailhouse" in r)
        # the name is escaped for Markdown: its pipe does not split the cell
        assert r"Mailhouse \| Pte \<Ltd\>" in mailhouse
        assert "| Singapore | Singapore |" in mailhouse
        assert "To send product and campaign news by e-mail" in mailhouse

    @pytest.mark.parametrize("lang", ["ja", "en"])
    def test_notice_publishes_the_five_joint_use_items(
        self, sample_policy: custdata.Policy, lang: str
    ) -> None:
        """APPI 27条5項3号: that the data is used jointly, the items, the users' scope,
        their purposes, and the responsible party's name, address and representative."""
        text = render_document(sample_policy, "notice", lang=lang)  # type: ignore[arg-type]
        section = text.split("## 7.")[1]
        j = sample_policy.third_party.joint_uses["sakura_group"]
        tax = sample_policy.taxonomy
        for key in j.items:
            assert (tax[key].label_ja if lang == "ja" else tax[key].label_en) in section
        assert j.scope in section
        marketing = sample_policy.purposes["marketing"]
        assert (marketing.text_ja if lang == "ja" else marketing.text_en) in section
        assert j.responsible_name in section
        assert j.responsible_address in section
        assert j.responsible_representative in section
        assert ("共同して利用" if lang == "ja" else "jointly") in section
        assert "extension point" not in section

    def test_drift_check_sees_a_changed_joint_use(
        self, sample_policy: custdata.Policy
    ) -> None:
        """The published notice must carry the joint use as the policy states it."""
        published = render_document(sample_policy, "notice", lang="ja")
        assert [] == notice_drift(sample_policy, published)
        data = example_data()
        data["third_party"]["joint_use"]["sakura_group"]["responsible_address"] = (
            "大阪府大阪市北区梅田1-1-1"
        )
        found = notice_drift(_policy(data), published)
        assert [
            ("PUB003", "third_party.joint_use.sakura_group.responsible_address")
        ] == [(d.code, d.key_path) for d in found]

    def test_no_joint_use_no_joint_use_section(self) -> None:
        """Without a joint-use declaration the notice says nothing of joint use."""
        data = example_data()
        del data["third_party"]["joint_use"]
        text = render_document(_policy(data), "notice", lang="en")
        assert "Joint use" not in text.split("## 7.")[1]
        assert "jointly" not in text.split("## 7.")[1]


class TestForeignCountries:
    @pytest.mark.parametrize(
        ("code", "lang", "name"),
        [
            ("US", "ja", "アメリカ合衆国"),
            ("us", "en", "United States"),
            ("VN", "ja", "ベトナム"),
            ("SG", "en", "Singapore"),
            ("Atlantis", "en", "Atlantis"),
        ],
    )
    def test_country_names_come_from_cldr(
        self, code: str, lang: str, name: str
    ) -> None:
        """An ISO 3166 code is printed as the country's name; other text as written."""
        assert name == country_name(code, lang)  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", ["regulation", "notice", "ledger"])
    def test_published_foreign_country_is_named(self, name: str) -> None:
        """The foreign countries of handling come from notice.foreign_countries."""
        text = render_document(_abroad(), name, lang="ja")
        # APPI 28条2項: the country by its name, not its ISO code
        assert "外国において個人データを取り扱っている国: ベトナム。" in text
        assert "外国において個人データを取り扱っていません" not in text

    @pytest.mark.parametrize("lang", ["ja", "en"])
    def test_drift_check_looks_for_the_country_name(self, lang: str) -> None:
        """PUB003: the published notice must name the country, as the notice prints it."""
        policy = _abroad()
        published = render_document(policy, "notice", lang=lang)  # type: ignore[arg-type]
        assert [] == notice_drift(policy, published)
        name = "ベトナム" if lang == "ja" else "Vietnam"
        found = notice_drift(policy, published.replace(name, "VN"))
        assert [("PUB003", "notice.foreign_countries.VN")] == [
            (d.code, d.key_path) for d in found
        ]

    def test_ropa_transfers_are_per_purpose(self) -> None:
        """GDPR 30(1)(e): a purpose whose contractor handles data abroad lists that
        country; a purpose no recipient abroad serves lists none."""
        text = render_document(_abroad(), "ropa", lang="en")
        rows = {
            line.split(" | ")[0].lstrip("| "): line.split(" | ")
            for line in text.splitlines()
            if line.startswith("| ") and " | customers | " in line
        }
        assert "Vietnam" == rows["shipping"][6]
        assert "none" == rows["billing"][6]

    def test_ropa_recipients_name_contractors_and_joint_users(
        self, sample_policy: custdata.Policy
    ) -> None:
        """GDPR 30(1)(d): recipients are listed per purpose, not "not recorded yet"."""
        text = render_document(sample_policy, "ropa", lang="en")
        assert "not recorded yet" not in text
        rows = {
            line.split(" | ")[0].lstrip("| "): line.split(" | ")
            for line in text.splitlines()
            if line.startswith("| ") and " | customers | " in line
        }
        hayate = sample_policy.third_party.contractors["hayate_delivery"]
        assert f"{hayate.name} (Japan)" == rows["shipping"][5]
        scope = sample_policy.third_party.joint_uses["sakura_group"].scope
        # joint use declared for marketing covers its sub-purposes
        assert f"{scope} (joint use)" == rows["marketing.email"][5]
        assert "none" == rows["billing"][5]


class TestDeprecatedAlias:
    def test_alias_alone_is_copied_to_the_notice_and_reported(self) -> None:
        """[third_party] published_foreign_countries still works, as an alias."""
        data = example_data()
        del data["notice"]["foreign_countries"]
        data["third_party"]["published_foreign_countries"] = ["US"]
        policy = _policy(data)
        assert ("US",) == policy.registers.notice.foreign_countries
        found = check_policy(policy, today=TODAY)
        assert [("POL007", "third_party.published_foreign_countries")] == [
            (f.code, f.key_path) for f in found if f.code == "POL007"
        ]
        assert (
            "Countries where personal data is handled: United States."
            in render_document(policy, "notice", lang="en")
        )

    def test_both_given_and_differing_is_refused(self) -> None:
        """Two homes saying different things is a ConfigurationError naming the alias."""
        data = example_data()
        data["notice"]["foreign_countries"] = ["VN"]
        data["third_party"]["published_foreign_countries"] = ["US"]
        with pytest.raises(custdata.ConfigurationError) as err:
            _policy(data)
        assert "third_party.published_foreign_countries" == err.value.key_path
        assert "notice.foreign_countries" in str(err.value)

    def test_empty_notice_list_against_alias_is_refused(self) -> None:
        """An explicit empty notice list differs from a non-empty alias."""
        data = example_data()
        data["notice"]["foreign_countries"] = []
        data["third_party"]["published_foreign_countries"] = ["US"]
        with pytest.raises(custdata.ConfigurationError):
            _policy(data)

    def test_both_given_and_equal_loads_with_the_finding(self) -> None:
        data = example_data()
        data["notice"]["foreign_countries"] = ["US", "VN"]
        data["third_party"]["published_foreign_countries"] = ["VN", "US"]
        policy = _policy(data)
        assert ("US", "VN") == policy.registers.notice.foreign_countries
        assert "POL007" in {f.code for f in check_policy(policy, today=TODAY)}

    def test_canonical_key_has_no_finding_and_feeds_ctr004(
        self, sample_policy: custdata.Policy
    ) -> None:
        """The example uses the canonical key; CTR004 reads the notice's list."""
        assert sample_policy.third_party.published_foreign_countries is None
        assert "POL007" not in {
            f.code for f in check_policy(sample_policy, today=TODAY)
        }
        data = example_data()
        data["third_party"]["contractors"]["hayate_delivery"]["countries"] = [
            "JP",
            "VN",
        ]
        assert ["CTR004"] == [
            f.code for f in contractor_findings(_policy(data), today=TODAY)
        ]
        data["notice"]["foreign_countries"] = ["VN"]
        assert [] == contractor_findings(_policy(data), today=TODAY)

    def test_programmatic_alias_is_folded_too(
        self, sample_policy: custdata.Policy
    ) -> None:
        """A Policy built in code with the deprecated attribute gets the same treatment."""
        import attrs

        tp = attrs.evolve(
            sample_policy.third_party, published_foreign_countries=("KR",)
        )
        policy = attrs.evolve(sample_policy, third_party=tp)
        assert ("KR",) == policy.registers.notice.foreign_countries
        notice = attrs.evolve(sample_policy.registers.notice, foreign_countries=("VN",))
        registers = attrs.evolve(sample_policy.registers, notice=notice)
        with pytest.raises(custdata.ConfigurationError):
            attrs.evolve(sample_policy, third_party=tp, registers=registers)


class TestReportingRoutes:
    @pytest.mark.parametrize("lang", ["ja", "en"])
    def test_incident_clause_lists_the_route_in_order(
        self, sample_policy: custdata.Policy, lang: str
    ) -> None:
        """Clause 7 names each step with who is told and the deadline it discharges,
        the reminders, the principal SLA and the GDPR contact point."""
        text = render_document(sample_policy, "regulation", lang=lang)  # type: ignore[arg-type]
        clause = text.split("## 第7条" if lang == "ja" else "## Article 7")[1]
        clause = clause.split("\n## ")[0]
        steps = [
            line for line in clause.splitlines() if line[:4] in ("| 1 ", "| 2 ", "| 3 ")
        ]
        assert 3 == len(steps)
        manager = sample_policy.persons["cs_manager"].name
        cpo = sample_policy.persons["cpo"].name
        assert manager in steps[0]
        assert cpo in steps[1]
        ppc = (
            "個人情報保護委員会への速報"
            if lang == "ja"
            else "Preliminary report to the PPC"
        )
        assert ppc in steps[2]
        reminders = (
            "各期限の24時間前、4時間前に督促する"
            if lang == "ja"
            else ("Reminders fall due 24 h, 4 h before each deadline")
        )
        assert reminders in clause
        sla = (
            "委託元に24時間以内に報告する"
            if lang == "ja"
            else "principal within 24 hours"
        )
        assert sla in clause
        assert "privacy@sakura-tsuhan.example" in clause
        assert "extension point" not in clause

    def test_no_routes_says_so(self) -> None:
        data = example_data()
        del data["reporting"]
        text = render_document(_policy(data), "regulation", lang="en")
        assert "No reporting route is registered" in text
        assert "principal within" not in text


def _record(rid: str, recipient: str, *, day: int) -> ProvisionRecord:
    at = dt.datetime(2026, 11, day, 9, 0, tzinfo=dt.timezone.utc)
    return ProvisionRecord(
        record_id=rid,
        kind="provision",
        basis="consent_27_1",
        method="each",
        counterparty_id=recipient,
        subjects=(CANARY_SUBJECT,),
        data_items=("name", "contact.email"),
        items={
            "recipient": {"id": recipient, "name": "Partner & Co.", "country": "JP"},
            "subjects": [CANARY_SUBJECT],
            "consent_fact": {CANARY_SUBJECT: "consent-CANARY"},
        },
        created_at=at,
        first_at=at,
        last_at=at,
        retain_until=at + dt.timedelta(days=3 * 365),
        pack_id="appi-2022-04",
    )


class TestProvisionRecords:
    @pytest.mark.parametrize("name", ["ledger", "ropa"])
    def test_records_are_grouped_by_recipient_without_subjects(
        self, sample_policy: custdata.Policy, name: str
    ) -> None:
        """Records list the recipient, basis, items, count and dates; never a subject."""
        records = [
            _record("r1", "partner", day=3),
            _record("r2", "partner", day=9),
            _record("r3", "partner", day=5),
        ]
        text = render_document(sample_policy, name, lang="en", records=records)
        row = next(line for line in text.splitlines() if "Partner & Co." in line)
        assert "consent (APPI Art. 27(1))" in row
        assert "| 3 | 2026-11-03 | 2026-11-09 |" in row
        assert "E-mail address, Name" in row
        assert CANARY_SUBJECT not in text
        assert "CANARY" not in text

    def test_without_records_the_ledger_points_to_the_store(
        self, sample_policy: custdata.Policy
    ) -> None:
        text = render_document(sample_policy, "ledger", lang="en")
        assert "kept in the provision record store" in text
        empty = render_document(sample_policy, "ledger", lang="en", records=[])
        assert "No provision to a third party is recorded." in empty
        assert "kept in the provision record store" not in empty


class TestReport:
    def test_data_map_draws_recipients_with_countries(self) -> None:
        """The picture has a node per contractor (with the countries where it and its
        sub-contractors handle the data) and per joint use, joined to their purposes."""
        policy = _abroad()
        picture = data_map(policy)
        recipients = {r[0]: r for r in picture.recipients}
        assert "Japan, Vietnam" == recipients["contractor.hayate_delivery"][3]
        assert "joint use" == recipients["joint_use.sakura_group"][2]
        assert ("p:shipping", "x:contractor.hayate_delivery") in picture.edges
        assert ("p:marketing", "x:joint_use.sakura_group") in picture.edges
        page = render_report(policy, today=TODAY)["index.html"]
        assert 'class="node recipient" data-id="contractor.hayate_delivery"' in page
        assert "Japan, Vietnam" in page
        assert 'id="recipients"' in page

    def test_recipient_names_are_escaped(self) -> None:
        data = example_data()
        data["third_party"]["contractors"]["hayate_delivery"]["name"] = (
            "<script>x</script>"
        )
        page = render_report(_policy(data), today=TODAY)["index.html"]
        assert "<script>" not in page
        assert "&lt;script&gt;" in page

    def test_open_incidents_with_their_deadlines(
        self, sample_policy: custdata.Policy
    ) -> None:
        """Open incidents list each item still to do with its deadline and status; a
        done item is left out, an unclassified incident asks to be classified, and a
        register with nothing open says so."""
        register = IncidentRegister(
            InMemoryIncidentStore(),
            taxonomy=sample_policy.taxonomy,
            routes=sample_policy.reporting,
        )
        assert [] == open_incidents(register, today=dt.date(2026, 3, 10))
        page = render_report(sample_policy, today=TODAY, incidents=register)[
            "index.html"
        ]
        assert "No open incident." in page
        register.open(
            incident(malicious=True, incident_id="INC-A"), actor="u-sec", now=KNOWN
        )
        register.classify("INC-A", actor="u-sec", now=KNOWN)
        register.notified(
            "INC-A", "ppc_preliminary", actor="u-sec", recipient="ppc", now=KNOWN
        )
        register.open(incident(incident_id="INC-B"), actor="u-sec", now=KNOWN)
        found = open_incidents(register, today=dt.date(2026, 4, 10))
        assert ["INC-A", "INC-B"] == [i["id"] for i in found]
        a = {item["label"]: item for item in found[0]["items"]}
        assert not any("Preliminary" in label for label in a)
        final = a["Final report to the PPC (確報)"]
        assert final["due"].startswith("2026-04-03")
        assert "overdue" == final["status"]
        assert "promptly" == a["Notice to the data subjects (promptly)"]["due"]
        assert [
            {"label": "classify the incident", "due": "promptly", "status": "open"}
        ] == (found[1]["items"])
        page = render_report(
            sample_policy, today=dt.date(2026, 3, 10), incidents=register
        )["index.html"]
        assert "INC-A" in page
        assert "INC-B" in page
        assert "Final report to the PPC" in page
        assert "No incident register was given" not in page

    def test_report_passes_records_to_the_documents(
        self, sample_policy: custdata.Policy
    ) -> None:
        pages = render_report(
            sample_policy, today=TODAY, records=[_record("r1", "partner", day=3)]
        )
        assert "Partner &amp; Co." in pages["ledger.en.html"]
        assert CANARY_SUBJECT not in "".join(pages.values())


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custdata.toml"


class TestCommandLine:
    """``custdata report --incidents`` and ``--provision-records`` read the real stores
    on each database of the matrix."""

    def test_report_lists_open_incidents_from_the_database(
        self, db_url: str, tmp_path: Path, sample_policy: custdata.Policy
    ) -> None:
        from sqlalchemy import create_engine

        from custdata.cli import main
        from custdata.sqlalchemy import SqlIncidentStore

        prefix = f"t16i_{uuid.uuid4().hex[:6]}"
        engine = create_engine(db_url, hide_parameters=True)
        store = SqlIncidentStore(engine, prefix=prefix)
        store.create_tables()
        try:
            register = IncidentRegister(store, taxonomy=sample_policy.taxonomy)
            register.open(
                incident(malicious=True, incident_id="INC-SQL"),
                actor="u-sec",
                now=KNOWN,
            )
            register.classify("INC-SQL", actor="u-sec", now=KNOWN)
            out = tmp_path / "r"
            argv = ["report", "--policy", str(EXAMPLE), "--html", str(out)]
            argv += ["--incidents", db_url, "--incident-prefix", prefix]
            assert 0 == main([*argv, "--today", "2026-03-10"])
            page = (out / "index.html").read_text(encoding="utf-8")
            assert "INC-SQL" in page
            assert "Preliminary report to the PPC" in page
            assert "overdue" in page
        finally:
            t = store.tables
            for table in (t.subject, t.timeline, t.incident):
                table.drop(engine, checkfirst=True)
            engine.dispose()

    def test_report_on_a_database_without_the_tables(self, tmp_path: Path) -> None:
        """A database that never held incidents or provision records has none."""
        from custdata.cli import main

        url = f"sqlite:///{tmp_path / 'empty.db'}"
        out = tmp_path / "r"
        argv = ["report", "--policy", str(EXAMPLE), "--html", str(out)]
        argv += ["--incidents", url, "--provision-records", url]
        assert 0 == main([*argv, "--today", "2026-03-10"])
        assert "No open incident." in (out / "index.html").read_text(encoding="utf-8")
        ledger = (out / "ledger.en.html").read_text(encoding="utf-8")
        assert "No provision to a third party is recorded." in ledger

    @pytest.mark.parametrize(
        "option", ["--incidents", "--provision-records"], ids=["incidents", "records"]
    )
    def test_bad_url_is_one_line_without_the_url(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
    ) -> None:
        from custdata.cli import main

        url = "nosuchdialect://user:SECRET-CANARY@host/db"
        argv = ["report", "--policy", str(EXAMPLE), "--html", str(tmp_path / "r")]
        assert 2 == main([*argv, option, url])
        err = capsys.readouterr().err
        assert 1 == len(err.strip().splitlines())
        assert "SECRET-CANARY" not in err
        assert option in err

    def test_docs_render_lists_provision_records_from_the_database(
        self, db_url: str, tmp_path: Path
    ) -> None:
        from sqlalchemy import create_engine

        from custdata.cli import main
        from custdata.sqlalchemy import SqlProvisionRecordStore

        engine = create_engine(db_url, hide_parameters=True)
        store = SqlProvisionRecordStore(engine, create=True)
        try:
            store.add(_record("r-sql-1", "partner", day=3))
            store.add(_record("r-sql-2", "partner", day=7))
            out = tmp_path / "docs"
            argv = ["docs", "render", "--policy", str(EXAMPLE), "--out", str(out)]
            assert 0 == main([*argv, "--lang", "en", "--provision-records", db_url])
            ledger = (out / "ledger.en.md").read_text(encoding="utf-8")
            row = next(line for line in ledger.splitlines() if "Partner & Co." in line)
            assert "| 2 | 2026-11-03 | 2026-11-07 |" in row
            assert CANARY_SUBJECT not in ledger
        finally:
            store._tables.subject.drop(engine, checkfirst=True)
            store._tables.record.drop(engine, checkfirst=True)
            engine.dispose()
