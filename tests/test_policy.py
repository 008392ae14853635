"""The policy as code: loading, building and eager validation (R-PUR-1, R-GOV-1)."""

from __future__ import annotations

import datetime as dt

from pathlib import Path

import pytest

import custdata

from custdata import ConfigurationError, FieldPolicy, Policy


MINIMAL = """
[policy]
organisation = "Example K.K."
version = "1"
effective_date = 2026-01-01
next_review = 2027-01-01
cpo = "cpo"

[persons.cpo]
name = "Hanako Sato"
title = "CPO"

[retention.standard]
period = "P1Y"
anchor = "acquired"
action = "delete"

[purposes.billing]
text_ja = "請求のため"
text_en = "For billing"
owner = "cpo"
retention = "standard"

[roles.clerk]
purposes = ["billing"]
responsible = "cpo"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custdata.toml"
    path.write_text(text, encoding="utf-8")
    return path


class TestLoading:
    def test_example_policy_loads(self, sample_policy: Policy) -> None:
        """The shipped example policy is valid and complete."""
        assert "2026.2" == sample_policy.version
        assert {
            "billing",
            "shipping",
            "support",
            "support.identity_check",
            "marketing",
            "marketing.email",
            "marketing.third_party",
            "consultation",
            "disclosure",
        } == set(sample_policy.purposes)
        assert sample_policy.purposes["billing"].text_ja.startswith("ご注文")

    def test_minimal_policy(self, tmp_path: Path) -> None:
        """A minimal file gives the declared objects with defaults filled in."""
        policy = Policy.from_toml(_write(tmp_path, MINIMAL))
        billing = policy.purposes["billing"]
        assert custdata.AppiBasis.PUBLISHED_PURPOSE == billing.appi_basis
        assert billing.gdpr_basis is None
        assert ("billing",) == policy.roles["clerk"].purposes
        assert dt.date(2027, 1, 1) == policy.next_review

    def test_build_in_python(self) -> None:
        """A policy built in Python is validated like a loaded one."""
        with pytest.raises(
            ConfigurationError,
            match=r"roles\.clerk\.purposes: undeclared purpose 'nope'",
        ):
            Policy.build(
                organisation="X",
                version="1",
                effective_date=dt.date(2026, 1, 1),
                next_review=dt.date(2027, 1, 1),
                retention_rules=[
                    custdata.RetentionRule(
                        id="r", period="P1Y", anchor="acquired", action="delete"
                    )
                ],
                purposes=[
                    custdata.Purpose(
                        id="billing", text_ja="請求", text_en="Billing", retention="r"
                    )
                ],
                roles=[custdata.Role(id="clerk", purposes=["nope"])],
            )

    def test_build_rejects_duplicate_ids(self) -> None:
        """Python-built policies reject duplicate ids too."""
        rule = custdata.RetentionRule(
            id="r", period="P1Y", anchor="acquired", action="delete"
        )
        purpose = custdata.Purpose(
            id="billing", text_ja="請求", text_en="Billing", retention="r"
        )
        with pytest.raises(
            ConfigurationError, match=r"purposes\.billing: duplicate id"
        ):
            Policy.build(
                organisation="X",
                version="1",
                effective_date=dt.date(2026, 1, 1),
                next_review=dt.date(2027, 1, 1),
                retention_rules=[rule],
                purposes=[purpose, purpose],
            )

    def test_custom_category(self, tmp_path: Path) -> None:
        """A policy registers its own categories; children inherit special care."""
        text = (
            MINIMAL
            + """
