"""Third-party provision through the database: the gate's SQL side (clause 6).

:func:`provide` is the one call through which customer data leaves for a third
party: the :class:`~custdata.governance.ProvisionGate` decides, the rows are
read decrypted under the provision's purpose (authorized and audited like any
read), the ``export.third_party`` event is recorded with the provision record's
id, and only then are the values returned. :class:`SqlProvisionRecordStore`
keeps the provision, receipt and related-information records in the
application's database, in tables :func:`custdata.sqlalchemy.add_custdata_tables`
defines.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from custdata._context import current_access
from custdata._context import purpose as claim_purpose
from custdata._custodian import Custodian, current_custodian
from custdata._decision import AccessDecision, Action, DenyReason, Outcome
from custdata._errors import (
    ActorRequiredError,
    ConfigurationError,
    ProvisionRefusedError,
)
from custdata.governance import (
    Basis,
    ForeignTransferInfo,
    ProvisionDecision,
    ProvisionGate,
    ProvisionRecord,
    ProvisionRequest,
    Recipient,
)

from ._declare import CustomerDataInfo, _subject_column


__all__ = ["Provision", "SqlProvisionRecordStore", "provide", "provision_tables"]

_UTC = dt.timezone.utc
Method = Literal["each", "bulk", "contract"]
RecordKind = Literal["provision", "receipt", "related_info"]


def _instant() -> Any:
    # MariaDB keeps microseconds only with an explicit precision.
    return DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


@attrs.frozen
class ProvisionTables:
    """The record table and its subject index."""

    record: Table
    subject: Table


def provision_tables(
    metadata: MetaData, *, prefix: str = "custdata_provision"
) -> ProvisionTables:
    """Define the provision-record tables on *metadata* (once; again returns them).

    ``<prefix>_record`` holds one row per record (its legal items as JSON text,
    never a customer value); ``<prefix>_subject`` names the subjects of each
    record, so a subject's records are found by index (法33条5項).
    """
    rname, sname = f"{prefix}_record", f"{prefix}_subject"
    if rname in metadata.tables and sname in metadata.tables:
        return ProvisionTables(metadata.tables[rname], metadata.tables[sname])
    record = Table(
        rname,
        metadata,
        Column("record_id", String(36), primary_key=True),
        Column("kind", String(16), nullable=False),
        Column("basis", String(32), nullable=False),
        Column("method", String(16), nullable=False),
        Column("counterparty_id", String(200), nullable=False),
        Column("data_items", Text, nullable=False),
        Column("items", Text, nullable=False),
        Column("created_at", _instant(), nullable=False),
        Column("first_at", _instant(), nullable=False),
        Column("last_at", _instant(), nullable=False),
        Column("retain_until", _instant(), nullable=False, index=True),
        Column("pack_id", String(40), nullable=False),
        Column("revision", Integer, nullable=False, default=0),
        Index(f"ix_{rname}_bulk", "kind", "counterparty_id", "basis", "method"),
    )
    subject = Table(
        sname,
        metadata,
        Column(
            "record_id",
            String(36),
            ForeignKey(f"{rname}.record_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("subject", String(200), primary_key=True),
        Index(f"ix_{sname}_subject", "subject"),
    )
    return ProvisionTables(record, subject)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(_UTC).replace(tzinfo=None)


def _aware(value: dt.datetime) -> dt.datetime:
    return (
        value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)
    )


class SqlProvisionRecordStore:
    """A :class:`~custdata.governance.ProvisionRecordStore` in the application's database.

    Args:
        engine: The application's engine.
        metadata: The metadata the tables are defined on (the application's,
            after :func:`add_custdata_tables`); a private one when omitted.
        prefix: The tables' name prefix.
        create: Create the tables if they do not exist (tests and tools; an
            application creates them with its migrations).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        metadata: MetaData | None = None,
        prefix: str = "custdata_provision",
        create: bool = False,
    ) -> None:
        self._engine = engine
        self._tables = provision_tables(metadata or MetaData(), prefix=prefix)
        if create:
            self._tables.record.create(engine, checkfirst=True)
            self._tables.subject.create(engine, checkfirst=True)

    def __repr__(self) -> str:
        return f"<SqlProvisionRecordStore {self._tables.record.name}>"

    def _row(self, record: ProvisionRecord) -> dict[str, Any]:
        return {
            "record_id": record.record_id,
            "kind": record.kind,
            "basis": record.basis,
            "method": record.method,
            "counterparty_id": record.counterparty_id,
            "data_items": json.dumps(list(record.data_items), ensure_ascii=False),
            "items": json.dumps(dict(record.items), ensure_ascii=False, sort_keys=True),
            "created_at": _naive_utc(record.created_at),
            "first_at": _naive_utc(record.first_at),
            "last_at": _naive_utc(record.last_at),
            "retain_until": _naive_utc(record.retain_until),
            "pack_id": record.pack_id,
            "revision": record.revision,
        }

    def _write_subjects(
        self, conn: Connection, record_id: str, subjects: Iterable[str]
    ) -> None:
        rows = [{"record_id": record_id, "subject": s} for s in subjects]
        if rows:
            conn.execute(insert(self._tables.subject), rows)

    def add(self, record: ProvisionRecord) -> None:
        """Store a new record and its subjects in one transaction."""
        with self._engine.begin() as conn:
            conn.execute(insert(self._tables.record).values(self._row(record)))
            self._write_subjects(conn, record.record_id, record.subjects)

    def replace(self, record: ProvisionRecord) -> bool:
        """Store revision *n* of a record over revision *n - 1*, adding new subjects.

        The update is conditional on the stored revision, so two processes
        extending one bulk record never lose each other's provisions: the later
        one gets ``False`` and merges again.

        Returns:
            ``False``, storing nothing, when the stored revision is not *n - 1*.

        Raises:
            LookupError: No record has that id.
        """
        t = self._tables
        with self._engine.begin() as conn:
            changed = conn.execute(
                update(t.record)
                .where(
                    t.record.c.record_id == record.record_id,
                    t.record.c.revision == record.revision - 1,
                )
                .values(self._row(record))
            ).rowcount
            if not changed:
                exists = conn.scalar(
                    select(t.record.c.record_id).where(
                        t.record.c.record_id == record.record_id
                    )
                )
                if exists is None:
                    msg = f"no provision record {record.record_id!r}"
                    raise LookupError(msg)
                return False
            known = set(
                conn.scalars(
                    select(t.subject.c.subject).where(
                        t.subject.c.record_id == record.record_id
                    )
                )
            )
            self._write_subjects(
                conn, record.record_id, [s for s in record.subjects if s not in known]
            )
        return True

    def _load(self, conn: Connection, rows: Sequence[Any]) -> list[ProvisionRecord]:
        t = self._tables
        ids = [r.record_id for r in rows]
        subjects: dict[str, list[str]] = {i: [] for i in ids}
        if ids:
            for rid, subject in conn.execute(
                select(t.subject.c.record_id, t.subject.c.subject)
                .where(t.subject.c.record_id.in_(ids))
                .order_by(t.subject.c.record_id, t.subject.c.subject)
            ):
                subjects[rid].append(subject)
        return [
            ProvisionRecord(
                record_id=r.record_id,
                kind=r.kind,
                basis=r.basis,
                method=r.method,
                counterparty_id=r.counterparty_id,
                subjects=subjects[r.record_id],
                data_items=json.loads(r.data_items),
                items=json.loads(r.items),
                created_at=_aware(r.created_at),
                first_at=_aware(r.first_at),
                last_at=_aware(r.last_at),
                retain_until=_aware(r.retain_until),
                pack_id=r.pack_id,
                revision=r.revision,
            )
            for r in rows
        ]

    def _query(self, stmt: Any) -> list[ProvisionRecord]:
        t = self._tables
        with self._engine.connect() as conn:
            rows = conn.execute(
                stmt.order_by(t.record.c.created_at, t.record.c.record_id)
            ).all()
            return self._load(conn, rows)

    def get(self, record_id: str) -> ProvisionRecord | None:
        """The record with *record_id*, or ``None``."""
        t = self._tables
        found = self._query(select(t.record).where(t.record.c.record_id == record_id))
        return found[0] if found else None

    def open_bulk(
        self, kind: RecordKind, counterparty_id: str, basis: str
    ) -> ProvisionRecord | None:
        """The newest bulk record of *kind* for *counterparty_id* and *basis*."""
        c = self._tables.record.c
        found = self._query(
            select(self._tables.record).where(
                c.kind == kind,
                c.counterparty_id == counterparty_id,
                c.basis == basis,
                c.method == "bulk",
            )
        )
        return found[-1] if found else None

    def for_subject(self, subject: str) -> list[ProvisionRecord]:
        """Every record naming *subject*, oldest first."""
        t = self._tables
        ids = select(t.subject.c.record_id).where(t.subject.c.subject == str(subject))
        return self._query(select(t.record).where(t.record.c.record_id.in_(ids)))

    def all(self) -> list[ProvisionRecord]:
        """Every record, oldest first."""
        return self._query(select(self._tables.record))

    def purge_expired(self, now: dt.datetime) -> int:
        """Delete the records whose ``retain_until`` is before *now*; return how many.

        The retention sweep calls this; so may an application's own job.
        """
        t = self._tables
        cutoff = _naive_utc(now)
        with self._engine.begin() as conn:
            ids = list(
                conn.scalars(
                    select(t.record.c.record_id).where(t.record.c.retain_until < cutoff)
                )
            )
            if not ids:
                return 0
            # Subjects first: not every database enforces ON DELETE CASCADE.
            conn.execute(delete(t.subject).where(t.subject.c.record_id.in_(ids)))
            conn.execute(delete(t.record).where(t.record.c.record_id.in_(ids)))
            return len(ids)


