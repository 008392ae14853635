"""Batch jobs on stored values: re-encryption, key usage, plaintext migration.

The jobs read and write the stored envelopes directly (through a plain,
uninstrumented view of each table), so they never release plaintext to the
application and never pass through the purpose checks meant for it. Each batch
is its own transaction and every update is conditional on the old envelope, so
a job killed at any point and run again finishes with nothing lost.

Rows the re-encryption cannot take in its pass (locked by an application
transaction, or a batch that failed on a lock timeout) are retried, and what is
still left is counted in the report, so a caller can tell a finished run from
one that left values under older keys.

Per-subject data keys are re-wrapped the same way: in batches of conditional
updates, each batch one transaction, so a killed job leaves every subject key
wrapped by either its old data key or the primary one, and never overwrites a
tombstone.
"""

from __future__ import annotations

import base64
import time
import uuid

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import attrs

from sqlalchemy import (
    LargeBinary,
    Table,
    Text,
    and_,
    column,
    func,
    select,
    table,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.expression import TableClause

from custdata._errors import ConfigurationError, DecryptionError, KeyDestroyedError
from custdata.crypto import SubjectKeyRecord, envelope_key_id
from custdata.crypto._legacy import looks_sealed, read_legacy_plaintext

from ._binding import SUBJECT_INFO_KEY, FieldBinding, subject_value
from ._types import EncryptedType


__all__ = [
    "KeyUsage",
    "MigrationReport",
    "ReencryptReport",
    "encrypt_plaintext_columns",
    "index_usage",
    "key_usage",
    "reencrypt",
]

Progress = Callable[[str, int, int], None]

#: The actor id written for the re-encryption job's audit events.
REENCRYPT_ACTOR = "custdata.reencrypt"
#: The actor id written when index entries are counted (decrypting values).
INDEX_USAGE_ACTOR = "custdata.index-usage"

_GCM = 0x01
#: The envelope header: version, algorithm, key id.
_HEADER = 6


@attrs.frozen(kw_only=True)
class KeyUsage:
    """How many stored values of one column (or subject keys) are under one key.

    Attributes:
        table: The table name (of the subject key store for ``kind="subject_key"``).
        column: The column name (``wrapped_key`` for ``kind="subject_key"``).
        key_id: The key id in the envelope header, or the data key wrapping the
            subject keys.
        algorithm: The envelope's algorithm byte (1 keyring AES-GCM, 2 AES-SIV,
            3 per-subject AES-GCM); 1 for subject-key wrappings (AES-GCM under a
            keyring data key).
        count: How many values (or live subject keys, or index entries).
        kind: ``"value"`` for stored values, ``"subject_key"`` for per-subject
            keys wrapped by the keyring data key ``key_id``, ``"index_entry"``
            for blind-index entries computed under the index key ``key_id``
            (column: the companion column; ``key_id`` -1 for entries under no
            usable index key, or whose value could not be read).
    """

    table: str
    column: str
    key_id: int
    algorithm: int
    count: int
    kind: Literal["value", "subject_key", "index_entry"] = "value"


@attrs.frozen(kw_only=True)
class ReencryptReport:
    """What :func:`reencrypt` did.

    Attributes:
        scanned: Rows examined.
        reencrypted: Values moved to the primary key.
        reindexed: Blind-index entries recomputed under the primary index key.
        skipped: Values left alone (per-subject keys, or changed concurrently).
        rewrapped: Per-subject keys re-wrapped under the primary data key.
        subject_keys_pending: The tables use per-subject keys but no subject key
            store was available, so those keys were not re-wrapped and may still
            depend on older data keys.
        locked: Rows the job could not take, even after its retries (locked by
            another transaction); their values and index entries may still be
            under older keys.
        failed: Stored values that could not be decrypted (not an authentic
            envelope of their column, or under a retired key); left as they are.
        remaining: Values still under an older data key when the job ended,
            counted from the envelope headers.
    """

    scanned: int = 0
    reencrypted: int = 0
    reindexed: int = 0
    skipped: int = 0
    rewrapped: int = 0
    subject_keys_pending: bool = False
    locked: int = 0
    failed: int = 0
    remaining: int = 0

    @property
    def complete(self) -> bool:
        """Whether nothing is left under older keys.

        No locked, failed or remaining value, and no per-subject key left
        unwrapped.
        """
        return not (
            self.locked or self.failed or self.remaining or self.subject_keys_pending
        )


@attrs.frozen(kw_only=True)
class MigrationReport:
    """What :func:`encrypt_plaintext_columns` did for one column.

    Attributes:
        table: The table name.
        column: The column name.
        encrypted: Legacy plaintext values encrypted in this run.
        remaining: Plaintext values still left (0 when done).
        failed: Legacy values that cannot be read as the column's Python type
            (left as they are; they count in *remaining* too).
    """

    table: str
    column: str
    encrypted: int
    remaining: int
    failed: int = 0


class _Target:
    """An uninstrumented view of one table with encrypted columns."""

    def __init__(self, tbl: Table) -> None:
        pk = list(tbl.primary_key.columns)
        if len(pk) != 1:
            raise ConfigurationError(
                f"{tbl.name}: the jobs need a single-column primary key"
            )
        self.table = tbl
        self.pk = pk[0]
        self.encrypted: list[tuple[Any, FieldBinding, bool]] = [
            (c, c.type._binding, c.type.storage == "text")  # noqa: SLF001
            for c in tbl.columns
            if isinstance(c.type, EncryptedType)
        ]
        self.subject = next(
            (c for c in tbl.columns if c.info.get(SUBJECT_INFO_KEY)), None
        )
        cols = [column(self.pk.name, self.pk.type)]
        if self.subject is not None and self.subject is not self.pk:
            cols.append(column(self.subject.name, self.subject.type))
        for c, b, text in self.encrypted:
            cols.append(column(c.name, Text() if text else LargeBinary()))
            if b.companion_key is not None:
                cols.append(column(b.companion_key, LargeBinary()))
        self.raw: TableClause = table(tbl.name, *cols, schema=tbl.schema)

    def c(self, name: str) -> Any:
        return self.raw.c[name]

    @property
    def uses_subject_keys(self) -> bool:
        return any(b.key_scope == "subject" for _c, b, _t in self.encrypted)

    def subject_of(self, row: Any, b: FieldBinding) -> object:
        if b.subject_key is None or self.subject is None:
            return None
        return subject_value(getattr(row, self.subject.name), b.subject_kind)


def _targets(tables: Iterable[Table] | None) -> list[_Target]:
    if tables is None:
        from ._runtime import known_tables  # noqa: PLC0415

        tables = known_tables()
    return [
        _Target(t)
        for t in tables
        if any(isinstance(c.type, EncryptedType) for c in t.columns)
    ]


def uses_subject_keys(tables: Any) -> bool:
    """Whether any of *tables* (a base, ``MetaData`` or tables) uses per-subject keys."""
    return any(t.uses_subject_keys for t in _targets(_tables_arg(tables)))


def _blob(value: Any, text: bool) -> bytes:
    if text:
        return base64.b64decode(value, validate=True)
    return bytes(value)


def _stored(blob: bytes, text: bool) -> Any:
    return base64.b64encode(blob).decode("ascii") if text else blob


def _tables_arg(base_or_tables: Any) -> list[Table] | None:
    if base_or_tables is None:
        return None
    metadata = getattr(base_or_tables, "metadata", base_or_tables)
    tables = getattr(metadata, "tables", None)
    if tables is not None:
        return list(tables.values())
    return list(base_or_tables)


def reencrypt(
    engine: Engine,
    custodian: Any,
    *,
    tables: Any = None,
    batch_size: int = 500,
    progress: Progress | None = None,
    skip_locked: bool | None = None,
    rewrap_subject_keys: bool | None = None,
    retries: int = 3,
    retry_wait: float = 1.0,
) -> ReencryptReport:
    """Re-encrypt stored values to the keyring's primary key, in batches.

    Values under an older key are decrypted and encrypted again under the
    primary key (bound to the same table, column and subject), and every
    blind-index entry is recomputed under the primary index key -- in the same
    run, so data and index keys rotated together need one run. Each batch
    commits on its own, and each row is updated only if its stored values are
    still the ones read, so the job can be killed at any point and run again.

    On PostgreSQL and MariaDB (10.6+) / MySQL (8+) the batches are claimed with
    ``FOR UPDATE SKIP LOCKED``, so several workers can run at once and a row
    locked by an application transaction does not stall the job. Rows the pass
    could not take (skipped while locked, or in a batch that failed on a lock
    timeout) are tried again up to *retries* times, *retry_wait* seconds apart;
    those still not taken are counted in :attr:`ReencryptReport.locked`. A
    stored value that does not decrypt is left alone and counted in
    :attr:`ReencryptReport.failed`; :attr:`ReencryptReport.remaining` counts the
    values still under older data keys at the end, and
    :attr:`ReencryptReport.complete` says whether nothing is left.

    Values under per-subject keys (``key_scope="subject"``) stay under their
    subject's key; what depends on the keyring's data keys is the wrapping of
    those subject keys. So when the tables use per-subject keys and the
    custodian has a subject key store (``custodian.subject_keys``), the job then
    re-wraps every live subject key not wrapped by the primary data key, in
    batches of ``batch_size``: each batch is one transaction of conditional
    updates (on a :class:`SqlSubjectKeyStore`), so a killed job leaves every
    subject key readable and a tombstone is never overwritten. Afterwards no
    value and no subject key needs a non-primary data key, and the old one can
    be retired.

    The job decrypts stored values, so when the custodian has an audit recorder
    each table batch is recorded before any of its values is decrypted: one
    ``record.bulk_update`` event (actor ``system``/``custdata.reencrypt``) with
    the table, columns, categories, subjects and number of values. Each batch of
    subject keys is recorded the same way before they are unwrapped, with the
    store's table as the entity and ``wrapped_key`` as the field.

    Args:
        engine: The database.
        custodian: Whose keyring to use.
        tables: A declarative base, ``MetaData`` or tables (default: every table
            custdata knows).
        batch_size: Rows per transaction.
        progress: Called as ``progress(table, done, total)`` after each batch.
        skip_locked: Claim rows with ``SKIP LOCKED``; defaults to ``True`` where
            the database supports it.
        rewrap_subject_keys: Re-wrap the per-subject keys of
            ``custodian.subject_keys``: ``None`` (the default) when the tables
            use per-subject keys and the custodian has a store, ``True`` always,
            ``False`` never.
        retries: How many more times to try the rows a pass could not take.
        retry_wait: Seconds to wait before each retry.

    Returns:
        The counts of what was done and of what is left.

    Raises:
        ConfigurationError: ``rewrap_subject_keys`` is true but the custodian
            has no subject key store.
        ValueError: ``batch_size`` is not positive, or ``retries`` or
            ``retry_wait`` is negative.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    if retries < 0 or retry_wait < 0:
        raise ValueError("retries and retry_wait must not be negative")
    keyring = custodian.keyring
    primary = keyring.primary_key_id
    store = getattr(custodian, "subject_keys", None)
    if rewrap_subject_keys and store is None:
        raise ConfigurationError(
            "re-wrapping per-subject keys needs a custodian with subject_keys"
        )
    if skip_locked is None:
        skip_locked = _supports_skip_locked(engine)
    totals = dict.fromkeys(
        ("scanned", "reencrypted", "reindexed", "skipped", "rewrapped", "failed"), 0
    )
    targets = _targets(_tables_arg(tables))
    locked = 0
    for target in targets:
        job = _TableJob(engine, custodian, target, primary, skip_locked, totals)
        locked += job.run(batch_size, progress, retries, retry_wait)
    uses_subject_keys = any(t.uses_subject_keys for t in targets)
    pending = False
    if rewrap_subject_keys or (
        rewrap_subject_keys is None and uses_subject_keys and store is not None
    ):
        totals["rewrapped"] = _rewrap_subject_keys(
            custodian, store, batch_size, progress
        )
    elif uses_subject_keys and rewrap_subject_keys is None:
        pending = True
    remaining = sum(
        u.count
        for u in _value_usage(engine, targets)
        if u.algorithm in _KEYRING_ALGORITHMS and u.key_id != primary
    )
    return ReencryptReport(
        **totals, subject_keys_pending=pending, locked=locked, remaining=remaining
    )


#: Envelope algorithms whose header key id is a keyring data key.
_KEYRING_ALGORITHMS = frozenset({1, 2})


def _supports_skip_locked(engine: Engine) -> bool:
    """Whether the database claims rows with ``SKIP LOCKED``."""
    dialect = engine.dialect
    if dialect.name == "postgresql":
        return True
    if dialect.name not in {"mysql", "mariadb"}:
        return False
    if dialect.server_version_info is None:
        with engine.connect():
            pass  # the first connection reads the server version
    version = tuple(dialect.server_version_info or ())
    if getattr(dialect, "is_mariadb", False):
        return version >= (10, 6)
    return version >= (8, 0)


class _TableJob:
    """One table's re-encryption: a pass in primary-key order, then retries."""

    def __init__(  # noqa: PLR0917
        self,
        engine: Engine,
        custodian: Any,
        target: _Target,
        primary: int,
        skip_locked: bool,
        totals: dict[str, int],
    ) -> None:
        self.engine = engine
        self.custodian = custodian
        self.target = target
        self.primary = primary
        self.skip_locked = skip_locked
        self.totals = totals
        self.pk = target.c(target.pk.name)
        self.batch = 0

    def run(
        self,
        batch_size: int,
        progress: Progress | None,
        retries: int,
        retry_wait: float,
    ) -> int:
        """Re-encrypt the table; return how many rows were left untaken."""
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(self.target.raw)
            ).scalar_one()
        taken: set[Any] = set()
        done = 0
        last: Any = None
        while True:
            query = select(*self.target.raw.c).order_by(self.pk).limit(batch_size)
            if last is not None:
                query = query.where(self.pk > last)
            rows = self._take(query, taken)
            if not rows:
                break
            last = getattr(rows[-1], self.target.pk.name)
            done += len(rows)
            if progress is not None:
                progress(self.target.table.name, min(done, total), total)
        with self.engine.connect() as conn:
            missing = sorted(
                pk for (pk,) in conn.execute(select(self.pk)) if pk not in taken
            )
        for attempt in range(retries + 1):
            # Another worker (or the application, writing under the primary
            # keys) may have finished a row meanwhile: only rows whose stored
            # state still needs the job are tried again or counted.
            missing = self._stale(missing, batch_size)
            if not missing or attempt == retries:
                break
            time.sleep(retry_wait)
            for i in range(0, len(missing), batch_size):
                chunk = missing[i : i + batch_size]
                self._take(
                    select(*self.target.raw.c)
                    .where(self.pk.in_(chunk))
                    .order_by(self.pk),
                    taken,
                )
            missing = [pk for pk in missing if pk not in taken]
        return len(missing)

    def _stale(self, pks: list[Any], batch_size: int) -> list[Any]:
        """Those of *pks* whose committed values still need the job (read unlocked)."""
        stale: list[Any] = []
        for i in range(0, len(pks), batch_size):
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(*self.target.raw.c)
                    .where(self.pk.in_(pks[i : i + batch_size]))
                    .order_by(self.pk)
                ).all()
            if not rows:
                continue
            _announce_batch(
                self.custodian, self.target, rows, self.primary, batch=self.batch
            )
            self.batch += 1
            for row in rows:
                scratch = dict.fromkeys(self.totals, 0)
                changes, _conditions = _row_changes(
                    self.custodian, self.target, row, self.primary, scratch
                )
                if changes or scratch["failed"]:
                    stale.append(getattr(row, self.target.pk.name))
        return stale

    def _take(self, query: Any, taken: set[Any]) -> list[Any]:
        """Process one batch in one transaction; return the rows it read.

        Rows a lock kept out of the batch are not returned (``SKIP LOCKED``);
        a batch that fails on a lock is rolled back and its rows are not
        counted as taken.
        """
        if self.skip_locked:
            query = query.with_for_update(skip_locked=True)
        counts = dict.fromkeys(self.totals, 0)
        rows: list[Any] = []
        try:
            with self.engine.begin() as conn:
                rows = list(conn.execute(query).all())
                if not rows:
                    return rows
                _announce_batch(
                    self.custodian, self.target, rows, self.primary, batch=self.batch
                )
                self.batch += 1
                for row in rows:
                    _reencrypt_row(
                        conn, self.custodian, self.target, row, self.primary, counts
                    )
        except OperationalError:
            # A lock wait timed out (or SQLite's database is locked): the
            # batch rolled back; its rows are retried later.
            if not rows:
                raise
            return rows
        counts["scanned"] = len(rows)
        for key, value in counts.items():
            self.totals[key] += value
        taken.update(getattr(row, self.target.pk.name) for row in rows)
        return rows


