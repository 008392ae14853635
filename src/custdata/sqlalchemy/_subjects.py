"""Data-subject requests executed under control: locate, disclose, erase (R-DSR-1…3).

- :func:`locate_subject` finds everything held about one person: the rows of
  every table keyed by the subject (``subject_key``), of every table whose
  foreign key or declared reference (:func:`subject_reference`) points at such
  a row, and the subject's records in the ledgers and registers the custodian
  has (consents, legal holds) or that are passed in (provision and receipt
  records). It reads the tables through a plain view: it decrypts nothing.
- :func:`disclose_subject` reads those rows under a dedicated disclosure
  purpose, writes them as JSON or CSV and records one ``export.subject`` event
  per table (fields and counts, never values).
- :func:`erase_subject` disposes of the rows through the retention sweep's
  own actions and deletion log: the request ends every purpose's period at
  once, statutory minimums and legal holds still keep what they keep, and when
  no value under the subject's own key is left the key is crypto-shredded and
  the subject's blind-index entries cleared. Rows are deleted or erased, never
  left behind unreadable, so no later read records an allowed reveal of a
  value nobody can decrypt.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, cast

import attrs

from sqlalchemy import Column, MetaData, Table, column, or_, select, table
from sqlalchemy.exc import CircularDependencyError, IntegrityError
from sqlalchemy.orm import MappedColumn, Session, mapped_column
from sqlalchemy.sql.ddl import sort_tables

from custdata._context import current_access
from custdata._context import purpose as claim_purpose
from custdata._custodian import current_custodian
from custdata._decision import AccessDecision, Action, Outcome
from custdata._errors import (
    ActorRequiredError,
    ConfigurationError,
    PurposeViolationError,
    SubjectNotFoundError,
)
from custdata._retention import Anchor, Period, RetentionRule, resolve_retention
from custdata.crypto._files import write_private_file

from ._anchors import aware_utc
from ._binding import subject_value
from ._chunks import IN_CHUNK
from ._declare import _subject_column, _subject_kind
from ._jobs import _tables_arg
from ._keystore import blind_index_eraser
from ._sweep import (
    SweepCount,
    _Log,
    _plan_batch,
    _record_expiry,
    _shred,
    _Sweepable,
)
from ._types import EncryptedType


__all__ = [
    "DISCLOSURE_PURPOSE",
    "Disclosure",
    "ErasureResult",
    "KeptValues",
    "SubjectFootprint",
    "SubjectRows",
    "disclose_subject",
    "erase_subject",
    "locate_subject",
    "subject_reference",
]

#: The purpose :func:`disclose_subject` reads under unless told otherwise.
DISCLOSURE_PURPOSE = "disclosure"
#: The key in ``Column.info`` of a declared reference to a data subject.
REFERENCE_INFO_KEY = "custdata_subject_reference"
#: The anchor name under which an erasure request's instant is passed to the rules.
_REQUEST_ANCHOR = "custdata.erasure_request"
_ZERO = Period.parse("P0D")


def subject_reference(
    target: str,
    *,
    type_: Any = None,
    nullable: bool = True,
    index: bool = True,
) -> MappedColumn[Any]:
    """Declare a column that names a data subject without a foreign key.

    For a table whose rows are about a customer but cannot carry a foreign key
    to the customer table (a legacy inquiries table, a table in another
    schema, one filled before the customer row exists): the locator follows
    the reference like a foreign key, so :func:`locate_subject`,
    :func:`disclose_subject` and :func:`erase_subject` include those rows::

        customer_ref: Mapped[uuid.UUID | None] = subject_reference("customers.id")

    Args:
        target: ``"table.column"``: the subject column, or any column of a
            table that has one.
        type_: The column type; ``Uuid`` by default.
        nullable: Whether the reference may be missing.
        index: Index the column (the locator searches it).

    Returns:
        The ``mapped_column`` to assign.

    Raises:
        ValueError: *target* is not ``"table.column"``.
    """
    if target.count(".") < 1 or not all(target.rsplit(".", 1)):
        raise ValueError("a subject reference names its target as 'table.column'")
    from sqlalchemy import Uuid  # noqa: PLC0415 - only here

    return mapped_column(
        type_ if type_ is not None else Uuid(),
        nullable=nullable,
        index=index,
        info={REFERENCE_INFO_KEY: target},
    )


@attrs.frozen(kw_only=True)
class SubjectRows:
    """The rows of one table that are about the subject (no values).

    Attributes:
        table: The table's name.
        via: How they were found: ``"subject_key"``, ``"foreign_key:<column>"``
            or ``"reference:<column>"``.
        primary_keys: Their primary keys, in key order.
        fields: The customer-data columns that hold a value in at least one
            of them.
        categories: Those columns' data categories.
    """

    table: str
    via: str
    primary_keys: tuple[Any, ...]
    fields: tuple[str, ...]
    categories: tuple[str, ...]


@attrs.frozen(kw_only=True)
class SubjectFootprint:
    """Everything held about one data subject, as :func:`locate_subject` found it.

    It names rows, fields, categories and record ids, never a customer value.

    Attributes:
        subject: The subject's id (as its ``subject_key`` column holds it).
        rows: Per table, the rows about the subject (tables without any are
            left out).
        consents: The subject's consent records, withdrawn ones included.
        provisions: Provision records (法29条) naming the subject.
        receipts: Receipt records (法30条) naming the subject.
        holds: Legal-hold records of the subject, released ones included.
        restrictions: Restrictions of use (利用停止) in force, where a
            restriction register exists.
        audit_pseudonym: The subject's pseudonym in the audit trail
            (``sr_...``), to query it; ``None`` without a trail.
        tables: The tables searched, which :func:`disclose_subject` and
            :func:`erase_subject` use unless given others.
    """

    subject: Any
    rows: tuple[SubjectRows, ...]
    consents: tuple[Any, ...] = ()
    provisions: tuple[Any, ...] = ()
    receipts: tuple[Any, ...] = ()
    holds: tuple[Any, ...] = ()
    restrictions: tuple[Any, ...] = ()
    audit_pseudonym: str | None = None
    tables: tuple[Table, ...] = attrs.field(default=(), repr=False, eq=False)

    @property
    def recipients(self) -> tuple[str, ...]:
        """The recipients of earlier provisions, to notify of an erasure (GDPR 19)."""
        return tuple(dict.fromkeys(r.counterparty_id for r in self.provisions))

    @property
    def row_count(self) -> int:
        """How many rows in all."""
        return sum(len(r.primary_keys) for r in self.rows)

    def held_at(self, at: dt.datetime) -> bool:
        """Whether a legal hold on the subject is in force at *at*."""
        return any(h.in_force(at) for h in self.holds)


@attrs.frozen(kw_only=True)
class Disclosure:
    """What :func:`disclose_subject` wrote (the values themselves went to *out*).

    Attributes:
        subject: The subject's id.
        format: ``"json"`` or ``"csv"``.
        purpose: The purpose the values were read under.
        tables: Per table, the columns disclosed and how many rows.
        values: How many customer-data values were disclosed.
        path: The file written, if *out* was a path.
        text: The export itself when *out* was ``None`` (else empty); it holds
            the subject's values, so it is left out of the repr.
    """

    subject: Any
    format: str
    purpose: str
    tables: tuple[tuple[str, tuple[str, ...], int], ...]
    values: int
    path: Path | None = None
    text: str = attrs.field(default="", repr=False)


@attrs.frozen(kw_only=True)
class KeptValues:
    """Values an erasure kept, and why.

    Attributes:
        table: The table.
        field: The column, or ``"*"`` for whole rows.
        reason: ``legal_hold``, ``statutory_minimum`` or ``not_nullable`` (a
            NOT NULL column of a row another table still refers to).
        count: How many values (or rows).
        rule: The retention rule whose statutory minimum keeps them.
        until: When that minimum ends (``None``: its anchor event has not
            happened yet, so it has not started to run).
    """

    table: str
    field: str
    reason: str
    count: int
    rule: str | None = None
    until: dt.datetime | None = None


@attrs.frozen(kw_only=True)
class ErasureResult:
    """What :func:`erase_subject` did (or, with ``dry_run``, would do).

    Attributes:
        erasure_id: This erasure's id (in its audit events and log entries).
        subject: The subject's id.
        request_id: The data-subject request it answers, if any.
        dry_run: Whether nothing was changed.
        counts: Per table, field and action (``delete_row``, ``erase``,
            ``crypto_shred``), as the sweep reports them.
        kept: What was kept, and why.
        shredded: Whether the subject's data key was destroyed.
        index_entries_cleared: Rows whose blind-index entries were cleared.
        recipients: Recipients of earlier provisions, to tell of the erasure.
    """

    erasure_id: str
    subject: Any
    request_id: str | None
    dry_run: bool
    counts: tuple[SweepCount, ...]
    kept: tuple[KeptValues, ...]
    shredded: bool
    index_entries_cleared: int
    recipients: tuple[str, ...] = ()

    def total(self, action: str) -> int:
        """The total count of *action* over every table and field."""
        return sum(c.count for c in self.counts if c.action == action)

    @property
    def complete(self) -> bool:
        """Whether nothing was kept."""
        return not self.kept


# -- the plain views ---------------------------------------------------------------


class _View(_Sweepable):
    """A sweep view of one table plus the column that links it to the subject."""

    def __init__(self, tbl: Table, policy: Any, link: Column[Any] | None) -> None:
        super().__init__(tbl, policy)
        self.link = link
        if link is not None and link.name not in self.raw.c:
            self.raw = table(
                tbl.name,
                *(column(c.name, c.type) for c in self.raw.c),
                column(link.name, link.type),
                schema=tbl.schema,
            )


@attrs.frozen
class _Route:
    """How the rows of one table about a subject are found."""

    table: Table
    via: str
    link: Column[Any] | None
    #: For a link to a non-subject column of a subject table: (table, column).
    through: tuple[Table, Column[Any]] | None = None


def _reference_target(
    col: Column[Any], by_name: Mapping[str, Table]
) -> Column[Any] | None:
    text = col.info.get(REFERENCE_INFO_KEY)
    if not isinstance(text, str):
        return None
    name, _, target = text.rpartition(".")
    tbl = by_name.get(name)
    if tbl is None or target not in tbl.c:
        msg = (
            f"{col.table.name}.{col.name} refers to {text}, which is not among "
            "the tables located"
        )
        raise ConfigurationError(msg)
    return tbl.c[target]


def _routes(tables: Sequence[Table]) -> list[_Route]:
    by_name = {t.name: t for t in tables}
    routes: list[_Route] = []
    for t in tables:
        subject = _subject_column(t)
        if subject is not None:
            routes.append(_Route(t, "subject_key", None))
            continue
        for col in t.columns:
            targets = [(fk.column, "foreign_key") for fk in col.foreign_keys]
            ref = _reference_target(col, by_name)
            if ref is not None:
                targets.append((ref, "reference"))
            for target, kind in targets:
                parent = target.table
                parent_subject = _subject_column(parent)
                if parent_subject is None:
                    continue
                through = None if target is parent_subject else (parent, target)
                routes.append(_Route(t, f"{kind}:{col.name}", col, through))
                break
            else:
                continue
            break
    return routes


def _tables(tables: Any) -> list[Table]:
    found = _tables_arg(tables)
    if found is None:
        from ._runtime import known_tables  # noqa: PLC0415 - installs the hooks

        found = known_tables()
    return found


def _footprint_tables(footprint: SubjectFootprint, tables: Any) -> list[Table]:
    """The tables given, else the ones the footprint was located in."""
    if tables is None and footprint.tables:
        return list(footprint.tables)
    return _tables(tables)


def _subject_id(tables: Sequence[Table], subject: object) -> Any:
    """The subject as its subject columns take it (a UUID's text as a UUID)."""
    for t in tables:
        col = _subject_column(t)
        if col is not None and not col.foreign_keys:
            try:
                return subject_value(subject, _subject_kind(col))
            except (TypeError, ValueError):
                msg = f"{subject.__class__.__name__} is not a subject id of {t.name}"
                raise TypeError(msg) from None
    return subject


def _where(route: _Route, view: _View, subject: Any) -> Any:
    if route.link is None:
        assert view.subject is not None  # noqa: S101 - a subject_key route
        return view.raw.c[view.subject.name] == subject
    link = view.raw.c[route.link.name]
    if route.through is None:
        return link == subject
    parent, target = route.through
    parent_subject = _subject_column(parent)
    assert parent_subject is not None  # noqa: S101 - routes need one
    inner = table(
        parent.name,
        column(target.name, target.type),
        column(parent_subject.name, parent_subject.type),
        schema=parent.schema,
    )
    return link.in_(
        select(inner.c[target.name]).where(inner.c[parent_subject.name] == subject)
    )


def _find_by_identifier(
    session: Session, tables: Sequence[Table], identifier: tuple[Any, Any]
) -> Any:
    what, value = identifier
    candidates: list[tuple[Table, Column[Any]]] = []
    if isinstance(what, str):
        for t in tables:
            for col in t.columns:
                if not isinstance(col.type, EncryptedType):
                    continue
                b = col.type._binding  # noqa: SLF001 - the column's own binding
                if (
                    b.field is not None
                    and b.field.category == what
                    and b.companion_key is not None
                ):
                    candidates.append((t, col))
        if not candidates:
            msg = f"no searchable customer-data column of category {what!r}"
            raise ConfigurationError(msg)
    else:
        cols = getattr(getattr(what, "property", None), "columns", None)
        if not cols or not isinstance(cols[0].table, Table):
            raise TypeError("identifier names a category or a mapped attribute")
        candidates.append((cols[0].table, cols[0]))
    found: dict[str, Any] = {}
    for t, col in candidates:
        subject = _subject_column(t)
        if subject is None:
            continue
        for sid in session.execute(select(subject).where(col == value)).scalars():
            found[str(sid)] = sid
    if not found:
        # Neither the value nor the column is named: the value is customer data.
        msg = "no data subject matches the identifier"
        raise SubjectNotFoundError(msg)
    if len(found) > 1:
        msg = f"{len(found)} data subjects match the identifier; name the subject id"
        raise SubjectNotFoundError(msg)
    return next(iter(found.values()))


def locate_subject(
    session: Session,
    subject: object = None,
    identifier: tuple[Any, Any] | None = None,
    *,
    tables: Any = None,
    records: Any = None,
    restrictions: Any = None,
) -> SubjectFootprint:
    """Find every row and record about one data subject (R-DSR-1).

    Rows are found through the subject's ``subject_key`` columns, through
    foreign keys and declared references (:func:`subject_reference`) to a
    table that has one (one level deep), read through a plain view that
    decrypts nothing. The footprint lists primary keys, the customer-data
    fields that hold a value and their categories.

    Args:
        session: The application's session (its transaction is used).
        subject: The subject's id.
        identifier: Instead of *subject*: ``(category, value)`` -- e.g.
            ``("contact.email", "a@b.example")`` -- searched through the blind
            index of every searchable column of that category, or
            ``(Model.attribute, value)``. Searching is a use of the field: it
            needs an actor and a purpose that permits it, and is recorded.
        tables: A declarative base, ``MetaData`` or tables (default: every
            table custdata knows).
        records: A provision-record store (``for_subject``), for the
            provisions and receipts naming the subject.
        restrictions: The register of restrictions of use
            (:class:`custdata.governance.Restrictions`; default: the
            custodian's), for the restrictions in force.

    Returns:
        The footprint.

    Raises:
        ValueError: Neither or both of *subject* and *identifier* given.
        TypeError: *subject* is not a subject id of the tables.
        SubjectNotFoundError: No subject, or more than one, matches
            *identifier*.
        ConfigurationError: No searchable column of the category, a declared
            reference to an unknown table, or a table without a single-column
            primary key.
        PurposeViolationError, ActorRequiredError: The search was refused.
    """
    if (subject is None) == (identifier is None):
        raise ValueError("give either a subject id or an identifier")
    tbls = _tables(tables)
    if identifier is not None:
        subject = _find_by_identifier(session, tbls, identifier)
    sid = _subject_id(tbls, subject)
    custodian = current_custodian()
    found: list[SubjectRows] = []
    for route in _routes(tbls):
        view = _View(route.table, custodian.policy, route.link)
        rows = session.execute(
            select(*view.raw.c)
            .where(_where(route, view, sid))
            .order_by(view.raw.c[view.pk.name])
        ).all()
        if not rows:
            continue
        held = [
            (name, b)
            for name, b, *_ in view.fields
            if any(getattr(r, name) is not None for r in rows)
        ]
        found.append(
            SubjectRows(
                table=route.table.name,
                via=route.via,
                primary_keys=tuple(getattr(r, view.pk.name) for r in rows),
                fields=tuple(name for name, _b in held),
                categories=tuple(
                    sorted({b.field.category for _n, b in held if b.field is not None})
                ),
            )
        )
    text = str(sid)
    consent = custodian.consent
    history = getattr(consent, "history", None)
    consents = tuple(history(sid)) if history is not None else ()
    holds_reg = custodian.holds
    store = getattr(holds_reg, "store", None)
    holds = tuple(store.records_for([text])) if store is not None else ()
    provisions: tuple[Any, ...] = ()
    receipts: tuple[Any, ...] = ()
    if records is not None:
        named = records.for_subject(text)
        provisions = tuple(r for r in named if r.kind == "provision")
        receipts = tuple(r for r in named if r.kind == "receipt")
    register = restrictions if restrictions is not None else custodian.restrictions
    restricted: tuple[Any, ...] = ()
    if register is not None:
        at = custodian.now()
        restricted = tuple(r for r in register.history(sid) if r.in_force(at))
    ref = getattr(custodian.audit, "subject_ref", None)
    return SubjectFootprint(
        subject=sid,
        rows=tuple(found),
        consents=consents,
        provisions=provisions,
        receipts=receipts,
        holds=holds,
        restrictions=restricted,
        audit_pseudonym=ref(text) if ref is not None else None,
        tables=tuple(tbls),
    )


# -- disclosure ----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A value as JSON carries it (dates as ISO 8601, decimals and UUIDs as text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def disclose_subject(
    session: Session,
    footprint: SubjectFootprint,
    format: Literal["json", "csv"] = "json",  # noqa: A002 - the brief's name
    out: str | Path | IO[str] | None = None,
    *,
    purpose: str = DISCLOSURE_PURPOSE,
    tables: Any = None,
    request_id: str | None = None,
    now: dt.datetime | None = None,
) -> Disclosure:
    """Disclose everything held about a subject to the subject (APPI 33条, GDPR 15/20).

    Every row of the footprint is read again under *purpose*, claimed by the
    actor in force (the read is authorized and recorded like any other), and
    written to *out*: every column of the row except blind-index companions.
    Then one ``export.subject`` event per table records the fields, the
    categories and how many values left -- never the values.

    Formats (UTF-8, machine-readable for portability):

    - ``json``: ``{"subject": id, "tables": {table: [{column: value, ...}]}}``
      with dates and times in ISO 8601, decimals and UUIDs as text;
    - ``csv``: one line per value: ``table,primary_key,column,value``, with a
      header line.

    Declare *purpose* in the policy (legal basis: law / legal obligation),
    grant it to the role that answers requests and list it on every
    customer-data field: a field that does not permit it is refused, as any
    read would be, and the disclosure stops before anything is written.

    Args:
        session: The application's session.
        footprint: What :func:`locate_subject` found.
        format: ``"json"`` or ``"csv"``.
        out: A path or a text stream to write to; ``None`` returns the
            export as :attr:`Disclosure.text`. A path is written as UTF-8,
            readable by its owner only (mode 0600), through a temporary file
            renamed into place: a crash or a full disk never leaves a partial
            export (the ``export.subject`` events are recorded before).
        purpose: The disclosure purpose (default ``"disclosure"``).
        tables: The tables (default: those the footprint was located in).
        request_id: The request answered, recorded with the events.
        now: When (aware); the custodian's clock when omitted.

    Returns:
        What was written.

    Raises:
        ConfigurationError: An unknown *format*, or *out* cannot be written
            (a ``ValueError`` too).
        ActorRequiredError: No actor is in force.
        PurposeNotGrantedError, PurposeViolationError: The read was refused.
        AuditUnavailableError: The disclosure could not be recorded.
    """
    if format not in {"json", "csv"}:
        msg = "format must be 'json' or 'csv'"
        raise ConfigurationError(msg)
    ctx = current_access()
    if ctx.actor is None:
        msg = "a disclosure needs an actor: use custdata.acting_as()"
        raise ActorRequiredError(msg)
    custodian = current_custodian()
    when = now if now is not None else custodian.now()
    by_name = {t.name: t for t in _footprint_tables(footprint, tables)}
    collected: dict[str, list[dict[str, Any]]] = {}
    summary: list[tuple[str, tuple[str, ...], int]] = []
    events: list[tuple[str, list[str], list[str], int]] = []
    values = 0
    with claim_purpose(purpose):
        for rows in footprint.rows:
            tbl = by_name.get(rows.table)
            if tbl is None:
                msg = f"the footprint names table {rows.table!r}, not among the tables"
                raise ConfigurationError(msg)
            pk = next(iter(tbl.primary_key.columns))
            shown = [
                c for c in tbl.columns if not c.info.get("custdata_blind_index_of")
            ]
            encrypted = [c for c in shown if isinstance(c.type, EncryptedType)]
            bindings = [c.type._binding for c in encrypted]  # type: ignore[attr-defined]  # noqa: SLF001
            keys = list(rows.primary_keys)
            read: list[dict[str, Any]] = []
            for start in range(0, len(keys), IN_CHUNK):
                result = session.execute(
                    select(*shown)
                    .where(pk.in_(keys[start : start + IN_CHUNK]))
                    .order_by(pk)
                )
                read.extend(dict(r._mapping) for r in result)  # noqa: SLF001
            collected[tbl.name] = read
            names = [c.name for c in shown]
            summary.append((tbl.name, tuple(names), len(read)))
            count = sum(1 for r in read for c in encrypted if r.get(c.name) is not None)
            values += count
            categories = sorted(
                {b.field.category for b in bindings if b.field is not None}
            )
            events.append((tbl.name, [c.name for c in encrypted], categories, count))
    text = _render(footprint.subject, collected, format)
    _record_disclosure(
        custodian,
        ctx.actor,
        footprint,
        purpose,
        events,
        request_id=request_id,
        now=when,
    )
    path: Path | None = None
    if isinstance(out, (str, Path)):
        path = Path(out)
        try:
            write_private_file(path, text)
        except OSError as exc:
            msg = f"cannot write the disclosure to {path} ({exc.strerror})"
            raise ConfigurationError(msg) from None
    elif out is not None:
        out.write(text)
    return Disclosure(
        subject=footprint.subject,
        format=format,
        purpose=purpose,
        tables=tuple(summary),
        values=values,
        path=path,
        text=text if out is None else "",
    )


