"""The SQL table sink: audit events in database tables, written off the caller's path.

Three tables, named from a prefix (``custdata_audit`` by default)::

    <prefix>_event       one row per sealed record: envelope, exact body bytes and
                         derived index columns (ts, action, outcome, actor_id,
                         subject_ref, entity, purpose); unique (chain, seq) and
                         (chain, prev); indexes (actor_id, ts), (subject_ref, ts),
                         (action, ts)
    <prefix>_subject     fan-out: one row per (event, subject_ref), with actor_id,
                         ts, action and purpose, indexed for investigations
    <prefix>_checkpoint  database copy of the signed checkpoints (the anchor
                         outside the database is authoritative)

The ``id`` column only pages; it is not evidence of order or completeness.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import threading
import time

from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs
import sqlalchemy as sa

from sqlalchemy.dialects import mysql

from custdata._errors import AuditUnavailableError, ConfigurationError

from ._chain import SealedRecord
from ._schema import parse_ts


__all__ = [
    "CLEARED_ON_REDACT",
    "AuditTables",
    "SqlSink",
    "audit_tables",
    "derived_columns",
]

_log = logging.getLogger("custdata.audit")

_BIGINT: Final = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_MAC: Final = sa.LargeBinary(32).with_variant(mysql.VARBINARY(32), "mysql", "mariadb")
_BODY: Final = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_TS: Final = sa.DateTime(timezone=True).with_variant(
    mysql.DATETIME(fsp=6), "mysql", "mariadb"
)


@attrs.frozen(kw_only=True)
class AuditTables:
    """The audit tables of one prefix.

    Attributes:
        metadata: The metadata the tables belong to.
        event: The event table.
        subject: The subject fan-out table.
        checkpoint: The checkpoint copy table.
    """

    metadata: sa.MetaData = attrs.field(repr=False)
    event: sa.Table
    subject: sa.Table
    checkpoint: sa.Table


def audit_tables(
    metadata: sa.MetaData | None = None, *, prefix: str = "custdata_audit"
) -> AuditTables:
    """Define the audit tables on *metadata* (a new one when omitted).

    Args:
        metadata: Where to define the tables, e.g. the application's metadata so
            Alembic sees them.
        prefix: The table-name prefix.

    Returns:
        The three tables.
    """
    md = metadata if metadata is not None else sa.MetaData()
    event = sa.Table(
        f"{prefix}_event",
        md,
        sa.Column("id", _BIGINT, primary_key=True, autoincrement=True),
        sa.Column("chain", sa.String(200), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("key_ref", sa.String(200), nullable=False),
        sa.Column("prev", _MAC, nullable=False),
        sa.Column("mac", _MAC, nullable=False),
        sa.Column("body_sha256", _MAC, nullable=False),
        sa.Column("body", _BODY, nullable=True),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(256), nullable=True),
        sa.Column("subject_ref", sa.String(32), nullable=True),
        sa.Column("entity", sa.String(256), nullable=True),
        sa.Column("purpose", sa.String(256), nullable=True),
        sa.UniqueConstraint("chain", "seq", name=f"uq_{prefix}_chain_seq"),
        sa.UniqueConstraint("chain", "prev", name=f"uq_{prefix}_chain_prev"),
        sa.Index(f"ix_{prefix}_actor_ts", "actor_id", "ts"),
        sa.Index(f"ix_{prefix}_subject_ts", "subject_ref", "ts"),
        sa.Index(f"ix_{prefix}_action_ts", "action", "ts"),
    )
    subject = sa.Table(
        f"{prefix}_subject",
        md,
        sa.Column("chain", sa.String(200), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("subject_ref", sa.String(32), primary_key=True),
        sa.Column("actor_id", sa.String(256), nullable=True),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(256), nullable=True),
        sa.Index(f"ix_{prefix}_sub_subject_ts", "subject_ref", "ts"),
        sa.Index(f"ix_{prefix}_sub_actor_ts", "actor_id", "ts"),
    )
    checkpoint = sa.Table(
        f"{prefix}_checkpoint",
        md,
        sa.Column("id", _BIGINT, primary_key=True, autoincrement=True),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("heads", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    return AuditTables(metadata=md, event=event, subject=subject, checkpoint=checkpoint)


#: The derived columns :func:`custdata.audit.redact` sets to NULL with the body
#: (``ts``, ``action`` and ``outcome`` are NOT NULL and stay).
CLEARED_ON_REDACT: Final = ("actor_id", "subject_ref", "entity", "purpose")


def derived_columns(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return the derived index columns of a body (naive UTC ``ts``)."""
    actor = fields.get("actor")
    actor_id = actor.get("id") if isinstance(actor, dict) else None
    return {
        "ts": parse_ts(str(fields["ts"])).replace(tzinfo=None),
        "action": fields["action"],
        "outcome": fields["outcome"],
        "actor_id": actor_id,
        "subject_ref": fields.get("subject_ref"),
        "entity": fields.get("entity"),
        "purpose": fields.get("purpose"),
    }


_MODES: Final = frozenset({"sync", "async"})
#: Connections a forked child inherited from its parent's sinks.
_INHERITED: Final[list[sa.Connection]] = []


