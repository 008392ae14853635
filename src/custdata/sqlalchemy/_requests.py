"""Data-subject requests in the application's database, and their answers.

:class:`SqlRequestStore` is the SQL :class:`custdata.governance.RequestStore`:
two tables (``custdata_request`` and ``custdata_request_event``) that
:func:`add_custdata_tables` adds to the application's metadata. The store only
ever inserts: a request's state is its history replayed, and two writers
racing for the same position in a history are kept apart by the primary key.

The subject of a request is customer data: it is stored sealed, encrypted
with the keyring like a customer-data field (AES-256-GCM, its associated data
binding the table, the ``subject`` column and the request id). Requests are
read without it (``subject`` is ``None``); :meth:`SqlRequestStore.open_subject`
opens it under an access context that may read it, and records the decision.

:func:`answer_request` executes a granted disclosure, portability or erasure
request with :func:`locate_subject`, :func:`disclose_subject` and
:func:`erase_subject`, and records the answer on the request.
"""

from __future__ import annotations

import datetime as dt
import json

from pathlib import Path
from typing import IO, Any, Literal

import attrs
import sqlalchemy as sa

from sqlalchemy.orm import Session

from custdata._context import current_access
from custdata._context import purpose as claim_purpose
from custdata._custodian import Custodian, current_custodian
from custdata._decision import Action
from custdata._errors import (
    ActorRequiredError,
    ConfigurationError,
    RequestError,
    RequestTransitionError,
    UnknownRequestError,
)
from custdata._policy import FieldPolicy
from custdata.crypto import Keyring
from custdata.crypto._codecs import STR
from custdata.governance import (
    DataSubjectRequest,
    RequestAction,
    RequestDesk,
    RequestEvent,
    RequestState,
    request_from_dict,
    request_to_dict,
)

from ._chunks import rows_in_chunks
from ._ledger import create_tables, history_table, naive_utc
from ._subjects import (
    DISCLOSURE_PURPOSE,
    Disclosure,
    ErasureResult,
    SubjectFootprint,
    disclose_subject,
    erase_subject,
    locate_subject,
)


__all__ = [
    "RequestTables",
    "SqlRequestStore",
    "answer_request",
    "plan_answer",
    "request_tables",
]


@attrs.frozen
class RequestTables:
    """The data-subject request tables.

    Attributes:
        request: One row per request: id, kind, receipt time, the opening
            record (JSON, without the subject) and the subject sealed.
        event: One row per history entry, keyed by (request id, seq).
    """

    request: sa.Table
    event: sa.Table


def request_tables(
    metadata: sa.MetaData | None = None, *, prefix: str = "custdata_request"
) -> RequestTables:
    """Return the request tables on *metadata* (a new one when omitted), defining them if needed."""
    md = metadata if metadata is not None else sa.MetaData()
    names = (prefix, f"{prefix}_event")
    if all(n in md.tables for n in names):
        return RequestTables(*(md.tables[n] for n in names))
    request = sa.Table(
        names[0],
        md,
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("subject", sa.LargeBinary(), nullable=False),
    )
    event = history_table(md, names[1], request)
    return RequestTables(request, event)


def _opening(record: str) -> dict[str, Any]:
    """A stored opening record, its subject left out (it is stored sealed)."""
    data: dict[str, Any] = json.loads(record)
    data["subject"] = None
    return data


def _event_row(event: RequestEvent) -> dict[str, Any]:
    return {
        "request_id": event.request_id,
        "seq": event.seq,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action.value,
        "detail": json.dumps(dict(event.detail), ensure_ascii=False, sort_keys=True),
    }


