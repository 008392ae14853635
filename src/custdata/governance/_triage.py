"""Reportability: APPI 規則7条 categories 1-4 and GDPR Art. 33/34 (R-INC-2, R-SEC-2).

:func:`classify` applies the rule packs in force on the day the business knew
of the incident and records their ids. The high-grade encryption exemption is
never applied silently: when every field concerned was encrypted with keys the
incident did not compromise, and the key custody evidence
(:class:`KeyCustody`) shows the keys kept apart from the data, the result is an
*exemption candidate* for a person to confirm or reject
(:meth:`IncidentRegister.decide_exemption`).
"""

from __future__ import annotations

import enum

from typing import Any
from zoneinfo import ZoneInfo

import attrs

from custdata._errors import IncidentError
from custdata._taxonomy import Category, Taxonomy

from ._incidents import Incident, IncidentKind
from ._packs import RulePack, rule_pack


__all__ = [
    "AppiAssessment",
    "CategoryFinding",
    "Classification",
    "GdprAssessment",
    "KeyCustody",
    "Reportability",
    "classify",
    "key_custody",
]

_JST = ZoneInfo("Asia/Tokyo")
_MALICIOUS = 3  # 規則7条3号
_REMOTE_PROVIDERS = frozenset({"AwsKmsKeyProvider"})


@attrs.frozen(kw_only=True)
class KeyCustody:
    """Evidence of how the encryption keys are kept (R-SEC-2); never key material.

    Attributes:
        algorithm: The field cipher (``"AES-256-GCM"``).
        provider: The key provider's kind (``"AwsKmsKeyProvider"``), or
            ``None`` when the keyring is not wrapped under a KEK.
        kek_id: The key-encryption key's non-secret name, if any.
        data_key_ids: The keyring's data keys.
        keys_stored_apart: The keys are kept apart from the data (in a KMS, or
            a keyring file on other storage than the database).
    """

    algorithm: str
    provider: str | None
    kek_id: str | None
    data_key_ids: tuple[int, ...]
    keys_stored_apart: bool

    def as_dict(self) -> dict[str, Any]:
        """Return the evidence as a JSON-serialisable dict."""
        data = attrs.asdict(self)
        data["data_key_ids"] = list(self.data_key_ids)
        return data


def key_custody(keyring: Any, *, keys_stored_apart: bool | None = None) -> KeyCustody:
    """Return the key custody evidence of a :class:`custdata.crypto.Keyring`.

    Args:
        keyring: The keyring the fields are encrypted under.
        keys_stored_apart: Whether the keys are kept apart from the data. When
            omitted, it is true only for a keyring wrapped by a remote KMS;
            a local keyring file's location is the business's to declare.
    """
    provider = keyring.provider
    kind = None if provider is None else type(provider).__name__
    apart = keys_stored_apart
    if apart is None:
        apart = kind in _REMOTE_PROVIDERS
    return KeyCustody(
        algorithm="AES-256-GCM",
        provider=kind,
        kek_id=None if provider is None else str(provider.kek_id),
        data_key_ids=tuple(keyring.key_ids),
        keys_stored_apart=apart,
    )


class Reportability(str, enum.Enum):
    """The APPI outcome of a classification."""

    #: Must be reported to the PPC and notified to the subjects.
    REPORTABLE = "reportable"
    #: No category of 規則7条 applies (keep the record all the same).
    NOT_REPORTABLE = "not_reportable"
    #: A category applies, but the high-grade encryption exemption may hold:
    #: a person must confirm or reject it.
    EXEMPTION_CANDIDATE = "exemption_candidate"
    #: Only 仮名加工情報 is concerned.
    EXEMPT_PSEUDONYMISED = "exempt_pseudonymised"


@attrs.frozen(kw_only=True)
class CategoryFinding:
    """One 規則7条 category that applies, and why.

    Attributes:
        number: The item of 規則7条 (1-4).
        reason_en: Why, in English.
        reason_ja: Why, in Japanese.
    """

    number: int
    reason_en: str
    reason_ja: str


@attrs.frozen(kw_only=True)
class AppiAssessment:
    """The APPI classification of an incident.

    Attributes:
        pack_id: The rule pack applied.
        status: Reportable, not, or an exemption candidate.
        categories: The categories of 規則7条 that apply, with reasons.
        exemption_reason: Why the encryption exemption is a candidate (or
            why it is not, when fields were encrypted), if it was considered.
        custody: The key custody evidence the exemption rests on.
        final_report_days: Days allowed for the 確報 (60 for category 3).
    """

    pack_id: str
    status: Reportability
    categories: tuple[CategoryFinding, ...]
    exemption_reason: str | None = None
    custody: KeyCustody | None = None
    final_report_days: int = 30

    @property
    def category_numbers(self) -> tuple[int, ...]:
        """The numbers of the categories that apply."""
        return tuple(c.number for c in self.categories)