def _announce_batch(
    custodian: Any,
    target: _Target,
    rows: Sequence[Any],
    primary: int | None,
    *,
    batch: int,
    actor: str = REENCRYPT_ACTOR,
) -> None:
    """Record, before any value of the batch is decrypted, what the job will decrypt.

    One event per table batch through the custodian's audit recorder: the
    table, the columns and their categories, the subjects and the number of
    values to decrypt -- never a value. An :class:`custdata.audit.AuditTrail`
    gets a ``record.bulk_update`` event by a ``system`` actor; any other
    recorder gets an allowed ``Action.UPDATE`` decision. With *primary*
    ``None`` only searchable columns are decrypted (to recompute their index).
    """
    audit = getattr(custodian, "audit", None)
    if audit is None:
        return
    fields: list[str] = []
    categories: set[str] = set()
    count = 0
    subjects: dict[str, None] = {}
    for col, b, text in target.encrypted:
        if not _readable(custodian, b):
            continue
        touched = 0
        for row in rows:
            stored = getattr(row, col.name)
            if stored is None:
                continue
            try:
                header = _blob(stored, text)[:_HEADER]
            except (ValueError, TypeError):
                continue  # not decrypted: counted as failed
            if b.companion_key is not None or (
                primary is not None
                and len(header) == _HEADER
                and header[1] == _GCM
                and int.from_bytes(header[2:6], "big") != primary
            ):
                touched += 1
                if target.subject is not None:
                    subjects[str(getattr(row, target.subject.name))] = None
        if touched:
            count += touched
            fields.append(col.name)
            if b.field is not None:
                categories.add(b.field.category)
    if not count:
        return
    _record_job_batch(
        custodian,
        entity=target.table.name,
        fields=sorted(fields),
        categories=sorted(categories),
        subjects=list(subjects),
        count=count,
        batch=batch,
        actor=actor,
    )