class SqlRequestStore:
    """The data-subject request register's store in the application's database.

    The subject of each request is stored sealed with *keyring* (or, when
    omitted, the keyring of the custodian in force); the requests it returns
    carry ``subject=None``, and :meth:`open_subject` opens it.

    Args:
        engine: The database (not disposed here).
        keyring: The keyring that seals the subjects; the current custodian's
            when omitted.
        metadata: The metadata to define the tables on (Alembic's, after
            :func:`add_custdata_tables`); a new one when omitted.
        prefix: The tables' name prefix.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        keyring: Keyring | None = None,
        metadata: sa.MetaData | None = None,
        prefix: str = "custdata_request",
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.tables = request_tables(metadata, prefix=prefix)

    def __repr__(self) -> str:
        return f"<SqlRequestStore {self.tables.request.name}>"

    def create_tables(self) -> None:
        """Create the tables if they do not exist (tests, the CLI; else use migrations)."""
        create_tables(self.engine, attrs.astuple(self.tables, recurse=False))

    def _cipher(self, custodian: Custodian | None = None) -> Any:
        keyring = self.keyring
        if keyring is None:
            keyring = (custodian or current_custodian()).keyring
        if keyring is None:
            msg = (
                "the request store seals each subject: give SqlRequestStore a "
                "keyring, or a custodian with one"
            )
            raise ConfigurationError(msg)
        return keyring.field_cipher(
            table=self.tables.request.name, column="subject", codec=STR
        )

    def add(self, request: DataSubjectRequest) -> None:
        """Store a newly opened request with its ``opened`` event, its subject sealed.

        Raises:
            RequestError: A request with that id already exists, or the
                request carries no ``opened`` event or no subject.
            ConfigurationError: No keyring to seal the subject with.
        """
        if not request.history or request.history[0].action is not RequestAction.OPENED:
            msg = f"request {request.request_id}: history must start with 'opened'"
            raise RequestError(msg)
        if request.subject is None:
            msg = f"request {request.request_id}: a new request needs its subject"
            raise RequestError(msg)
        t = self.tables
        sealed = self._cipher().encrypt(request.subject, request.request_id)
        opening = request_to_dict(request)
        opening["subject"] = None
        record = json.dumps(opening, ensure_ascii=False, sort_keys=True)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.request.insert().values(
                        request_id=request.request_id,
                        kind=request.kind,
                        received_at=naive_utc(request.received_at),
                        record=record,
                        subject=sealed,
                    )
                )
                conn.execute(t.event.insert().values(**_event_row(request.history[0])))
        except sa.exc.IntegrityError:
            msg = f"request {request.request_id!r} already exists"
            raise RequestError(msg) from None

    def append(self, event: RequestEvent) -> None:
        """Append *event* at its position in the request's history.

        Raises:
            UnknownRequestError: No request has that id.
            RequestTransitionError: Another writer took that position first.
        """
        self._record(event.request_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(self.tables.event.insert().values(**_event_row(event)))
        except sa.exc.IntegrityError:
            msg = f"request {event.request_id}: changed meanwhile; try again"
            raise RequestTransitionError(msg, action=event.action.value) from None

    def _record(self, request_id: str, column: str = "record") -> Any:
        """One column of the request's row (its opening record by default)."""
        t = self.tables.request
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(t.c[column]).where(t.c.request_id == request_id)
            ).scalar_one_or_none()
        if value is None:
            raise UnknownRequestError(f"no request {request_id!r}")
        return value

    def _events(
        self, conn: sa.Connection, ids: list[str]
    ) -> dict[str, list[RequestEvent]]:
        t = self.tables.event
        out: dict[str, list[RequestEvent]] = {i: [] for i in ids}
        query = sa.select(t).order_by(t.c.request_id, t.c.seq)
        for r in rows_in_chunks(conn, query, t.c.request_id, ids):
            out[r.request_id].append(
                RequestEvent(
                    request_id=r.request_id,
                    seq=r.seq,
                    at=dt.datetime.fromisoformat(r.at),
                    actor=r.actor,
                    action=RequestAction(r.action),
                    detail=json.loads(r.detail),
                )
            )
        return out

    def open_subject(
        self, request_id: str, *, custodian: Custodian | None = None
    ) -> str:
        """Return the subject of a request, opened under the access context in force.

        Reading it is a recorded decision of *custodian* (the current one
        when omitted) on the request table's ``subject`` field, which the
        policy's ``subject_disclosure`` purposes and the purposes that
        ``may_erase`` may read: the purposes that answer a request.

        Raises:
            UnknownRequestError: No request has that id.
            ActorRequiredError: No actor is in force.
            PurposeRequiredError: No purpose is in force.
            PurposeViolationError: The purpose may not read it (recorded).
            ConfigurationError: No keyring to open it with.
            DecryptionError: The stored subject is not this request's.
        """
        holder = custodian or current_custodian()
        t = self.tables.request
        sealed = self._record(request_id, "subject")
        policy = holder.policy
        readers = sorted(
            p
            for p in policy.purposes
            if p in policy.disclosure_purposes or policy.may_erase(p)
        )
        holder.authorize(
            action=Action.READ,
            entity=t.name,
            fields={"subject": FieldPolicy(category="contact", purposes=readers)},
            count=1,
        )
        return str(self._cipher(holder).decrypt(sealed, request_id))

    def get(self, request_id: str) -> DataSubjectRequest:
        """Return the request with its history replayed, without its subject.

        Raises:
            UnknownRequestError: No request has that id.
        """
        record = str(self._record(request_id))
        with self.engine.connect() as conn:
            events = self._events(conn, [request_id])[request_id]
        return request_from_dict(_opening(record), events)

    def requests(self) -> tuple[DataSubjectRequest, ...]:
        """Every request, oldest receipt first, without their subjects."""
        t = self.tables.request
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.request_id, t.c.record).order_by(
                    t.c.received_at, t.c.request_id
                )
            ).all()
            events = self._events(conn, [r.request_id for r in rows])
        return tuple(
            request_from_dict(_opening(r.record), events[r.request_id]) for r in rows
        )