@attrs.frozen(kw_only=True)
class GdprAssessment:
    """The GDPR assessment of an incident.

    Attributes:
        pack_id: The rule pack applied.
        notify_authority: Art. 33: notify the supervisory authority.
        notify_subjects: Art. 34: communicate to the data subjects (high risk).
        reasons: Why, one sentence each.
    """

    pack_id: str
    notify_authority: bool
    notify_subjects: bool
    reasons: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Classification:
    """The outcome of :func:`classify`.

    Attributes:
        incident_id: The incident classified.
        appi: The APPI assessment, when APPI applies.
        gdpr: The GDPR assessment, when GDPR applies.
    """

    incident_id: str
    appi: AppiAssessment | None
    gdpr: GdprAssessment | None

    @property
    def pack_ids(self) -> tuple[str, ...]:
        """The ids of the rule packs the classification used."""
        return tuple(a.pack_id for a in (self.appi, self.gdpr) if a is not None)

    @property
    def eligible_for_cessation(self) -> bool:
        """The incident's subjects may demand 利用停止・消去 (法35条5項).

        True when the incident is reportable under APPI (a reportable
        incident is one of the situations of 35条5項).
        """
        return self.appi is not None and self.appi.status is Reportability.REPORTABLE

    def as_dict(self) -> dict[str, Any]:
        """Return the classification as a JSON-serialisable dict."""
        data: dict[str, Any] = {"incident_id": self.incident_id, "packs": []}
        data["packs"] = list(self.pack_ids)
        if self.appi is not None:
            a = self.appi
            data["appi"] = {
                "pack_id": a.pack_id,
                "status": a.status.value,
                "categories": [attrs.asdict(c) for c in a.categories],
                "exemption_reason": a.exemption_reason,
                "custody": None if a.custody is None else a.custody.as_dict(),
                "final_report_days": a.final_report_days,
            }
        if self.gdpr is not None:
            g = self.gdpr
            data["gdpr"] = {
                "pack_id": g.pack_id,
                "notify_authority": g.notify_authority,
                "notify_subjects": g.notify_subjects,
                "reasons": list(g.reasons),
            }
        data["eligible_for_cessation"] = self.eligible_for_cessation
        return data


def _known(incident: Incident, taxonomy: Taxonomy) -> list[Category]:
    unknown = [k for k in incident.scope.categories if k not in taxonomy]
    if unknown:
        msg = (
            f"incident {incident.incident_id!r} names categories the taxonomy "
            f"does not declare: {', '.join(unknown)}"
        )
        raise IncidentError(msg)
    return [taxonomy[k] for k in incident.scope.categories]


def _categories(
    incident: Incident, taxonomy: Taxonomy, pack: RulePack
) -> list[CategoryFinding]:
    params = pack.topic("incident")["categories"]
    threshold = int(params["subject_threshold"])
    found: list[CategoryFinding] = []
    cats = _known(incident, taxonomy)
    special = sorted(c.key for c in cats if c.special_care)
    if special:
        found.append(
            CategoryFinding(
                number=1,
                reason_en=f"special-care data is concerned ({', '.join(special)})",
                reason_ja="要配慮個人情報が含まれる（"
                + "、".join(taxonomy[k].label_ja for k in special)
                + "）",
            )
        )
    financial = sorted(c.key for c in cats if c.financial_damage_risk)
    if financial:
        found.append(
            CategoryFinding(
                number=2,
                reason_en="data whose misuse may cause financial damage is "
                f"concerned ({', '.join(financial)})",
                reason_ja="不正に利用されることにより財産的被害が生じるおそれがある"
                "個人データが含まれる（"
                + "、".join(taxonomy[k].label_ja for k in financial)
                + "）",
            )
        )
    if incident.malicious:
        if incident.acquisition_stage and not params["acquisition_stage"]:
            pass  # The 2022 rules cover only data the business already held.
        elif incident.acquisition_stage:
            found.append(
                CategoryFinding(
                    number=3,
                    reason_en="a malicious act against personal information being "
                    "acquired (acquisition stage, e.g. web skimming)",
                    reason_ja="不正の目的をもって行われたおそれがある行為による、"
                    "取得しようとしている個人情報の漏えい等",
                )
            )
        else:
            found.append(
                CategoryFinding(
                    number=3,
                    reason_en="possibly caused by an unauthorised or malicious act",
                    reason_ja="不正の目的をもって行われたおそれがある行為による漏えい等",
                )
            )
    if incident.scope.subject_count > threshold:
        found.append(
            CategoryFinding(
                number=4,
                reason_en=f"{incident.scope.subject_count} data subjects, more "
                f"than {threshold}",
                reason_ja=f"本人の数が{threshold}人を超える"
                f"（{incident.scope.subject_count}人）",
            )
        )
    return found