[categories."special_care.genome"]
label_ja = "ゲノム情報"
label_en = "Genome"
identifiability = "identification_code"
"""
        )
        policy = Policy.from_toml(_write(tmp_path, text))
        assert policy.taxonomy["special_care.genome"].special_care

    def test_all_problems_reported_at_once(self, tmp_path: Path) -> None:
        """Validation is complete: every problem is listed, not just the first."""
        text = MINIMAL.replace('owner = "cpo"', 'owner = "ghost"').replace(
            'purposes = ["billing"]', 'purposes = ["nope"]'
        )
        with pytest.raises(ConfigurationError) as info:
            Policy.from_toml(_write(tmp_path, text))
        assert [
            ("purposes.billing.owner", "unknown person 'ghost'"),
            ("roles.clerk.purposes", "undeclared purpose 'nope'"),
        ] == list(info.value.problems)  # type: ignore[attr-defined]


# (name, the change to MINIMAL, the expected key path)
MALFORMED = [
    ("bad-toml", lambda s: s + "\n[policy\n", None),
    ("missing-policy-table", lambda s: s.replace("[policy]", "[policyx]"), "policy"),
    (
        "missing-organisation",
        lambda s: s.replace('organisation = "Example K.K."', ""),
        "policy.organisation",
    ),
    (
        "version-wrong-type",
        lambda s: s.replace('version = "1"', "version = 1"),
        "policy.version",
    ),
    (
        "effective-date-not-date",
        lambda s: s.replace("effective_date = 2026-01-01", 'effective_date = "soon"'),
        "policy.effective_date",
    ),
    (
        "review-before-effective",
        lambda s: s.replace("next_review = 2027-01-01", "next_review = 2025-01-01"),
        "policy.next_review",
    ),
    (
        "unknown-cpo",
        lambda s: s.replace('cpo = "cpo"\n\n[persons', 'cpo = "boss"\n\n[persons'),
        "policy.cpo",
    ),
    (
        "unknown-parent",
        lambda s: s.replace(
            'text_ja = "請求のため"', 'parent = "ghost"\ntext_ja = "請求のため"'
        ),
        "purposes.billing.parent",
    ),
    (
        "purpose-cycle",
        lambda s: s.replace(
            'text_ja = "請求のため"', 'parent = "billing"\ntext_ja = "請求のため"'
        ),
        "purposes.billing.parent",
    ),
    (
        "missing-text-ja",
        lambda s: s.replace('text_ja = "請求のため"', ""),
        "purposes.billing.text_ja",
    ),
    (
        "missing-text-en",
        lambda s: s.replace('text_en = "For billing"', ""),
        "purposes.billing.text_en",
    ),
    (
        "unknown-owner",
        lambda s: s.replace('owner = "cpo"', 'owner = "ghost"'),
        "purposes.billing.owner",
    ),
    (
        "unknown-retention",
        lambda s: s.replace('retention = "standard"', 'retention = "forever"'),
        "purposes.billing.retention",
    ),
    (
        "no-retention",
        lambda s: s.replace('retention = "standard"', ""),
        "purposes.billing.retention",
    ),
    (
        "role-undeclared-purpose",
        lambda s: s.replace('purposes = ["billing"]', 'purposes = ["marketing"]'),
        "roles.clerk.purposes",
    ),
    (
        "role-purposes-wrong-type",
        lambda s: s.replace('purposes = ["billing"]', 'purposes = "billing"'),
        "roles.clerk.purposes",
    ),
    (
        "role-unknown-responsible",
        lambda s: s.replace('responsible = "cpo"', 'responsible = "ghost"'),
        "roles.clerk.responsible",
    ),
    (
        "bad-duration",
        lambda s: s.replace('period = "P1Y"', 'period = "1 year"'),
        "retention.standard.period",
    ),
    (
        "bad-statutory-minimum",
        lambda s: s.replace(
            'period = "P1Y"', 'period = "P1Y"\nstatutory_minimum = "P1.5Y"'
        ),
        "retention.standard.statutory_minimum",
    ),
    (
        "bad-anchor",
        lambda s: s.replace('anchor = "acquired"', 'anchor = "birthday"'),
        "retention.standard.anchor",
    ),
    (
        "bad-action",
        lambda s: s.replace('action = "delete"', 'action = "burn"'),
        "retention.standard.action",
    ),
    (
        "custom-anchor-unnamed",
        lambda s: s.replace('anchor = "acquired"', 'anchor = "custom"'),
        "retention.standard.custom_anchor",
    ),
    (
        "consent-flag-wrong-type",
        lambda s: s.replace('owner = "cpo"', 'owner = "cpo"\nconsent_required = "yes"'),
        "purposes.billing.consent_required",
    ),
    (
        "bad-legal-basis",
        lambda s: s.replace('owner = "cpo"', 'owner = "cpo"\ngdpr_basis = "vibes"'),
        "purposes.billing.gdpr_basis",
    ),
    (
        "unknown-key",
        lambda s: s.replace('owner = "cpo"', 'owner = "cpo"\ncolour = "blue"'),
        "purposes.billing.colour",
    ),
    ("purpose-not-a-table", lambda s: s + '\n[purposes]\nloose = "x"\n', None),
    (
        "unknown-category",
        lambda s: s.replace(
            'owner = "cpo"', 'owner = "cpo"\ncategories = ["contact.fax"]'
        ),
        "purposes.billing.categories",
    ),
    (
        "category-orphan",
        lambda s: (
            s
            + '\n[categories."loyalty.tier"]\nlabel_ja = "会員ランク"\nlabel_en = "Tier"\nidentifiability = "attribute"\n'
        ),
        "categories.loyalty.tier",
    ),
    (
        "category-duplicate-builtin",
        lambda s: (
            s
            + '\n[categories."contact.email"]\nlabel_ja = "メール"\nlabel_en = "Mail"\nidentifiability = "attribute"\n'
        ),
        "categories.contact.email",
    ),
    (
        "version-number-not-int",
        lambda s: s.replace('owner = "cpo"', 'owner = "cpo"\nversion = true'),
        "purposes.billing.version",
    ),
]


class TestMalformed:
    @pytest.mark.parametrize(
        ("name", "change", "key_path"), MALFORMED, ids=[m[0] for m in MALFORMED]
    )
    def test_malformed_policy(
        self, tmp_path: Path, name: str, change: object, key_path: str | None
    ) -> None:
        """Each malformed file raises ConfigurationError naming the file and key path."""
        path = _write(tmp_path, change(MINIMAL))  # type: ignore[operator]
        with pytest.raises(ConfigurationError) as info:
            Policy.from_toml(path)
        err = info.value
        assert str(path) == err.path
        assert str(path) in str(err)
        if key_path is not None:
            assert key_path == err.key_path

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigurationError, not an OSError."""
        with pytest.raises(ConfigurationError, match="cannot read"):
            Policy.from_toml(tmp_path / "absent.toml")

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A file in another encoding is refused clearly."""
        path = tmp_path / "custdata.toml"
        path.write_bytes(MINIMAL.encode("shift_jis"))
        with pytest.raises(ConfigurationError, match="UTF-8"):
            Policy.from_toml(path)

    def test_malformed_matrix_is_broad(self) -> None:
        """The acceptance asks for at least 15 malformed files."""
        assert len(MALFORMED) >= 15


class TestQuestions:
    def test_validate_field_unknown_category(self, sample_policy: Policy) -> None:
        """A field with an unknown category is rejected, naming where it was declared."""
        with pytest.raises(
            ConfigurationError, match=r"customers\.fax\.category: unknown category"
        ):
            sample_policy.validate_field(
                FieldPolicy(category="contact.fax", purposes=["billing"]),
                where="customers.fax",
            )

    def test_validate_field_unknown_purpose(self, sample_policy: Policy) -> None:
        """A field tagged with an undeclared purpose is rejected."""
        with pytest.raises(
            ConfigurationError, match=r"purpose 'sales' is not declared"
        ):
            sample_policy.validate_field(
                FieldPolicy(category="name", purposes=["sales"]), where="customers.name"
            )

    def test_validate_field_no_purposes(self, sample_policy: Policy) -> None:
        """A field without purposes is rejected at declaration."""
        with pytest.raises(ConfigurationError, match="at least one purpose"):
            sample_policy.validate_field(
                FieldPolicy(category="name", purposes=[]), where="customers.name"
            )

    def test_role_may_claim_descendants(self, sample_policy: Policy) -> None:
        """A role granted a purpose may claim purposes below it, not above or beside."""
        assert sample_policy.may_claim("support_agent", "support.identity_check")
        assert not sample_policy.may_claim("marketer", "marketing")
        assert not sample_policy.may_claim("support_agent", "billing")
        assert not sample_policy.may_claim("ghost", "billing")
