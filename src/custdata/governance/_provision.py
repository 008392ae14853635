"""Third-party provision, receipts and their records (APPI 27–31条, 33条5項).

:class:`ProvisionGate` is the one place that decides whether customer data may
leave for a third party (:meth:`~ProvisionGate.decide`), keeps the provider's
record the law asks for (:meth:`~ProvisionGate.record`, 法29条, 規則19–21条),
confirms and records data received from a third party
(:meth:`~ProvisionGate.receive`, 法30条, 規則22–25条), confirms and records the
provision of 個人関連情報 (:meth:`~ProvisionGate.provide_related_info`, 法31条)
and discloses the records naming one subject (:meth:`~ProvisionGate.disclose`,
法33条5項). Everything here is pure: the records go to a
:class:`ProvisionRecordStore` (:class:`InMemoryProvisionRecordStore` here, the
SQL store in :mod:`custdata.sqlalchemy`), consent is asked of a
:class:`~custdata.governance.ConsentSource`, and the legal parameters (record
items, exempt bases, retention periods) come from the ``provision`` topic of
the APPI rule pack in force.

Reading the data and recording the ``export.third_party`` audit event is
:func:`custdata.sqlalchemy.provide`'s job.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

import attrs

from custdata._errors import (
    ConfigurationError,
    ContractorReviewOverdueError,
    CustdataError,
    ProvisionRefusedError,
    ReceiptRefusedError,
)
from custdata._policy import Policy
from custdata._retention import Period
from custdata._thirdparty import Contractor, JointUse

from ._consent import ConsentSource
from ._packs import RulePack, rule_pack


__all__ = [
    "Basis",
    "ForeignTransferInfo",
    "InMemoryProvisionRecordStore",
    "Provider",
    "ProvisionDecision",
    "ProvisionGate",
    "ProvisionRecord",
    "ProvisionRecordStore",
    "ProvisionRequest",
    "ReceiptRequest",
    "Recipient",
    "RelatedInfoRequest",
    "disclose_records",
    "retain_until",
]

Method = Literal["each", "bulk", "contract"]
RecordKind = Literal["provision", "receipt", "related_info"]


class Basis(str, enum.Enum):
    """The legal basis of a provision (R-TPP-1)."""

    #: With the subject's prior consent (27条1項).
    CONSENT_27_1 = "consent_27_1"
    #: Opt-out provision notified to the PPC (27条2項).
    OPTOUT_27_2 = "optout_27_2"
    #: One of the statutory exceptions (27条1項各号).
    EXCEPTION_27_1 = "exception_27_1"
    #: Outsourcing within the purpose (27条5項1号): not a third party.
    OUTSOURCING_27_5_1 = "outsourcing_27_5_1"
    #: Business succession (27条5項2号): not a third party.
    SUCCESSION_27_5_2 = "succession_27_5_2"
    #: Joint use with prior notice (27条5項3号): not a third party.
    JOINT_USE_27_5_3 = "joint_use_27_5_3"
    #: To a foreign third party with consent, after informing (28条1項・2項).
    FOREIGN_CONSENT_28_1 = "foreign_consent_28_1"
    #: To a foreign recipient with an equivalent system (28条1項, 規則16条).
    FOREIGN_EQUIVALENT_28_1 = "foreign_equivalent_28_1"


_FOREIGN_BASES = (Basis.FOREIGN_CONSENT_28_1, Basis.FOREIGN_EQUIVALENT_28_1)
#: The 27条5項 bases: allowed to a foreign recipient only with an equivalence record.
_NOT_THIRD_PARTY = (
    Basis.OUTSOURCING_27_5_1,
    Basis.SUCCESSION_27_5_2,
    Basis.JOINT_USE_27_5_3,
)


#: How often extending a bulk record is retried when another writer got there first.
_BULK_ATTEMPTS = 8


def _subjects(value: Iterable[object]) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        msg = "subjects must be a sequence of subject ids, not one string"
        raise TypeError(msg)
    return tuple(dict.fromkeys(str(v) for v in value))


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(dict.fromkeys(str(v) for v in value))


@attrs.frozen(kw_only=True)
class Recipient:
    """Who receives a provision.

    Attributes:
        id: The recipient's id (a contractor's registry id for outsourcing,
            a joint user's id for joint use).
        name: Its name (recorded; 規則20条).
        address: Its address.
        representative: Its representative, for a corporation.
        country: Where it is established (ISO code); not the home country
            makes it a foreign third party (28条).
        unspecified_many: The provision is to unspecified many persons; the
            record then says so instead of naming the recipient (規則20条1項).
    """

    id: str
    name: str
    address: str = ""
    representative: str = ""
    country: str = "JP"
    unspecified_many: bool = False

    def as_record(self) -> dict[str, Any]:
        """The recipient's identification as recorded."""
        if self.unspecified_many:
            return {"id": self.id, "name": "不特定多数 (unspecified many persons)"}
        out = {"id": self.id, "name": self.name, "country": self.country}
        if self.address:
            out["address"] = self.address
        if self.representative:
            out["representative"] = self.representative
        return out


