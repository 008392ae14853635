"""The provision gate's golden suite: one legal scenario per test, citing its article.

法 = 個人情報の保護に関する法律 (APPI); 規則 = its enforcement rules; GL = the PPC's
guidelines. Every scenario runs on a frozen clock (``T0``) against the example
policy (``examples/custdata.toml``) and an in-test consent source.
"""

from __future__ import annotations

import datetime as dt
import sys

from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).parent))
import custdata

from custdata.governance import (
    Basis,
    ForeignTransferInfo,
    InMemoryProvisionRecordStore,
    Provider,
    ReceiptRequest,
    Recipient,
    RelatedInfoRequest,
    retain_until,
    rule_pack,
)
from provision_fixtures import (
    DELIVERY,
    GROUP_CARD,
    PARTNER,
    T0,
    US_PARTNER,
    DictConsent,
    RacingStore,
    example_data,
    make_gate,
    optout_policy,
    policy_with,
    request,
)


def years(when: dt.datetime, n: int) -> dt.datetime:
    """*when* moved *n* calendar years (hand-computed fixtures, no leap days here)."""
    return when.replace(year=when.year + n)


def consenting(*subjects: str, purpose: str = "marketing.third_party") -> DictConsent:
    consent = DictConsent()
    for s in subjects:
        consent.give(s, purpose)
    return consent


def optout_receipt(gate: custdata.governance.ProvisionGate, subject: str) -> None:
    """Record that *subject*'s data came to us by an opt-out provision."""
    gate.receive(
        ReceiptRequest(
            provider=Provider(
                name="名簿商事", address="東京都", representative="代表 名簿 太郎"
            ),
            how_acquired="opt-out provision notified to the PPC",
            subjects=[subject],
            data_items=["name", "contact.address"],
            basis="optout",
            ppc_published=True,
        ),
        now=T0 - dt.timedelta(days=100),
    )


class TestConsentProvision:
    """27条1項: provision with the subject's prior consent, recorded per 29条."""

    def test_consent_provision_records_the_consent_fact(self) -> None:
        """法27条1項, 29条1項, 規則20条1項2号: consent → a record with the consent fact,
        recipient, subjects and data items; kept 3 years from creation (規則21条3号)."""
        consent = consenting("s-1", "s-2")
        gate = make_gate(consent=consent)
        decision = gate.decide(request(), now=T0)
        record = gate.record(decision, now=T0)
        assert record is not None
        assert ("consent_fact", "recipient", "subjects", "data_items") == tuple(
            record.items
        )
        assert {"s-1": "consent-1", "s-2": "consent-2"} == record.items["consent_fact"]
        assert "星野食品株式会社 (Hoshino Foods)" == record.items["recipient"]["name"]
        assert ["s-1", "s-2"] == record.items["subjects"]
        assert ["contact.email"] == record.items["data_items"]["categories"]
        assert years(T0, 3) == record.retain_until
        assert [record] == gate.records.all()
        assert "appi-2024-04" == record.pack_id

    def test_consent_missing_for_one_subject_is_refused(self) -> None:
        """法27条1項: without consent in force for every subject, nothing goes and
        nothing is recorded."""
        gate = make_gate(consent=consenting("s-1"))
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            gate.decide(request(), now=T0)
        assert "consent_missing" == info.value.code
        assert "法27条1項" == info.value.article
        assert "1 of 2 subject(s)" in str(info.value)
        assert [] == gate.records.all()

    def test_withdrawn_consent_is_not_in_force(self) -> None:
        """法27条1項: consent withdrawn before the provision does not carry it; the
        source is asked about the provision's time."""
        consent = DictConsent()
        consent.give(
            "s-1", "marketing.third_party", withdrawn=T0 - dt.timedelta(days=1)
        )
        gate = make_gate(consent=consent)
        with pytest.raises(custdata.ProvisionRefusedError, match="consent"):
            gate.decide(request(subjects=["s-1"]), now=T0)
        assert [("s-1", "marketing.third_party", T0)] == consent.asked

    def test_consent_basis_needs_a_consent_source(self) -> None:
        """法27条1項: a gate without a consent source cannot decide consent bases."""
        with pytest.raises(custdata.ConfigurationError, match="consent source"):
            make_gate().decide(request(), now=T0)