def _record_job_batch(
    custodian: Any,
    *,
    entity: str,
    fields: list[str],
    categories: list[str],
    subjects: list[str],
    count: int,
    batch: int,
    actor: str = REENCRYPT_ACTOR,
) -> None:
    """Record one batch of the re-encryption job through the custodian's recorder.

    An :class:`custdata.audit.AuditTrail` gets ``record.bulk_update`` events
    by the ``system`` actor (split at 1,000 subjects); any other recorder gets
    one allowed ``Action.UPDATE`` decision.
    """
    audit = custodian.audit
    record = getattr(audit, "record", None)
    subject_ref = getattr(audit, "subject_ref", None)
    if record is not None and subject_ref is not None:
        refs = [subject_ref(s) for s in subjects]
        chunks = [refs[i : i + 1000] for i in range(0, len(refs), 1000)] or [[]]
        for chunk in chunks:
            extra = {"data_categories": categories} if categories else {}
            record(
                "record.bulk_update",
                outcome="allowed",
                actor={"type": "system", "id": actor},
                reason="operator_request",
                entity=entity,
                fields=fields,
                count=count if len(chunks) == 1 else len(chunk),
                subjects=chunk or None,
                batch=batch,
                **extra,
            )
        return
    from custdata._decision import (  # noqa: PLC0415
        AccessDecision,
        Action,
        Outcome,
    )

    audit.record_decision(
        AccessDecision(
            outcome=Outcome.ALLOWED,
            action=Action.UPDATE,
            actor=actor,
            role=None,
            purpose=None,
            policy_version=custodian.policy.version,
            entity=entity,
            fields=tuple(fields),
            categories=tuple(categories),
            subjects=tuple(subjects),
            count=count,
        )
    )