@attrs.frozen(kw_only=True)
class Provision:
    """What :func:`provide` hands over.

    Attributes:
        rows: One dict per row: the subject key and the provided fields'
            plaintext values (not in the repr).
        record: The provision record, or ``None`` for an exempt basis.
        decision: The gate's decision.
    """

    rows: list[dict[str, Any]] = attrs.field(repr=False)
    record: ProvisionRecord | None
    decision: ProvisionDecision


def provide(
    session: Session,
    model: type[Any],
    *,
    gate: ProvisionGate,
    recipient: Recipient,
    basis: Basis | str,
    purpose: str,
    subjects: Sequence[object],
    fields: Sequence[str],
    method: Method = "each",
    contract_ref: str = "",
    exception: str = "",
    joint_use: str = "",
    foreign: ForeignTransferInfo | None = None,
    now: dt.datetime | None = None,
) -> Provision:
    """Hand customer data to a third party through the provision gate (R-TPP-1).

    The gate decides first (nothing is read when it refuses). Then the rows
    of *subjects* are read from *model* under *purpose*, claimed by the actor
    in force (so the read itself is authorized and recorded); the
    ``export.third_party`` event names the recipient, the basis and the
    provision record's id; the record is kept (法29条); and only then are the
    values returned.

    Args:
        session: The application's session.
        model: The mapped class whose fields are provided.
        gate: The provision gate.
        recipient: Who receives the data.
        basis: The legal basis.
        purpose: The purpose the data is provided for (must be granted to the
            actor's role and permitted for each field).
        subjects: The subjects' ids (their ``subject_key`` values).
        fields: The customer-data attributes to provide.
        method: ``"each"``, ``"bulk"`` or ``"contract"`` (how it is recorded).
        contract_ref: The contract document, for ``"contract"``.
        exception: The 27条1項 exception cited, for that basis.
        joint_use: The joint-use declaration, for that basis.
        foreign: The foreign-transfer information (28条).
        now: When (aware); the wall clock when omitted.

    Returns:
        The rows, the record and the decision.

    Raises:
        ProvisionRefusedError: The gate refused (nothing read or recorded).
        ActorRequiredError: No actor is in force.
        PurposeNotGrantedError, PurposeViolationError: The read was refused.
        ConfigurationError: *model* has no subject key, or a field is not a
            customer-data attribute.
        AuditUnavailableError: The export could not be recorded; nothing is
            returned.
    """
    if current_access().actor is None:
        msg = "a provision needs an actor: use custdata.acting_as()"
        raise ActorRequiredError(msg)
    mapper = inspect(model)
    table = mapper.local_table
    subject_col = _subject_column(table)
    if subject_col is None:
        msg = f"{table.name} has no subject_key(): its rows name no data subject"
        raise ConfigurationError(msg)
    subject_attr = mapper.get_property_by_column(subject_col).key
    categories = []
    for name in fields:
        prop = mapper.attrs.get(name)
        columns = getattr(prop, "columns", ())
        info = columns[0].info.get("custdata") if columns else None
        if not isinstance(info, CustomerDataInfo):
            msg = f"{model.__name__}.{name} is not a customer-data attribute"
            raise ConfigurationError(msg)
        categories.append(info.field.category)
    when = now if now is not None else dt.datetime.now(_UTC)
    request = ProvisionRequest(
        recipient=recipient,
        basis=Basis(basis),
        purpose=purpose,
        subjects=subjects,
        fields=fields,
        categories=categories,
        method=method,
        contract_ref=contract_ref,
        exception=exception,
        joint_use=joint_use,
        foreign=foreign,
    )
    custodian = current_custodian()
    ctx = current_access()
    try:
        decision = gate.decide(request, now=when)
    except ProvisionRefusedError:
        if custodian.audit is not None:
            # The refusal is recorded like any denied access; nothing was read.
            custodian.audit.record_decision(
                _export_decision(request, custodian, entity=table.name, denied=True)
            )
        raise
    with claim_purpose(purpose):
        found = session.scalars(
            select(model).where(subject_col.in_(list(subjects)))
        ).all()
        rows = [
            {subject_attr: getattr(obj, subject_attr)}
            | {name: getattr(obj, name) for name in fields}
            for obj in found
        ]
    provided = {str(r[subject_attr]) for r in rows}
    if provided != set(request.subjects):
        # The record names only the subjects whose data actually left.
        kept = tuple(s for s in request.subjects if s in provided)
        decision = attrs.evolve(
            decision,
            request=attrs.evolve(request, subjects=kept),
            consent_ids={
                k: v for k, v in decision.consent_ids.items() if k in provided
            },
        )
    if not rows:
        return Provision(rows=[], record=None, decision=decision)
    record_id = _planned_record_id(gate, decision)
    actor = ctx.actor
    assert actor is not None  # noqa: S101 - checked above
    audit = custodian.audit
    export = getattr(audit, "export", None)
    if export is not None:
        export(
            actor=actor,
            recipient_id=recipient.id,
            basis=request.basis.value,
            purpose=purpose,
            policy_version=custodian.policy.version,
            entity=table.name,
            fields=list(fields),
            subjects=[str(r[subject_attr]) for r in rows],
            categories=sorted(set(categories)),
            count=len(rows) * len(fields),
            provision_record_id=record_id,
            country=recipient.country,
            now=when,
        )
    elif audit is not None:
        # A plain decision recorder still hears of the export (without the record id).
        audit.record_decision(
            _export_decision(
                decision.request,
                custodian,
                entity=table.name,
                count=len(rows) * len(fields),
            )
        )
    record = gate.record(decision, now=when, record_id=record_id)
    return Provision(rows=rows, record=record, decision=decision)


def _export_decision(
    request: ProvisionRequest,
    custodian: Custodian,
    *,
    entity: str,
    count: int = 0,
    denied: bool = False,
) -> AccessDecision:
    """The EXPORT decision a plain recorder hears (refused, or released)."""
    ctx = current_access()
    return AccessDecision(
        outcome=Outcome.DENIED if denied else Outcome.ALLOWED,
        reason=DenyReason.PROVISION_REFUSED if denied else None,
        action=Action.EXPORT,
        actor=ctx.actor,
        role=ctx.role,
        purpose=request.purpose,
        policy_version=custodian.policy.version,
        entity=entity,
        fields=request.fields,
        categories=tuple(sorted(set(request.categories))),
        denied_fields=request.fields if denied else (),
        subjects=request.subjects,
        count=count,
    )


def _planned_record_id(gate: ProvisionGate, decision: ProvisionDecision) -> str | None:
    """The id the decision's record will have (an open bulk record's, or a new one)."""
    if not decision.record_required:
        return None
    request = decision.request
    if request.method == "bulk":
        current = gate.records.open_bulk(
            "provision", request.recipient.id, request.basis.value
        )
        if current is not None:
            return current.record_id
    return str(uuid.uuid4())