class TestOptOut:
    """27条2項: opt-out provision and what it may never carry."""

    def test_special_care_data_is_refused(self) -> None:
        """法27条2項ただし書: 要配慮個人情報 cannot be provided by opt-out."""
        gate = make_gate(optout_policy())
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            gate.decide(
                request(
                    basis=Basis.OPTOUT_27_2,
                    categories=["name", "special_care.medical_history"],
                    fields=["name", "history"],
                ),
                now=T0,
            )
        assert "special_care_optout" == info.value.code
        assert "法27条2項ただし書" == info.value.article

    def test_data_acquired_by_optout_is_refused(self) -> None:
        """法27条2項ただし書: data itself obtained by opt-out cannot be passed on by opt-out."""
        gate = make_gate(optout_policy())
        optout_receipt(gate, "s-2")
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            gate.decide(request(basis=Basis.OPTOUT_27_2), now=T0)
        assert "optout_acquired" == info.value.code

    def test_optout_record_has_the_date_and_no_consent_fact(self) -> None:
        """法29条1項, 規則20条1項1号: opt-out → provision date, recipient, subjects,
        items; no consent fact."""
        gate = make_gate(optout_policy())
        record = gate.record(gate.decide(request(basis="optout_27_2"), now=T0), now=T0)
        assert record is not None
        assert ("provided_on", "recipient", "subjects", "data_items") == tuple(
            record.items
        )
        assert ["2026-11-02"] == record.items["provided_on"]

    def test_unspecified_many_recipients_are_recorded_as_such(self) -> None:
        """規則20条1項1号ロ: to unspecified many persons, the record says so instead of
        naming a recipient."""
        gate = make_gate(optout_policy())
        public = Recipient(id="public-list", name="-", unspecified_many=True)
        record = gate.record(
            gate.decide(request(basis="optout_27_2", recipient=public), now=T0), now=T0
        )
        assert record is not None
        assert {
            "id": "public-list",
            "name": "不特定多数 (unspecified many persons)",
        } == record.items["recipient"]

    def test_optout_without_ppc_notification_is_refused(self) -> None:
        """法27条2項: opt-out provision needs the PPC notified beforehand."""
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            make_gate().decide(request(basis="optout_27_2"), now=T0)
        assert "optout_not_notified" == info.value.code
        early = dt.datetime(2026, 3, 31, tzinfo=dt.timezone.utc)
        with pytest.raises(custdata.ProvisionRefusedError):
            make_gate(optout_policy()).decide(request(basis="optout_27_2"), now=early)

    def test_optout_cannot_be_recorded_in_bulk(self) -> None:
        """規則19条2項: the bulk record is not available for opt-out provision."""
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            make_gate(optout_policy()).decide(
                request(basis="optout_27_2", method="bulk"), now=T0
            )
        assert "optout_method" == info.value.code


class TestExemptBases:
    """No provider's record: 27条1項各号 and 27条5項 (法29条1項ただし書)."""

    def test_statutory_exception_needs_no_record(self) -> None:
        """法27条1項1号, 29条1項ただし書: a provision required by law is not recorded."""
        gate = make_gate()
        decision = gate.decide(
            request(basis=Basis.EXCEPTION_27_1, exception="27_1_1"), now=T0
        )
        assert not decision.record_required
        assert gate.record(decision, now=T0) is None
        assert [] == gate.records.all()

    def test_unknown_exception_is_refused(self) -> None:
        """法27条1項: only the listed exceptions (各号) dispense with consent."""
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            make_gate().decide(
                request(basis=Basis.EXCEPTION_27_1, exception="because"), now=T0
            )
        assert "unknown_exception" == info.value.code

    def test_outsourcing_within_the_entrusted_scope_needs_no_record(self) -> None:
        """法27条5項1号, 29条1項ただし書: outsourcing → no record."""
        gate = make_gate()
        decision = gate.decide(
            request(
                recipient=DELIVERY,
                basis=Basis.OUTSOURCING_27_5_1,
                purpose="shipping",
                fields=["name", "address"],
                categories=["name", "contact.address"],
            ),
            now=T0,
        )
        assert () == decision.record_items
        assert () == decision.warnings
        assert gate.record(decision, now=T0) is None

    def test_business_succession_needs_no_record(self) -> None:
        """法27条5項2号: a successor by merger is no third party; no record."""
        gate = make_gate()
        decision = gate.decide(
            request(
                recipient=Recipient(id="successor", name="新さくら通販株式会社"),
                basis=Basis.SUCCESSION_27_5_2,
                purpose="billing",
            ),
            now=T0,
        )
        assert gate.record(decision, now=T0) is None