def _reencrypt_row(  # noqa: PLR0917
    conn: Any,
    custodian: Any,
    target: _Target,
    row: Any,
    primary: int,
    totals: dict[str, int],
) -> None:
    changes, conditions = _row_changes(custodian, target, row, primary, totals)
    if changes:
        result = conn.execute(
            update(target.raw).where(and_(*conditions)).values(**changes)
        )
        if result.rowcount == 0:
            totals["skipped"] += 1


def _row_changes(
    custodian: Any, target: _Target, row: Any, primary: int, totals: dict[str, int]
) -> tuple[dict[str, Any], list[Any]]:
    """What a row needs: new envelopes and index entries, and the update's conditions.

    Counts what it finds in *totals* (re-encrypted, re-indexed, skipped, failed).
    """
    changes: dict[str, Any] = {}
    conditions = [target.c(target.pk.name) == getattr(row, target.pk.name)]
    for col, b, text in target.encrypted:
        stored = getattr(row, col.name)
        if stored is None:
            continue
        if not _readable(custodian, b):
            totals["skipped"] += 1
            continue
        try:
            blob = _blob(stored, text)
        except (ValueError, TypeError):
            totals["failed"] += 1
            continue
        if len(blob) < _HEADER:
            totals["failed"] += 1
            continue
        cipher = b.cipher(custodian)
        subject = target.subject_of(row, b)
        stale = blob[1] == _GCM and envelope_key_id(blob) != primary
        if blob[1] != _GCM:
            totals["skipped"] += 1
        if not stale and b.companion_key is None:
            continue
        try:
            value = cipher.decrypt(blob, subject=subject)
        except KeyDestroyedError:
            # A shredded subject: its index entries were cleared with it.
            continue
        except DecryptionError:
            totals["failed"] += 1
            continue
        if stale:
            changes[col.name] = _stored(cipher.encrypt(value, subject=subject), text)
            conditions.append(target.c(col.name) == stored)
            totals["reencrypted"] += 1
        if b.companion_key is not None:
            # Data and index keys may have been rotated together: the entry is
            # recomputed under the primary index key whatever happened to the
            # value.
            digest = b.blind_index(custodian).compute(value)
            if getattr(row, b.companion_key) != digest:
                changes[b.companion_key] = digest
                totals["reindexed"] += 1
    return changes, conditions


