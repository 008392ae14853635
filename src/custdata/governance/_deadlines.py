"""The incident deadline engine (R-INC-3) and reminders (R-INC-5).

APPI deadlines are counted in calendar days in Japan time from the day the
business knew of the incident, the day itself not counted (民法140条), and fall
at the end of the last day (23:59:59 JST): an incident known at 01:00 JST on
1 February (16:00 UTC on 31 January) has its 確報 due on 3 March, not 2 March.
Day arithmetic on dates is month-end safe (31 January + 30 days is 2 March, or
1 March in a leap year). GDPR's 72 hours run from the moment of awareness.
The contractor's notice to its principal follows the contract's SLA (hours).
"Promptly" items (the subject notice) carry no due time: they are due now.
"""

from __future__ import annotations

import datetime as dt

from collections.abc import Collection, Sequence
from zoneinfo import ZoneInfo

import attrs

from custdata._reporting import ReportingRoutes

from ._incidents import Incident
from ._packs import rule_pack
from ._triage import Classification, Reportability


__all__ = ["DueItem", "Reminder", "deadlines", "due_item_label", "reminders"]


@attrs.frozen(kw_only=True)
class DueItem:
    """Something the business must do by a time.

    Attributes:
        key: Stable key (``"ppc_preliminary"``, ``"ppc_final"``,
            ``"appi_subject_notice"``, ``"gdpr_authority"``,
            ``"gdpr_subject_notice"``, ``"principal_notice"``).
        regime: ``"appi"``, ``"gdpr"`` or ``"contract"``.
        label_en: What to do, in English.
        label_ja: What to do, in Japanese.
        due_at: The deadline (time-zone aware), or ``None`` for "promptly".
        alert_at: A later, hard limit (the 速報's 5 days), if any.
        basis: The rule pack or the policy setting the deadline comes from.
    """

    key: str
    regime: str
    label_en: str
    label_ja: str
    due_at: dt.datetime | None
    alert_at: dt.datetime | None = None
    basis: str

    @property
    def promptly(self) -> bool:
        """The item is due "promptly" (遅滞なく / without undue delay)."""
        return self.due_at is None

    def as_dict(self) -> dict[str, object]:
        """Return the item as a JSON-serialisable dict."""
        return {
            "key": self.key,
            "regime": self.regime,
            "label_en": self.label_en,
            "label_ja": self.label_ja,
            "due_at": None if self.due_at is None else self.due_at.isoformat(),
            "alert_at": None if self.alert_at is None else self.alert_at.isoformat(),
            "basis": self.basis,
        }


@attrs.frozen(kw_only=True)
class Reminder:
    """A reminder that has fallen due.

    Attributes:
        item: The due item's key.
        remind_at: When the reminder fell due.
        due_at: The item's deadline.
        before: How long before the deadline the reminder is set.
    """

    item: str
    remind_at: dt.datetime
    due_at: dt.datetime
    before: dt.timedelta


#: The due items' names (English, Japanese); ``principal_notice`` names the principal.
_ITEM_LABELS: dict[str, tuple[str, str]] = {
    "ppc_preliminary": (
        "Preliminary report to the PPC (速報)",
        "個人情報保護委員会への速報",
    ),
    "ppc_final": ("Final report to the PPC (確報)", "個人情報保護委員会への確報"),
    "appi_subject_notice": (
        "Notice to the data subjects (promptly)",
        "本人への通知（速やかに）",
    ),
    "gdpr_authority": (
        "Notification to the supervisory authority (Art. 33)",
        "監督機関への通知（GDPR第33条）",
    ),
    "gdpr_subject_notice": (
        "Communication to the data subjects (Art. 34)",
        "データ主体への連絡（GDPR第34条）",
    ),
    "principal_notice": ("Notice to the principal", "委託元への通知"),
}


def due_item_label(key: str, *, lang: str = "en") -> str:
    """The name of the due item *key* (``"ppc_preliminary"``...) in *lang*.

    Raises:
        KeyError: An unknown key (see :data:`custdata.DUE_ITEM_KEYS`).
    """
    en, ja = _ITEM_LABELS[key]
    return ja if lang == "ja" else en


def _end_of_day(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=tz)