class TestOutsourcing:
    """27条5項1号 within the entrusted scope; supervision of contractors (法25条, GL 3-4-4)."""

    def _outsource(
        self, gate: custdata.governance.ProvisionGate, **changes: object
    ) -> object:
        base: dict[str, object] = {
            "recipient": DELIVERY,
            "basis": Basis.OUTSOURCING_27_5_1,
            "purpose": "shipping",
            "fields": ["name"],
            "categories": ["name"],
        }
        base.update(changes)
        return gate.decide(request(**base), now=T0)

    @pytest.mark.parametrize(
        ("changes", "code"),
        [
            ({"categories": ["payment.card"]}, "outside_entrusted_categories"),
            ({"purpose": "billing"}, "outside_entrusted_purposes"),
            (
                {"recipient": Recipient(id="stranger", name="x")},
                "unknown_contractor",
            ),
        ],
        ids=["category", "purpose", "unregistered"],
    )
    def test_beyond_the_entrusted_scope_is_refused(
        self, changes: dict[str, object], code: str
    ) -> None:
        """法27条5項1号: outsourcing covers only the entrusted purposes and categories
        of a registered contractor."""
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            self._outsource(make_gate(), **changes)
        assert code == info.value.code

    def test_review_overdue_is_refused(self) -> None:
        """法25条, GL 3-4-4 ③: a contractor whose review is overdue gets nothing."""
        gate = make_gate(policy_with(next_review_due=dt.date(2026, 10, 31)))
        with pytest.raises(custdata.ContractorReviewOverdueError) as info:
            self._outsource(gate)
        assert "overdue for review (review due 2026-10-31)" in str(info.value)
        assert isinstance(info.value, custdata.ProvisionRefusedError)

    def test_review_overdue_warns_when_configured(self) -> None:
        """法25条: ``on_review_overdue = "warn"`` lets it pass with a warning."""
        data = example_data()
        data["third_party"]["on_review_overdue"] = "warn"
        data["third_party"]["contractors"]["hayate_delivery"]["next_review_due"] = (
            dt.date(2026, 10, 31)
        )
        gate = make_gate(custdata.Policy.from_dict(data))
        decision = self._outsource(gate)
        assert 1 == len(decision.warnings)  # type: ignore[attr-defined]
        assert "overdue" in decision.warnings[0]  # type: ignore[attr-defined]

    def test_missing_assessment_is_refused(self) -> None:
        """GL 3-4-4 ①: a contractor never assessed (or failed) is not supervised."""
        data = example_data()
        del data["third_party"]["contractors"]["hayate_delivery"]["assessment_date"]
        gate = make_gate(custdata.Policy.from_dict(data))
        with pytest.raises(custdata.ContractorReviewOverdueError, match="assessment"):
            self._outsource(gate)

    @pytest.mark.parametrize(
        ("rule", "approved", "allowed"),
        [
            ("prior_approval", False, False),
            ("prior_approval", True, True),
            ("forbidden", True, False),
            ("notify", False, True),
        ],
    )
    def test_subcontractor_needs_approval(
        self, rule: str, approved: bool, allowed: bool
    ) -> None:
        """GL 3-4-4 (再委託), GDPR Art. 28(2): a sub-contractor without the approval
        the re-outsourcing rule needs blocks the provision."""
        data = example_data()
        entry = data["third_party"]["contractors"]["hayate_delivery"]
        entry["re_outsourcing"] = rule
        entry["subcontractors"][0]["approved"] = approved
        gate = make_gate(custdata.Policy.from_dict(data))
        if allowed:
            self._outsource(gate)
            return
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            self._outsource(gate)
        assert "subcontractor_not_approved" == info.value.code


