"""The customer-data category taxonomy (regulation clause 2, R-DEF-1).

Categories have hierarchical dotted keys (``contact.email``). Each carries how
directly it identifies a person, whether its leak risks financial damage
(APPI enforcement rule 7 item 2), whether it is special-care information
(要配慮個人情報, APPI Art. 2(3)), and its fideslang data-category equivalent.
"""

from __future__ import annotations

import enum
import re

from collections.abc import Iterable, Iterator, Mapping

import attrs

from ._errors import ConfigurationError


__all__ = ["BUILTIN_CATEGORIES", "Category", "Identifiability", "Taxonomy"]

_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


class Identifiability(str, enum.Enum):
    """How directly a category identifies a person."""

    #: Identifies a person by itself (氏名, e-mail address).
    DIRECT_IDENTIFIER = "direct_identifier"
    #: An individual identification code under APPI Art. 2(2) (個人識別符号).
    IDENTIFICATION_CODE = "identification_code"
    #: Identifies a person when combined with other data (birth date, address).
    QUASI_IDENTIFIER = "quasi_identifier"
    #: An internal key that links records of one person (customer id).
    LINKING_CODE = "linking_code"
    #: Describes a person without identifying them (purchase history).
    ATTRIBUTE = "attribute"


def _check_key(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _KEY.match(str(value)):
        raise ConfigurationError(
            "a category key is lowercase dotted words, like 'contact.email'",
            key_path=f"categories.{value}",
        )


@attrs.frozen(kw_only=True)
class Category:
    """One kind of customer data.

    Attributes:
        key: Dotted key, e.g. ``contact.email``; the part before the last dot is
            the parent category.
        label_ja: Japanese label used in generated documents.
        label_en: English label.
        identifiability: How directly it identifies a person.
        financial_damage_risk: A leak may cause financial damage (APPI rule 7(2)),
            which makes any leak reportable.
        special_care: APPI special-care information (要配慮個人情報): acquisition
            needs consent and any leak is reportable.
        may_contain_sensitive: Free text that may contain special-care
            information (inquiries, consultation records).
        fideslang: The equivalent fideslang data category.
        mask: The display mask kind used for the category (see
            :func:`custdata.mask`).
    """

    key: str = attrs.field(validator=_check_key)
    label_ja: str
    label_en: str
    identifiability: Identifiability
    financial_damage_risk: bool = False
    special_care: bool = False
    may_contain_sensitive: bool = False
    fideslang: str
    mask: str = "default"

    @property
    def parent(self) -> str | None:
        """The parent category key, or ``None`` for a top-level category."""
        head, sep, _ = self.key.rpartition(".")
        return head if sep else None


def _c(
    key: str,
    ja: str,
    en: str,
    ident: Identifiability,
    fides: str,
    *,
    mask: str = "default",
    financial: bool = False,
    special: bool = False,
    free_text: bool = False,
) -> Category:
    return Category(
        key=key,
        label_ja=ja,
        label_en=en,
        identifiability=ident,
        fideslang=fides,
        mask=mask,
        financial_damage_risk=financial,
        special_care=special,
        may_contain_sensitive=free_text,
    )


_D = Identifiability.DIRECT_IDENTIFIER
_Q = Identifiability.QUASI_IDENTIFIER
_L = Identifiability.LINKING_CODE
_A = Identifiability.ATTRIBUTE

#: The categories every taxonomy starts with: the regulation's own list and the
#: eleven APPI special-care kinds (法2条3項, 令2条).
BUILTIN_CATEGORIES: tuple[Category, ...] = (
    _c("name", "氏名", "Name", _D, "user.name", mask="name"),
    _c("name.kana", "氏名（カナ）", "Name (kana)", _D, "user.name", mask="name"),
    _c("contact", "連絡先", "Contact details", _D, "user.contact"),
    _c(
        "contact.address",
        "住所",
        "Postal address",
        _Q,
        "user.contact.address",
        mask="address",
    ),
    _c(
        "contact.phone",
        "電話番号",
        "Phone number",
        _D,
        "user.contact.phone_number",
        mask="phone",
    ),
    _c(
        "contact.email",
        "メールアドレス",
        "E-mail address",
        _D,
        "user.contact.email",
        mask="email",
    ),
    _c("demographic", "属性", "Demographics", _A, "user.demographic"),
    _c(
        "demographic.birth_date",
        "生年月日",
        "Date of birth",
        _Q,
        "user.demographic.date_of_birth",
    ),
    _c("demographic.gender", "性別", "Gender", _A, "user.demographic.gender"),
    _c("customer_id", "顧客ID", "Customer id", _L, "user.unique_id"),
    _c(
        "my_number",
        "個人番号（マイナンバー）",
        "My Number (individual number)",
        _D,
        "user.government_id.national_identification_number",
        mask="card",
    ),
    _c("transaction", "取引情報", "Transactions", _A, "user.behavior"),
    _c(
        "transaction.history",
        "取引履歴",
        "Transaction history",
        _A,
        "user.behavior.purchase_history",
    ),
    _c("inquiry", "問合せ", "Inquiries", _A, "user.content"),
    _c(
        "inquiry.contents",
        "問合せ内容",
        "Inquiry contents",
        _A,
        "user.content.private",
        free_text=True,
    ),
    _c("payment", "決済情報", "Payment details", _A, "user.financial", financial=True),
    _c(
        "payment.card",
        "クレジットカード情報",
        "Payment card",
        _A,
        "user.financial.credit_card",
        mask="card",
        financial=True,
    ),
    _c(
        "payment.bank_account",
        "銀行口座情報",
        "Bank account",
        _A,
        "user.financial.bank_account",
        mask="card",
        financial=True,
    ),
    _c("consultation", "相談", "Consultations", _A, "user.content"),
    _c(
        "consultation.records",
        "相談記録",
        "Consultation records",
        _A,
        "user.content.private",
        free_text=True,
    ),
    _c("special_care", "要配慮個人情報", "Special-care data", _A, "user", special=True),
    _c(
        "special_care.race",
        "人種",
        "Race",
        _A,
        "user.demographic.race_ethnicity",
        special=True,
    ),
    _c(
        "special_care.creed",
        "信条",
        "Creed",
        _A,
        "user.demographic.religious_belief",
        special=True,
    ),
    _c(
        "special_care.social_status",
        "社会的身分",
        "Social status",
        _A,
        "user.demographic",
        special=True,
    ),
    _c(
        "special_care.medical_history",
        "病歴",
        "Medical history",
        _A,
        "user.health_and_medical",
        special=True,
    ),
    _c(
        "special_care.criminal_record",
        "犯罪の経歴",
        "Criminal record",
        _A,
        "user.criminal_history",
        special=True,
    ),
    _c(
        "special_care.crime_victim",
        "犯罪により害を被った事実",
        "Having been a victim of crime",
        _A,
        "user.criminal_history",
        special=True,
    ),
    _c(
        "special_care.disability",
        "心身の機能の障害",
        "Disability",
        _A,
        "user.health_and_medical",
        special=True,
    ),
    _c(
        "special_care.health_check",
        "健康診断等の結果",
        "Health-check results",
        _A,
        "user.health_and_medical",
        special=True,
    ),
    _c(
        "special_care.medical_care",
        "医師等による指導・診療・調剤",
        "Guidance, diagnosis or medication by doctors",
        _A,
        "user.health_and_medical",
        special=True,
    ),
    _c(
        "special_care.criminal_proceedings",
        "刑事事件に関する手続",
        "Criminal proceedings against the person",
        _A,
        "user.criminal_history",
        special=True,
    ),
    _c(
        "special_care.juvenile_proceedings",
        "少年の保護事件に関する手続",
        "Juvenile protection proceedings",
        _A,
        "user.criminal_history",
        special=True,
    ),
)


#: The built-in My Number (個人番号) category: usable only for purposes the
#: My Number Act permits (R-DEF-4), as are the categories below it.
MY_NUMBER = "my_number"


def is_my_number(key: str) -> bool:
    """Whether category *key* is My Number (個人番号) or a category below it."""
    return key == MY_NUMBER or key.startswith(MY_NUMBER + ".")


@attrs.frozen(init=False, repr=False)
class Taxonomy(Mapping[str, Category]):
    """An immutable registry of categories, looked up by key.

    A child inherits the special-care and financial-risk flags of its parent:
    registering ``special_care.genome`` makes it special-care even if the new
    category does not say so, so an application cannot weaken a built-in rule.

    Raises:
        ConfigurationError: On a duplicate key or a child whose parent is missing.
    """

    _by_key: Mapping[str, Category]

    def __init__(self, categories: Iterable[Category] = BUILTIN_CATEGORIES) -> None:
        by_key: dict[str, Category] = {}
        for cat in sorted(categories, key=lambda c: c.key.count(".")):
            if cat.key in by_key:
                raise ConfigurationError(
                    "duplicate category key", key_path=f"categories.{cat.key}"
                )
            parent = by_key.get(cat.parent) if cat.parent else None
            if cat.parent and parent is None:
                raise ConfigurationError(
                    f"parent category {cat.parent!r} is not declared",
                    key_path=f"categories.{cat.key}",
                )
            if parent is not None and (
                (parent.special_care and not cat.special_care)
                or (parent.financial_damage_risk and not cat.financial_damage_risk)
            ):
                cat = attrs.evolve(  # noqa: PLW2901 - inherit, never weaken
                    cat,
                    special_care=cat.special_care or parent.special_care,
                    financial_damage_risk=cat.financial_damage_risk
                    or parent.financial_damage_risk,
                )
            by_key[cat.key] = cat
        object.__setattr__(self, "_by_key", dict(sorted(by_key.items())))

    @classmethod
    def default(cls) -> Taxonomy:
        """Return the built-in taxonomy."""
        return cls(BUILTIN_CATEGORIES)

    def with_categories(self, *extra: Category) -> Taxonomy:
        """Return a new taxonomy with the application's own *extra* categories.

        Raises:
            ConfigurationError: If a key is already registered or its parent is not.
        """
        return Taxonomy((*self._by_key.values(), *extra))

    def __getitem__(self, key: str) -> Category:
        return self._by_key[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def __repr__(self) -> str:
        return f"<Taxonomy of {len(self)} categories>"
