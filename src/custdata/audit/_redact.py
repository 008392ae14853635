"""Redacting the body of one stored record without breaking its chain.

The chain MAC covers ``body_sha256``, not the body, so a record whose body is
gone still verifies and links. :func:`redact` first appends an ``audit.redact``
event naming the record on the trail's own chain (anchored at once, like other
audit-configuration events) and only then removes the body from the store; the
verifier reports a body-less record covered by a valid redaction event as
``REDACTED`` (informational) and any other body-less record as ``MODIFIED``.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import json
import os
import uuid

from pathlib import Path
from typing import IO, Final

import sqlalchemy as sa

from custdata._errors import AuditError

from ._chain import SealedRecord
from ._compact import V2_HEAD, CompactReader, redacted_line
from ._schema import IDENTIFIER, REDACT_REASONS, AuditAction, AuditOutcome
from ._sinks import JsonLinesSink
from ._sql import CLEARED_ON_REDACT, AuditTables, SqlSink
from ._store import JsonLinesSource, SqlSource, StoredRecord, parse_line
from ._trail import _LIVE, AuditTrail


__all__ = ["redact"]

#: A JSON line without its body: the envelope :class:`JsonLinesSink` writes.
_LINE_REDACTED: Final = (
    b'{"custdata_audit":1,"chain":"%s","seq":%d,"key_ref":"%s","prev":"%s",'
    b'"mac":"%s","body_sha256":"%s"}\n'
)

Store = JsonLinesSource | JsonLinesSink | SqlSource | SqlSink


def redact(
    trail: AuditTrail,
    store: Store,
    *,
    chain: str,
    seq: int,
    reason: str,
    actor: str,
    now: dt.datetime | None = None,
) -> SealedRecord:
    """Remove the body of record *seq* of *chain* from *store*, audited.

    1. The record is looked up: it must be the only record at its position,
       still hold a body that matches its digest (a tampered body is never
       redacted, so that evidence is kept), and not be an ``audit.*`` event.
    2. An ``audit.redact`` event naming the record (``target``: its chain, seq
       and MAC) and the enumerated *reason* is appended to *trail*'s chain,
       anchored at once when the trail has a checkpointer, and flushed. The
       event must land in *store* itself, where the verifier will look for it.
    3. The body is removed. In the audit tables ``body`` and the derived
       columns in :data:`~custdata.audit._sql.CLEARED_ON_REDACT` (``actor_id``,
       ``subject_ref``, ``entity``, ``purpose``) become NULL and the record's
       subject fan-out rows are deleted; ``ts``, ``action`` and ``outcome``
       stay. In a JSON-lines file the line is rewritten without its ``body``
       (keeping ``chain``, ``seq``, ``key_ref``, ``prev``, ``mac`` and
       ``body_sha256``) into a temporary file that replaces the original
       (``os.replace``); JSON-lines sinks of this process on that file are
       pointed at the new file. Sinks of *other* processes keep appending to
       the replaced file: redact a shared file only while no other process
       writes to it.

    Args:
        trail: The trail that records the redaction (its chain, its sinks).
        store: Where the record is stored: a JSON-lines source or sink (with a
            path), or the audit tables' source or sink.
        chain: The record's chain.
        seq: The record's position.
        reason: One of :data:`~custdata.audit._schema.REDACT_REASONS`
            (``erasure_request``, ``retention_expired``, ``operator_request``).
        actor: Who redacts (an identifier).
        now: The time of the redaction event; the wall clock when omitted.

    Returns:
        The sealed ``audit.redact`` event.

    Raises:
        ValueError: A bad reason, chain or seq; the record is ambiguous, has no
            body (already redacted), does not match its digest, or is an
            ``audit.*`` event.
        LookupError: No record at (*chain*, *seq*).
        AuditError: The redaction event is not in *store* (the body is kept).
        custdata.AuditUnavailableError: The redaction event could not be
            recorded (the body is kept).
    """
    if reason not in REDACT_REASONS:
        raise ValueError(f"reason must be one of {sorted(REDACT_REASONS)}")
    if IDENTIFIER.fullmatch(chain) is None or seq.__class__ is not int or seq < 1:
        raise ValueError("chain must be a chain id and seq a position from 1")
    if isinstance(store, (JsonLinesSource, JsonLinesSink)):
        if store.path is None:
            raise ValueError("a JSON-lines store must be a file")
        path = store.path
        target = _check_target(_jsonl_records(path, chain, seq))
    elif isinstance(store, (SqlSource, SqlSink)):
        engine, tables = store.engine, store.tables
        target = _check_target(_sql_records(engine, tables, chain, seq))
    else:
        raise TypeError("store must be a JSON-lines or SQL source or sink")
    assert target.mac is not None  # noqa: S101 - checked by _check_target
    event = trail.record(
        AuditAction.AUDIT_REDACT,
        outcome=AuditOutcome.ALLOWED,
        actor={"type": trail._actor_type, "id": actor},  # noqa: SLF001
        target={"chain": chain, "seq": seq, "mac": target.mac.hex()},
        reason=reason,
        now=now,
    )
    trail.flush()
    if isinstance(store, (JsonLinesSource, JsonLinesSink)):
        _rewrite_jsonl(path, target, event)
    else:
        _null_sql(engine, tables, target, event)
    return event


def _check_target(found: list[StoredRecord]) -> StoredRecord:
    distinct = {r.mac: r for r in found}
    if not distinct:
        raise LookupError("no audit record at that position")
    if len(distinct) > 1:
        raise ValueError("several records hold that position; verify the trail")
    rec = next(iter(distinct.values()))
    if rec.body is None:
        raise ValueError("the record has no body (already redacted)")
    if rec.mac is None or rec.body_sha256 is None or rec.prev is None:
        raise ValueError("the record's envelope is unreadable; verify the trail")
    if hashlib.sha256(rec.body).digest() != rec.body_sha256:
        raise ValueError(
            "the record's body does not match its digest; verify the trail"
        )
    try:
        action = json.loads(rec.body)["action"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            "the record's body is not an event; verify the trail"
        ) from None
    if not isinstance(action, str) or action.startswith("audit."):
        raise ValueError("audit.* events cannot be redacted")
    return rec


def _jsonl_records(path: Path, chain: str, seq: int) -> list[StoredRecord]:
    return [
        r
        for r in JsonLinesSource(path).records()
        if isinstance(r, StoredRecord) and r.chain == chain and r.seq == seq
    ]


def _sql_records(
    engine: sa.Engine, tables: AuditTables, chain: str, seq: int
) -> list[StoredRecord]:
    t = tables.event
    stmt = sa.select(
        t.c.chain, t.c.seq, t.c.key_ref, t.c.prev, t.c.mac, t.c.body_sha256, t.c.body
    ).where(t.c.chain == chain, t.c.seq == seq)
    with engine.connect() as conn:
        return [
            StoredRecord(
                "",
                r.chain,
                r.seq,
                r.key_ref,
                None if r.prev is None else bytes(r.prev),
                None if r.mac is None else bytes(r.mac),
                None if r.body_sha256 is None else bytes(r.body_sha256),
                None if r.body is None else bytes(r.body),
                None,
            )
            for r in conn.execute(stmt)
        ]


def _null_sql(
    engine: sa.Engine, tables: AuditTables, target: StoredRecord, event: SealedRecord
) -> None:
    t, s = tables.event, tables.subject
    with engine.begin() as conn:
        recorded = conn.execute(
            sa.select(sa.func.count()).where(
                t.c.chain == event.chain, t.c.seq == event.seq, t.c.mac == event.mac
            )
        ).scalar_one()
        if recorded != 1:
            raise AuditError(
                "the audit.redact event is not in these tables; the body is kept"
            )
        done = conn.execute(
            t.update()
            .where(
                t.c.chain == target.chain,
                t.c.seq == target.seq,
                t.c.mac == target.mac,
                t.c.body.is_not(None),
            )
            .values(body=None, **dict.fromkeys(CLEARED_ON_REDACT))
        )
        if done.rowcount != 1:
            raise AuditError("the record changed while it was redacted; nothing done")
        conn.execute(s.delete().where(s.c.chain == target.chain, s.c.seq == target.seq))


def _rewrite_jsonl(path: Path, target: StoredRecord, event: SealedRecord) -> None:
    """Replace *path* with a copy whose target line has no body (atomically)."""
    st = path.stat()
    # This process's writers on the file wait while it is copied and replaced.
    trails = sorted(
        (
            t
            for t in list(_LIVE)
            if any(isinstance(k, JsonLinesSink) and k.writes_to(st) for k in t.sinks)
        ),
        key=id,
    )
    for t in trails:
        t._lock.acquire()  # noqa: SLF001 - redaction is part of the trail's protocol
    try:
        sinks = [
            k
            for t in trails
            for k in t.sinks
            if isinstance(k, JsonLinesSink) and k.writes_to(st)
        ]
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.redact")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, st.st_mode & 0o777)
        try:
            with path.open("rb") as src, os.fdopen(fd, "wb") as dst:
                found = _copy_redacted(src, dst, target, event)
                dst.flush()
                os.fsync(dst.fileno())
            _check_copy(*found)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        for sink in sinks:
            sink.reopen()
    finally:
        for t in reversed(trails):
            t._lock.release()  # noqa: SLF001


def _copy_redacted(
    src: IO[bytes], dst: IO[bytes], target: StoredRecord, event: SealedRecord
) -> tuple[int, bool]:
    """Copy lines, dropping the target's body.

    Returns:
        How many copies of the target line were redacted (identical copies
        all are), and whether the redaction event's line was seen.
    """
    chains = (target.chain.encode("ascii"), event.chain.encode("ascii"))
    redacted = _LINE_REDACTED % (
        target.chain.encode("ascii"),
        target.seq,
        target.key_ref.encode("ascii"),
        (target.prev or b"").hex().encode("ascii"),
        (target.mac or b"").hex().encode("ascii"),
        (target.body_sha256 or b"").hex().encode("ascii"),
    )
    hits, seen = 0, False
    reader = CompactReader()
    # Lines appended while copying (by another thread or process) are copied
    # too: readline reads until the end stays put.
    while line := src.readline():
        if line.startswith(V2_HEAD) and line.endswith(b"\n"):
            # A compact (v2) line: declarations give its chain and template.
            try:
                got = reader.feed(line[:-1])
            except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
                got = None
            if got is not None:
                chain, seq, _, _, mac, digest, body, cid = got
                if (chain, seq, mac, digest, body) == (
                    target.chain,
                    target.seq,
                    target.mac,
                    target.body_sha256,
                    target.body,
                ):
                    hits += 1
                    line = redacted_line(cid, seq, mac, digest)
                elif (chain, seq, mac) == (event.chain, event.seq, event.mac):
                    seen = True
        elif line.endswith(b"\n") and any(c in line for c in chains):
            rec = parse_line(line, "")
            if isinstance(rec, StoredRecord):
                if rec[1:8] == target[1:8]:
                    hits += 1
                    line = redacted
                elif (rec.chain, rec.seq, rec.mac) == (
                    event.chain,
                    event.seq,
                    event.mac,
                ):
                    seen = True
        dst.write(line)
    return hits, seen


def _check_copy(hits: int, seen: bool) -> None:
    if not hits:
        raise AuditError("the record changed while it was redacted; nothing done")
    if not seen:
        raise AuditError("the audit.redact event is not in this file; the body is kept")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