class TestJointUse:
    """27条5項3号: joint use within the five notified items."""

    def _joint(self, **changes: object) -> object:
        base: dict[str, object] = {
            "recipient": GROUP_CARD,
            "basis": Basis.JOINT_USE_27_5_3,
            "joint_use": "sakura_group",
            "purpose": "marketing.email",
            "categories": ["contact.email"],
        }
        base.update(changes)
        return make_gate().decide(request(**base), now=T0)

    def test_within_the_declared_scope_needs_no_record(self) -> None:
        """法27条5項3号, 29条1項ただし書: joint use in scope → allowed, no record."""
        assert () == self._joint().record_items  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        "changes",
        [
            {"recipient": PARTNER},
            {"categories": ["payment.card"]},
            {"purpose": "billing"},
            {"joint_use": "nobody"},
        ],
        ids=["party", "item", "purpose", "undeclared"],
    )
    def test_outside_the_declared_scope_is_refused(
        self, changes: dict[str, object]
    ) -> None:
        """法27条5項3号: a party, item or purpose outside the notice is a third party."""
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            self._joint(**changes)
        assert "法27条5項3号" == info.value.article

    def test_before_the_notice_is_refused(self) -> None:
        """法27条5項3号: the notice must come *in advance* (あらかじめ)."""
        gate = make_gate()
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            gate.decide(
                request(
                    recipient=GROUP_CARD,
                    basis=Basis.JOINT_USE_27_5_3,
                    joint_use="sakura_group",
                    purpose="marketing.email",
                ),
                now=dt.datetime(2026, 9, 30, tzinfo=dt.timezone.utc),
            )
        assert "joint_use_not_notified" == info.value.code


class TestForeignTransfer:
    """28条: a recipient in a foreign country."""

    def test_consent_without_the_three_items_is_refused(self) -> None:
        """法28条2項, 規則17条2項: consent counts only after informing of the country,
        its regime and the recipient's measures."""
        gate = make_gate(consent=consenting("s-1", "s-2"))
        partial = ForeignTransferInfo(country="US", regime="CCPA and state laws")
        for info in (None, partial):
            with pytest.raises(custdata.ProvisionRefusedError) as refused:
                gate.decide(
                    request(
                        recipient=US_PARTNER,
                        basis=Basis.FOREIGN_CONSENT_28_1,
                        foreign=info,
                    ),
                    now=T0,
                )
            assert "foreign_info_missing" == refused.value.code

    def test_consent_with_the_three_items_is_recorded(self) -> None:
        """法28条1項, 29条1項, 規則20条1項2号: recorded with the consent fact and the
        information given."""
        gate = make_gate(consent=consenting("s-1", "s-2"))
        info = ForeignTransferInfo(
            country="US",
            regime="No comprehensive federal law; CCPA applies",
            recipient_measures="ISO 27001, encryption at rest",
        )
        decision = gate.decide(
            request(
                recipient=US_PARTNER, basis=Basis.FOREIGN_CONSENT_28_1, foreign=info
            ),
            now=T0,
        )
        record = gate.record(decision, now=T0)
        assert record is not None
        assert "consent_fact" in record.items
        assert "US" == record.items["foreign_transfer"]["country"]
        assert "US" == record.items["recipient"]["country"]

    def test_domestic_basis_to_a_foreign_recipient_is_refused(self) -> None:
        """法28条1項: 27条 consent does not cover a foreign third party."""
        gate = make_gate(consent=consenting("s-1", "s-2"))
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            gate.decide(request(recipient=US_PARTNER), now=T0)
        assert "foreign_recipient" == info.value.code

    def test_equivalent_system_needs_its_record(self) -> None:
        """法28条1項, 規則16条: an equivalent system (基準適合体制) must be on record."""
        gate = make_gate()
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            gate.decide(
                request(recipient=US_PARTNER, basis=Basis.FOREIGN_EQUIVALENT_28_1),
                now=T0,
            )
        assert "equivalence_missing" == info.value.code
        decision = gate.decide(
            request(
                recipient=US_PARTNER,
                basis=Basis.FOREIGN_EQUIVALENT_28_1,
                foreign=ForeignTransferInfo(country="US", equivalence_record="EQ-12"),
            ),
            now=T0,
        )
        assert decision.record_required

    def test_outsourcing_abroad_needs_an_equivalence_record(self) -> None:
        """法28条1項: 27条5項 does not apply to a foreign third party."""
        data = example_data()
        data["third_party"]["contractors"]["hayate_delivery"]["country"] = "VN"
        gate = make_gate(custdata.Policy.from_dict(data))
        # The registry says where the contractor is, whatever the request says.
        recipient = Recipient(id="hayate_delivery", name="Hayate VN")
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            gate.decide(
                request(
                    recipient=recipient,
                    basis=Basis.OUTSOURCING_27_5_1,
                    purpose="shipping",
                    categories=["name"],
                ),
                now=T0,
            )
        assert "equivalence_missing" == info.value.code