def _render(
    subject: Any,
    collected: Mapping[str, list[dict[str, Any]]],
    format: str,  # noqa: A002
) -> str:
    if format == "json":
        doc = {
            "subject": _plain(subject),
            "tables": {
                name: [{k: _plain(v) for k, v in row.items()} for row in rows]
                for name, rows in collected.items()
            },
        }
        return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "primary_key", "column", "value"])
    for name, rows in collected.items():
        for row in rows:
            key = next(iter(row.values())) if row else None
            for col, value in row.items():
                writer.writerow([name, _plain(key), col, _cell(value)])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    """A value as one CSV cell: text as it is, anything else as JSON."""
    plain = _plain(value)
    if plain is None:
        return ""
    if isinstance(plain, str):
        return plain
    return json.dumps(plain, ensure_ascii=False)


def _record_disclosure(
    custodian: Any,
    actor: str,
    footprint: SubjectFootprint,
    purpose: str,
    events: Iterable[tuple[str, list[str], list[str], int]],
    *,
    request_id: str | None,
    now: dt.datetime,
) -> None:
    audit = custodian.audit
    if audit is None:
        return
    subject_export = getattr(audit, "subject_export", None)
    for entity, fields, categories, count in events:
        if subject_export is not None:
            subject_export(
                actor=actor,
                subject=str(footprint.subject),
                purpose=purpose,
                policy_version=custodian.policy.version,
                entity=entity,
                fields=fields,
                categories=categories,
                count=count,
                request_id=request_id,
                now=now,
            )
            continue
        ctx = current_access()
        audit.record_decision(
            AccessDecision(
                outcome=Outcome.ALLOWED,
                action=Action.EXPORT,
                actor=actor,
                role=ctx.role,
                purpose=purpose,
                policy_version=custodian.policy.version,
                entity=entity,
                fields=tuple(fields),
                categories=tuple(categories),
                subjects=(str(footprint.subject),),
                count=count,
            )
        )


