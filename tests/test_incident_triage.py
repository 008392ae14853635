"""Reportability (issue 14, R-INC-2, R-SEC-2, R-GOV-6): 規則7条 and GDPR 33/34.

The golden table of R-INC-2, the encryption exemption as a candidate backed by
key custody evidence, the 2022 and 2024 packs differing only for web skimming,
and GDPR assessed alongside.
"""

from __future__ import annotations

import sys

from pathlib import Path

import pytest

import custdata

from custdata.crypto import Keyring, LocalKeyProvider
from custdata.governance import (
    AffectedField,
    IncidentScope,
    Reportability,
    classify,
    key_custody,
    rule_pack,
)


sys.path.insert(0, str(Path(__file__).resolve().parent))

from incident_fixtures import CUSTODY, incident


GOLDEN = [
    # (case, categories, subjects, malicious, encrypted, status, category numbers)
    (
        "1 subject with 病歴",
        ("special_care.medical_history",),
        1,
        False,
        False,
        Reportability.REPORTABLE,
        (1,),
    ),
    (
        "1 card number",
        ("payment.card",),
        1,
        False,
        False,
        Reportability.REPORTABLE,
        (2,),
    ),
    (
        "ransomware on 10 rows",
        ("contact.email", "name"),
        10,
        True,
        False,
        Reportability.REPORTABLE,
        (3,),
    ),
    (
        "1,001 e-mails",
        ("contact.email",),
        1001,
        False,
        False,
        Reportability.REPORTABLE,
        (4,),
    ),
    (
        "1,000 e-mails",
        ("contact.email",),
        1000,
        False,
        False,
        Reportability.NOT_REPORTABLE,
        (),
    ),
    (
        "1,001 e-mails encrypted, key not compromised",
        ("contact.email",),
        1001,
        False,
        True,
        Reportability.EXEMPTION_CANDIDATE,
        (4,),
    ),
]


class TestGoldenTable:
    @pytest.mark.parametrize(
        (
            "case",
            "categories",
            "subjects",
            "malicious",
            "encrypted",
            "status",
            "numbers",
        ),
        GOLDEN,
        ids=[row[0] for row in GOLDEN],
    )
    def test_row(
        self,
        case: str,
        categories: tuple[str, ...],
        subjects: int,
        malicious: bool,
        encrypted: bool,
        status: Reportability,
        numbers: tuple[int, ...],
    ) -> None:
        """Each row of R-INC-2's golden table classifies as the table says."""
        result = classify(
            incident(
                categories,
                subjects,
                malicious=malicious,
                encrypted=encrypted,
                kind="damage" if malicious else "leak",
            ),
            custody=CUSTODY,
        )
        assert result.appi is not None
        assert status == result.appi.status
        assert numbers == result.appi.category_numbers
        assert all(c.reason_en and c.reason_ja for c in result.appi.categories)

    def test_reasons_name_the_categories(self) -> None:
        """A category-1 reason names the special-care kind in both languages."""
        result = classify(incident(("special_care.medical_history",)))
        assert result.appi is not None
        (finding,) = result.appi.categories
        assert "special_care.medical_history" in finding.reason_en
        assert "病歴" in finding.reason_ja

    def test_threshold_reason_names_the_count(self) -> None:
        """A category-4 reason states the count and the pack's threshold."""
        result = classify(incident(subjects=1001))
        assert result.appi is not None
        assert "1001" in result.appi.categories[0].reason_en
        assert "1000" in result.appi.categories[0].reason_en

    def test_several_categories_at_once(self) -> None:
        """Card numbers of 5,000 subjects taken maliciously are categories 2, 3 and 4."""
        result = classify(incident(("payment.card",), 5000, malicious=True))
        assert result.appi is not None
        assert (2, 3, 4) == result.appi.category_numbers
        assert 60 == result.appi.final_report_days

    def test_every_classification_records_its_pack(self) -> None:
        """The APPI and GDPR packs used are named in the result and its dict."""
        result = classify(incident(jurisdictions={"appi", "gdpr"}))
        assert ("appi-2024-04", "gdpr-2018-05") == result.pack_ids
        assert ["appi-2024-04", "gdpr-2018-05"] == result.as_dict()["packs"]