def _readable(custodian: Any, b: FieldBinding) -> bool:
    """Whether the job can decrypt *b*'s values (per-subject ones need a store)."""
    return b.key_scope != "subject" or (
        getattr(custodian, "subject_keys", None) is not None
    )


def _store_name(store: Any) -> str:
    table_ = getattr(store, "table", None)
    name = getattr(table_, "name", None)
    return name if isinstance(name, str) else "subject_keys"


def _subject_text(canonical: bytes) -> str:
    """The subject id as the application writes it (``str`` of the id)."""
    kind, body = canonical[:1], canonical[1:]
    if kind == b"u" and len(body) == 16:  # noqa: PLR2004 - a UUID's size
        return str(uuid.UUID(bytes=body))
    if kind == b"s":
        return body.decode("utf-8", "replace")
    if kind == b"i":
        return str(int.from_bytes(body, "big", signed=True))
    return str(body)


def _stale_pages(
    store: Any, primary: int, batch_size: int
) -> tuple[int, Iterable[list[SubjectKeyRecord]]]:
    """The live records not wrapped by *primary*, in batches, and how many there are."""
    page = getattr(store, "records_not_wrapped_by", None)
    if page is not None:
        total = sum(n for k, n in store.wrapping_key_counts().items() if k != primary)

        def pages() -> Iterable[list[SubjectKeyRecord]]:
            after: bytes | None = None
            while True:
                records: list[SubjectKeyRecord] = page(
                    primary, after=after, limit=batch_size
                )
                if not records:
                    return
                yield records
                after = records[-1].subject

        return total, pages()
    stale = [
        r for r in store.records() if not r.destroyed and r.wrapping_key_id != primary
    ]
    chunks = [stale[i : i + batch_size] for i in range(0, len(stale), batch_size)]
    return len(stale), chunks