def _executable(desk: RequestDesk, request_id: str) -> tuple[DataSubjectRequest, str]:
    """The granted request and its execution (``disclose`` or ``erase``).

    Raises:
        RequestTransitionError: The request is not in progress.
        RequestError: Its kind is answered by the application.
    """
    request = desk.get(request_id)
    if request.state is not RequestState.IN_PROGRESS:
        msg = (
            f"request {request_id}: only a granted request is answered; it is "
            f"{request.state.value}"
        )
        raise RequestTransitionError(msg, state=request.state.value, action="fulfilled")
    execution = request.kind_info.execution
    if (
        execution not in {"disclose", "erase"}
        or request.kind == "appi_provision_records"
    ):
        msg = (
            f"{request.kind} is answered by the application; record the answer "
            "with RequestDesk.fulfil"
        )
        raise RequestError(msg)
    return request, execution


def _subject_of(desk: RequestDesk, request: DataSubjectRequest, execution: str) -> str:
    """The request's subject, opened from the store when it keeps it sealed."""
    if request.subject is not None:
        return request.subject
    opener = getattr(desk.store, "open_subject", None)
    if opener is None:
        msg = f"request {request.request_id}: its store holds no subject to answer for"
        raise RequestError(msg)
    if execution == "disclose":
        # Read as disclose_subject reads: under the disclosure purpose.
        with claim_purpose(DISCLOSURE_PURPOSE):
            return str(opener(request.request_id))
    return str(opener(request.request_id))


def plan_answer(
    desk: RequestDesk,
    request_id: str,
    session: Session,
    *,
    at: dt.datetime,
    tables: Any = None,
    records: Any = None,
) -> tuple[SubjectFootprint, ErasureResult | None]:
    """What :func:`answer_request` would do, changing nothing (a dry run).

    The same checks as :func:`answer_request`; the subject is opened (a
    recorded read) and located; for an erasure, :func:`erase_subject` runs
    with ``dry_run=True``. Nothing is recorded on the request.

    Returns:
        The subject's footprint, and for an erasure the dry run's result.

    Raises:
        RequestTransitionError: The request is not in progress.
        RequestError: The kind is not one executed here.
    """
    request, execution = _executable(desk, request_id)
    subject = _subject_of(desk, request, execution)
    footprint = locate_subject(session, subject, tables=tables, records=records)
    if execution == "disclose":
        return footprint, None
    erasure = erase_subject(
        session,
        footprint,
        reason="erasure_request",
        request_id=request_id,
        tables=tables,
        dry_run=True,
        now=at,
    )
    return footprint, erasure


