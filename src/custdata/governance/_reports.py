"""Incident reports: the PPC report, the subject notice, the GDPR notification (R-INC-4).

A report's items come from the rule pack (the nine items of 規則8条, the five
of the subject notice under 規則10条, GDPR Art. 33(3)(a)-(d)). The incident
record fills what it knows (overview, data items, number of subjects, cause;
the nature of a GDPR breach); the rest are facts recorded on the timeline
(:meth:`IncidentRegister.record_fact`). A preliminary report (速報) may leave
items open; a final report (確報) must have them all, or
:class:`~custdata.IncidentReportIncompleteError` names those missing.

Reports render as JSON (:meth:`IncidentReport.to_json`) and as Japanese or
English text (:meth:`IncidentReport.render`). They hold counts, categories and
what people wrote; never a customer value.
"""

from __future__ import annotations

import enum
import json

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import attrs

from custdata._errors import IncidentError, IncidentReportIncompleteError
from custdata._taxonomy import Taxonomy

from ._incidents import Incident, IncidentKind
from ._packs import rule_pack
from ._triage import Classification


__all__ = ["IncidentReport", "ReportItem", "ReportKind", "ReportStage", "build_report"]

_JST = ZoneInfo("Asia/Tokyo")
_CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩"
_KIND_EN = {
    IncidentKind.LEAK: ("a leak of", "a possible leak of"),
    IncidentKind.LOSS: ("a loss of", "a possible loss of"),
    IncidentKind.DAMAGE: ("damage to", "possible damage to"),
}
_KIND_JA = {
    IncidentKind.LEAK: "漏えい",
    IncidentKind.LOSS: "滅失",
    IncidentKind.DAMAGE: "毀損",
}


class ReportKind(str, enum.Enum):
    """Which report to build."""

    #: The report to the PPC (or the delegated ministry), 規則8条.
    PPC = "ppc"
    #: The notice to the data subjects, 規則10条.
    SUBJECT_NOTICE = "subject_notice"
    #: The notification to the supervisory authority, GDPR Art. 33.
    GDPR_AUTHORITY = "gdpr_authority"


class ReportStage(str, enum.Enum):
    """Preliminary (速報, partial allowed) or final (確報, complete)."""

    PRELIMINARY = "preliminary"
    FINAL = "final"


@attrs.frozen(kw_only=True)
class ReportItem:
    """One item of a report.

    Attributes:
        number: Its number in the rule pack's full list (⑧ is 8, (d) is 4).
        key: The item's key in the rule pack (``"recurrence_prevention"``).
        label_ja: Its Japanese heading.
        label_en: Its English heading.
        text_ja: Its Japanese text, or ``None`` while not known.
        text_en: Its English text, or ``None`` while not known.
    """

    number: int
    key: str
    label_ja: str
    label_en: str
    text_ja: str | None
    text_en: str | None