class TestEncryptionExemption:
    def test_candidate_carries_the_custody_evidence(self) -> None:
        """The candidate is flagged for a person, with the evidence; not dropped."""
        result = classify(incident(subjects=1001, encrypted=True), custody=CUSTODY)
        assert result.appi is not None
        assert result.appi.custody == CUSTODY
        assert result.appi.exemption_reason is not None
        assert "confirm" in result.appi.exemption_reason
        assert not result.eligible_for_cessation

    @pytest.mark.parametrize(
        ("kw", "custody", "why"),
        [
            ({"keys_compromised": True}, CUSTODY, "compromised"),
            ({"compromised_key_ids": (1,)}, CUSTODY, "compromised"),
            ({}, None, "no key custody evidence"),
        ],
        ids=["keys compromised", "the field's key compromised", "no evidence"],
    )
    def test_no_candidate_without_uncompromised_evidenced_keys(
        self, kw: dict[str, object], custody: object, why: str
    ) -> None:
        """Compromised keys or missing custody evidence leave the incident reportable."""
        result = classify(
            incident(subjects=1001, encrypted=True, **kw),
            custody=custody,  # type: ignore[arg-type]
        )
        assert result.appi is not None
        assert Reportability.REPORTABLE == result.appi.status
        assert result.appi.exemption_reason is not None
        assert why in result.appi.exemption_reason

    def test_encryption_does_not_exempt_loss_or_damage(self) -> None:
        """Ransomware on encrypted fields (damage) stays reportable; encryption guards disclosure."""
        result = classify(
            incident(
                subjects=10,
                encrypted=True,
                malicious=True,
                kind="damage",
                jurisdictions={"appi", "gdpr"},
            ),
            custody=CUSTODY,
        )
        assert result.appi is not None
        assert result.gdpr is not None
        assert Reportability.REPORTABLE == result.appi.status
        assert result.appi.exemption_reason is not None
        assert "not against loss or damage" in result.appi.exemption_reason
        assert result.gdpr.notify_authority

    def test_keys_beside_the_data_are_no_exemption(self) -> None:
        """A local keyring not declared apart from the data gives no candidate."""
        custody = key_custody(Keyring.generate(provider=LocalKeyProvider.generate()))
        assert not custody.keys_stored_apart
        assert "LocalKeyProvider" == custody.provider
        result = classify(incident(subjects=1001, encrypted=True), custody=custody)
        assert result.appi is not None
        assert Reportability.REPORTABLE == result.appi.status

    def test_key_custody_from_a_keyring(self) -> None:
        """key_custody names algorithm, provider, KEK and data keys; never material."""
        keyring = Keyring.generate(provider=LocalKeyProvider.generate())
        custody = key_custody(keyring, keys_stored_apart=True)
        assert "AES-256-GCM" == custody.algorithm
        assert keyring.key_ids == custody.data_key_ids
        assert keyring.provider is not None
        assert keyring.provider.kek_id == custody.kek_id
        assert custody.keys_stored_apart

    def test_partly_encrypted_scope_is_no_candidate(self) -> None:
        """One plaintext field among encrypted ones keeps the incident reportable."""
        scope = IncidentScope(
            fields=[
                AffectedField(category="contact.email", encrypted=True, key_ids=[1]),
                AffectedField(category="name", encrypted=False),
            ],
            subject_count=1001,
        )
        result = classify(incident(scope=scope), custody=CUSTODY)
        assert result.appi is not None
        assert Reportability.REPORTABLE == result.appi.status