def answer_request(
    desk: RequestDesk,
    request_id: str,
    session: Session,
    *,
    at: dt.datetime,
    out: str | Path | IO[str] | None = None,
    tables: Any = None,
    records: Any = None,
) -> tuple[DataSubjectRequest, Disclosure | ErasureResult]:
    """Execute a granted request and record the answer on it.

    The request must be ``in_progress`` (granted). Its subject is located
    (:func:`locate_subject`), then by the kind's execution:

    - ``disclose`` (``appi_disclosure``, ``gdpr_access``,
      ``gdpr_portability``): :func:`disclose_subject` writes everything held
      to *out*, as CSV when the person chose ``csv`` and JSON otherwise; the
      request is fulfilled.
    - ``erase`` (``gdpr_erasure``): :func:`erase_subject`; when a statutory
      minimum or a legal hold kept values, the request is partially
      fulfilled on ``17_3_exception`` (GDPR Art. 17(3)(b), (e)).

    The access context in force acts (an actor, and for an erasure a purpose
    that ``may_erase``); its actor is recorded on the request. A subject the
    store keeps sealed is opened with :meth:`SqlRequestStore.open_subject`
    (a recorded decision; for a disclosure under the ``disclosure`` purpose,
    as :func:`disclose_subject` reads). The result
    recorded holds counts and ids, never a value.

    Args:
        desk: The request desk.
        request_id: The request.
        session: The application's session (an erasure commits it).
        at: When the answer is given (time-zone aware).
        out: Where a disclosure is written (a path or a text stream).
        tables: The tables, as :func:`locate_subject` takes them.
        records: A provision-record store, for the footprint's recipients.

    Returns:
        The request as answered, and what the execution did.

    Raises:
        RequestTransitionError: The request is not in progress (nothing is
            read or changed).
        RequestError: The kind is not one executed here (notices,
            corrections, stops and the provision-record disclosure are
            answered by the application and recorded with
            :meth:`RequestDesk.fulfil`).
        ActorRequiredError: No actor is in force.
    """
    request, execution = _executable(desk, request_id)
    actor = current_access().actor
    if actor is None:
        msg = "answering a request needs an actor: use custdata.acting_as()"
        raise ActorRequiredError(msg)
    subject = _subject_of(desk, request, execution)
    footprint = locate_subject(session, subject, tables=tables, records=records)
    if execution == "disclose":
        fmt: Literal["json", "csv"] = (
            "csv" if request.disclosure_format == "csv" else "json"
        )
        disclosure = disclose_subject(
            session,
            footprint,
            fmt,
            out,
            tables=tables,
            request_id=request_id,
            now=at,
        )
        answered = desk.fulfil(
            request_id,
            at=at,
            actor=actor,
            result={
                "format": fmt,
                "tables": len(disclosure.tables),
                "values": disclosure.values,
            },
        )
        return answered, disclosure
    erasure = erase_subject(
        session,
        footprint,
        reason="erasure_request",
        request_id=request_id,
        tables=tables,
        now=at,
    )
    kept = sorted({k.reason for k in erasure.kept})
    result = {
        "erasure_id": erasure.erasure_id,
        "deleted_rows": erasure.total("delete_row"),
        "erased_values": erasure.total("erase"),
        "kept": sum(k.count for k in erasure.kept),
        "shredded": erasure.shredded,
        "recipients": list(erasure.recipients),
    }
    if kept:
        answered = desk.fulfil(
            request_id,
            at=at,
            actor=actor,
            partial=True,
            grounds=["17_3_exception"],
            reason=f"kept under {', '.join(kept)}",
            result=result,
        )
    else:
        answered = desk.fulfil(request_id, at=at, actor=actor, result=result)
    return answered, erasure
