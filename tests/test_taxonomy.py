"""The category taxonomy (R-DEF-1)."""

from __future__ import annotations

import pytest

from custdata import (
    BUILTIN_CATEGORIES,
    Category,
    ConfigurationError,
    Identifiability,
    Taxonomy,
)


SEED = [
    "name",
    "name.kana",
    "contact.address",
    "contact.phone",
    "contact.email",
    "demographic.birth_date",
    "demographic.gender",
    "customer_id",
    "transaction.history",
    "inquiry.contents",
    "payment.card",
    "payment.bank_account",
    "consultation.records",
]
SPECIAL_CARE = [
    "race",
    "creed",
    "social_status",
    "medical_history",
    "criminal_record",
    "crime_victim",
    "disability",
    "health_check",
    "medical_care",
    "criminal_proceedings",
    "juvenile_proceedings",
]


class TestBuiltins:
    def test_seed_categories_present(self) -> None:
        """Every category the regulation names is built in."""
        assert set(SEED) <= set(Taxonomy.default())

    def test_eleven_special_care_kinds(self) -> None:
        """The eleven APPI special-care kinds are built in and flagged."""
        tax = Taxonomy.default()
        assert all(tax[f"special_care.{k}"].special_care for k in SPECIAL_CARE)
        assert 11 == sum(1 for k in tax if k.startswith("special_care."))

    def test_flags(self) -> None:
        """Payment data carries financial-damage risk; free text may hold sensitive data."""
        tax = Taxonomy.default()
        assert tax["payment.card"].financial_damage_risk
        assert tax["consultation.records"].may_contain_sensitive
        assert Identifiability.DIRECT_IDENTIFIER == tax["contact.email"].identifiability
        assert "user.financial.credit_card" == tax["payment.card"].fideslang

    def test_every_builtin_has_labels_and_fideslang(self) -> None:
        """Documents need both labels and the fideslang mapping for every category."""
        assert all(
            c.label_ja and c.label_en and c.fideslang.startswith("user")
            for c in BUILTIN_CATEGORIES
        )


class TestRegistration:
    def test_register_child_inherits_flags(self) -> None:
        """A new child of a special-care or financial category cannot weaken it."""
        tax = Taxonomy.default().with_categories(
            Category(
                key="payment.points",
                label_ja="ポイント",
                label_en="Points",
                identifiability=Identifiability.ATTRIBUTE,
                fideslang="user.financial",
            ),
        )
        assert tax["payment.points"].financial_damage_risk

    @pytest.mark.parametrize(
        ("key", "match"),
        [
            ("contact.email", "duplicate"),
            ("loyalty.tier", "parent category 'loyalty'"),
            ("Bad Key", "lowercase"),
        ],
    )
    def test_register_rejects(self, key: str, match: str) -> None:
        """Duplicates, orphans and malformed keys are configuration errors."""
        with pytest.raises(ConfigurationError, match=match):
            Taxonomy.default().with_categories(
                Category(
                    key=key,
                    label_ja="x",
                    label_en="x",
                    identifiability=Identifiability.ATTRIBUTE,
                    fideslang="user",
                ),
            )

    def test_mapping_protocol(self) -> None:
        """The taxonomy is a read-only mapping with a short repr."""
        tax = Taxonomy.default()
        assert len(tax) == len(BUILTIN_CATEGORIES)
        assert "contact.email" in tax
        assert repr(tax).startswith("<Taxonomy of ")