class TestRecordMethods:
    """規則19条: each provision, bulk, or the contract document; 規則21条 retention."""

    def test_bulk_record_is_kept_until_last_provision_plus_three_years(self) -> None:
        """規則19条2項, 21条2号: one bulk record per recipient; kept 3 years after the
        *last* provision it covers (frozen clock)."""
        consent = consenting("s-1", "s-2", "s-3")
        gate = make_gate(consent=consent)
        first = gate.record(gate.decide(request(method="bulk"), now=T0), now=T0)
        later = T0 + dt.timedelta(days=45)
        second = gate.record(
            gate.decide(request(method="bulk", subjects=["s-3"]), now=later), now=later
        )
        assert first is not None
        assert second is not None
        assert first.record_id == second.record_id
        assert 1 == len(gate.records.all())
        assert ("s-1", "s-2", "s-3") == second.subjects
        assert T0 == second.first_at
        assert later == second.last_at
        assert dt.datetime(2029, 12, 17, 9, 30, tzinfo=dt.timezone.utc) == (
            second.retain_until
        )
        assert {"s-1", "s-2", "s-3"} == set(second.items["consent_fact"])

    def test_concurrent_extension_of_a_bulk_record_loses_nothing(self) -> None:
        """規則19条2項: when another process extends the bulk record between our read
        and our write, our write is refused and merged again: both provisions stay."""
        consent = consenting("s-1", "s-2", "s-3")
        inner = InMemoryProvisionRecordStore()
        gate = make_gate(consent=consent, records=inner)
        gate.record(
            gate.decide(request(method="bulk", subjects=["s-1"]), now=T0), now=T0
        )

        def other_process(store: InMemoryProvisionRecordStore) -> None:
            other = make_gate(consent=consent, records=store)
            later = T0 + dt.timedelta(days=1)
            decision = other.decide(request(method="bulk", subjects=["s-2"]), now=later)
            other.record(decision, now=later)

        racing = RacingStore(inner, other_process)
        ours = make_gate(consent=consent, records=racing)  # type: ignore[arg-type]
        when = T0 + dt.timedelta(days=2)
        record = ours.record(
            ours.decide(request(method="bulk", subjects=["s-3"]), now=when), now=when
        )
        assert record is not None
        assert [False, True] == racing.replaced
        assert ("s-1", "s-2", "s-3") == record.subjects
        assert 2 == record.revision
        assert [record] == inner.all()

    def test_contract_substitute_is_kept_one_year_after_the_last_provision(
        self,
    ) -> None:
        """規則19条3項, 21条1号: the contract document stands in; kept 1 year after the
        last provision, and it must name the contract."""
        gate = make_gate(consent=consenting("s-1", "s-2"))
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            gate.decide(request(method="contract"), now=T0)
        assert "contract_ref_missing" == info.value.code
        record = gate.record(
            gate.decide(request(method="contract", contract_ref="K-77"), now=T0),
            now=T0,
        )
        assert record is not None
        assert years(T0, 1) == record.retain_until
        assert "K-77" == record.items["contract_ref"]

    def test_retention_arithmetic_keeps_the_latest_candidate(self) -> None:
        """法29条2項, 規則21条: every candidate date computed, the latest kept."""
        pack = rule_pack("appi", T0.date())
        last = T0 + dt.timedelta(days=400)
        assert years(T0, 3) == retain_until(
            "each", created_at=T0, last_at=last, pack=pack
        )
        assert years(last, 3) == retain_until(
            "bulk", created_at=T0, last_at=last, pack=pack
        )
        assert years(last, 1) == retain_until(
            "contract", created_at=T0, last_at=last, pack=pack
        )
        assert years(T0, 5) == retain_until(
            "contract", created_at=T0, last_at=last, pack=pack, previous=years(T0, 5)
        )

    def test_expired_records_are_purged(self) -> None:
        """法29条2項: a record past its period may go; a younger one stays."""
        gate = make_gate(consent=consenting("s-1", "s-2"))
        old = gate.record(gate.decide(request(), now=T0), now=T0)
        young = gate.record(
            gate.decide(request(), now=T0 + dt.timedelta(days=10)),
            now=T0 + dt.timedelta(days=10),
        )
        assert old is not None
        assert young is not None
        assert 0 == gate.records.purge_expired(years(T0, 3))
        assert 1 == gate.records.purge_expired(years(T0, 3) + dt.timedelta(days=1))
        assert [young] == gate.records.all()