class TestRulePacks:
    @pytest.mark.parametrize(
        ("case", "kw"),
        [
            ("special care", {"categories": ("special_care.medical_history",)}),
            ("card", {"categories": ("payment.card",)}),
            ("ransomware", {"malicious": True, "kind": "damage"}),
            ("1,001", {"subjects": 1001}),
            ("1,000", {"subjects": 1000}),
            ("web skimming", {"malicious": True, "acquisition_stage": True}),
            ("skimming, not malicious", {"acquisition_stage": True}),
        ],
    )
    def test_2022_and_2024_differ_only_for_web_skimming(
        self, case: str, kw: dict[str, object]
    ) -> None:
        """The same incident under both APPI packs differs only in the skimming case."""
        subject = incident(**kw)  # type: ignore[arg-type]
        old = classify(subject, appi_pack=rule_pack("appi", pack_id="appi-2022-04"))
        new = classify(subject, appi_pack=rule_pack("appi", pack_id="appi-2024-04"))
        assert old.appi is not None
        assert new.appi is not None
        assert "appi-2022-04" == old.appi.pack_id
        assert "appi-2024-04" == new.appi.pack_id
        if case == "web skimming":
            assert Reportability.NOT_REPORTABLE == old.appi.status
            assert Reportability.REPORTABLE == new.appi.status
            assert (3,) == new.appi.category_numbers
        else:
            assert old.appi.status == new.appi.status
            assert old.appi.categories == new.appi.categories

    def test_pack_in_force_on_the_detection_day(self) -> None:
        """An incident known in 2023 is classified with the 2022 pack."""
        import datetime as dt

        known = dt.datetime(2023, 6, 1, 9, 0, tzinfo=dt.timezone.utc)
        result = classify(incident(detected_at=known))
        assert result.appi is not None
        assert "appi-2022-04" == result.appi.pack_id

    def test_unknown_category_is_a_typed_error(self) -> None:
        """A scope naming a category the taxonomy lacks raises IncidentError."""
        with pytest.raises(custdata.IncidentError, match="does not declare"):
            classify(incident(("contact.fax",)))

    def test_pseudonymised_data_is_exempt(self) -> None:
        """仮名加工情報 only: exempt, with the categories still listed."""
        result = classify(incident(subjects=5000, pseudonymised=True))
        assert result.appi is not None
        assert Reportability.EXEMPT_PSEUDONYMISED == result.appi.status
        assert (4,) == result.appi.category_numbers


class TestGdpr:
    def test_both_regimes_assessed(self) -> None:
        """An incident under APPI and GDPR gets both assessments."""
        result = classify(
            incident(("payment.card",), malicious=True, jurisdictions={"appi", "gdpr"})
        )
        assert result.appi is not None
        assert result.gdpr is not None
        assert result.gdpr.notify_authority
        assert result.gdpr.notify_subjects
        assert any("Art. 34(1)" in r for r in result.gdpr.reasons)

    def test_gdpr_only(self) -> None:
        """A GDPR-only incident has no APPI assessment and no 35条5項 flag."""
        result = classify(incident(jurisdictions={"gdpr"}))
        assert result.appi is None
        assert result.gdpr is not None
        assert not result.eligible_for_cessation

    def test_encrypted_breach_is_documented_not_notified(self) -> None:
        """Encrypted data with safe keys: no Art. 33 notice, documented under 33(5)."""
        result = classify(
            incident(
                ("special_care.medical_history",),
                encrypted=True,
                jurisdictions={"gdpr"},
            ),
            custody=CUSTODY,
        )
        assert result.gdpr is not None
        assert not result.gdpr.notify_authority
        assert not result.gdpr.notify_subjects
        assert any("33(5)" in r for r in result.gdpr.reasons)
        assert any("34(3)(a)" in r for r in result.gdpr.reasons)

    def test_low_risk_leak_needs_no_subject_communication(self) -> None:
        """A non-malicious leak of e-mail addresses: authority yes, subjects no."""
        result = classify(incident(jurisdictions={"gdpr"}))
        assert result.gdpr is not None
        assert result.gdpr.notify_authority
        assert not result.gdpr.notify_subjects


class TestRecordValidation:
    @pytest.mark.parametrize(
        "kw",
        [
            {"detected_at": __import__("datetime").datetime(2026, 2, 2, 10, 0)},
            {"reporter": " "},
            {"jurisdictions": {"ccpa"}},
            {"kind": "stolen"},
        ],
        ids=["naive time", "no reporter", "unknown jurisdiction", "unknown kind"],
    )
    def test_bad_record_is_a_typed_error(self, kw: dict[str, object]) -> None:
        """A malformed incident raises IncidentError (a ValueError), never a private type."""
        with pytest.raises(custdata.IncidentError):
            incident(**kw)  # type: ignore[arg-type]

    def test_negative_count(self) -> None:
        """A negative subject count is refused."""
        with pytest.raises(custdata.IncidentError, match="subject_count"):
            IncidentScope(fields=[], subject_count=-1)