def deadlines(
    incident: Incident,
    classification: Classification,
    *,
    routes: ReportingRoutes | None = None,
) -> tuple[DueItem, ...]:
    """Return the incident's due items, earliest first ("promptly" ones first).

    An APPI exemption candidate keeps its clocks until a person confirms the
    exemption: pass the classification only while it stands.

    Args:
        incident: The incident.
        classification: Its classification (:func:`classify`).
        routes: The policy's reporting routes (the principal SLA).
    """
    items: list[DueItem] = []
    appi = classification.appi
    if appi is not None and appi.status in {
        Reportability.REPORTABLE,
        Reportability.EXEMPTION_CANDIDATE,
    }:
        pack = rule_pack("appi", pack_id=appi.pack_id)
        params = pack.topic("incident")["deadlines"]
        tz = ZoneInfo(str(params["time_zone"]))
        known = incident.detected_at.astimezone(tz).date()
        target = int(params["preliminary_target_days"])
        alert = int(params["preliminary_alert_days"])
        items.append(
            DueItem(
                key="ppc_preliminary",
                regime="appi",
                label_en=_ITEM_LABELS["ppc_preliminary"][0],
                label_ja=_ITEM_LABELS["ppc_preliminary"][1],
                due_at=_end_of_day(known + dt.timedelta(days=target), tz),
                alert_at=_end_of_day(known + dt.timedelta(days=alert), tz),
                basis=pack.pack_id,
            )
        )
        items.append(
            DueItem(
                key="ppc_final",
                regime="appi",
                label_en=_ITEM_LABELS["ppc_final"][0],
                label_ja=_ITEM_LABELS["ppc_final"][1],
                due_at=_end_of_day(
                    known + dt.timedelta(days=appi.final_report_days), tz
                ),
                basis=pack.pack_id,
            )
        )
        items.append(
            DueItem(
                key="appi_subject_notice",
                regime="appi",
                label_en=_ITEM_LABELS["appi_subject_notice"][0],
                label_ja=_ITEM_LABELS["appi_subject_notice"][1],
                due_at=None,
                basis=pack.pack_id,
            )
        )
    gdpr = classification.gdpr
    if gdpr is not None:
        pack = rule_pack("gdpr", pack_id=gdpr.pack_id)
        hours = int(pack.topic("incident")["deadlines"]["authority_hours"])
        if gdpr.notify_authority:
            items.append(
                DueItem(
                    key="gdpr_authority",
                    regime="gdpr",
                    label_en=_ITEM_LABELS["gdpr_authority"][0],
                    label_ja=_ITEM_LABELS["gdpr_authority"][1],
                    due_at=incident.detected_at + dt.timedelta(hours=hours),
                    basis=pack.pack_id,
                )
            )
        if gdpr.notify_subjects:
            items.append(
                DueItem(
                    key="gdpr_subject_notice",
                    regime="gdpr",
                    label_en=_ITEM_LABELS["gdpr_subject_notice"][0],
                    label_ja=_ITEM_LABELS["gdpr_subject_notice"][1],
                    due_at=None,
                    basis=pack.pack_id,
                )
            )
    if incident.principal is not None:
        sla = None if routes is None else routes.principal_sla_hours
        items.append(
            DueItem(
                key="principal_notice",
                regime="contract",
                label_en=f"Notice to the principal {incident.principal}",
                label_ja=f"委託元（{incident.principal}）への通知",
                due_at=None
                if sla is None
                else incident.detected_at + dt.timedelta(hours=sla),
                basis="policy: reporting.principal_sla_hours",
            )
        )
    first = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return tuple(sorted(items, key=lambda i: i.due_at or first))


def reminders(
    items: Sequence[DueItem],
    *,
    offsets: Sequence[dt.timedelta],
    now: dt.datetime,
    done: Collection[str] = (),
) -> tuple[Reminder, ...]:
    """Return the reminders fallen due by *now* for items not yet done.

    A reminder is due *offset* before each deadline; once the deadline has
    passed every reminder of the item is due (the item is overdue).

    Args:
        items: The due items (:func:`deadlines`).
        offsets: How long before each deadline to remind (the policy's
            ``reporting.reminder_offsets_hours``).
        now: The current time (time-zone aware).
        done: Keys of the items already done.

    Raises:
        ValueError: *now* is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be a time-zone aware datetime")
    out: list[Reminder] = []
    for item in items:
        if item.key in done or item.due_at is None:
            continue
        for before in sorted(offsets, reverse=True):
            at = item.due_at - before
            if at <= now:
                out.append(
                    Reminder(
                        item=item.key, remind_at=at, due_at=item.due_at, before=before
                    )
                )
    return tuple(sorted(out, key=lambda r: (r.remind_at, r.item)))
