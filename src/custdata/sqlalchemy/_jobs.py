"""Batch jobs on stored values: re-encryption, key usage, plaintext migration.

The jobs read and write the stored envelopes directly (through a plain,
uninstrumented view of each table), so they never release plaintext to the
application and never pass through the purpose checks meant for it. Each batch
is its own transaction and every update is conditional on the old envelope, so
a job killed at any point and run again finishes with nothing lost.
"""

from __future__ import annotations

import base64

from collections.abc import Callable, Iterable, Sequence
from typing import Any

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
from sqlalchemy.sql.expression import TableClause

from custdata._errors import ConfigurationError, DecryptionError
from custdata.crypto import envelope_key_id

from ._binding import SUBJECT_INFO_KEY, FieldBinding, subject_value
from ._types import EncryptedType


__all__ = [
    "KeyUsage",
    "MigrationReport",
    "ReencryptReport",
    "encrypt_plaintext_columns",
    "key_usage",
    "reencrypt",
]

Progress = Callable[[str, int, int], None]

_GCM = 0x01
_MIN_ENVELOPE = 34


@attrs.frozen(kw_only=True)
class KeyUsage:
    """How many stored values of one column are under one key.

    Attributes:
        table: The table name.
        column: The column name.
        key_id: The key id in the envelope header.
        algorithm: The envelope's algorithm byte (1 keyring AES-GCM, 2 AES-SIV,
            3 per-subject AES-GCM).
        count: How many values.
    """

    table: str
    column: str
    key_id: int
    algorithm: int
    count: int


@attrs.frozen(kw_only=True)
class ReencryptReport:
    """What :func:`reencrypt` did.

    Attributes:
        scanned: Rows examined.
        reencrypted: Values moved to the primary key.
        reindexed: Blind-index entries recomputed under the primary index key.
        skipped: Values left alone (per-subject keys, or changed concurrently).
    """

    scanned: int = 0
    reencrypted: int = 0
    reindexed: int = 0
    skipped: int = 0