class TestReceipt:
    """30条: confirmation and record when receiving data from a third party."""

    def _receipt(self, **changes: object) -> ReceiptRequest:
        base: dict[str, object] = {
            "provider": Provider(
                name="星野食品株式会社", address="大阪府", representative="星野 一"
            ),
            "how_acquired": "collected from its own customers with consent to provide",
            "subjects": ["s-9"],
            "data_items": ["name", "contact.email"],
            "basis": "consent",
            "consent_fact": "consent screen v3, 2026-06-01",
        }
        base.update(changes)
        return ReceiptRequest(**base)  # type: ignore[arg-type]

    def test_missing_how_acquired_is_refused(self) -> None:
        """法30条1項2号, 規則22条: without 取得の経緯 the data cannot be accepted."""
        gate = make_gate()
        with pytest.raises(custdata.ReceiptRefusedError) as info:
            gate.receive(self._receipt(how_acquired=" "), now=T0)
        assert ("how_acquired",) == info.value.missing
        assert [] == gate.records.all()

    def test_corporation_without_representative_is_refused(self) -> None:
        """法30条1項1号: a corporate provider's representative must be confirmed."""
        provider = Provider(name="x株式会社", address="東京都")
        with pytest.raises(custdata.ReceiptRefusedError) as info:
            make_gate().receive(self._receipt(provider=provider), now=T0)
        assert ("provider.representative",) == info.value.missing

    def test_consent_receipt_record_items_and_retention(self) -> None:
        """法30条3項, 規則24条1項2号, 25条: provider, 取得の経緯, subjects, items and the
        consent fact; kept 3 years."""
        record = make_gate().receive(self._receipt(), now=T0)
        assert (
            "consent_fact",
            "provider",
            "how_acquired",
            "subjects",
            "data_items",
        ) == tuple(record.items)
        assert "星野 一" == record.items["provider"]["representative"]
        assert years(T0, 3) == record.retain_until

    def test_optout_receipt_needs_the_ppc_publication(self) -> None:
        """規則24条1項1号: opt-out data → the PPC's publication confirmed and recorded."""
        gate = make_gate()
        with pytest.raises(custdata.ReceiptRefusedError) as info:
            gate.receive(self._receipt(basis="optout"), now=T0)
        assert ("ppc_published",) == info.value.missing
        record = gate.receive(self._receipt(basis="optout", ppc_published=True), now=T0)
        assert record.items["ppc_published"] is True
        assert ["2026-11-02"] == record.items["received_on"]

    def test_provider_not_a_business_has_fewer_items(self) -> None:
        """規則24条1項3号: from a private person, the items of ①② plus subjects and items."""
        provider = Provider(
            name="個人 太郎", address="東京都", corporation=False, business=False
        )
        record = make_gate().receive(
            self._receipt(provider=provider, consent_fact=""), now=T0
        )
        assert "non_business" == record.basis
        assert ("provider", "how_acquired", "subjects", "data_items") == tuple(
            record.items
        )


