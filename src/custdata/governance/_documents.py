"""The regulation's documents, rendered from the policy (R-PUB-1, R-GOV-4, R-DEF-2).

:func:`render_documents` renders, in Japanese or English:

``regulation``
    the 顧客データ管理規程 itself, clause by clause;
``notice``
    the 公表事項 sections of the privacy notice (APPI Art. 32(1));
``ledger``
    the 個人データ取扱台帳 (data inventory);
``ropa``
    the GDPR Art. 30(1) record of processing activities;
``fideslang``
    a fideslang ``System`` and ``Dataset`` export, as JSON (which is valid
    YAML, so ``fides`` reads it as a manifest).

The Markdown comes from Jinja2 templates in ``custdata/governance/templates``
(one per document and language). HTML is the same Markdown rendered by
markdown-it-py with raw HTML disabled, so text from the policy file can never
inject markup, and there is one template per document to keep right, not two.

The third-party sections come from the policy's ``[third_party]`` table
(contractors with their tasks, countries, supervision and review dates; joint
use with the items of APPI 27条5項3号), the foreign countries of handling from
``[notice] foreign_countries``, and the incident section from ``[reporting]``
(the reporting routes and reminders). The ledger and the record of
processing also list the provision records (法29条) passed as *records*,
grouped by recipient. The request sections of the notice and the regulation
come from the policy's ``[requests]`` table and the rule packs' request kinds.
A register custdata does not keep yet would be rendered as a marked extension
point (:data:`EXTENSIONS`); none is left.

:func:`notice_drift` compares a published notice with the rendering
(``custdata check --published``). Nothing here imports SQLAlchemy; the
fields of mapped models come in as :class:`FieldRecord` values.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import unicodedata

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

from custdata._errors import ConfigurationError
from custdata._policy import Policy
from custdata._purposes import Purpose
from custdata._registers import MeasureCategory, SafetyMeasure

from ._deadlines import due_item_label
from ._packs import rule_pack
from ._requests import _kinds_of


if TYPE_CHECKING:
    from ._provision import ProvisionRecord


__all__ = [
    "DOCUMENTS",
    "EXTENSIONS",
    "Drift",
    "FieldRecord",
    "notice_drift",
    "render_document",
    "render_documents",
    "safety_measures",
]

#: The documents :func:`render_documents` produces, in order.
DOCUMENTS: tuple[str, ...] = ("regulation", "notice", "ledger", "ropa", "fideslang")

#: Registers that other parts of custdata will add, each rendered as a marked
#: extension point ("not kept by custdata yet") until it exists; none is left.
EXTENSIONS: tuple[str, ...] = ()

Lang = Literal["ja", "en"]
Format = Literal["md", "html"]


@attrs.frozen(kw_only=True)
class FieldRecord:
    """What the library knows about one stored customer-data field.

    :func:`custdata.sqlalchemy.field_inventory` builds these from mapped
    models; tests and other stores may build them by hand.

    Attributes:
        table: The table (``customers``).
        column: The column (``email``).
        category: The category key.
        purposes: The allowed purposes.
        prohibited: The prohibited purposes.
        encrypted: Whether values are stored encrypted (AES-256-GCM envelope).
        searchable: Whether it has a blind-index companion for equality search.
        retention: The field's own retention rule id, if it overrides.
    """

    table: str
    column: str
    category: str
    purposes: tuple[str, ...] = ()
    prohibited: tuple[str, ...] = ()
    encrypted: bool = False
    searchable: bool = False
    retention: str | None = None


@attrs.frozen(kw_only=True)
class Drift:
    """One difference between a published notice and the rendering.

    Attributes:
        code: ``PUB001`` a purpose is not published; ``PUB002`` a published
            purpose is no longer in the policy; ``PUB003`` another 公表事項
            item is missing from the published notice.
        key_path: Where in the policy the item lives (``purposes.billing``).
        message: What differs, naming the purpose or item.
    """

    code: str
    key_path: str
    message: str


# -- labels -----------------------------------------------------------------------

_LABELS: Mapping[str, Mapping[str, str]] = {
    "ja": {
        "organisational": "組織的安全管理措置",
        "human": "人的安全管理措置",
        "physical": "物理的安全管理措置",
        "technical": "技術的安全管理措置",
        "external_environment": "外的環境の把握",
        "published_purpose": "公表した利用目的の範囲内",
        "contract": "契約の履行",
        "consent": "本人の同意",
        "law": "法令に基づく場合",
        "vital_interests": "人の生命・身体・財産の保護",
        "public_health": "公衆衛生・児童の健全な育成",
        "public_body": "国の機関等への協力",
        "academic_research": "学術研究",
        "legal_obligation": "法的義務",
        "public_task": "公共の任務",
        "legitimate_interests": "正当な利益",
        "acquired": "取得日",
        "last_transaction": "最終取引日",
        "contract_end": "契約終了日",
        "custom": "個別の起算点",
        "delete": "削除",
        "anonymise": "匿名化",
        "crypto_shred": "鍵の破棄による消去（暗号学的消去）",
        "yes": "あり",
        "no": "なし",
        "joint_use": "共同利用",
        "authority.ppc": "個人情報保護委員会",
        "re_outsourcing.forbidden": "禁止",
        "re_outsourcing.prior_approval": "事前承認",
        "re_outsourcing.notify": "通知",
        "basis.consent_27_1": "本人の同意（法27条1項）",
        "basis.optout_27_2": "オプトアウト（法27条2項）",
        "basis.exception_27_1": "法令に基づく場合等（法27条1項各号）",
        "basis.outsourcing_27_5_1": "委託（法27条5項1号）",
        "basis.succession_27_5_2": "事業の承継（法27条5項2号）",
        "basis.joint_use_27_5_3": "共同利用（法27条5項3号）",
        "basis.foreign_consent_28_1": "外国にある第三者への提供・本人の同意（法28条）",
        "basis.foreign_equivalent_28_1": "外国にある第三者への提供・基準適合体制（法28条）",
        "none": "なし",
    },
    "en": {
        "organisational": "Organisational measures",
        "human": "Human measures",
        "physical": "Physical measures",
        "technical": "Technical measures",
        "external_environment": "Understanding the external environment",
        "published_purpose": "within the published purpose",
        "contract": "performance of a contract",
        "consent": "consent",
        "law": "required by law",
        "vital_interests": "protection of life, body or property",
        "public_health": "public health or children",
        "public_body": "cooperation with a public body",
        "academic_research": "academic research",
        "legal_obligation": "legal obligation",
        "public_task": "public task",
        "legitimate_interests": "legitimate interests",
        "acquired": "acquisition",
        "last_transaction": "the last transaction",
        "contract_end": "the end of the contract",
        "custom": "a custom event",
        "delete": "deletion",
        "anonymise": "anonymisation",
        "crypto_shred": "crypto-shredding (destroying the key)",
        "yes": "yes",
        "no": "no",
        "joint_use": "joint use",
        "authority.ppc": "Personal Information Protection Commission",
        "re_outsourcing.forbidden": "forbidden",
        "re_outsourcing.prior_approval": "with prior approval",
        "re_outsourcing.notify": "with notice",
        "basis.consent_27_1": "consent (APPI Art. 27(1))",
        "basis.optout_27_2": "opt-out (APPI Art. 27(2))",
        "basis.exception_27_1": "statutory exception (APPI Art. 27(1))",
        "basis.outsourcing_27_5_1": "outsourcing (APPI Art. 27(5)(i))",
        "basis.succession_27_5_2": "business succession (APPI Art. 27(5)(ii))",
        "basis.joint_use_27_5_3": "joint use (APPI Art. 27(5)(iii))",
        "basis.foreign_consent_28_1": "foreign third party, consent (APPI Art. 28)",
        "basis.foreign_equivalent_28_1": "foreign third party, equivalent system (APPI Art. 28)",
        "none": "none",
    },
}


def country_name(code: str, lang: Lang) -> str:
    """Return the name of the country whose ISO 3166 code is *code*, in *lang*.

    APPI 28条2項 has the subject told the *name* of a foreign country, so the
    documents print ``アメリカ合衆国`` / ``United States``, not ``US``. Names come
    from the Unicode CLDR through Babel; text that is not a known code is shown
    as written.
    """
    from babel import Locale  # noqa: PLC0415 - only rendering needs the CLDR tables

    return str(Locale.parse(lang).territories.get(code.strip().upper(), code))


def _label(lang: str, key: object) -> str:
    value = getattr(key, "value", key)
    return _LABELS[lang].get(str(value), str(value))


# -- safety measures ----------------------------------------------------------------


def safety_measures(
    policy: Policy,
    fields: Sequence[FieldRecord] = (),
    *,
    audit: bool = True,
) -> tuple[SafetyMeasure, ...]:
    """Return the safety-measure register: the policy's entries plus generated ones.

    The technical entries (GL 10-6) are generated from library state (R-SEC-6):
    access control by role and purpose, identification of actors (and strict
    handler mode), encryption of the fields in *fields* (or of every field
    declared with ``customer_data()`` when *fields* is empty), and the audit
    trail when *audit* is on. Entries are ordered by guideline category.
    """
    roles = len(policy.roles)
    handlers = policy.registers.handlers
    generated = [
        SafetyMeasure(
            id="custdata.access_control",
            category=MeasureCategory.TECHNICAL,
            text_ja=(
                f"顧客データの利用には取扱者・役割・利用目的の指定を必須とし、{roles}種類の役割ごとに"
                "利用できる目的を限定しています。目的外の利用は拒否され、記録されます。"
            ),
            text_en=(
                f"Every use of customer data names an actor, a role and a purpose; each of the "
                f"{roles} roles may claim only its granted purposes. Out-of-purpose use is "
                "refused and recorded."
            ),
            generated=True,
        ),
        SafetyMeasure(
            id="custdata.identification",
            category=MeasureCategory.TECHNICAL,
            text_ja=(
                f"登録された{len(handlers.handlers)}名の取扱者のみが顧客データを取り扱えます"
                "（研修の有効期限切れを含め、未登録の取扱者は拒否されます）。"
                if handlers.strict
                else "顧客データへのアクセスは、すべて取扱者IDにより識別しています。"
            ),
            text_en=(
                f"Only the {len(handlers.handlers)} registered handlers may handle customer data "
                "(an unregistered handler, or one whose training has expired, is refused)."
                if handlers.strict
                else "Every access to customer data is identified by the handler's id."
            ),
            generated=True,
        ),
    ]
    if fields:
        encrypted = [f for f in fields if f.encrypted]
        names = ", ".join(f"{f.table}.{f.column}" for f in encrypted) or "-"
        generated.append(
            SafetyMeasure(
                id="custdata.encryption",
                category=MeasureCategory.TECHNICAL,
                text_ja=(
                    f"顧客データ{len(fields)}項目のうち{len(encrypted)}項目を、項目ごとに"
                    f"AES-256-GCMで暗号化して保存しています（{names}）。"
                ),
                text_en=(
                    f"{len(encrypted)} of {len(fields)} customer-data fields are stored "
                    f"encrypted with AES-256-GCM, field by field ({names})."
                ),
                generated=True,
            )
        )
    else:
        generated.append(
            SafetyMeasure(
                id="custdata.encryption",
                category=MeasureCategory.TECHNICAL,
                text_ja="顧客データの各項目は、項目ごとにAES-256-GCMで暗号化して保存しています。",
                text_en="Each customer-data field is stored encrypted with AES-256-GCM.",
                generated=True,
            )
        )
    if audit:
        generated.append(
            SafetyMeasure(
                id="custdata.audit_trail",
                category=MeasureCategory.TECHNICAL,
                text_ja=(
                    "顧客データへのすべてのアクセス判断を、改ざん検知可能な監査証跡"
                    "（HMAC連鎖と署名付きチェックポイント）に記録し、定期的に検証しています。"
                ),
                text_en=(
                    "Every access decision on customer data is recorded in a tamper-evident "
                    "audit trail (HMAC chains and signed checkpoints) that is verified regularly."
                ),
                generated=True,
            )
        )
    order = list(MeasureCategory)
    everything = [*policy.registers.measures.values(), *generated]
    return tuple(sorted(everything, key=lambda m: order.index(m.category)))


# -- rendering ----------------------------------------------------------------------


def _environment() -> Any:
    import jinja2  # noqa: PLC0415 - only rendering needs the template engine

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("custdata.governance", "templates"),
        autoescape=False,  # noqa: S701 - Markdown out; HTML goes through markdown-it with html off
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = _cell
    env.filters["md"] = _inline
    return env


def _inline(value: object) -> str:
    """Text from the policy as inline Markdown: no line breaks, no markup."""
    text = " ".join(str(value).split())
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", text)


def _cell(value: object) -> str:
    """Text from the policy in a Markdown table cell."""
    text = _inline(value)
    return text or "-"


def _context(
    policy: Policy,
    lang: Lang,
    fields: Sequence[FieldRecord],
    audit: bool,
    records: Sequence[ProvisionRecord] | None = None,
) -> dict[str, Any]:
    tax = policy.taxonomy
    appi = rule_pack("appi", policy.effective_date)
    gdpr = rule_pack("gdpr", policy.effective_date)
    purposes = list(policy.purposes.values())

    def cat_label(key: str) -> str:
        cat = tax[key]
        return cat.label_ja if lang == "ja" else cat.label_en

    def text(p: Purpose) -> str:
        return p.text_ja if lang == "ja" else p.text_en

    used = sorted(
        {c for p in purposes for c in p.categories} | {f.category for f in fields}
    )
    categories = [
        {
            "key": key,
            "label": cat_label(key),
            "special_care": tax[key].special_care
            or any(tax[k].special_care for k in tax if k.startswith(f"{key}.")),
            "financial": tax[key].financial_damage_risk,
            "identifiability": tax[key].identifiability.value,
            "fideslang": tax[key].fideslang,
        }
        for key in used
    ]
    rule_of = {
        pid: policy.retention_rules[_rule_id(policy, pid)] for pid in policy.purposes
    }
    purpose_rows = [
        {
            "id": p.id,
            "text": text(p),
            "text_ja": p.text_ja,
            "text_en": p.text_en,
            "parent": p.parent,
            "appi_basis": _label(lang, p.appi_basis),
            "gdpr_basis": _label(lang, p.gdpr_basis) if p.gdpr_basis else "-",
            "consent": p.consent_required,
            "owner": policy.persons[p.owner].name if p.owner else "-",
            "categories": [cat_label(c) for c in p.categories],
            "category_keys": list(p.categories),
            "roles": sorted(r for r in policy.roles if policy.may_claim(r, p.id)),
            "retention": rule_of[p.id],
            "version": p.version,
            "effective_from": p.effective_from.isoformat() if p.effective_from else "-",
        }
        for p in purposes
    ]
    rules = [
        {
            "id": r.id,
            "period": str(r.period),
            "anchor": _label(lang, r.anchor),
            "action": _label(lang, r.action),
            "legal_basis": r.legal_basis,
            "minimum": str(r.statutory_minimum) if r.statutory_minimum else "-",
        }
        for r in sorted(policy.retention_rules.values(), key=lambda r: r.id)
    ]
    measures = safety_measures(policy, fields, audit=audit)
    measure_groups = [
        {
            "category": _label(lang, cat),
            "items": [
                {
                    "id": m.id,
                    "text": m.text_ja if lang == "ja" else m.text_en,
                    "owner": policy.persons[m.owner].name if m.owner else "-",
                    "generated": m.generated,
                    "next_review": m.next_review.isoformat() if m.next_review else "-",
                }
                for m in measures
                if m.category is cat
            ],
        }
        for cat in MeasureCategory
    ]
    notice = policy.registers.notice
    handlers = policy.registers.handlers
    third_party = _third_party(policy, lang, cat_label, text, records)
    return {
        "lang": lang,
        "policy": policy,
        "cpo": policy.persons[policy.cpo] if policy.cpo else None,
        "persons": [policy.persons[k] for k in sorted(policy.persons)],
        "roles": [
            {
                "id": r.id,
                "purposes": list(r.purposes),
                "description": r.description,
                "responsible": policy.persons[r.responsible].name
                if r.responsible
                else "-",
            }
            for r in sorted(policy.roles.values(), key=lambda r: r.id)
        ],
        "handlers": [handlers.handlers[k] for k in sorted(handlers.handlers)],
        "strict_handlers": handlers.strict,
        "training_valid_for": str(handlers.training_valid_for)
        if handlers.training_valid_for
        else None,
        "purposes": purpose_rows,
        "categories": categories,
        "rules": rules,
        "measure_groups": measure_groups,
        "notice": notice,
        "notice_items": {
            item["id"]: item["label_ja"] if lang == "ja" else item["label_en"]
            for item in appi.topic("notice")["items"]
        },
        "fee": notice.fee_ja if lang == "ja" else notice.fee_en,
        "request_procedure": notice.request_procedure_ja
        if lang == "ja"
        else notice.request_procedure_en,
        "fields": sorted(fields, key=lambda f: (f.table, f.column)),
        "prohibitions": [
            policy.registers.prohibitions[k]
            for k in sorted(policy.registers.prohibitions)
        ],
        "special_care_used": any(c["special_care"] for c in categories),
        "appi_pack": appi.pack_id,
        "gdpr_pack": gdpr.pack_id,
        "extensions": EXTENSIONS,
        "requests": policy.requests,
        "gdpr_request": gdpr.topic("requests")["deadline"],
        "request_kinds": {
            regime: [
                {"label": k.label(lang), "article": k.article, "fee": k.fee}
                for k in _kinds_of(pack)
            ]
            for regime, pack in (("appi", appi), ("gdpr", gdpr))
        },
        "label": lambda key: _label(lang, key),
        **third_party,
        "routes": _routes(policy, lang),
    }


def _third_party(
    policy: Policy,
    lang: Lang,
    cat_label: Callable[[str], str],
    text: Callable[[Purpose], str],
    records: Sequence[ProvisionRecord] | None,
) -> dict[str, Any]:
    """The contractors, joint uses and provision records, ready to render."""
    tp = policy.third_party

    def covers(declared: Sequence[str], pid: str) -> bool:
        return any(a in declared for a in policy.tree.ancestors(pid))

    def day(value: dt.date | None) -> str:
        return value.isoformat() if value else "-"

    contractors = [
        {
            "id": c.id,
            "name": c.name,
            "address": c.address,
            "country": country_name(c.country, lang),
            "countries": [
                country_name(k, lang) for k in sorted(c.handling_countries())
            ],
            "purposes": [text(policy.purposes[p]) for p in c.purposes],
            "purpose_ids": list(c.purposes),
            "categories": [cat_label(k) for k in c.categories],
            "contract": " ".join(
                x for x in (c.contract_id, day(c.contract_date)) if x != "-"
            )
            or "-",
            "assessment": f"{day(c.assessment_date)} ({c.assessment_result})"
            if c.assessment_date and c.assessment_result
            else "-",
            "re_outsourcing": _label(lang, f"re_outsourcing.{c.re_outsourcing}"),
            "subcontractors": [
                {
                    "name": sub.name,
                    "countries": [country_name(k, lang) for k in sub.countries],
                    "approved": sub.approved,
                }
                for sub in c.subcontractors
            ],
            "next_review": day(c.next_review_due),
            "breach_notice_hours": c.breach_notice_hours,
        }
        for c in sorted(tp.contractors.values(), key=lambda c: c.id)
    ]
    joint_uses = [
        {
            "id": j.id,
            "items": [cat_label(k) for k in j.items],
            "scope": j.scope,
            "users": list(j.users),
            "purposes": [text(policy.purposes[p]) for p in j.purposes],
            "purpose_ids": list(j.purposes),
            "responsible_name": j.responsible_name,
            "responsible_address": j.responsible_address,
            "responsible_representative": j.responsible_representative or "-",
            "notice_published": day(j.notice_published),
        }
        for j in sorted(tp.joint_uses.values(), key=lambda j: j.id)
    ]
    recipients = {
        pid: [
            *(
                f"{c.name} ({country_name(c.country, lang)})"
                for c in sorted(tp.contractors.values(), key=lambda c: c.id)
                if covers(c.purposes, pid)
            ),
            *(
                f"{j.scope} ({_label(lang, 'joint_use')})"
                for j in sorted(tp.joint_uses.values(), key=lambda j: j.id)
                if covers(j.purposes, pid)
            ),
        ]
        for pid in policy.purposes
    }
    transfers = {
        pid: [
            country_name(k, lang)
            for k in sorted(
                {
                    country
                    for c in tp.contractors.values()
                    if covers(c.purposes, pid)
                    for country in c.handling_countries()
                    if country != tp.home_country
                }
            )
        ]
        for pid in policy.purposes
    }
    provided: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(records or (), key=lambda r: (r.counterparty_id, r.first_at)):
        if r.kind != "provision":
            continue
        who = r.items.get("recipient")
        who = who if isinstance(who, Mapping) else {}
        row = provided.setdefault(
            (r.counterparty_id, r.basis),
            {
                "recipient": str(who.get("name") or r.counterparty_id),
                "country": country_name(str(who["country"]), lang)
                if who.get("country")
                else "-",
                "basis": _label(lang, f"basis.{r.basis}"),
                "items": set(),
                "records": 0,
                "first": r.first_at.date(),
                "last": r.last_at.date(),
            },
        )
        row["items"].update(r.data_items)
        row["records"] += 1
        row["first"] = min(row["first"], r.first_at.date())
        row["last"] = max(row["last"], r.last_at.date())
    provisions = [
        {
            **row,
            "items": [
                cat_label(k) if k in policy.taxonomy else k
                for k in sorted(row["items"])
            ],
            "first": row["first"].isoformat(),
            "last": row["last"].isoformat(),
        }
        for _, row in sorted(provided.items())
    ]
    return {
        "contractors": contractors,
        "joint_uses": joint_uses,
        "recipients": recipients,
        "transfers": transfers,
        "provisions": provisions,
        "records_given": records is not None,
        "foreign_countries": [
            country_name(k, lang) for k in policy.registers.notice.foreign_countries
        ],
        "home_country": country_name(tp.home_country, lang),
    }


def _routes(policy: Policy, lang: Lang) -> dict[str, Any]:
    """The reporting routes (``[reporting]``), ready to render."""
    routes = policy.reporting

    def who(recipient: str) -> str:
        if recipient in policy.persons:
            person = policy.persons[recipient]
            return (
                f"{person.name}（{person.title}）"
                if lang == "ja"
                else (f"{person.name} ({person.title})")
            )
        if recipient in policy.roles:
            return recipient
        return _label(lang, f"authority.{recipient}").removeprefix("authority.")

    return {
        "steps": [
            {
                "id": step.id,
                "label": step.label or step.id,
                "recipient": who(step.recipient),
                "item": due_item_label(step.item, lang=lang) if step.item else "-",
            }
            for step in routes.steps
        ],
        "reminders": [
            f"{int(offset.total_seconds() // 3600)}"
            for offset in routes.reminder_offsets
        ],
        "principal_sla_hours": routes.principal_sla_hours,
        "dpo_contact": routes.dpo_contact,
    }


def _rule_id(policy: Policy, purpose_id: str) -> str:
    current: str | None = purpose_id
    while current is not None:
        purpose = policy.purposes[current]
        if purpose.retention is not None:
            return purpose.retention
        current = purpose.parent
    msg = f"purpose {purpose_id!r} has no retention rule"  # pragma: no cover
    raise ConfigurationError(msg)  # pragma: no cover - Policy validates this


def render_document(
    policy: Policy,
    name: str,
    *,
    lang: Lang = "ja",
    fmt: Format = "md",
    fields: Sequence[FieldRecord] = (),
    audit: bool = True,
    records: Sequence[ProvisionRecord] | None = None,
) -> str:
    """Render one document of the regulation.

    Args:
        policy: The policy to render.
        name: One of :data:`DOCUMENTS`.
        lang: ``"ja"`` or ``"en"``.
        fmt: ``"md"`` (Markdown) or ``"html"`` (a standalone page). The
            ``fideslang`` export is JSON in either format.
        fields: The stored fields, for the ledger and the generated technical
            safety measures (see :func:`custdata.sqlalchemy.field_inventory`).
        audit: Whether the audit trail is on (a generated technical measure).
        records: Provision records (法29条) to list in the ledger and the
            record of processing, as a
            :class:`~custdata.governance.ProvisionRecordStore` returns them
            (``store.all()``); grouped by recipient and basis, without subjects.
            ``None`` (no store given) says where the records are kept; an
            empty list that none is recorded.

    Raises:
        ValueError: An unknown document, language or format.
    """
    if name not in DOCUMENTS:
        msg = f"unknown document {name!r}; choose one of {', '.join(DOCUMENTS)}"
        raise ValueError(msg)
    if lang not in ("ja", "en"):
        msg = f"unknown language {lang!r}; choose 'ja' or 'en'"
        raise ValueError(msg)
    if fmt not in ("md", "html"):
        msg = f"unknown format {fmt!r}; choose 'md' or 'html'"
        raise ValueError(msg)
    if name == "fideslang":
        return _fideslang(policy, fields)
    context = _context(policy, lang, fields, audit, records)
    markdown = _environment().get_template(f"{name}.{lang}.md.j2").render(context)
    if fmt == "md":
        return str(markdown)
    return markdown_to_html(markdown, title=_title(markdown), lang=lang)


def render_documents(
    policy: Policy,
    *,
    lang: Lang = "ja",
    fmt: Format = "md",
    fields: Sequence[FieldRecord] = (),
    audit: bool = True,
    records: Sequence[ProvisionRecord] | None = None,
) -> dict[str, str]:
    """Render every document; return file names mapped to their contents.

    Names are ``<document>.<lang>.<md|html>``, and ``fideslang.yml`` for the
    fideslang export (JSON, which is valid YAML). The arguments are those of
    :func:`render_document`.

    Raises:
        ValueError: An unknown language or format.
    """
    out: dict[str, str] = {}
    for name in DOCUMENTS:
        text = render_document(
            policy,
            name,
            lang=lang,
            fmt=fmt,
            fields=fields,
            audit=audit,
            records=records,
        )
        out["fideslang.yml" if name == "fideslang" else f"{name}.{lang}.{fmt}"] = text
    return out


def _title(markdown: str) -> str:
    for line in markdown.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return "custdata"  # pragma: no cover - every template starts with a title


_PAGE = """<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, "Noto Sans CJK JP", sans-serif; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; line-height: 1.6; color: #1a1a1a; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #bbb; padding: .3rem .6rem; vertical-align: top; }}
th {{ background: #f0f0f0; }}
</style>
</head>
<body>
{body}</body>
</html>
"""


def markdown_to_html(markdown: str, *, title: str, lang: str = "ja") -> str:
    """Render Markdown to a standalone HTML page (no scripts, no network).

    Raw HTML in the Markdown is escaped, not passed through.
    """
    from markdown_it import MarkdownIt  # noqa: PLC0415 - only HTML needs it

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return _PAGE.format(lang=lang, title=html.escape(title), body=md.render(markdown))


def _fideslang(policy: Policy, fields: Sequence[FieldRecord]) -> str:
    """A fideslang manifest: one ``System`` with its privacy declarations.

    When fields are known, also one ``Dataset`` of the tables holding them.
    """
    tax = policy.taxonomy
    fides_key = _fides_key(policy.organisation)
    declarations = []
    for pid in sorted(policy.purposes):
        p = policy.purposes[pid]
        declarations.append(
            {
                "name": p.text_en,
                "data_use": _data_use(policy, p),
                "data_categories": sorted({tax[c].fideslang for c in p.categories}),
                "data_subjects": ["customer"],
            }
        )
    manifest: dict[str, Any] = {
        "system": [
            {
                "fides_key": fides_key,
                "name": policy.organisation,
                "description": f"custdata policy version {policy.version}",
                "system_type": "Service",
                "privacy_declarations": declarations,
            }
        ]
    }
    if fields:
        tables: dict[str, list[dict[str, Any]]] = {}
        for f in sorted(fields, key=lambda f: (f.table, f.column)):
            tables.setdefault(f.table, []).append(
                {
                    "name": f.column,
                    "data_categories": [tax[f.category].fideslang],
                    "description": f"custdata category {f.category}; purposes "
                    + ", ".join(f.purposes),
                }
            )
        manifest["dataset"] = [
            {
                "fides_key": f"{fides_key}_dataset",
                "name": f"{policy.organisation} customer data",
                "collections": [
                    {"name": name, "fields": cols}
                    for name, cols in sorted(tables.items())
                ],
            }
        ]
    return json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"


def _data_use(policy: Policy, purpose: Purpose) -> str:
    """The purpose's fideslang data use: its own, its parent's, or the default."""
    uses = policy.registers.data_uses
    current: str | None = purpose.id
    while current is not None:
        if current in uses:
            return uses[current]
        current = policy.purposes[current].parent
    return "essential.service"


def _fides_key(name: str) -> str:
    ascii_only = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    key = re.sub(r"[^a-z0-9]+", "_", ascii_only.lower()).strip("_")
    return key or "custdata_system"


# -- drift ----------------------------------------------------------------------


def _normalise(text: str) -> str:
    """Text with markup, escapes and spacing removed, for comparison."""
    text = re.sub(r"<[^>]+>", " ", text)
    text = html.unescape(text)
    text = re.sub(r"\\([\\`*_\[\]<>#|])", r"\1", text)
    text = unicodedata.normalize("NFKC", text)
    return "".join(text.split())


def notice_drift(policy: Policy, published: str) -> list[Drift]:
    """Compare a published privacy notice (Markdown, HTML or text) with the policy.

    The notice's language is the one whose purpose texts it contains more of
    (Japanese on a tie). Reported, in a stable order:

    * ``PUB001`` a purpose of the policy whose published text is not in the
      notice (a purpose added, or its text changed, without publishing);
    * ``PUB002`` a purpose listed in the notice's purposes section (the
      bullets under its heading, as :func:`render_document` writes it) that
      the policy no longer has;
    * ``PUB003`` a 公表事項 item of the policy (address, representative,
      complaint desk, fee, a foreign country of handling, a registered safety
      measure's text, a joint use's scope of users and responsible party's name
      and address) missing from the notice.

    Returns:
        The differences; empty when the notice matches the rendering.
    """
    body = _normalise(published)
    ja = sum(_normalise(p.text_ja) in body for p in policy.purposes.values())
    en = sum(_normalise(p.text_en) in body for p in policy.purposes.values())
    lang: Lang = "en" if en > ja else "ja"
    drifts: list[Drift] = []
    for pid in sorted(policy.purposes):
        p = policy.purposes[pid]
        text = p.text_ja if lang == "ja" else p.text_en
        if _normalise(text) not in body:
            drifts.append(
                Drift(
                    code="PUB001",
                    key_path=f"purposes.{pid}",
                    message=f"purpose {pid!r} is not in the published notice",
                )
            )
    known = {_normalise(p.text_ja) for p in policy.purposes.values()} | {
        _normalise(p.text_en) for p in policy.purposes.values()
    }
    drifts.extend(
        Drift(
            code="PUB002",
            key_path="purposes",
            message="the published notice lists a purpose the policy does not "
            f"have: {item[:80]!r}",
        )
        for item in _published_purposes(policy, published)
        if _normalise(item) not in known
    )
    notice = policy.registers.notice
    items = {
        "notice.address": notice.address,
        "notice.representative": notice.representative,
        "notice.complaint_desk": notice.complaint_desk,
        f"notice.fee_{lang}": notice.fee_ja if lang == "ja" else notice.fee_en,
    }
    for country in notice.foreign_countries:
        # The notice prints the country's name (28条2項), so that is what is looked for.
        items[f"notice.foreign_countries.{country}"] = country_name(country, lang)
    for jid, joint in sorted(policy.third_party.joint_uses.items()):
        where = f"third_party.joint_use.{jid}"
        items[f"{where}.scope"] = joint.scope
        items[f"{where}.responsible_name"] = joint.responsible_name
        items[f"{where}.responsible_address"] = joint.responsible_address
    for mid, measure in sorted(policy.registers.measures.items()):
        items[f"measures.{mid}.text_{lang}"] = (
            measure.text_ja if lang == "ja" else measure.text_en
        )
    for key, value in items.items():
        if value and _normalise(value) not in body:
            drifts.append(
                Drift(
                    code="PUB003",
                    key_path=key,
                    message=f"{key} is not in the published notice as the policy states it",
                )
            )
    return drifts


def _published_purposes(policy: Policy, published: str) -> list[str]:
    """The bullet items of the notice's purposes section, found by its heading."""
    items = rule_pack("appi", policy.effective_date).topic("notice")["items"]
    labels = [(i["label_ja"], i["label_en"]) for i in items if i["id"] == "purposes"]
    for label in labels[0] if labels else ():
        start = published.find(label)
        if start >= 0:
            break
    else:
        return []
    rest = published[start + len(label) :]
    rest = rest[rest.find("\n") + 1 :]
    heading = re.search(r"^#|<h[1-6]", rest, flags=re.MULTILINE)
    section = rest[: heading.start()] if heading else rest
    found = re.findall(r"^\s*[-*]\s+(.+)$", section, flags=re.MULTILINE)
    found += re.findall(r"<li>(.*?)</li>", section, flags=re.DOTALL)
    return [f.strip() for f in found]