@attrs.frozen(kw_only=True)
class ForeignTransferInfo:
    """What a foreign transfer must rest on (28条, 規則16–17条).

    For consent (28条2項, 規則17条2項) the subject is informed of three items:
    the country's name, its personal-information protection regime and the
    recipient's measures. For an equivalent system (基準適合体制, 規則16条) the
    company keeps an equivalence record instead.

    Attributes:
        country: The recipient's country (ISO code).
        regime: What the subject was told of that country's regime.
        recipient_measures: What the subject was told of the recipient's measures.
        equivalence_record: The reference of the equivalence record.
    """

    country: str
    regime: str = ""
    recipient_measures: str = ""
    equivalence_record: str = ""

    def as_record(self) -> dict[str, str]:
        """The transfer information as recorded."""
        return {k: v for k, v in attrs.asdict(self).items() if v}


@attrs.frozen(kw_only=True)
class ProvisionRequest:
    """One provision asked of the gate.

    Attributes:
        recipient: Who receives it.
        basis: The legal basis.
        purpose: The purpose the data is read under (a policy purpose id).
        subjects: The data subjects' ids.
        fields: The fields provided (names, for the record and the audit).
        categories: Their data categories.
        method: How it is recorded: ``"each"`` provision, ``"bulk"`` for
            continuous provision to one recipient (規則19条2項), or
            ``"contract"`` when the contract document stands in (規則19条3項).
        contract_ref: The contract document's reference (``"contract"``).
        exception: The 27条1項 exception cited (``"27_1_2"``), for that basis.
        joint_use: The joint-use declaration's id, for that basis.
        foreign: The foreign-transfer information (28条).
    """

    recipient: Recipient
    basis: Basis = attrs.field(converter=Basis)
    purpose: str
    subjects: tuple[str, ...] = attrs.field(converter=_subjects)
    fields: tuple[str, ...] = attrs.field(converter=_strings)
    categories: tuple[str, ...] = attrs.field(converter=_strings)
    method: Method = attrs.field(
        default="each", validator=attrs.validators.in_(("each", "bulk", "contract"))
    )
    contract_ref: str = ""
    exception: str = ""
    joint_use: str = ""
    foreign: ForeignTransferInfo | None = None


@attrs.frozen(kw_only=True)
class ProvisionDecision:
    """The gate's yes to a provision, with what must be recorded.

    Attributes:
        request: The request decided.
        record_items: The items its record must hold; empty when the basis
            needs no record (27条1項 exceptions, 27条5項).
        consent_ids: For consent bases, each subject's consent record id.
        warnings: What the gate let pass because the policy says ``warn``.
        pack_id: The rule pack that decided.
        decided_at: When.
    """

    request: ProvisionRequest
    record_items: tuple[str, ...]
    consent_ids: Mapping[str, str]
    warnings: tuple[str, ...]
    pack_id: str
    decided_at: dt.datetime

    @property
    def record_required(self) -> bool:
        """Whether the provision needs a provider's record (法29条)."""
        return bool(self.record_items)