class TestDisclosure:
    """33条5項: the person may have the records naming them disclosed."""

    def test_subject_sees_exactly_the_records_naming_them(self) -> None:
        """法33条5項: disclosure for S holds every provision and receipt record naming
        S, and nothing of other subjects."""
        consent = consenting("S", "T", "U")
        gate = make_gate(consent=consent)
        bulk = gate.record(
            gate.decide(request(subjects=["S", "T"], method="bulk"), now=T0), now=T0
        )
        other = gate.record(gate.decide(request(subjects=["U"]), now=T0), now=T0)
        receipt = TestReceipt()._receipt(subjects=["S"])
        received = gate.receive(receipt, now=T0 + dt.timedelta(hours=1))
        assert bulk is not None
        assert other is not None
        shown = gate.disclose("S")
        assert "S" == shown["subject"]
        assert [bulk.record_id, received.record_id] == [
            r["record_id"] for r in shown["records"]
        ]
        assert all(["S"] == r["subjects"] for r in shown["records"])
        assert {"S": "consent-1"} == shown["records"][0]["items"]["consent_fact"]
        assert ["S"] == shown["records"][0]["items"]["subjects"]
        assert [] == gate.disclose("nobody")["records"]


class TestRelatedInformation:
    """31条: 個人関連情報 (cookie and device identifiers)."""

    def test_linking_recipient_without_consent_confirmation_is_refused(self) -> None:
        """法31条1項1号: the recipient must confirm the persons consented."""
        ad = Recipient(id="adnet", name="AdNet KK")
        gate = make_gate()
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            gate.provide_related_info(
                RelatedInfoRequest(recipient=ad, data_items=["cookie_id"], count=10),
                now=T0,
            )
        assert "related_info_consent_missing" == info.value.code
        record = gate.provide_related_info(
            RelatedInfoRequest(
                recipient=ad,
                data_items=["cookie_id"],
                count=10,
                consent_confirmation="AdNet letter 2026-10-30",
            ),
            now=T0,
        )
        assert record is not None
        assert "AdNet letter 2026-10-30" == record.items["consent_confirmed"]
        assert years(T0, 3) == record.retain_until
        assert (
            gate.provide_related_info(
                RelatedInfoRequest(
                    recipient=ad, data_items=["cookie_id"], recipient_will_link=False
                ),
                now=T0,
            )
            is None
        )


class TestMisuse:
    """Bad input at the public boundary."""

    def test_naive_time_is_a_value_error(self) -> None:
        """Every clock argument must be time-zone aware."""
        with pytest.raises(ValueError, match="aware"):
            make_gate().decide(request(), now=T0.replace(tzinfo=None))

    def test_no_subject_is_a_value_error(self) -> None:
        """A provision of nobody's data is a mistake, not a provision."""
        with pytest.raises(ValueError, match="at least one subject"):
            make_gate().decide(request(subjects=[]), now=T0)

    def test_one_string_is_not_a_subject_list(self) -> None:
        """``subjects="abc"`` would be three subjects: refused."""
        with pytest.raises(TypeError):
            request(subjects="s-1")

    def test_unknown_purpose_is_refused(self) -> None:
        """法17条1項: only a declared purpose of use can carry a provision."""
        with pytest.raises(custdata.ProvisionRefusedError) as info:
            make_gate().decide(request(purpose="resale"), now=T0)
        assert "unknown_purpose" == info.value.code

    def test_store_refuses_duplicate_ids(self) -> None:
        """A record id is never reused."""
        store = InMemoryProvisionRecordStore()
        gate = make_gate(consent=consenting("s-1", "s-2"), records=store)
        record = gate.record(gate.decide(request(), now=T0), now=T0)
        assert record is not None
        with pytest.raises(ValueError, match="exists"):
            store.add(record)