def _replace_batch(
    store: Any, pairs: list[tuple[SubjectKeyRecord, SubjectKeyRecord]]
) -> int:
    """Swap each pair in if its record is unchanged; one transaction when the store can."""
    many = getattr(store, "replace_many", None)
    if many is not None:
        return int(many(pairs))
    replace = getattr(store, "replace", None)
    done = 0
    for old, new in pairs:
        if replace is not None:
            done += bool(replace(old, new))
            continue
        current = store.get(old.subject)
        if (
            current is not None
            and current.wrapped_key is not None
            and current.key_id == old.key_id
            and current.wrapped_key == old.wrapped_key
            and current.wrapping_key_id == old.wrapping_key_id
        ):
            store.put(new)
            done += 1
    return done


def _rewrap_subject_keys(
    custodian: Any, store: Any, batch_size: int, progress: Progress | None
) -> int:
    """Re-wrap every live subject key of *store* under the primary data key."""
    keyring = custodian.keyring
    primary = keyring.primary_key_id
    name = _store_name(store)
    total, pages = _stale_pages(store, primary, batch_size)
    done = rewrapped = 0
    for batch, records in enumerate(pages):
        _announce_rewrap(custodian, name, records, batch=batch)
        pairs = [
            (r, keyring._rewrap_subject_record(r))  # noqa: SLF001 - package-internal
            for r in records
        ]
        rewrapped += _replace_batch(store, pairs)
        done += len(records)
        if progress is not None:
            progress(name, min(done, total), total)
    # Cached unwrapped keys stay valid: the key and its id are unchanged.
    return rewrapped


def _announce_rewrap(
    custodian: Any, name: str, records: Sequence[SubjectKeyRecord], *, batch: int
) -> None:
    """Record, before a batch of subject keys is unwrapped, which subjects' keys."""
    audit = getattr(custodian, "audit", None)
    if audit is None or not records:
        return
    _record_job_batch(
        custodian,
        entity=name,
        fields=[_WRAPPED_KEY],
        categories=[],
        subjects=list(dict.fromkeys(_subject_text(r.subject) for r in records)),
        count=len(records),
        batch=batch,
    )


_WRAPPED_KEY = "wrapped_key"


def key_usage(
    engine: Engine, *, tables: Any = None, subject_keys: Any = None
) -> list[KeyUsage]:
    """Count stored values per key id, from the key id in each envelope header.

    The count runs in the database (``GROUP BY`` on the header bytes), so it
    reads no ciphertext into Python and needs no keys.

    With ``subject_keys`` (a subject key store, such as a
    :class:`SqlSubjectKeyStore`), the live per-subject keys are counted too, per
    data key that wraps them (``kind="subject_key"``, column ``wrapped_key``):
    a data key is no longer needed once no value and no subject key uses it.

    Returns:
        One entry per table, column, algorithm and key id, sorted.
    """
    usage: list[KeyUsage] = []
    if subject_keys is not None:
        usage.extend(_subject_key_usage(subject_keys))
    usage.extend(_value_usage(engine, _targets(_tables_arg(tables))))
    return sorted(
        usage,
        key=lambda u: (u.kind != "value", u.table, u.column, u.algorithm, u.key_id),
    )