@attrs.frozen(kw_only=True)
class MigrationReport:
    """What :func:`encrypt_plaintext_columns` did for one column.

    Attributes:
        table: The table name.
        column: The column name.
        encrypted: Legacy plaintext values encrypted in this run.
        remaining: Plaintext values still left (0 when done).
    """

    table: str
    column: str
    encrypted: int
    remaining: int


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
) -> ReencryptReport:
    """Re-encrypt stored values to the keyring's primary key, in batches.

    Values under an older key are decrypted and encrypted again under the
    primary key (bound to the same table, column and subject); blind-index
    entries are recomputed under the primary index key. Each batch commits on
    its own, and each row is updated only if its stored values are still the
    ones read, so the job can be killed at any point and run again.

    On PostgreSQL the batches are claimed with ``FOR UPDATE SKIP LOCKED``, so
    several workers can run at once.

    The job decrypts stored values, so when the custodian has an audit recorder
    each table batch is recorded before any of its values is decrypted: one
    ``record.bulk_update`` event (actor ``system``/``custdata.reencrypt``) with
    the table, columns, categories, subjects and number of values.

    Args:
        engine: The database.
        custodian: Whose keyring to use.
        tables: A declarative base, ``MetaData`` or tables (default: every table
            custdata knows).
        batch_size: Rows per transaction.
        progress: Called as ``progress(table, done, total)`` after each batch.
        skip_locked: Claim rows with ``SKIP LOCKED``; defaults to ``True`` on
            PostgreSQL.

    Returns:
        The counts of what was done.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    keyring = custodian.keyring
    primary = keyring.primary_key_id
    if skip_locked is None:
        skip_locked = engine.dialect.name == "postgresql"
    totals = {"scanned": 0, "reencrypted": 0, "reindexed": 0, "skipped": 0}
    for target in _targets(_tables_arg(tables)):
        _reencrypt_table(
            engine,
            custodian,
            target,
            primary,
            batch_size,
            progress,
            skip_locked,
            totals,
        )
    return ReencryptReport(**totals)


def _reencrypt_table(  # noqa: PLR0917
    engine: Engine,
    custodian: Any,
    target: _Target,
    primary: int,
    batch_size: int,
    progress: Progress | None,
    skip_locked: bool,
    totals: dict[str, int],
) -> None:
    pk = target.c(target.pk.name)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(target.raw)).scalar_one()
    done = 0
    last: Any = None
    while True:
        with engine.begin() as conn:
            query = select(*target.raw.c).order_by(pk).limit(batch_size)
            if last is not None:
                query = query.where(pk > last)
            if skip_locked:
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if not rows:
                break
            _announce_batch(custodian, target, rows, primary, batch=done // batch_size)
            for row in rows:
                _reencrypt_row(conn, custodian, target, row, primary, totals)
            last = getattr(rows[-1], target.pk.name)
        done += len(rows)
        totals["scanned"] += len(rows)
        if progress is not None:
            progress(target.table.name, min(done, total), total)


#: The actor id written for the re-encryption job's audit events.
REENCRYPT_ACTOR = "custdata.reencrypt"


def _announce_batch(
    custodian: Any, target: _Target, rows: Sequence[Any], primary: int, *, batch: int
) -> None:
    """Record, before any value of the batch is decrypted, what the job will decrypt.

    One event per table batch through the custodian's audit recorder: the
    table, the columns and their categories, the subjects and the number of
    values to decrypt -- never a value. An :class:`custdata.audit.AuditTrail`
    gets a ``record.bulk_update`` event by a ``system`` actor; any other
    recorder gets an allowed ``Action.UPDATE`` decision.
    """
    audit = getattr(custodian, "audit", None)
    if audit is None:
        return
    fields: list[str] = []
    categories: set[str] = set()
    count = 0
    subjects: dict[str, None] = {}
    for col, b, text in target.encrypted:
        touched = 0
        for row in rows:
            stored = getattr(row, col.name)
            if stored is None:
                continue
            header = _blob(stored, text)[:6]
            if (
                b.companion_key is not None
                or (
                    len(header) == 6  # noqa: PLR2004 - the header size
                    and header[1] == _GCM
                    and int.from_bytes(header[2:6], "big") != primary
                )
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
    record = getattr(audit, "record", None)
    subject_ref = getattr(audit, "subject_ref", None)
    if record is not None and subject_ref is not None:
        refs = [subject_ref(s) for s in subjects]
        chunks = [refs[i : i + 1000] for i in range(0, len(refs), 1000)] or [[]]
        for chunk in chunks:
            record(
                "record.bulk_update",
                outcome="allowed",
                actor={"type": "system", "id": REENCRYPT_ACTOR},
                reason="operator_request",
                entity=target.table.name,
                fields=sorted(fields),
                data_categories=sorted(categories),
                count=count if len(chunks) == 1 else len(chunk),
                subjects=chunk or None,
                batch=batch,
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
            actor=REENCRYPT_ACTOR,
            role=None,
            purpose=None,
            policy_version=custodian.policy.version,
            entity=target.table.name,
            fields=tuple(sorted(fields)),
            categories=tuple(sorted(categories)),
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
    changes: dict[str, Any] = {}
    conditions = [target.c(target.pk.name) == getattr(row, target.pk.name)]
    for col, b, text in target.encrypted:
        stored = getattr(row, col.name)
        if stored is None:
            continue
        blob = _blob(stored, text)
        cipher = b.cipher(custodian)
        subject = target.subject_of(row, b)
        value: Any = None
        have_value = False
        if blob[1] != _GCM:
            totals["skipped"] += 1
        elif envelope_key_id(blob) != primary:
            value = cipher.decrypt(blob, subject=subject)
            have_value = True
            changes[col.name] = _stored(cipher.encrypt(value, subject=subject), text)
            conditions.append(target.c(col.name) == stored)
            totals["reencrypted"] += 1
        if b.companion_key is not None and not have_value:
            value = cipher.decrypt(blob, subject=subject)
            have_value = True
            if have_value:
                digest = b.blind_index(custodian).compute(value)
                if getattr(row, b.companion_key) != digest:
                    changes[b.companion_key] = digest
                    totals["reindexed"] += 1
    if changes:
        result = conn.execute(
            update(target.raw).where(and_(*conditions)).values(**changes)
        )
        if result.rowcount == 0:
            totals["skipped"] += 1


def key_usage(engine: Engine, *, tables: Any = None) -> list[KeyUsage]:
    """Count stored values per key id, from the key id in each envelope header.

    The count runs in the database (``GROUP BY`` on the header bytes), so it
    reads no ciphertext into Python and needs no keys.

    Returns:
        One entry per table, column, algorithm and key id, sorted.
    """
    usage: list[KeyUsage] = []
    with engine.connect() as conn:
        for target in _targets(_tables_arg(tables)):
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
                    if len(header) < 6:  # noqa: PLR2004 - the header size
                        usage.append(
                            KeyUsage(
                                table=target.table.name,
                                column=col.name,
                                key_id=-1,
                                algorithm=0,
                                count=count,
                            )
                        )
                        continue
                    usage.append(
                        KeyUsage(
                            table=target.table.name,
                            column=col.name,
                            key_id=int.from_bytes(header[2:6], "big"),
                            algorithm=header[1],
                            count=count,
                        )
                    )
    return sorted(usage, key=lambda u: (u.table, u.column, u.algorithm, u.key_id))


def _is_envelope(stored: Any, text: bool) -> bool:
    try:
        blob = _blob(stored, text)
    except (ValueError, TypeError):
        return False
    return len(blob) >= _MIN_ENVELOPE - 12 and blob[0] == 1 and blob[1] in {1, 2, 3}


def _legacy_value(stored: Any, b: FieldBinding) -> Any:
    py = b.python_type or str
    raw = (
        bytes(stored).decode("utf-8")
        if isinstance(stored, (bytes, bytearray, memoryview)) and py is not bytes
        else stored
    )
    if py is str:
        return str(raw)
    if py is bytes:
        return bytes(stored)
    try:
        return py(raw)
    except Exception:  # noqa: BLE001
        raise DecryptionError(
            f"{b.where}: a legacy value cannot be read as {py.__name__}"
        ) from None


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
    its envelope (bound to the row's subject). Run it again until nothing is
    left; each batch commits on its own.

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
            done = _migrate_column(
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
) -> int:
    pk = target.c(target.pk.name)
    raw = target.c(col.name)
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
                value = _legacy_value(stored, b)
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
    return done


def _count_plaintext(engine: Engine, target: _Target, col: Any, text: bool) -> int:
    raw = target.c(col.name)
    remaining = 0
    with engine.connect() as conn:
        for (stored,) in conn.execute(select(raw).where(raw.is_not(None))):
            if not _is_envelope(stored, text):
                remaining += 1
    return remaining
