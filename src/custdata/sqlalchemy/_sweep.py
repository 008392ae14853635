"""The retention sweep: dispose of expired customer data, batch by batch (R-RET-2).

For each row of each table that declares retention anchors
(:func:`custdata.sqlalchemy.retention_anchor`), every stored customer-data
value is resolved against the policy: it expires when every purpose that
justifies it has expired and no statutory minimum applies
(:meth:`custdata.Policy.retention_status`); a legal hold on the row's subject
keeps all of its values. Then:

- when every value the row still holds has expired and the strongest action
  among them is ``delete`` or ``crypto_shred``, the row is deleted (and for
  ``crypto_shred`` the subject's per-subject key is destroyed too, if the table
  uses per-subject keys: the subject's values in other tables and in every
  backup become unreadable);
- otherwise each expired value is erased (set to NULL, its blind-index entry
  with it): ``delete`` and ``anonymise`` of one field while the rest of the row
  is kept. A value in a NOT NULL column that cannot be erased alone is kept
  until the whole row expires, and counted.

The sweep reads and writes the stored envelopes through a plain view of each
table (it decrypts nothing). Each batch is one transaction: its
``retention.expire`` audit event and its deletion-log entries are written
before it commits, so a sweep killed at any point leaves every batch either
done or untouched, and a rerun finishes the work. A second run finds nothing
to do. On PostgreSQL (and MySQL 8 / MariaDB 10.6) rows are claimed ``FOR
UPDATE SKIP LOCKED``, so several workers can sweep at once.

The deletion log is a JSON-lines file kept apart from the data. After a backup
taken before the sweep is restored, :func:`replay_deletions` applies the
logged erasures again, so the restored database ends in the post-sweep state.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading
import uuid

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from sqlalchemy import (
    DateTime,
    LargeBinary,
    Table,
    Text,
    bindparam,
    column,
    delete,
    func,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import CircularDependencyError, IntegrityError
from sqlalchemy.sql.ddl import sort_tables

from custdata._context import acting_as
from custdata._decision import AccessDecision, Action, Outcome
from custdata._errors import ConfigurationError, DecryptionError
from custdata._retention import ExpiryAction, RetentionRule, resolve_retention

from ._anchors import ANCHOR_INFO_KEY, aware_utc
from ._binding import SUBJECT_INFO_KEY, FieldBinding
from ._jobs import _supports_skip_locked, _tables_arg
from ._sealed import stored_envelope
from ._types import EncryptedType


__all__ = [
    "SWEEP_ACTOR",
    "SweepCount",
    "SweepReport",
    "replay_deletions",
    "sweep",
]

#: The actor id written for the sweep's audit events.
SWEEP_ACTOR = "custdata.sweep"
#: The deletion log's format version.
LOG_VERSION = 1

Progress = Callable[[str, int, int], None]

_STRENGTH = {
    ExpiryAction.PSEUDONYMISE: 0,
    ExpiryAction.ANONYMISE: 1,
    ExpiryAction.DELETE: 2,
    ExpiryAction.CRYPTO_SHRED: 3,
}
#: The actions that dispose of a whole row when all its values expire.
_ROW_ACTIONS = frozenset({ExpiryAction.DELETE, ExpiryAction.CRYPTO_SHRED})


@attrs.frozen(kw_only=True)
class SweepCount:
    """How many values (or rows) of one table and field one action applies to.

    Attributes:
        table: The table.
        field: The column, or ``"*"`` for whole rows.
        action: ``delete_row``, ``erase`` (a ``delete`` or ``anonymise`` of one
            value), ``pseudonymise`` (a value replaced by its keyed pseudonym),
            ``crypto_shred`` (a subject key destroyed, with its row),
            ``held`` (expired but kept by a legal hold) or ``kept_not_nullable``
            (expired but in a NOT NULL column of a row that is kept).
        count: How many.
    """

    table: str
    field: str
    action: str
    count: int


@attrs.frozen(kw_only=True)
class SweepReport:
    """What :func:`sweep` did (or, with ``dry_run``, would do).

    Attributes:
        sweep_id: This run's id (in its audit events and log entries).
        dry_run: Whether nothing was changed.
        scanned: Rows examined.
        batches: Batches that changed something.
        counts: Per table, field and action, in a stable order.
        unanchored: Tables with customer data but no retention anchors: the
            sweep cannot tell when their values expire.
    """

    sweep_id: str
    dry_run: bool
    scanned: int
    batches: int
    counts: tuple[SweepCount, ...]
    unanchored: tuple[str, ...] = ()

    def total(self, action: str) -> int:
        """The total count of *action* over every table and field."""
        return sum(c.count for c in self.counts if c.action == action)


class _Sweepable:
    """A plain view of one table: key, subject, anchors and encrypted columns."""

    def __init__(self, tbl: Table, policy: Any) -> None:
        pk = list(tbl.primary_key.columns)
        if len(pk) != 1:
            raise ConfigurationError(
                f"{tbl.name}: the sweep needs a single-column primary key"
            )
        self.table = tbl
        self.name = tbl.name
        self.pk = pk[0]
        self.subject = next(
            (c for c in tbl.columns if c.info.get(SUBJECT_INFO_KEY)), None
        )
        self.anchors = {
            c.info[ANCHOR_INFO_KEY]: c.name
            for c in tbl.columns
            if c.info.get(ANCHOR_INFO_KEY)
        }
        #: (column name, binding, text storage, nullable, rules)
        self.fields: list[
            tuple[str, FieldBinding, bool, bool, tuple[RetentionRule, ...]]
        ] = []
        for c in tbl.columns:
            if not isinstance(c.type, EncryptedType):
                continue
            b = c.type._binding  # noqa: SLF001 - the column's own binding
            rules = policy.retention_rules_for(b.field) if b.field is not None else ()
            self.fields.append(
                (c.name, b, c.type.storage == "text", bool(c.nullable), rules)
            )
        cols = [column(self.pk.name, self.pk.type)]
        if self.subject is not None and self.subject is not self.pk:
            cols.append(column(self.subject.name, self.subject.type))
        cols.extend(column(name, DateTime()) for name in self.anchors.values())
        for name, b, text, _n, _r in self.fields:
            cols.append(column(name, Text() if text else LargeBinary()))
            if b.companion_key is not None:
                cols.append(column(b.companion_key, LargeBinary()))
        self.raw = table(tbl.name, *cols, schema=tbl.schema)
        self.shreds = any(b.key_scope == "subject" for _, b, _t, _n, _r in self.fields)

    def subject_of(self, row: Any) -> str | None:
        if self.subject is None:
            return None
        value = getattr(row, self.subject.name)
        return None if value is None else str(value)


@attrs.define
class _Plan:
    """What one batch does: rows to delete, values to erase, counts."""

    deletes: list[Any] = attrs.field(factory=list)
    erases: dict[tuple[str, ...], list[Any]] = attrs.field(factory=dict)
    #: Per column: (primary key, the sealed pseudonym) to write.
    pseudonyms: dict[str, list[tuple[Any, Any]]] = attrs.field(factory=dict)
    entries: list[dict[str, Any]] = attrs.field(factory=list)
    #: The subjects' ids (as their subject-key column holds them) to shred.
    shred: list[Any] = attrs.field(factory=list)
    subjects: dict[str, None] = attrs.field(factory=dict)
    fields: set[str] = attrs.field(factory=set)
    categories: set[str] = attrs.field(factory=set)
    rules: set[str] = attrs.field(factory=set)
    counts: dict[tuple[str, str], int] = attrs.field(factory=dict)

    def count(self, field: str, action: str, n: int = 1) -> None:
        self.counts[field, action] = self.counts.get((field, action), 0) + n

    @property
    def changes(self) -> bool:
        return bool(self.deletes or self.erases or self.pseudonyms)


def _pk_text(value: Any) -> tuple[str, str]:
    if isinstance(value, uuid.UUID):
        return "uuid", str(value)
    if isinstance(value, int):
        return "int", str(value)
    return "str", str(value)


def _pk_value(kind: str, text: str) -> Any:
    if kind == "uuid":
        return uuid.UUID(text)
    if kind == "int":
        return int(text)
    return text


#: The prefix of a pseudonym, so a reader can tell one from a value.
PSEUDONYM_PREFIX = "ps_"


class _Pseudonyms:
    """Keyed pseudonyms of the ``pseudonymise`` action (one per sweep).

    A value's pseudonym is ``ps_`` and 26 base32 characters of the keyring's
    blind-index HMAC, for the column's own pseudonym label, of the row's
    subject id: the same for every value of one subject in one column, and
    not traceable to the subject without the keyring. It is sealed like any
    value of the column (bound to the row's subject), so the column's type
    must hold text, and per-subject-key columns are left to ``crypto_shred``.
    """

    def __init__(self, custodian: Any) -> None:
        self._custodian = custodian

    @staticmethod
    def applies(b: FieldBinding, target: _Sweepable) -> bool:
        """Whether values of *b* can be pseudonymised (else they are erased)."""
        return (
            b.python_type is str
            and b.key_scope != "subject"
            and target.subject is not None
        )

    def _index(self, b: FieldBinding) -> Any:
        keyring = self._custodian.keyring
        if keyring is None:
            msg = "the pseudonymise action needs a custodian with a keyring"
            raise ConfigurationError(msg)
        return keyring.blind_index(table=b.table or "?", column=f"{b.column}/pseudonym")

    @staticmethod
    def _text(digest: bytes) -> str:
        code = base64.b32encode(digest).decode("ascii").rstrip("=").lower()
        return PSEUDONYM_PREFIX + code[:26]

    def of(self, b: FieldBinding, subject: object) -> str:
        """The pseudonym of *subject*'s values in *b*'s column."""
        return self._text(self._index(b).compute(str(subject)))

    def seal(self, b: FieldBinding, text: bool, subject: object) -> Any:
        """The stored form (envelope, or its base64 text) of the pseudonym."""
        envelope = b.cipher(self._custodian).encrypt(self.of(b, subject), subject)
        return base64.b64encode(envelope).decode("ascii") if text else envelope

    def holds(self, b: FieldBinding, text: bool, stored: Any, subject: object) -> bool:
        """Whether *stored* already is the pseudonym (a rerun changes nothing)."""
        try:
            value = b.cipher(self._custodian).decrypt(
                stored_envelope(stored) if text else stored, subject
            )
        except DecryptionError:
            return False
        index = self._index(b)
        return value in {self._text(d) for d in index.candidates(str(subject))}


def _plan_batch(
    target: _Sweepable,
    rows: Sequence[Any],
    now: dt.datetime,
    held: set[str],
    *,
    erase_only: bool = False,
    extra_anchors: dict[str, dt.datetime] | None = None,
    pseudonyms: _Pseudonyms | None = None,
) -> _Plan:
    plan = _Plan()
    texts = {name: text for name, _b, text, _n, _r in target.fields}
    for row in rows:
        present = [f for f in target.fields if getattr(row, f[0]) is not None]
        if not present:
            continue
        anchors = {
            name: when
            for name, col in target.anchors.items()
            if (when := aware_utc(getattr(row, col))) is not None
        }
        if extra_anchors:
            anchors.update(extra_anchors)
        expired: list[tuple[str, FieldBinding, bool, ExpiryAction, str | None]] = []
        for name, b, _text, nullable, rules in present:
            status = resolve_retention(rules, anchors, now=now) if rules else None
            if status is not None and status.expired and status.action is not None:
                expired.append(
                    (name, b, nullable, status.action, status.governing_rule)
                )
        if not expired:
            continue
        subject = target.subject_of(row)
        if subject is not None and subject in held:
            for name, *_ in expired:
                plan.count(name, "held")
            continue
        pk_kind, pk_text = _pk_text(getattr(row, target.pk.name))
        strongest = max((e[3] for e in expired), key=_STRENGTH.__getitem__)
        whole = len(expired) == len(present) and strongest in _ROW_ACTIONS
        names = [e[0] for e in expired]
        pseudo: list[str] = []
        if whole and not erase_only:
            plan.deletes.append(getattr(row, target.pk.name))
            shred = (
                strongest is ExpiryAction.CRYPTO_SHRED
                and target.shreds
                and subject is not None
            )
            plan.count("*", "delete_row")
            if shred:
                plan.shred.append(getattr(row, target.subject.name))  # type: ignore[union-attr]
                plan.count("*", "crypto_shred")
            op = "delete"
        else:
            swap = [
                e
                for e in expired
                if e[3] is ExpiryAction.PSEUDONYMISE
                and pseudonyms is not None
                and pseudonyms.applies(e[1], target)
            ]
            rest = [e for e in expired if e not in swap]
            kept = [e[0] for e in rest if not e[2]]
            names = [e[0] for e in rest if e[2]]
            for name in kept:
                plan.count(name, "kept_not_nullable")
            if swap and pseudonyms is not None:
                raw_subject = getattr(row, target.subject.name)  # type: ignore[union-attr]
                for name, b, *_ in swap:
                    as_text = texts[name]
                    if pseudonyms.holds(b, as_text, getattr(row, name), raw_subject):
                        continue  # done by an earlier run
                    plan.pseudonyms.setdefault(name, []).append(
                        (
                            getattr(row, target.pk.name),
                            pseudonyms.seal(b, as_text, raw_subject),
                        )
                    )
                    plan.count(name, "pseudonymise")
                    pseudo.append(name)
            if pseudo:
                kind, subject_text = _pk_text(raw_subject)
                plan.entries.append(
                    {
                        "table": target.name,
                        "pk_type": pk_kind,
                        "pk": pk_text,
                        "op": "pseudonymise",
                        "fields": sorted(pseudo),
                        "shred": False,
                        "subject_type": kind,
                        "subject": subject_text,
                    }
                )
            if not names:
                if pseudo:
                    _note(plan, subject, expired, pseudo)
                continue
            plan.erases.setdefault(tuple(names), []).append(
                getattr(row, target.pk.name)
            )
            for name in names:
                plan.count(name, "erase")
            shred = False
            op = "erase"
        _note(plan, subject, expired, [*names, *pseudo] if op == "erase" else None)
        entry: dict[str, Any] = {
            "table": target.name,
            "pk_type": pk_kind,
            "pk": pk_text,
            "op": op,
            "fields": sorted(names),
            "shred": shred,
        }
        if shred:
            kind, text = _pk_text(getattr(row, target.subject.name))  # type: ignore[union-attr]
            entry["subject_type"], entry["subject"] = kind, text
        plan.entries.append(entry)
    return plan


def _note(
    plan: _Plan,
    subject: str | None,
    expired: Sequence[tuple[str, FieldBinding, bool, ExpiryAction, str | None]],
    names: Sequence[str] | None,
) -> None:
    """Add a row's disposed fields (``None``: all expired) to the batch's event."""
    if subject is not None:
        plan.subjects[subject] = None
    for name, b, _n, _a, rule in expired:
        if names is None or name in names:
            plan.fields.add(name)
            if b.field is not None:
                plan.categories.add(b.field.category)
            if rule is not None:
                plan.rules.add(rule)


class _Log:
    """The deletion log: JSON lines appended and synced before each batch commits."""

    def __init__(self, path: str | os.PathLike[str] | None, sweep_id: str) -> None:
        self.path = None if path is None else Path(path)
        self.sweep_id = sweep_id
        self._lock = threading.Lock()

    def write(self, entries: list[dict[str, Any]], now: dt.datetime) -> None:
        if self.path is None or not entries:
            return
        lines = "".join(
            json.dumps(
                {"v": LOG_VERSION, "sweep": self.sweep_id, "at": now.isoformat(), **e},
                sort_keys=True,
            )
            + "\n"
            for e in entries
        )
        with self._lock:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, lines.encode("utf-8"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                msg = f"cannot write the deletion log ({exc.strerror})"
                raise ConfigurationError(msg, path=self.path) from None


def _record_expiry(
    custodian: Any,
    target: _Sweepable,
    plan: _Plan,
    *,
    sweep_id: str,
    batch: int,
    now: dt.datetime,
    actor: str = SWEEP_ACTOR,
    reason: str = "retention_expired",
) -> None:
    """One ``retention.expire`` event for the batch, before it commits.

    The sweep records as its job; an erasure (``_subjects``) records as the
    person acting, with the reason ``erasure_request``.
    """
    audit = custodian.audit
    if audit is None:
        return
    subjects = list(plan.subjects)
    count = sum(
        n
        for (_f, action), n in plan.counts.items()
        if action in {"delete_row", "erase", "pseudonymise"}
    )
    record = getattr(audit, "record", None)
    subject_ref = getattr(audit, "subject_ref", None)
    if record is not None and subject_ref is not None:
        refs = list(dict.fromkeys(subject_ref(s) for s in subjects))
        chunks = [refs[i : i + 1000] for i in range(0, len(refs), 1000)] or [[]]
        for chunk in chunks:
            extra: dict[str, Any] = {}
            if plan.categories:
                extra["data_categories"] = sorted(plan.categories)
            if len(plan.rules) == 1:
                extra["retention_policy"] = next(iter(plan.rules))
            record(
                "retention.expire",
                outcome="allowed",
                actor={
                    "type": "job" if actor == SWEEP_ACTOR else "user",
                    "id": actor,
                },
                reason=reason,
                entity=target.name,
                fields=sorted(plan.fields),
                count=count,
                subjects=chunk or None,
                purge_id=sweep_id,
                batch=batch,
                now=now,
                **extra,
            )
        return
    audit.record_decision(
        AccessDecision(
            outcome=Outcome.ALLOWED,
            action=Action.DELETE,
            actor=actor,
            role=None,
            purpose=None,
            policy_version=custodian.policy.version,
            entity=target.name,
            fields=tuple(sorted(plan.fields)),
            categories=tuple(sorted(plan.categories)),
            subjects=tuple(subjects),
            count=count,
        )
    )


def _apply(conn: Connection, target: _Sweepable, plan: _Plan) -> None:
    pk = target.raw.c[target.pk.name]
    for i in range(0, len(plan.deletes), 500):
        conn.execute(delete(target.raw).where(pk.in_(plan.deletes[i : i + 500])))
    companions = {name: b.companion_key for name, b, *_ in target.fields}
    for names, pks in plan.erases.items():
        values: dict[str, None] = {}
        for name in names:
            values[name] = None
            if companions.get(name):
                values[companions[name]] = None  # type: ignore[index]
        for i in range(0, len(pks), 500):
            conn.execute(
                update(target.raw).where(pk.in_(pks[i : i + 500])).values(values)
            )
    for name, swaps in plan.pseudonyms.items():
        values_of: dict[str, Any] = {name: bindparam("_value")}
        if companions.get(name):
            # The pseudonym is not searchable: the old value's index goes.
            values_of[companions[name]] = None  # type: ignore[index]
        conn.execute(
            update(target.raw).where(pk == bindparam("_key")).values(values_of),
            [{"_key": key, "_value": value} for key, value in swaps],
        )


class _Worker:
    """One worker's pass over one table, batch by batch in key order."""

    def __init__(  # noqa: PLR0917
        self,
        engine: Engine,
        custodian: Any,
        target: _Sweepable,
        now: dt.datetime,
        holds: Any,
        log: _Log,
        state: _State,
        *,
        dry_run: bool,
        skip_locked: bool,
    ) -> None:
        self.engine = engine
        self.custodian = custodian
        self.target = target
        self.now = now
        self.holds = holds
        self.log = log
        self.state = state
        self.dry_run = dry_run
        self.skip_locked = skip_locked and not dry_run

    def batches(self, batch_size: int) -> Iterator[int]:
        pk = self.target.raw.c[self.target.pk.name]
        last: Any = None
        while True:
            query = select(*self.target.raw.c).order_by(pk).limit(batch_size)
            if last is not None:
                query = query.where(pk > last)
            if self.skip_locked:
                query = query.with_for_update(skip_locked=True)
            rows = self._batch(query)
            if not rows:
                return
            last = getattr(rows[-1], self.target.pk.name)
            yield len(rows)

    def _batch(self, query: Any) -> list[Any]:
        target = self.target
        try:
            with self.engine.begin() as conn:
                rows = list(conn.execute(query).all())
                if not rows:
                    return rows
                plan = self._plan(rows)
                if not self.dry_run and plan.changes:
                    self._commit_plan(conn, plan)
        except IntegrityError:
            # A row another table still refers to cannot be deleted: the
            # batch rolled back; do it again erasing the values instead.
            with self.engine.begin() as conn:
                rows = list(conn.execute(query).all())
                plan = self._plan(rows, erase_only=True)
                if plan.changes:
                    self._commit_plan(conn, plan)
        self.state.add(target.name, plan, len(rows), changed=plan.changes)
        return rows

    def _plan(self, rows: Sequence[Any], *, erase_only: bool = False) -> _Plan:
        held: set[str] = set()
        if self.holds is not None and self.target.subject is not None:
            subjects = [s for r in rows if (s := self.target.subject_of(r)) is not None]
            held = self.holds.held(subjects, self.now)
        return _plan_batch(
            self.target,
            rows,
            self.now,
            held,
            erase_only=erase_only,
            pseudonyms=_Pseudonyms(self.custodian),
        )

    def _commit_plan(self, conn: Connection, plan: _Plan) -> None:
        batch = self.state.next_batch()
        # Recorded and logged before anything changes: an event or log entry
        # whose batch then rolled back describes disposal that was due anyway,
        # and a rerun (or a replay) does it.
        _record_expiry(
            self.custodian,
            self.target,
            plan,
            sweep_id=self.log.sweep_id,
            batch=batch,
            now=self.now,
        )
        self.log.write(plan.entries, self.now)
        _apply(conn, self.target, plan)
        if plan.shred:
            _shred(self.custodian, plan.shred, self.now)


def _shred(
    custodian: Any,
    subjects: list[Any],
    now: dt.datetime,
    *,
    reason: str = "retention_expired",
    erasers: Sequence[Callable[[object], int]] = (),
    as_job: bool = True,
) -> int:
    store = getattr(custodian, "subject_keys", None)
    if store is None or custodian.keyring is None:
        return 0
    if not as_job:
        # An erasure shreds as the person acting (their actor is in force).
        return int(
            custodian.shred_many(subjects, reason=reason, now=now, erasers=erasers)
        )
    with acting_as(SWEEP_ACTOR, role=SWEEP_ACTOR):
        return int(
            custodian.shred_many(subjects, reason=reason, now=now, erasers=erasers)
        )


class _State:
    """Totals shared by the workers of one sweep."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str, str], int] = {}
        self.scanned = 0
        self.batches = 0
        self._next = 0

    def next_batch(self) -> int:
        with self._lock:
            self._next += 1
            return self._next - 1

    def add(self, table_name: str, plan: _Plan, rows: int, *, changed: bool) -> None:
        with self._lock:
            self.scanned += rows
            self.batches += int(changed)
            for (field, action), n in plan.counts.items():
                key = (table_name, field, action)
                self.counts[key] = self.counts.get(key, 0) + n


def _sweepables(base_or_tables: Any, policy: Any) -> tuple[list[_Sweepable], list[str]]:
    tables = _tables_arg(base_or_tables)
    if tables is None:
        from ._runtime import known_tables  # noqa: PLC0415 - installs the hooks

        tables = known_tables()
    by_name = {t.name: t for t in tables}
    metadata_order = list(by_name)
    try:
        ordered = [t.name for t in sort_tables(list(by_name.values()))]
    except CircularDependencyError:
        ordered = metadata_order
    out: list[_Sweepable] = []
    unanchored: list[str] = []
    # Children before parents: a row another still refers to is deleted last.
    for name in reversed(ordered):
        t = by_name[name]
        if not any(isinstance(c.type, EncryptedType) for c in t.columns):
            continue
        target = _Sweepable(t, policy)
        if not target.anchors:
            unanchored.append(name)
            continue
        out.append(target)
    return out, sorted(unanchored)


def sweep(
    engine: Engine,
    custodian: Any,
    *,
    tables: Any = None,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    holds: Any = None,
    log: str | os.PathLike[str] | None = None,
    workers: int = 1,
    skip_locked: bool | None = None,
    progress: Progress | None = None,
) -> SweepReport:
    """Dispose of every expired customer-data value, in batches (the retention sweep).

    See the module documentation for what is deleted, erased and shredded.

    Args:
        engine: The application's database.
        custodian: The custodian: its policy decides, its audit trail records
            one ``retention.expire`` event per batch, its subject key store is
            used to crypto-shred.
        tables: A declarative base, ``MetaData`` or tables (default: every
            mapped table with customer data).
        now: The instant to decide for (aware); default: the custodian's clock.
        dry_run: Count what would be done; change, record and log nothing.
        batch_size: Rows per transaction.
        holds: The legal-hold register (default: the custodian's).
        log: The deletion log file (JSON lines, appended); ``None`` keeps none.
            Keep it apart from the database and its backups.
        workers: Threads sweeping at once (``FOR UPDATE SKIP LOCKED`` where the
            database has it; one worker otherwise).
        skip_locked: Claim rows with ``SKIP LOCKED`` (default: where supported).
        progress: Called with (table, rows done, rows in the table) after each
            batch.

    Returns:
        The report, with counts per table, field and action.

    Raises:
        ConfigurationError: A table without a single-column primary key, or
            the log cannot be written.
        ValueError: *batch_size* or *workers* is below 1, or *now* is naive.
        AuditUnavailableError: A batch's event could not be recorded; that
            batch is rolled back and the sweep stops.
        LegalHoldError: Never for held rows (they are skipped and counted).
    """
    if batch_size < 1 or workers < 1:
        raise ValueError("batch_size and workers must be at least 1")
    at = now if now is not None else custodian.now()
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("now must be time-zone aware")
    holds = holds if holds is not None else getattr(custodian, "holds", None)
    targets, unanchored = _sweepables(tables, custodian.policy)
    sweep_id = f"sweep_{uuid.uuid4().hex}"
    state = _State()
    journal = _Log(None if dry_run else log, sweep_id)
    locking = _supports_skip_locked(engine) if skip_locked is None else skip_locked
    if not locking:
        workers = 1
    for target in targets:
        with engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(target.raw)
            ).scalar_one()
        done = [0]
        done_lock = threading.Lock()

        def run(
            target: _Sweepable = target,
            total: int = total,
            done: list[int] = done,
            done_lock: threading.Lock = done_lock,
        ) -> None:
            worker = _Worker(
                engine,
                custodian,
                target,
                at,
                holds,
                journal,
                state,
                dry_run=dry_run,
                skip_locked=locking,
            )
            for n in worker.batches(batch_size):
                with done_lock:
                    done[0] += n
                    shown = min(done[0], total)
                if progress is not None:
                    progress(target.name, shown, total)

        _run_workers(run, workers)
    counts = tuple(
        SweepCount(table=t, field=f, action=a, count=n)
        for (t, f, a), n in sorted(state.counts.items())
        if n
    )
    return SweepReport(
        sweep_id=sweep_id,
        dry_run=dry_run,
        scanned=state.scanned,
        batches=state.batches,
        counts=counts,
        unanchored=tuple(unanchored),
    )


def _run_workers(run: Callable[[], None], workers: int) -> None:
    if workers == 1:
        run()
        return
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def replay_deletions(
    engine: Engine,
    log: str | os.PathLike[str],
    *,
    tables: Any = None,
    custodian: Any = None,
) -> int:
    """Apply a deletion log again, to a database restored from a backup.

    Every logged row deletion and value erasure is applied again (rows already
    gone and values already erased are left alone), so a backup taken before a
    sweep, restored and replayed, ends in the state the sweep left. Logged
    crypto-shreds destroy the subjects' keys again when *custodian* has a
    subject key store (restored with the same backup).

    Args:
        engine: The restored database.
        log: The deletion log written by :func:`sweep`.
        tables: A declarative base, ``MetaData`` or tables (default: every
            mapped table with customer data).
        custodian: The custodian whose subject key store to shred in.

    Returns:
        How many log entries changed something.

    Raises:
        ConfigurationError: The log cannot be read, is not a deletion log, or
            names a table that is not among *tables*.
    """
    path = Path(log)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8"
        raise ConfigurationError(
            f"cannot read the deletion log ({reason})", path=path
        ) from None
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        entry = _log_entry(line)
        if entry is None:
            raise ConfigurationError(
                f"line {number} is not a deletion-log entry", path=path
            )
        entries.append(entry)
    policy = custodian.policy if custodian is not None else None
    by_name: dict[str, _Sweepable] = {}
    tbls = _tables_arg(tables)
    if tbls is None:
        from ._runtime import known_tables  # noqa: PLC0415 - installs the hooks

        tbls = known_tables()
    for t in tbls:
        if any(isinstance(c.type, EncryptedType) for c in t.columns):
            by_name[t.name] = _Sweepable(t, policy or _NoRules())
    changed = 0
    shred: list[Any] = []
    with engine.begin() as conn:
        for entry in entries:
            target = by_name.get(entry["table"])
            if target is None:
                raise ConfigurationError(
                    f"the deletion log names table {entry['table']!r}, which is "
                    "not among the tables given",
                    path=path,
                )
            pk = target.raw.c[target.pk.name]
            key = _pk_value(entry["pk_type"], entry["pk"])
            if entry["op"] == "delete":
                result = conn.execute(delete(target.raw).where(pk == key))
            elif entry["op"] == "pseudonymise":
                changed += _replay_pseudonyms(conn, target, entry, key, custodian)
                continue
            else:
                values: dict[str, None] = {}
                companions = {n: b.companion_key for n, b, *_ in target.fields}
                for name in entry["fields"]:
                    values[name] = None
                    if companions.get(name):
                        values[companions[name]] = None  # type: ignore[index]
                stored = [target.raw.c[name].isnot(None) for name in entry["fields"]]
                result = conn.execute(
                    update(target.raw).where(pk == key, or_(*stored)).values(values)
                )
            changed += int(bool(result.rowcount))
            if entry.get("shred") and entry.get("subject"):
                shred.append(_pk_value(entry["subject_type"], entry["subject"]))
    if shred and custodian is not None:
        _shred(custodian, list(dict.fromkeys(shred)), custodian.now())
    return changed


def _replay_pseudonyms(
    conn: Connection,
    target: _Sweepable,
    entry: Mapping[str, Any],
    key: Any,
    custodian: Any,
) -> int:
    """Write a logged row's pseudonyms again (1 if something changed)."""
    if custodian is None or custodian.keyring is None:
        msg = "replaying pseudonymised values needs the custodian (and its keyring)"
        raise ConfigurationError(msg)
    if entry.get("subject_type") not in {"uuid", "int", "str"} or not isinstance(
        entry.get("subject"), str
    ):
        msg = "a pseudonymise entry of the deletion log names no subject"
        raise ConfigurationError(msg)
    subject = _pk_value(entry["subject_type"], entry["subject"])
    pseudonyms = _Pseudonyms(custodian)
    pk = target.raw.c[target.pk.name]
    fields = {name: (b, text) for name, b, text, _n, _r in target.fields}
    row = conn.execute(select(*target.raw.c).where(pk == key)).first()
    if row is None:
        return 0
    values: dict[str, Any] = {}
    for name in entry["fields"]:
        b, text = fields[name]
        stored = getattr(row, name)
        if stored is None or pseudonyms.holds(b, text, stored, subject):
            continue
        values[name] = pseudonyms.seal(b, text, subject)
        if b.companion_key is not None:
            values[b.companion_key] = None
    if values:
        conn.execute(update(target.raw).where(pk == key).values(values))
    return int(bool(values))


def _log_entry(line: str) -> dict[str, Any] | None:
    """One deletion-log line, or ``None`` if it is not an entry of this version."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if (
        not isinstance(entry, dict)
        or entry.get("v") != LOG_VERSION
        or entry.get("op") not in {"delete", "erase", "pseudonymise"}
        or not isinstance(entry.get("table"), str)
        or entry.get("pk_type") not in {"uuid", "int", "str"}
        or not isinstance(entry.get("pk"), str)
        or not isinstance(entry.get("fields"), list)
    ):
        return None
    return entry


class _NoRules:
    """A policy stand-in for replay, which needs no retention rules."""

    def retention_rules_for(self, field: Any) -> tuple[RetentionRule, ...]:
        return ()