# -- erasure -------------------------------------------------------------------------


def _erasure_rule(rule: RetentionRule) -> RetentionRule:
    """The rule as an erasure request sees it: its period ends now; a statute stays."""
    if rule.statutory_minimum is None:
        return attrs.evolve(
            rule,
            period=_ZERO,
            anchor=Anchor.CUSTOM,
            custom_anchor=_REQUEST_ANCHOR,
        )
    return attrs.evolve(rule, period=_ZERO)


class _ErasurePolicy:
    """The policy as an erasure sees it (see :func:`_erasure_rule`)."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy

    def retention_rules_for(self, field: Any) -> tuple[RetentionRule, ...]:
        return tuple(_erasure_rule(r) for r in self._policy.retention_rules_for(field))


def _kept_reasons(
    view: _View, rows: Sequence[Any], now: dt.datetime
) -> list[KeptValues]:
    """The values of *rows* a statutory minimum keeps, with the rule and its end."""
    kept: dict[tuple[str, str | None, dt.datetime | None], int] = {}
    for row in rows:
        anchors = {
            name: when
            for name, col in view.anchors.items()
            if (when := aware_utc(getattr(row, col))) is not None
        }
        anchors[_REQUEST_ANCHOR] = now
        for name, _b, _t, _n, rules in view.fields:
            if getattr(row, name) is None or not rules:
                continue
            status = resolve_retention(rules, anchors, now=now)
            if not status.expired:
                key = (name, status.governing_rule, status.expires_at)
                kept[key] = kept.get(key, 0) + 1
    return [
        KeptValues(
            table=view.name,
            field=name,
            reason="statutory_minimum",
            count=n,
            rule=rule,
            until=until,
        )
        for (name, rule, until), n in sorted(
            kept.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), str(kv[0][2]))
        )
    ]


def erase_subject(
    session: Session,
    footprint: SubjectFootprint,
    *,
    reason: str = "erasure_request",
    request_id: str | None = None,
    dry_run: bool = False,
    tables: Any = None,
    log: str | Path | None = None,
    now: dt.datetime | None = None,
) -> ErasureResult:
    """Erase a data subject through the retention actions (APPI 35条, GDPR 17).

    The request ends the period of every purpose at once; what a statutory
    minimum still requires is kept (counted per rule, with the day it ends),
    and a legal hold on the subject keeps everything. Then, as the sweep does
    (and with its deletion log, so :func:`replay_deletions` repeats it after a
    restore): a row whose every value may go is deleted when the strongest
    action among its rules is ``delete`` or ``crypto_shred`` (or its values
    erased when another row still refers to it); values under ``anonymise``,
    or in a row that is kept, are erased (set to NULL with their blind-index
    entries). Each table's erasure is recorded as one ``retention.expire``
    event with the reason, naming the acting person, before the transaction
    commits. When no value under the subject's own data key is left, the key
    is crypto-shredded (``key.shred``) and the subject's remaining blind-index
    entries are cleared; otherwise the key stays, so every value kept stays
    readable.

    Args:
        session: The application's session; the erasure commits it.
        footprint: What :func:`locate_subject` found.
        reason: The enumerated reason recorded (``erasure_request``).
        request_id: The request answered (recorded as the erasure's id).
        dry_run: Count what would be done; change, record and log nothing.
        tables: The tables (default: those the footprint was located in).
        log: The deletion log file (JSON lines, appended).
        now: The instant to decide for (aware); the custodian's clock.

    Returns:
        What was erased, shredded and kept.

    Raises:
        ActorRequiredError: No actor is in force.
        PurposeRequiredError, PurposeViolationError: The purpose in force
            does not say ``may_erase`` (recorded as denied; nothing changes).
        ValueError: *now* is naive.
        ConfigurationError: A table without a single-column primary key, or
            the log cannot be written.
        AuditUnavailableError: The erasure could not be recorded; nothing is
            changed.
    """
    ctx = current_access()
    if ctx.actor is None:
        msg = "an erasure needs an actor: use custdata.acting_as()"
        raise ActorRequiredError(msg)
    custodian = current_custodian()
    at = now if now is not None else custodian.now()
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("now must be time-zone aware")
    if dry_run and (ctx.purpose is None or not custodian.policy.may_erase(ctx.purpose)):
        # The real run is authorized (and recorded) per table; a dry run changes
        # nothing, so it is only checked.
        msg = "erasing needs a purpose that may_erase"
        raise PurposeViolationError(msg)
    tbls = _footprint_tables(footprint, tables)
    by_name = {t.name: t for t in tbls}
    policy = _ErasurePolicy(custodian.policy)
    routes = {r.table.name: r for r in _routes(tbls)}
    erasure_id = request_id or f"erasure_{uuid.uuid4().hex}"
    subject = footprint.subject
    text = str(subject)
    held = bool(custodian.holds is not None and custodian.holds.held([subject], at))
    counts: dict[tuple[str, str, str], int] = {}
    kept: list[KeptValues] = []
    journal = _Log(None if dry_run else log, erasure_id)
    # Children before parents, as the sweep goes: a row another refers to goes last.
    located = {r.table: r for r in footprint.rows}
    try:
        order = [
            t.name for t in sort_tables([by_name[n] for n in located if n in by_name])
        ]
    except CircularDependencyError:
        order = list(located)
    subject_scoped = False
    #: Whether a value under the subject's own key is kept (dry runs tell by this).
    kept_scoped = False
    for batch, name in enumerate(reversed(order)):
        rows_info = located[name]
        view = _View(
            by_name[name], policy, routes[name].link if name in routes else None
        )
        subject_scoped = subject_scoped or view.shreds
        scoped = {n for n, b, *_ in view.fields if b.key_scope == "subject"}
        before = len(kept)
        pk = view.raw.c[view.pk.name]
        rows = session.execute(
            select(*view.raw.c).where(pk.in_(list(rows_info.primary_keys))).order_by(pk)
        ).all()
        if held:
            for fname, *_ in view.fields:
                n = sum(1 for r in rows if getattr(r, fname) is not None)
                if n:
                    kept.append(
                        KeptValues(
                            table=name, field=fname, reason="legal_hold", count=n
                        )
                    )
            continue
        kept.extend(_kept_reasons(view, rows, at))
        anchor = {_REQUEST_ANCHOR: at}
        plan = _plan_batch(view, rows, at, set(), extra_anchors=anchor)
        # Shredding is decided for the subject as a whole, below.
        plan.shred.clear()
        plan.counts.pop(("*", "crypto_shred"), None)
        for entry in plan.entries:
            entry["shred"] = False
            entry.pop("subject", None)
            entry.pop("subject_type", None)
        if not dry_run and plan.changes:
            # Deleting records needs a purpose that may_erase; the decision is
            # recorded (and a refusal raised) before anything changes.
            custodian.authorize(
                action=Action.DELETE,
                entity=name,
                subjects=[subject],
                count=len(plan.deletes) + sum(len(v) for v in plan.erases.values()),
            )
            try:
                with session.begin_nested():
                    _apply(session, view, plan)
            except IntegrityError:
                # Another table still refers to a row: erase its values instead.
                plan = _plan_batch(
                    view, rows, at, set(), erase_only=True, extra_anchors=anchor
                )
                plan.shred.clear()
                for entry in plan.entries:
                    entry["shred"] = False
                if plan.changes:
                    with session.begin_nested():
                        _apply(session, view, plan)
            plan.subjects[text] = None
            _record_expiry(
                custodian,
                view,
                plan,
                sweep_id=erasure_id,
                batch=batch,
                now=at,
                actor=ctx.actor,
                reason=reason,
            )
            journal.write(plan.entries, at)
        for (fname, action), n in plan.counts.items():
            if action == "kept_not_nullable":
                kept.append(
                    KeptValues(table=name, field=fname, reason="not_nullable", count=n)
                )
                continue
            counts[name, fname, action] = counts.get((name, fname, action), 0) + n
        kept_scoped = kept_scoped or any(k.field in scoped for k in kept[before:])
    if dry_run:
        remaining = kept_scoped
    else:
        remaining = (
            not held
            and subject_scoped
            and _subject_values_left(session, tbls, custodian.policy, subject)
        )
    shred = (
        not held
        and subject_scoped
        and not remaining
        and getattr(custodian, "subject_keys", None) is not None
        and custodian.keyring is not None
    )
    cleared = 0
    if not dry_run and not held:
        session.commit()
        # Only the tables given: ``known_tables`` may hold tables of other
        # databases (or of models since dropped).
        eraser = blind_index_eraser(session, metadata=cast(MetaData, _Tables(tbls)))
        if shred:
            cleared = _shred(
                custodian, [subject], at, reason=reason, erasers=[eraser], as_job=False
            )
        else:
            cleared = eraser(subject)
        session.commit()
    if shred:
        # Counted on the first table (a parent), as the sweep counts its shreds.
        counts[order[0] if order else "*", "*", "crypto_shred"] = 1
    return ErasureResult(
        erasure_id=erasure_id,
        subject=subject,
        request_id=request_id,
        dry_run=dry_run,
        counts=tuple(
            SweepCount(table=t, field=f, action=a, count=n)
            for (t, f, a), n in sorted(counts.items())
            if n
        ),
        kept=tuple(kept),
        shredded=shred and not dry_run,
        index_entries_cleared=cleared,
        recipients=footprint.recipients,
    )


class _Tables:
    """The ``tables`` mapping of a ``MetaData``, for a list of tables."""

    def __init__(self, tables: Sequence[Table]) -> None:
        self.tables = {t.fullname: t for t in tables}


def _apply(session: Session, view: _View, plan: Any) -> None:
    from ._sweep import _apply as apply_plan  # noqa: PLC0415

    apply_plan(session.connection(), view, plan)


def _subject_values_left(
    session: Session, tables: Sequence[Table], policy: Any, subject: Any
) -> bool:
    """Whether any value under the subject's own data key is still stored."""
    for t in tables:
        if _subject_column(t) is None:
            continue
        view = _View(t, policy, None)
        scoped = [name for name, b, *_ in view.fields if b.key_scope == "subject"]
        if not scoped or view.subject is None:
            continue
        stored = [view.raw.c[name].isnot(None) for name in scoped]
        hit = session.execute(
            select(view.raw.c[view.pk.name])
            .where(view.raw.c[view.subject.name] == subject, or_(*stored))
            .limit(1)
        ).first()
        if hit is not None:
            return True
    return False