def _value_usage(engine: Engine, targets: Sequence[_Target]) -> list[KeyUsage]:
    """Count each column's stored values per envelope algorithm and key id, in SQL."""
    usage: list[KeyUsage] = []
    with engine.connect() as conn:
        for target in targets:
            for col, _b, text in target.encrypted:
                raw = target.c(col.name)
                head = func.substr(raw, 1, 8 if text else 6).label("head")
                query = (
                    select(head, func.count().label("n"))
                    .where(raw.is_not(None))
                    .group_by(head)
                )
                for head_value, count in conn.execute(query).all():
                    try:
                        header = _blob(head_value, text) if text else bytes(head_value)
                    except (ValueError, TypeError):
                        header = b""
                    short = len(header) < _HEADER
                    usage.append(
                        KeyUsage(
                            table=target.table.name,
                            column=col.name,
                            key_id=-1 if short else int.from_bytes(header[2:6], "big"),
                            algorithm=0 if short else header[1],
                            count=count,
                        )
                    )
    return usage


def index_usage(
    engine: Engine,
    custodian: Any,
    *,
    tables: Any = None,
    batch_size: int = 500,
) -> list[KeyUsage]:
    """Count blind-index entries per index key, by recomputing each one.

    A digest does not name its key, so each searchable value is decrypted and
    its entry compared with the value's digest under every usable index key
    (:meth:`custdata.crypto.BlindIndex.key_of`). An entry that matches none, or
    whose value cannot be decrypted here (per-subject keys without a store, a
    damaged envelope), is counted under key id -1: it cannot be shown not to
    depend on any key.

    The values are decrypted, so each batch is recorded through the
    custodian's audit recorder first, as the re-encryption job records its
    batches.

    Returns:
        One ``kind="index_entry"`` entry per table, companion column and key id.
    """
    counts: dict[tuple[str, str, int], int] = {}
    for target in _targets(_tables_arg(tables)):
        searchable = [
            (col, b, text)
            for col, b, text in target.encrypted
            if b.companion_key is not None
        ]
        if not searchable:
            continue
        pk = target.c(target.pk.name)
        last: Any = None
        batch = 0
        while True:
            query = select(*target.raw.c).order_by(pk).limit(batch_size)
            if last is not None:
                query = query.where(pk > last)
            with engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                break
            last = getattr(rows[-1], target.pk.name)
            _announce_batch(
                custodian, target, rows, None, batch=batch, actor=INDEX_USAGE_ACTOR
            )
            batch += 1
            for col, b, text in searchable:
                companion = b.companion_key or ""
                for row in rows:
                    digest = getattr(row, companion)
                    if digest is None:
                        continue
                    key_id = _index_key_of(custodian, target, row, col, b, text)
                    where = (target.table.name, companion, key_id)
                    counts[where] = counts.get(where, 0) + 1
    return [
        KeyUsage(
            table=table_name,
            column=companion,
            key_id=key_id,
            algorithm=0,
            count=n,
            kind="index_entry",
        )
        for (table_name, companion, key_id), n in sorted(counts.items())
    ]


def _index_key_of(  # noqa: PLR0917
    custodian: Any, target: _Target, row: Any, col: Any, b: FieldBinding, text: bool
) -> int:
    """The index key a row's stored entry is under, or -1 if it cannot be told."""
    stored = getattr(row, col.name)
    if stored is None or not _readable(custodian, b):
        return -1
    try:
        value = b.cipher(custodian).decrypt(
            _blob(stored, text), subject=target.subject_of(row, b)
        )
        key_id = b.blind_index(custodian).key_of(
            value, getattr(row, b.companion_key or "")
        )
    except (DecryptionError, ValueError, TypeError):
        return -1
    return -1 if key_id is None else int(key_id)


def _subject_key_usage(store: Any) -> list[KeyUsage]:
    counts_of = getattr(store, "wrapping_key_counts", None)
    counts: dict[int, int]
    if counts_of is not None:
        counts = dict(counts_of())
    else:
        counts = {}
        for record in store.records():
            if record.wrapping_key_id is not None and not record.destroyed:
                counts[record.wrapping_key_id] = (
                    counts.get(record.wrapping_key_id, 0) + 1
                )
    name = _store_name(store)
    return [
        KeyUsage(
            table=name,
            column=_WRAPPED_KEY,
            key_id=key_id,
            algorithm=_GCM,
            count=count,
            kind="subject_key",
        )
        for key_id, count in counts.items()
    ]