def _aware(dialect: sa.Dialect) -> bool:
    return dialect.name == "postgresql"


class SqlSink:
    """Write sealed records to the audit tables, on a connection of their own.

    Audit rows commit independently of the application's transactions (the
    sink has its own engine or, given one, its own connection from it).

    **Synchronous mode** (``mode="sync"``, the default): :meth:`emit` inserts
    the record and its subject fan-out rows and commits before it returns, on
    the caller's thread. The trail emits before it releases anything, so no
    value is released unless its event is committed: a database that is down
    or blocked refuses (or holds) the access, and a process killed at any
    moment leaves no released value without its event. The SQLAlchemy layer
    records one event per fetched batch (up to 1,000 subjects), so the cost
    is one commit per batch, not per row.

    **Asynchronous mode** (``mode="async"``, opt-in): a background flusher
    batches records (up to *batch_size* per multi-row INSERT, at most
    *flush_interval* seconds apart). The queue is bounded: when it is full,
    :meth:`reserve` waits up to *block_timeout* seconds and then raises
    :class:`custdata.AuditUnavailableError`; it also raises at once while the
    database refuses writes. **Loss window:** values are released when their
    event is queued, not committed; records still queued when the process is
    killed (or loses power) are lost — at most *max_queue* events, normally the
    last *flush_interval* seconds' worth. Verification cannot see that loss.

    Args:
        url: A database URL or an engine. A URL gets an engine of its own, disposed
            on :meth:`close`; a given engine is left open.
        prefix: The table-name prefix.
        create: Create missing tables on start.
        mode: ``"sync"`` (commit before release) or ``"async"`` (queue).
        batch_size: Asynchronous mode: the most rows per INSERT.
        flush_interval: Asynchronous mode: the longest a record waits before
            its batch is written.
        max_queue: Asynchronous mode: how many records may wait.
        block_timeout: Asynchronous mode: how long :meth:`reserve` waits for room.

    Raises:
        ConfigurationError: The URL cannot be used, or *mode* is unknown.
        AuditUnavailableError: The tables cannot be created (the database is
            unreachable or refuses).
    """

    name = "sql"

    def __init__(
        self,
        url: str | sa.URL | sa.Engine,
        *,
        prefix: str = "custdata_audit",
        create: bool = True,
        mode: str = "sync",
        batch_size: int = 500,
        flush_interval: float = 0.1,
        max_queue: int = 10_000,
        block_timeout: float = 0.05,
    ) -> None:
        if mode not in _MODES:
            raise ConfigurationError("SqlSink mode must be 'sync' or 'async'")
        #: ``"sync"`` or ``"async"``.
        self.mode = mode
        self._sync = mode == "sync"
        if isinstance(url, sa.Engine):
            self.engine = url
            self._owns_engine = False
        else:
            try:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
            except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
                raise ConfigurationError(
                    f"the audit database URL is not usable ({type(exc).__name__})"
                ) from None
            self._owns_engine = True
        self.tables = audit_tables(prefix=prefix)
        if create:
            try:
                self.tables.metadata.create_all(self.engine)
            except sa.exc.SQLAlchemyError as exc:
                if self._owns_engine:
                    self.engine.dispose()
                raise AuditUnavailableError(
                    "the audit tables cannot be created in "
                    f"{self.engine.url.render_as_string(hide_password=True)} "
                    f"({type(exc).__name__})"
                ) from None
        self._aware = _aware(self.engine.dialect)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.block_timeout = block_timeout
        self._reset_state()

    def _reset_state(self) -> None:
        self._conn: sa.Connection | None = None
        self._queue: collections.deque[SealedRecord] = collections.deque()
        self._reserved = 0
        self._in_flight = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._failure: str | None = None

    def __repr__(self) -> str:
        return f"<SqlSink {self.engine.dialect.name} {self.tables.event.name}>"

    # -- writer side -------------------------------------------------------

    def reserve(self) -> None:
        """Refuse when closed; asynchronous mode: wait for room in the queue.

        Raises:
            AuditUnavailableError: The sink is closed, or (asynchronous mode)
                the queue stays full or the database refuses writes.
        """
        if self._sync:
            if self._closing:
                raise AuditUnavailableError("the audit SQL sink is closed")
            return
        deadline = time.monotonic() + self.block_timeout
        with self._cond:
            if self._closing:
                raise AuditUnavailableError("the audit SQL sink is closed")
            if self._failure is not None:
                raise AuditUnavailableError(
                    f"the audit database refuses writes ({self._failure})"
                )
            while len(self._queue) + self._reserved + self._in_flight >= self.max_queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._cond.wait(remaining):
                    raise AuditUnavailableError(
                        "the audit SQL sink queue is full; the event was not recorded"
                    )
            self._reserved += 1

    def emit(self, record: SealedRecord) -> None:
        """Commit *record* (synchronous mode), or queue it (room was reserved).

        Raises:
            AuditUnavailableError: Synchronous mode: the database did not
                commit the record (it is not part of the trail).
        """
        if self._sync:
            self._commit_now(record)
            return
        with self._cond:
            if self._reserved > 0:
                self._reserved -= 1
            self._queue.append(record)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="custdata-audit-flusher", daemon=True
                )
                self._thread.start()
            if len(self._queue) >= self.batch_size:
                self._cond.notify_all()

    def _commit_now(self, record: SealedRecord) -> None:
        """Insert and commit one record on the sink's own connection."""
        events, subjects = self.rows([record])
        with self._cond:
            if self._closing:
                raise AuditUnavailableError("the audit SQL sink is closed")
            conn = self._conn
            try:
                if conn is None:
                    conn = self._conn = self.engine.connect()
                with conn.begin():
                    conn.execute(self.tables.event.insert(), events)
                    if subjects:
                        conn.execute(self.tables.subject.insert(), subjects)
            except sa.exc.SQLAlchemyError as exc:
                self._drop_connection()
                raise AuditUnavailableError(
                    f"the audit database did not commit the event ({type(exc).__name__})"
                ) from None

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.invalidate()
                conn.close()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record is committed (nothing waits in synchronous mode).

        Raises:
            AuditUnavailableError: The records could not be written in *timeout*
                seconds (30 when omitted).
        """
        deadline = time.monotonic() + (30.0 if timeout is None else timeout)
        with self._cond:
            self._cond.notify_all()
            while self._queue or self._in_flight:
                if self._thread is None or not self._thread.is_alive():
                    self._write_pending_locked()
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AuditUnavailableError(
                        f"{len(self._queue) + self._in_flight} audit events are not "
                        "yet written to the database"
                    )
                self._cond.wait(min(remaining, 0.05))

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the flusher and dispose an owned engine; idempotent.

        Args:
            timeout: How long to wait for queued records (30 s when omitted).

        Raises:
            AuditUnavailableError: Queued records could not be written.
        """
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
                conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    conn.close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._closed = True
            if self._owns_engine:
                self.engine.dispose()

    def after_fork_in_child(self) -> None:
        """Forget the parent's queue, flusher and connection; never reuse them."""
        if self._conn is not None:
            # Kept referenced, never closed or returned to a pool: either would
            # talk to the server on the parent's socket.
            _INHERITED.append(self._conn)
        self.engine.dispose(close=False)
        self._reset_state()

    # -- flusher side ------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        while True:
            with self._cond:
                if not self._queue:
                    if self._closing:
                        return
                    self._cond.wait(self.flush_interval)
                    if not self._queue:
                        continue
                if len(self._queue) < self.batch_size and not self._closing:
                    # Let a batch build up for at most one interval.
                    self._cond.wait(self.flush_interval)
                batch = [
                    self._queue.popleft()
                    for _ in range(min(self.batch_size, len(self._queue)))
                ]
                self._in_flight = len(batch)
            try:
                self._write(batch)
            except sa.exc.SQLAlchemyError as exc:
                with self._cond:
                    self._queue.extendleft(reversed(batch))
                    self._in_flight = 0
                    self._failure = type(exc).__name__
                    self._cond.notify_all()
                    if self._closing:
                        return
                _log.warning("audit flusher: database write failed; retrying")
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            with self._cond:
                self._in_flight = 0
                self._failure = None
                self._cond.notify_all()

    def _write_pending_locked(self) -> None:
        batch = list(self._queue)
        self._queue.clear()
        if batch:
            try:
                self._write(batch)
            except sa.exc.SQLAlchemyError:
                self._queue.extendleft(reversed(batch))
                raise AuditUnavailableError(
                    f"{len(batch)} audit events could not be written to the database"
                ) from None

    def rows(
        self, batch: list[SealedRecord]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return the event and fan-out rows of *batch*."""
        events: list[dict[str, Any]] = []
        subjects: list[dict[str, Any]] = []
        for rec in batch:
            cols = derived_columns(rec.fields)
            if self._aware:
                cols["ts"] = cols["ts"].replace(tzinfo=dt.timezone.utc)
            events.append(
                {
                    "chain": rec.chain,
                    "seq": rec.seq,
                    "key_ref": rec.key_ref,
                    "prev": rec.prev,
                    "mac": rec.mac,
                    "body_sha256": rec.body_sha256,
                    "body": rec.body,
                    **cols,
                }
            )
            refs = list(rec.fields.get("subjects") or ())
            if cols["subject_ref"]:
                refs.append(cols["subject_ref"])
            subjects.extend(
                {
                    "chain": rec.chain,
                    "seq": rec.seq,
                    "subject_ref": ref,
                    "actor_id": cols["actor_id"],
                    "ts": cols["ts"],
                    "action": cols["action"],
                    "purpose": cols["purpose"],
                }
                for ref in dict.fromkeys(refs)
            )
        return events, subjects

    def _write(self, batch: list[SealedRecord]) -> None:
        events, subjects = self.rows(batch)
        with self.engine.begin() as conn:
            conn.execute(self.tables.event.insert(), events)
            if subjects:
                conn.execute(self.tables.subject.insert(), subjects)


@contextlib.contextmanager
def _connect(url: str | sa.URL | sa.Engine) -> Iterator[sa.Engine]:
    if isinstance(url, sa.Engine):
        yield url
        return
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