@attrs.frozen(kw_only=True)
class IncidentReport:
    """A built report.

    Attributes:
        kind: Which report.
        stage: Preliminary or final.
        incident_id: The incident.
        pack_id: The rule pack whose item list was used.
        organisation: The reporting business.
        detected_at: When the business knew (shown in Japan time).
        categories: The 規則7条 categories that apply (APPI reports).
        items: The items, in the pack's order.
    """

    kind: ReportKind
    stage: ReportStage
    incident_id: str
    pack_id: str
    organisation: str
    detected_at: str
    categories: tuple[int, ...]
    items: tuple[ReportItem, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        """The keys of the items not yet known."""
        return tuple(i.key for i in self.items if i.text_ja is None)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-serialisable dict."""
        return {
            "kind": self.kind.value,
            "stage": self.stage.value,
            "incident_id": self.incident_id,
            "pack_id": self.pack_id,
            "organisation": self.organisation,
            "detected_at": self.detected_at,
            "categories": list(self.categories),
            "items": [attrs.asdict(i) for i in self.items],
            "missing": list(self.missing),
        }

    def to_json(self) -> str:
        """Return the report as JSON (UTF-8 text, keys sorted)."""
        return json.dumps(self.as_dict(), ensure_ascii=False, indent=2, sort_keys=True)

    def render(self, lang: str = "ja") -> str:
        """Return the report as plain text in Japanese (``"ja"``) or English (``"en"``).

        Raises:
            ValueError: *lang* is neither.
        """
        if lang not in {"ja", "en"}:
            raise ValueError("lang is 'ja' or 'en'")
        ja = lang == "ja"
        title = _TITLES[self.kind][0 if ja else 1]
        stage = {
            ReportStage.PRELIMINARY: ("速報", "preliminary"),
            ReportStage.FINAL: ("確報", "final"),
        }[self.stage][0 if ja else 1]
        if self.kind is ReportKind.SUBJECT_NOTICE:
            lines = [title, ""]
        else:
            lines = [f"{title}（{stage}）" if ja else f"{title} ({stage})", ""]
        head = [
            ("事業者", "Business", self.organisation),
            ("事案番号", "Incident", self.incident_id),
            ("知った日時", "Known since", self.detected_at),
            ("適用規則", "Rule pack", self.pack_id),
        ]
        if self.kind is ReportKind.PPC:
            cats = (
                "、".join(f"第{n}号" for n in self.categories)
                if ja
                else ", ".join(f"item {n}" for n in self.categories)
            )
            head.append(("報告対象（規則7条）", "Reportable under rule 7", cats or "-"))
        lines.extend(f"{j if ja else e}: {v}" for j, e, v in head)
        for item in self.items:
            mark = (
                f"({chr(ord('a') + item.number - 1)})"
                if self.kind is ReportKind.GDPR_AUTHORITY
                else _CIRCLED[item.number - 1]
            )
            label = item.label_ja if ja else item.label_en
            text = item.text_ja if ja else item.text_en
            if text is None:
                text = "（未確定）" if ja else "(not yet known)"
            lines.extend(("", f"{mark} {label}"))
            lines.extend(f"    {line}" for line in text.splitlines() or [""])
        return "\n".join(lines) + "\n"


_TITLES = {
    ReportKind.PPC: (
        "個人データの漏えい等の報告",
        "Report of a personal data breach to the PPC",
    ),
    ReportKind.SUBJECT_NOTICE: (
        "個人データの漏えい等に関するお知らせ",
        "Notice of a personal data breach",
    ),
    ReportKind.GDPR_AUTHORITY: (
        "監督機関への個人データ侵害の通知（GDPR第33条）",
        "Notification of a personal data breach (GDPR Art. 33)",
    ),
}


def _auto(
    incident: Incident, taxonomy: Taxonomy, dpo_contact: str | None
) -> dict[str, tuple[str, str]]:
    """What the incident record itself says for each item: (ja, en)."""
    known = incident.detected_at.astimezone(_JST)
    kind_en = _KIND_EN[incident.kind][1 if incident.possible else 0]
    possible_ja = "のおそれ" if incident.possible else ""
    scope = incident.scope
    cats = [taxonomy[k] for k in scope.categories if k in taxonomy]
    encrypted = {f.category for f in scope.fields if f.encrypted}
    items_ja = "、".join(
        c.label_ja + ("（暗号化済み）" if c.key in encrypted else "") for c in cats
    )
    items_en = ", ".join(
        c.label_en + (" (encrypted)" if c.key in encrypted else "") for c in cats
    )
    count_ja = f"{scope.subject_count}人" + (
        "（おそれを含む）" if incident.possible else ""
    )
    count_en = f"{scope.subject_count} data subjects" + (
        " (possibly affected)" if incident.possible else ""
    )
    out = {
        "overview": (
            (
                f"{known.year}年{known.month}月{known.day}日、"
                f"個人データの{_KIND_JA[incident.kind]}{possible_ja}を認知した。"
            ),
            (
                f"On {known:%Y-%m-%d} (JST) the business became aware of "
                f"{kind_en} personal data."
            ),
        ),
        "data_items": (items_ja, items_en),
        "subject_count": (count_ja, count_en),
        "nature": (
            f"{_KIND_JA[incident.kind]}{possible_ja}。データの種類: {items_ja}。"
            f"データ主体の数: 約{scope.subject_count}人"
            + (
                f"、記録の数: 約{scope.record_count}件。"
                if scope.record_count is not None
                else "。"
            ),
            f"{kind_en[0].upper()}{kind_en[1:]} personal data. Categories: {items_en}. "
            f"Approximate number of data subjects: {scope.subject_count}"
            + (
                f"; of records: {scope.record_count}."
                if scope.record_count is not None
                else "."
            ),
        ),
    }
    if incident.cause.strip():
        out["cause"] = (incident.cause, incident.cause)
    if dpo_contact:
        out["contact"] = (dpo_contact, dpo_contact)
    return out


def build_report(
    incident: Incident,
    classification: Classification,
    facts: Mapping[str, str],
    *,
    kind: ReportKind | str = ReportKind.PPC,
    stage: ReportStage | str = ReportStage.FINAL,
    taxonomy: Taxonomy | None = None,
    organisation: str = "",
    dpo_contact: str | None = None,
) -> IncidentReport:
    """Build a report of *incident*.

    Args:
        incident: The incident.
        classification: Its classification; the report uses the same packs.
        facts: The latest text per item (:meth:`IncidentRegister.facts`); a
            fact replaces what the record itself says.
        kind: Which report.
        stage: Preliminary (items may be missing) or final (all required).
        taxonomy: The policy's taxonomy, for the data items' labels.
        organisation: The reporting business (the policy's organisation).
        dpo_contact: The GDPR contact point (the policy's
            ``reporting.dpo_contact``).

    Raises:
        IncidentError: The classification does not cover the report's regime.
        IncidentReportIncompleteError: A final report lacks items; its
            ``missing`` names them.
    """
    kind = ReportKind(kind)
    stage = ReportStage(stage)
    tax = taxonomy if taxonomy is not None else Taxonomy.default()
    assessment = (
        classification.gdpr
        if kind is ReportKind.GDPR_AUTHORITY
        else classification.appi
    )
    if assessment is None:
        regime = "GDPR" if kind is ReportKind.GDPR_AUTHORITY else "APPI"
        msg = f"incident {incident.incident_id!r} was not classified under {regime}"
        raise IncidentError(msg)
    pack = rule_pack(
        "gdpr" if kind is ReportKind.GDPR_AUTHORITY else "appi",
        pack_id=assessment.pack_id,
    )
    topic = pack.topic("incident")
    specs = list(enumerate(topic["report_items"], start=1))
    if kind is ReportKind.SUBJECT_NOTICE:
        wanted = list(topic["subject_notice"]["items"])
        specs = [(n, s) for n, s in specs if s["key"] in wanted]
    auto = _auto(incident, tax, dpo_contact)
    items = []
    for number, spec in specs:
        key = str(spec["key"])
        ja: str | None
        en: str | None
        if key in facts and facts[key].strip():
            ja = en = facts[key]
        elif key in auto:
            ja, en = auto[key]
        else:
            ja = en = None
        items.append(
            ReportItem(
                number=number,
                key=key,
                label_ja=str(spec["ja"]),
                label_en=str(spec["en"]),
                text_ja=ja,
                text_en=en,
            )
        )
    report = IncidentReport(
        kind=kind,
        stage=stage,
        incident_id=incident.incident_id,
        pack_id=pack.pack_id,
        organisation=organisation,
        detected_at=f"{incident.detected_at.astimezone(_JST):%Y-%m-%d %H:%M} JST",
        categories=()
        if classification.appi is None or kind is ReportKind.GDPR_AUTHORITY
        else classification.appi.category_numbers,
        items=tuple(items),
    )
    if stage is ReportStage.FINAL and report.missing:
        msg = (
            f"the final {kind.value} report of incident {incident.incident_id!r} "
            f"lacks items: {', '.join(report.missing)}"
        )
        raise IncidentReportIncompleteError(msg, missing=report.missing)
    return report