def _is_envelope(stored: Any, text: bool) -> bool:
    try:
        blob = _blob(stored, text)
    except (ValueError, TypeError):
        return False
    return looks_sealed(blob)


def _legacy_value(stored: Any, b: FieldBinding) -> Any:
    # One reading of legacy plaintext for this job and the transitional read mode.
    return read_legacy_plaintext(stored, b.python_type or str, where=b.where)


def encrypt_plaintext_columns(
    engine: Engine,
    custodian: Any,
    *,
    tables: Any = None,
    columns: Sequence[str] | None = None,
    batch_size: int = 500,
    limit: int | None = None,
    progress: Progress | None = None,
) -> list[MigrationReport]:
    """Encrypt legacy plaintext values of encrypted columns in place, in batches.

    For a column that used to hold plaintext: first change its type to the
    encrypted column's storage (``BYTEA``/``BLOB`` holding the UTF-8 bytes, or
    text), declare it with ``customer_data``, then run this. A stored value that
    is not a custdata envelope is treated as legacy plaintext and replaced by
    its envelope (bound to the row's subject). The text is read as the
    column's Python type before it is encrypted -- ``2020-01-31`` in a ``date``
    column becomes a ``date`` -- so the application reads back what it
    declared; a value that cannot be read so is left alone and counted in
    :attr:`MigrationReport.failed`. Run it again until nothing is left; each
    batch commits on its own.

    Args:
        engine: The database.
        custodian: Whose keyring to use.
        tables: A declarative base, ``MetaData`` or tables (default: all known).
        columns: Only these ``table.column`` names (default: every encrypted column).
        batch_size: Rows per transaction.
        limit: Stop after encrypting this many values (to spread the work).
        progress: Called as ``progress(table, done, total)`` after each batch.

    Returns:
        One report per column: how many values were encrypted and how many
        plaintext values remain.
    """
    reports: list[MigrationReport] = []
    budget = limit
    for target in _targets(_tables_arg(tables)):
        for col, b, text in target.encrypted:
            where = f"{target.table.name}.{col.name}"
            if columns is not None and where not in columns:
                continue
            done, failed = _migrate_column(
                engine, custodian, target, col, b, text, batch_size, budget, progress
            )
            if budget is not None:
                budget = max(0, budget - done)
            remaining = _count_plaintext(engine, target, col, text)
            reports.append(
                MigrationReport(
                    table=target.table.name,
                    column=col.name,
                    encrypted=done,
                    remaining=remaining,
                    failed=failed,
                )
            )
    return reports


def _migrate_column(  # noqa: PLR0917
    engine: Engine,
    custodian: Any,
    target: _Target,
    col: Any,
    b: FieldBinding,
    text: bool,
    batch_size: int,
    budget: int | None,
    progress: Progress | None,
) -> tuple[int, int]:
    """Encrypt one column's legacy values; return how many, and how many failed."""
    pk = target.c(target.pk.name)
    raw = target.c(col.name)
    failed: set[Any] = set()
    done = 0
    last: Any = None
    cipher = b.cipher(custodian)
    while budget is None or done < budget:
        with engine.begin() as conn:
            query = (
                select(*target.raw.c)
                .where(raw.is_not(None))
                .order_by(pk)
                .limit(batch_size)
            )
            if last is not None:
                query = query.where(pk > last)
            rows = conn.execute(query).all()
            if not rows:
                break
            for row in rows:
                stored = getattr(row, col.name)
                if _is_envelope(stored, text) or (
                    budget is not None and done >= budget
                ):
                    continue
                try:
                    value = _legacy_value(stored, b)
                except DecryptionError:
                    failed.add(getattr(row, target.pk.name))
                    continue
                subject = target.subject_of(row, b)
                changes: dict[str, Any] = {
                    col.name: _stored(cipher.encrypt(value, subject=subject), text)
                }
                if b.companion_key is not None:
                    changes[b.companion_key] = b.blind_index(custodian).compute(value)
                result = conn.execute(
                    update(target.raw)
                    .where(and_(pk == getattr(row, target.pk.name), raw == stored))
                    .values(**changes)
                )
                done += result.rowcount
            last = getattr(rows[-1], target.pk.name)
        if progress is not None:
            progress(target.table.name, done, done)
    return done, len(failed)


def _count_plaintext(engine: Engine, target: _Target, col: Any, text: bool) -> int:
    raw = target.c(col.name)
    remaining = 0
    with engine.connect() as conn:
        for (stored,) in conn.execute(select(raw).where(raw.is_not(None))):
            if not _is_envelope(stored, text):
                remaining += 1
    return remaining