@attrs.frozen(kw_only=True)
class ProvisionRecord:
    """A record kept under 法29条 (provision), 30条 (receipt) or 31条 (related info).

    It names subjects by their ids and data by their categories and fields:
    it never holds a customer value.

    Attributes:
        record_id: Its id (the ``provision_record_id`` of the audit event).
        kind: ``"provision"``, ``"receipt"`` or ``"related_info"``.
        basis: The basis (a :class:`Basis` value, or for a receipt
            ``"consent"``, ``"optout"`` or ``"non_business"``).
        method: ``"each"``, ``"bulk"`` or ``"contract"``.
        counterparty_id: The recipient's or provider's id.
        subjects: The subjects it names.
        data_items: The data categories it covers.
        items: The legal items, by name, as the rule pack lists them.
        created_at: When it was created.
        first_at: The first provision or receipt it covers.
        last_at: The last one.
        retain_until: When it may be purged.
        pack_id: The rule pack that set its items and retention.
        revision: How many times it was extended (a bulk record); a store
            replaces revision *n* only over revision *n - 1*.
    """

    record_id: str
    kind: RecordKind
    basis: str
    method: Method
    counterparty_id: str
    subjects: tuple[str, ...] = attrs.field(converter=_subjects)
    data_items: tuple[str, ...] = attrs.field(converter=_strings)
    items: Mapping[str, Any]
    created_at: dt.datetime
    first_at: dt.datetime
    last_at: dt.datetime
    retain_until: dt.datetime
    pack_id: str
    revision: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (dates in ISO 8601)."""
        return {
            "record_id": self.record_id,
            "kind": self.kind,
            "basis": self.basis,
            "method": self.method,
            "counterparty_id": self.counterparty_id,
            "subjects": list(self.subjects),
            "data_items": list(self.data_items),
            "items": dict(self.items),
            "created_at": self.created_at.isoformat(),
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            "retain_until": self.retain_until.isoformat(),
            "pack_id": self.pack_id,
        }


@attrs.frozen(kw_only=True)
class Provider:
    """Who provides data the company receives (法30条1項1号).

    Attributes:
        name: Its name.
        address: Its address.
        representative: Its representative's name (required of a corporation).
        corporation: Whether it is a corporation.
        business: Whether it is a business operator (個人情報取扱事業者);
            when not, the record holds fewer items (規則24条1項3号).
        id: An id to group its records (defaults to its name).
    """

    name: str
    address: str
    representative: str = ""
    corporation: bool = True
    business: bool = True
    id: str = ""


@attrs.frozen(kw_only=True)
class ReceiptRequest:
    """Customer data offered by a third party (法30条).

    Attributes:
        provider: Who provides it.
        how_acquired: How the provider acquired it (取得の経緯).
        subjects: The subjects' ids (as the company will store them).
        data_items: The data categories received.
        basis: ``"consent"`` (the provider had the subjects' consent) or
            ``"optout"``; ignored for a provider that is not a business.
        consent_fact: For ``"consent"``: how the consent is evidenced.
        ppc_published: For ``"optout"``: the PPC published the provider's
            opt-out notification (confirmed on the PPC's site).
        method: ``"each"``, ``"bulk"`` or ``"contract"`` (規則23条).
    """

    provider: Provider
    how_acquired: str
    subjects: tuple[str, ...] = attrs.field(converter=_subjects)
    data_items: tuple[str, ...] = attrs.field(converter=_strings)
    basis: Literal["consent", "optout"] = "consent"
    consent_fact: str = ""
    ppc_published: bool = False
    method: Method = "each"


@attrs.frozen(kw_only=True)
class RelatedInfoRequest:
    """A provision of 個人関連情報 (cookie or device identifiers, 法31条).

    Attributes:
        recipient: Who receives it.
        data_items: What is provided (``"cookie_id"``, ``"device_id"``...).
        count: How many identifiers.
        recipient_will_link: The recipient is expected to link them to
            personal data it holds.
        consent_confirmation: The recipient's confirmation that the persons
            consented (its reference), required when it will link them.
    """

    recipient: Recipient
    data_items: tuple[str, ...] = attrs.field(converter=_strings)
    count: int = 0
    recipient_will_link: bool = True
    consent_confirmation: str = ""


class ProvisionRecordStore(Protocol):
    """Where provision, receipt and related-information records are kept."""

    def add(self, record: ProvisionRecord) -> None:
        """Store a new record."""
        ...

    def replace(self, record: ProvisionRecord) -> bool:
        """Store revision *n* of a record over revision *n - 1* (a bulk record extended).

        Returns:
            ``False``, storing nothing, when the stored record is no longer at
            revision *n - 1* (another process extended it first).

        Raises:
            LookupError: No record has that id.
        """
        ...

    def get(self, record_id: str) -> ProvisionRecord | None:
        """The record with *record_id*, or ``None``."""
        ...

    def open_bulk(
        self, kind: RecordKind, counterparty_id: str, basis: str
    ) -> ProvisionRecord | None:
        """The bulk record of *kind* for *counterparty_id* and *basis*, if any."""
        ...

    def for_subject(self, subject: str) -> list[ProvisionRecord]:
        """Every record naming *subject*, oldest first."""
        ...

    def all(self) -> list[ProvisionRecord]:
        """Every record, oldest first."""
        ...

    def purge_expired(self, now: dt.datetime) -> int:
        """Delete the records whose ``retain_until`` has passed; return how many."""
        ...


class InMemoryProvisionRecordStore:
    """A :class:`ProvisionRecordStore` in memory, for tests and tools."""

    def __init__(self) -> None:
        self._records: dict[str, ProvisionRecord] = {}

    def add(self, record: ProvisionRecord) -> None:
        """Store a new record.

        Raises:
            ValueError: A record with that id exists.
        """
        if record.record_id in self._records:
            msg = f"provision record {record.record_id!r} exists"
            raise ValueError(msg)
        self._records[record.record_id] = record

    def replace(self, record: ProvisionRecord) -> bool:
        """Store revision *n* of a record over revision *n - 1*.

        Returns:
            ``False``, storing nothing, when the stored revision is not *n - 1*.

        Raises:
            LookupError: No record has that id.
        """
        current = self._records.get(record.record_id)
        if current is None:
            msg = f"no provision record {record.record_id!r}"
            raise LookupError(msg)
        if current.revision != record.revision - 1:
            return False
        self._records[record.record_id] = record
        return True

    def get(self, record_id: str) -> ProvisionRecord | None:
        """The record with *record_id*, or ``None``."""
        return self._records.get(record_id)

    def open_bulk(
        self, kind: RecordKind, counterparty_id: str, basis: str
    ) -> ProvisionRecord | None:
        """The newest bulk record of *kind* for *counterparty_id* and *basis*."""
        found = [
            r
            for r in self._records.values()
            if r.method == "bulk"
            and r.kind == kind
            and r.counterparty_id == counterparty_id
            and r.basis == basis
        ]
        return max(found, key=lambda r: r.created_at) if found else None

    def for_subject(self, subject: str) -> list[ProvisionRecord]:
        """Every record naming *subject*, oldest first."""
        subject = str(subject)
        return sorted(
            (r for r in self._records.values() if subject in r.subjects),
            key=lambda r: (r.created_at, r.record_id),
        )

    def all(self) -> list[ProvisionRecord]:
        """Every record, oldest first."""
        return sorted(self._records.values(), key=lambda r: (r.created_at, r.record_id))

    def purge_expired(self, now: dt.datetime) -> int:
        """Delete the records whose ``retain_until`` is before *now*."""
        gone = [k for k, r in self._records.items() if r.retain_until < now]
        for k in gone:
            del self._records[k]
        return len(gone)


def retain_until(
    method: Method,
    *,
    created_at: dt.datetime,
    last_at: dt.datetime,
    pack: RulePack,
    previous: dt.datetime | None = None,
) -> dt.datetime:
    """When a record may be purged (法29条2項 / 30条4項, 規則21条 / 25条).

    ``each``: *created_at* + 3 years; ``bulk``: *last_at* (the last provision
    the record covers) + 3 years; ``contract``: *last_at* + 1 year (the
    periods come from the pack's ``provision.retention``). A record is never
    kept for less than it already was (*previous*): of the candidate dates the
    latest wins.
    """
    periods = pack.topic("provision")["retention"]
    anchor = created_at if method == "each" else last_at
    due = Period.parse(str(periods[method])).after(anchor)
    return max(due, previous) if previous is not None else due


def _refuse(message: str, code: str, article: str) -> ProvisionRefusedError:
    return ProvisionRefusedError(message, code=code, article=article)


class ProvisionGate:
    """Decides and records third-party provisions and receipts (clause 6).

    Args:
        policy: The policy (its purposes, taxonomy and ``third_party`` section).
        records: Where the records are kept.
        consent: Asked whether each subject's consent is in force, for the
            consent bases; without one, a consent-based provision is a
            :class:`~custdata.ConfigurationError`.
        pack_id: Decide by this APPI rule pack instead of the one in force on
            the day of each decision.
    """

    def __init__(
        self,
        *,
        policy: Policy,
        records: ProvisionRecordStore,
        consent: ConsentSource | None = None,
        pack_id: str | None = None,
    ) -> None:
        self._policy = policy
        self._records = records
        self._consent = consent
        self._pack_id = pack_id

    @property
    def records(self) -> ProvisionRecordStore:
        """The record store."""
        return self._records

    @property
    def policy(self) -> Policy:
        """The policy the gate decides by."""
        return self._policy

    def pack(self, at: dt.datetime) -> RulePack:
        """The APPI rule pack that decides on *at*."""
        return rule_pack("appi", at.date(), pack_id=self._pack_id)

    # -- provision ----------------------------------------------------------------

    def decide(
        self, request: ProvisionRequest, *, now: dt.datetime
    ) -> ProvisionDecision:
        """Decide whether *request* may go ahead. Pure: records nothing.

        Raises:
            ProvisionRefusedError: With the code and article that refuse it.
            ContractorReviewOverdueError: The contractor's assessment is
                missing or its review overdue, unless the policy says ``warn``.
            ConfigurationError: A consent basis without a consent source.
            ValueError: *now* is naive, or the request names no subject.
        """
        if now.tzinfo is None:
            msg = "now must be time-zone aware"
            raise ValueError(msg)
        pack = self.pack(now)
        topic = pack.topic("provision")
        policy = self._policy
        if request.purpose not in policy.purposes:
            raise _refuse(
                f"purpose {request.purpose!r} is not declared in the policy",
                "unknown_purpose",
                "法17条1項",
            )
        for cat in request.categories:
            if cat not in policy.taxonomy:
                raise _refuse(f"unknown category {cat!r}", "unknown_category", "法27条")
        if not request.subjects:
            msg = "a provision names at least one subject"
            raise ValueError(msg)
        warnings: list[str] = []
        self._check_foreign(request)
        basis = request.basis
        if basis is Basis.OPTOUT_27_2:
            self._check_optout(request, now)
        elif basis is Basis.EXCEPTION_27_1:
            if request.exception not in tuple(topic["exceptions"]):
                raise _refuse(
                    f"exception {request.exception!r} is not one of 27条1項各号",
                    "unknown_exception",
                    "法27条1項",
                )
        elif basis is Basis.OUTSOURCING_27_5_1:
            warnings.extend(self._check_contractor(request, now))
        elif basis is Basis.JOINT_USE_27_5_3:
            self._check_joint_use(request, now)
        if request.method == "contract" and not request.contract_ref:
            raise _refuse(
                "a contract-substitute record needs the contract's reference",
                "contract_ref_missing",
                "規則19条3項",
            )
        consent_ids: dict[str, str] = {}
        if basis.value in tuple(topic["consent_bases"]):
            consent_ids = self._consents(request, now)
        exempt = basis.value in tuple(topic["exempt_bases"])
        items: tuple[str, ...] = (
            () if exempt else tuple(topic["record_items"][basis.value])
        )
        return ProvisionDecision(
            request=request,
            record_items=items,
            consent_ids=consent_ids,
            warnings=tuple(warnings),
            pack_id=pack.pack_id,
            decided_at=now,
        )

    def _check_foreign(self, request: ProvisionRequest) -> None:
        tp = self._policy.third_party
        home = tp.home_country
        basis = request.basis
        country = request.recipient.country
        contractor = tp.contractors.get(request.recipient.id)
        if basis is Basis.OUTSOURCING_27_5_1 and contractor is not None:
            # Where a contractor is established is the registry's to say.
            country = contractor.country
        foreign = country != home
        info = request.foreign
        if basis in _FOREIGN_BASES and not foreign:
            raise _refuse(
                f"basis {basis.value!r} is for a recipient outside {home}",
                "not_foreign",
                "法28条1項",
            )
        if not foreign or basis is Basis.EXCEPTION_27_1:
            return
        if basis in _NOT_THIRD_PARTY:
            # A recipient with an equivalent system is no "foreign third party"
            # (28条1項), so outsourcing, succession and joint use stay possible.
            if info is None or not info.equivalence_record:
                raise _refuse(
                    f"{basis.value!r} to a recipient in {country} "
                    "needs an equivalence record (基準適合体制)",
                    "equivalence_missing",
                    "法28条1項, 規則16条",
                )
            return
        if basis is Basis.FOREIGN_EQUIVALENT_28_1:
            if info is None or not info.equivalence_record:
                raise _refuse(
                    "a transfer to an equivalent system needs its equivalence record",
                    "equivalence_missing",
                    "法28条1項, 規則16条",
                )
            return
        if basis is Basis.FOREIGN_CONSENT_28_1:
            if (
                info is None
                or info.country != country
                or not info.regime.strip()
                or not info.recipient_measures.strip()
            ):
                raise _refuse(
                    "consent to a foreign transfer needs the three information items "
                    "(country, its regime, the recipient's measures)",
                    "foreign_info_missing",
                    "法28条2項, 規則17条2項",
                )
            return
        raise _refuse(
            f"a recipient in {country} is a foreign third party: use a 28条 basis",
            "foreign_recipient",
            "法28条1項",
        )

    def _check_optout(self, request: ProvisionRequest, now: dt.datetime) -> None:
        taxonomy = self._policy.taxonomy
        special = sorted(c for c in request.categories if taxonomy[c].special_care)
        if special:
            raise _refuse(
                f"special-care categories {special} cannot be provided by opt-out",
                "special_care_optout",
                "法27条2項ただし書",
            )
        if request.method != "each":
            raise _refuse(
                "an opt-out provision is recorded each time, never in bulk or by contract",
                "optout_method",
                "規則19条2項・3項",
            )
        received = [
            s
            for s in request.subjects
            if any(
                r.kind == "receipt" and r.basis == "optout"
                for r in self._records.for_subject(s)
            )
        ]
        if received:
            raise _refuse(
                f"{len(received)} subject(s) were themselves acquired by opt-out",
                "optout_acquired",
                "法27条2項ただし書",
            )
        notified = self._policy.third_party.optout_notified
        if notified is None or notified > now.date():
            raise _refuse(
                "opt-out provision needs the notification to the PPC beforehand "
                "(third_party.optout_notified)",
                "optout_not_notified",
                "法27条2項",
            )

    def _consents(self, request: ProvisionRequest, now: dt.datetime) -> dict[str, str]:
        if self._consent is None:
            msg = "a consent-based provision needs a consent source (ProvisionGate(consent=...))"
            raise ConfigurationError(msg)
        found: dict[str, str] = {}
        missing = 0
        for subject in request.subjects:
            cid = self._consent.consent_in_force(subject, request.purpose, now)
            if cid is None:
                missing += 1
            else:
                found[subject] = cid
        if missing:
            raise _refuse(
                f"{missing} of {len(request.subjects)} subject(s) have no consent in "
                f"force for {request.purpose!r}",
                "consent_missing",
                "法27条1項" if request.basis is Basis.CONSENT_27_1 else "法28条1項",
            )
        return found

    def _within(self, purposes: Sequence[str], purpose: str) -> bool:
        tree = self._policy.tree
        return purpose in tree and any(p in tree.ancestors(purpose) for p in purposes)

    @staticmethod
    def _covered(categories: Sequence[str], category: str) -> bool:
        return any(category == c or category.startswith(f"{c}.") for c in categories)

    def _check_contractor(
        self, request: ProvisionRequest, now: dt.datetime
    ) -> list[str]:
        tp = self._policy.third_party
        contractor: Contractor | None = tp.contractors.get(request.recipient.id)
        if contractor is None:
            raise _refuse(
                f"{request.recipient.id!r} is not in the contractor registry",
                "unknown_contractor",
                "法25条, 法27条5項1号",
            )
        if not self._within(contractor.purposes, request.purpose):
            raise _refuse(
                f"purpose {request.purpose!r} is not entrusted to {contractor.id!r}",
                "outside_entrusted_purposes",
                "法27条5項1号",
            )
        outside = sorted(
            c for c in request.categories if not self._covered(contractor.categories, c)
        )
        if outside:
            raise _refuse(
                f"categories {outside} are not entrusted to {contractor.id!r}",
                "outside_entrusted_categories",
                "法27条5項1号",
            )
        for sub in contractor.subcontractors:
            if contractor.re_outsourcing == "forbidden":
                raise _refuse(
                    f"{contractor.id!r} may not re-outsource but lists sub-contractor "
                    f"{sub.name!r}",
                    "subcontractor_not_approved",
                    "法25条, GL 3-4-4",
                )
            if contractor.re_outsourcing == "prior_approval" and not sub.approved:
                raise _refuse(
                    f"sub-contractor {sub.name!r} of {contractor.id!r} is not approved",
                    "subcontractor_not_approved",
                    "法25条, GL 3-4-4",
                )
        problems = []
        if contractor.assessment_date is None or contractor.assessment_result != "pass":
            problems.append(f"{contractor.id!r} has no passed security assessment")
        due = contractor.next_review_due
        if due is None or due < now.date():
            when = "no review date" if due is None else f"review due {due.isoformat()}"
            problems.append(f"{contractor.id!r} is overdue for review ({when})")
        if problems and tp.on_review_overdue == "refuse":
            raise ContractorReviewOverdueError(
                "; ".join(problems),
                code="contractor_review_overdue",
                article="法25条, GL 3-4-4",
            )
        return problems

    def _check_joint_use(self, request: ProvisionRequest, now: dt.datetime) -> None:
        joint: JointUse | None = self._policy.third_party.joint_uses.get(
            request.joint_use
        )
        article = "法27条5項3号"
        if joint is None:
            raise _refuse(
                f"no joint-use declaration {request.joint_use!r}",
                "unknown_joint_use",
                article,
            )
        if joint.notice_published is None or joint.notice_published > now.date():
            raise _refuse(
                f"joint use {joint.id!r} was not notified or published beforehand",
                "joint_use_not_notified",
                article,
            )
        if request.recipient.id not in joint.users:
            raise _refuse(
                f"{request.recipient.id!r} is outside the scope of joint users of {joint.id!r}",
                "outside_joint_use",
                article,
            )
        if not self._within(joint.purposes, request.purpose):
            raise _refuse(
                f"purpose {request.purpose!r} is outside joint use {joint.id!r}",
                "outside_joint_use",
                article,
            )
        outside = sorted(
            c for c in request.categories if not self._covered(joint.items, c)
        )
        if outside:
            raise _refuse(
                f"categories {outside} are outside joint use {joint.id!r}",
                "outside_joint_use",
                article,
            )

    def record(
        self,
        decision: ProvisionDecision,
        *,
        now: dt.datetime,
        record_id: str | None = None,
    ) -> ProvisionRecord | None:
        """Keep the provider's record of a decided provision (法29条, 規則19–21条).

        Each provision gets its own record, except with ``method="bulk"``,
        where the open bulk record for the same recipient and basis is
        extended (its subjects, items and last provision; its retention
        re-computed). Exempt bases get none.

        Args:
            decision: What :meth:`decide` returned.
            now: When the provision happens.
            record_id: The id to give a new record (generated when omitted).

        Returns:
            The record as stored, or ``None`` for an exempt basis.
        """
        if not decision.record_required:
            return None
        request = decision.request
        pack = rule_pack("appi", pack_id=decision.pack_id)
        new_items = self._provision_items(decision, now)
        return self._keep(
            kind="provision",
            basis=request.basis.value,
            method=request.method,
            counterparty_id=request.recipient.id,
            subjects=request.subjects,
            data_items=request.categories,
            items=new_items,
            now=now,
            pack=pack,
            record_id=record_id,
        )

    def _keep(
        self,
        *,
        kind: RecordKind,
        basis: str,
        method: Method,
        counterparty_id: str,
        subjects: Sequence[str],
        data_items: Sequence[str],
        items: Mapping[str, Any],
        now: dt.datetime,
        pack: RulePack,
        record_id: str | None = None,
    ) -> ProvisionRecord:
        """Store a new record, or extend the open bulk record of the same kind."""
        if method == "bulk":
            # Optimistic: another process may extend the record between our read
            # and our write; then read it again and merge into the newer one.
            for _attempt in range(_BULK_ATTEMPTS):
                current = self._records.open_bulk(kind, counterparty_id, basis)
                if current is None:
                    break
                merged = _merge(current, subjects, data_items, items)
                last = max(current.last_at, now)
                updated = attrs.evolve(
                    merged,
                    last_at=last,
                    retain_until=retain_until(
                        "bulk",
                        created_at=current.created_at,
                        last_at=last,
                        pack=pack,
                        previous=current.retain_until,
                    ),
                    revision=current.revision + 1,
                )
                if self._records.replace(updated):
                    return updated
            else:
                msg = (
                    f"the bulk record for {counterparty_id!r} kept changing; "
                    "nothing was recorded"
                )
                raise CustdataError(msg)
        rec = ProvisionRecord(
            record_id=record_id or str(uuid.uuid4()),
            kind=kind,
            basis=basis,
            method=method,
            counterparty_id=counterparty_id,
            subjects=subjects,
            data_items=data_items,
            items=items,
            created_at=now,
            first_at=now,
            last_at=now,
            retain_until=retain_until(method, created_at=now, last_at=now, pack=pack),
            pack_id=pack.pack_id,
        )
        self._records.add(rec)
        return rec

    def _provision_items(
        self, decision: ProvisionDecision, now: dt.datetime
    ) -> dict[str, Any]:
        request = decision.request
        values: dict[str, Any] = {
            "consent_fact": dict(decision.consent_ids),
            "recipient": request.recipient.as_record(),
            "subjects": list(request.subjects),
            "data_items": {
                "categories": list(request.categories),
                "fields": list(request.fields),
            },
            "provided_on": [now.date().isoformat()],
        }
        items = {name: values[name] for name in decision.record_items}
        if request.foreign is not None:
            items["foreign_transfer"] = request.foreign.as_record()
        if request.contract_ref:
            items["contract_ref"] = request.contract_ref
        return items

    # -- receipt ------------------------------------------------------------------

    def receive(self, receipt: ReceiptRequest, *, now: dt.datetime) -> ProvisionRecord:
        """Confirm and record customer data received from a third party (法30条).

        The provider's name and address, its representative when it is a
        corporation, and how it acquired the data (取得の経緯) must be given
        (法30条1項, 規則22条); for opt-out data the PPC's publication of the
        provider's notification is confirmed (規則24条1項1号). The record's
        items follow 規則24条 and its retention 規則25条 (the same arithmetic
        as :func:`retain_until`).

        Raises:
            ReceiptRefusedError: Naming the missing items; nothing is recorded.
        """
        if now.tzinfo is None:
            msg = "now must be time-zone aware"
            raise ValueError(msg)
        p = receipt.provider
        missing = [
            name
            for name, value in (
                ("provider.name", p.name),
                ("provider.address", p.address),
                ("how_acquired", receipt.how_acquired),
            )
            if not value.strip()
        ]
        if p.corporation and p.business and not p.representative.strip():
            missing.append("provider.representative")
        kind = receipt.basis if p.business else "non_business"
        if kind == "consent" and not receipt.consent_fact.strip():
            missing.append("consent_fact")
        if kind == "optout" and not receipt.ppc_published:
            missing.append("ppc_published")
        if not receipt.subjects:
            missing.append("subjects")
        if missing:
            msg = (
                "received data cannot be accepted without: "
                + ", ".join(missing)
                + " (法30条1項, 規則22条・24条)"
            )
            raise ReceiptRefusedError(msg, missing=tuple(missing))
        pack = self.pack(now)
        names = tuple(pack.topic("provision")["receipt_items"][kind])
        provider: dict[str, Any] = {"name": p.name, "address": p.address}
        if p.representative:
            provider["representative"] = p.representative
        values: dict[str, Any] = {
            "consent_fact": receipt.consent_fact,
            "received_on": [now.date().isoformat()],
            "ppc_published": receipt.ppc_published,
            "provider": provider,
            "how_acquired": receipt.how_acquired,
            "subjects": list(receipt.subjects),
            "data_items": list(receipt.data_items),
        }
        items = {n: values[n] for n in names}
        return self._keep(
            kind="receipt",
            basis=kind,
            method=receipt.method,
            counterparty_id=p.id or p.name,
            subjects=receipt.subjects,
            data_items=receipt.data_items,
            items=items,
            now=now,
            pack=pack,
        )

    # -- 個人関連情報 -------------------------------------------------------------------

    def provide_related_info(
        self, request: RelatedInfoRequest, *, now: dt.datetime
    ) -> ProvisionRecord | None:
        """Confirm and record a provision of 個人関連情報 (法31条).

        When the recipient is expected to link the identifiers to personal
        data, it must confirm that the persons consented (31条1項1号); the
        confirmation is recorded (31条3項 applying 30条3項) and kept for three
        years. Without linking, 31条 does not apply and nothing is recorded.

        Raises:
            ProvisionRefusedError: The recipient will link them and its
                confirmation of consent is missing.
        """
        if now.tzinfo is None:
            msg = "now must be time-zone aware"
            raise ValueError(msg)
        if not request.recipient_will_link:
            return None
        if not request.consent_confirmation.strip():
            raise _refuse(
                f"{request.recipient.id!r} will link the identifiers but has not "
                "confirmed the persons' consent",
                "related_info_consent_missing",
                "法31条1項1号",
            )
        pack = self.pack(now)
        names = tuple(pack.topic("provision")["related_info_items"])
        values: dict[str, Any] = {
            "consent_confirmed": request.consent_confirmation,
            "recipient": request.recipient.as_record(),
            "data_items": list(request.data_items),
            "provided_on": [now.date().isoformat()],
        }
        return self._keep(
            kind="related_info",
            basis="related_info_31",
            method="each",
            counterparty_id=request.recipient.id,
            subjects=(),
            data_items=request.data_items,
            items={n: values[n] for n in names} | {"count": request.count},
            now=now,
            pack=pack,
        )

    # -- disclosure ---------------------------------------------------------------

    def disclose(self, subject: object) -> dict[str, Any]:
        """Every record naming *subject*, as JSON-ready data (see :func:`disclose_records`)."""
        return disclose_records(self._records, subject)


def disclose_records(records: ProvisionRecordStore, subject: object) -> dict[str, Any]:
    """Every provision and receipt record naming *subject*, as JSON-ready data.

    For a disclosure request under 法33条5項. A bulk record names other
    subjects too; only *subject* is shown (its subject list and consent fact).
    """
    sid = str(subject)
    out = []
    for rec in records.for_subject(sid):
        data = rec.as_dict()
        data["subjects"] = [sid]
        items = dict(data["items"])
        if "subjects" in items:
            items["subjects"] = [sid]
        if isinstance(items.get("consent_fact"), dict):
            fact = items["consent_fact"]
            items["consent_fact"] = {sid: fact[sid]} if sid in fact else {}
        data["items"] = items
        out.append(data)
    return {"subject": sid, "article": "法33条5項", "records": out}


def _merge(
    current: ProvisionRecord,
    subjects: Sequence[str],
    categories: Sequence[str],
    new_items: Mapping[str, Any],
) -> ProvisionRecord:
    """A bulk record extended with one more provision's subjects and items."""
    items: dict[str, Any] = dict(current.items)
    for key, value in new_items.items():
        old = items.get(key)
        if isinstance(old, list) and isinstance(value, list):
            items[key] = list(dict.fromkeys([*old, *value]))
        elif isinstance(old, dict) and isinstance(value, dict) and key == "data_items":
            items[key] = {
                k: list(dict.fromkeys([*old.get(k, []), *value.get(k, [])]))
                for k in ("categories", "fields")
            }
        elif isinstance(old, dict) and isinstance(value, dict):
            items[key] = {**old, **value}
        else:
            items[key] = value
    return attrs.evolve(
        current,
        subjects=(*current.subjects, *subjects),
        data_items=(*current.data_items, *categories),
        items=items,
    )