def _encryption_safe(
    incident: Incident, custody: KeyCustody | None
) -> tuple[bool, str | None]:
    """Whether the encryption exemption may hold, and why (or why not)."""
    fields = incident.scope.fields
    if not fields or not all(f.encrypted for f in fields):
        return False, None
    if incident.kind is not IncidentKind.LEAK:
        return False, (
            "the fields were encrypted, but encryption protects against "
            "disclosure, not against loss or damage"
        )
    used = {k for f in fields for k in f.key_ids}
    if incident.keys_compromised or used & set(incident.compromised_key_ids):
        return False, "the fields were encrypted, but the incident compromised the keys"
    if custody is None:
        return False, "the fields were encrypted, but no key custody evidence was given"
    if not custody.keys_stored_apart:
        return False, "the fields were encrypted, but the keys are not kept apart"
    return True, (
        f"every field concerned was encrypted ({custody.algorithm}, keys "
        f"{sorted(used) or list(custody.data_key_ids)}) and the keys, held by "
        f"{custody.provider or 'a keyring'} apart from the data, were not "
        "compromised: confirm the high-grade encryption exemption"
    )


def _appi(
    incident: Incident, taxonomy: Taxonomy, custody: KeyCustody | None, pack: RulePack
) -> AppiAssessment:
    deadlines = pack.topic("incident")["deadlines"]
    found = _categories(incident, taxonomy, pack)
    days = int(
        deadlines["final_days_malicious"]
        if any(c.number == _MALICIOUS for c in found)
        else deadlines["final_days"]
    )
    safe, why = _encryption_safe(incident, custody)
    if incident.pseudonymised:
        status = Reportability.EXEMPT_PSEUDONYMISED
    elif not found:
        status = Reportability.NOT_REPORTABLE
    elif safe:
        status = Reportability.EXEMPTION_CANDIDATE
    else:
        status = Reportability.REPORTABLE
    return AppiAssessment(
        pack_id=pack.pack_id,
        status=status,
        categories=tuple(found),
        exemption_reason=why,
        custody=custody,
        final_report_days=days,
    )


def _gdpr(
    incident: Incident, taxonomy: Taxonomy, custody: KeyCustody | None, pack: RulePack
) -> GdprAssessment:
    safe, _ = _encryption_safe(incident, custody)
    cats = _known(incident, taxonomy)
    reasons: list[str] = []
    if safe:
        notify_authority = False
        reasons.append(
            "Art. 33(1): the data was unintelligible to anyone not authorised "
            "(encrypted, keys not compromised), so a risk is unlikely; "
            "document the breach under Art. 33(5)"
        )
    else:
        notify_authority = True
        reasons.append(
            "Art. 33(1): a personal data breach not shown to be unlikely to "
            "result in a risk: notify the supervisory authority"
        )
    high: list[str] = []
    if any(c.special_care for c in cats):
        high.append("special categories of data")
    if any(c.financial_damage_risk for c in cats):
        high.append("financial data")
    if incident.malicious and incident.kind is IncidentKind.LEAK:
        high.append("a malicious disclosure")
    notify_subjects = bool(high) and not safe
    if notify_subjects:
        reasons.append(
            f"Art. 34(1): likely high risk ({', '.join(high)}): communicate "
            "the breach to the data subjects"
        )
    elif high:
        reasons.append(
            "Art. 34(3)(a): high risk, but the data was encrypted: no "
            "communication to the data subjects is required"
        )
    return GdprAssessment(
        pack_id=pack.pack_id,
        notify_authority=notify_authority,
        notify_subjects=notify_subjects,
        reasons=tuple(reasons),
    )


def classify(
    incident: Incident,
    *,
    taxonomy: Taxonomy | None = None,
    custody: KeyCustody | None = None,
    appi_pack: RulePack | None = None,
    gdpr_pack: RulePack | None = None,
) -> Classification:
    """Classify *incident* under the packs in force when the business knew of it.

    Args:
        incident: The incident.
        taxonomy: The policy's taxonomy (categories and their flags); the
            built-in one when omitted.
        custody: Key custody evidence (:func:`key_custody`), needed for the
            encryption exemption to become a candidate.
        appi_pack: The APPI pack to apply instead of the one in force on the
            detection day (to replay a decision, or compare packs).
        gdpr_pack: The GDPR pack to apply instead of the one in force.

    Raises:
        IncidentError: The scope names a category the taxonomy lacks.
        ConfigurationError: No rule pack was in force on the detection day.
    """
    tax = taxonomy if taxonomy is not None else Taxonomy.default()
    day = incident.detected_at.astimezone(_JST).date()
    appi = gdpr = None
    if "appi" in incident.jurisdictions:
        pack = appi_pack if appi_pack is not None else rule_pack("appi", day)
        appi = _appi(incident, tax, custody, pack)
    if "gdpr" in incident.jurisdictions:
        pack = gdpr_pack if gdpr_pack is not None else rule_pack("gdpr", day)
        gdpr = _gdpr(incident, tax, custody, pack)
    return Classification(incident_id=incident.incident_id, appi=appi, gdpr=gdpr)
