"""Reading a stored trail back: JSON-lines files and audit tables.

The verifier and the checkpointer read records through :class:`StoredRecord`
tuples so that both sinks are checked by one algorithm.
"""

from __future__ import annotations

import binascii
import json
import os
import re

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

from custdata._errors import ConfigurationError

from ._compact import RECORD_HEAD, V2_HEAD, CompactReader
from ._sql import AuditTables


__all__ = ["JsonLinesSource", "SqlSource", "StoredRecord", "Torn", "TrailSource"]

_BODY_MARK = b',"body":'
# The exact layout JsonLinesSink writes; anything else takes the slow JSON path.
_FAST = re.compile(
    rb'\{"custdata_audit":1,"chain":"([A-Za-z0-9_.:/+\-]{1,256})","seq":([0-9]{1,19}),'
    rb'"key_ref":"([A-Za-z0-9_.:/+\-]{1,256})","prev":"([0-9a-f]{64})","mac":"([0-9a-f]{64})",'
    rb'"body_sha256":"([0-9a-f]{64})","body":'
)
_unhex = binascii.unhexlify
_DIGEST = 32
_HEAD = b'{"custdata_audit":1,"chain":"'
_HEAD_LEN = len(_HEAD)
_SEQ_DIGITS = 19
_BLOCK = 1 << 22


def _ident(raw: bytes) -> str:
    """Decode a chain or key id, refusing what a writer could not have written."""
    text = raw.decode("ascii")
    if _IDENT.fullmatch(text) is None:
        raise ValueError("not an identifier")
    return text


_IDENT = re.compile(r"[A-Za-z0-9_.:/+\-]{1,256}")


class StoredRecord(NamedTuple):
    """One record as stored, possibly tampered with.

    ``prev``, ``mac`` and ``body_sha256`` are ``None`` when they do not decode;
    ``body`` is ``None`` when it is missing. ``columns`` holds the derived
    columns of a database row (``None`` for a JSON line).
    """

    loc: str | int
    chain: str
    seq: int
    key_ref: str
    prev: bytes | None
    mac: bytes | None
    body_sha256: bytes | None
    body: bytes | None
    columns: Mapping[str, Any] | None


class Malformed(NamedTuple):
    """A stored item that cannot even be attributed to a chain position."""

    loc: str


class Torn(NamedTuple):
    """The start of a record whose write never finished (a crash, a full disk).

    A line that begins like every record the writer writes but is not a
    complete JSON object: the bytes of a write cut short. It is not a record;
    if its position mattered, the chain shows the gap (``MISSING``) or the
    anchored head (``TRUNCATED``).
    """

    loc: str


class _Tail(bytes):
    """The last bytes of a file after its last newline (a line never ended)."""


class _Oversized(bytes):
    """The first bytes of a line longer than :data:`MAX_LINE` (the rest is skipped)."""


#: The longest line read whole. A record holds at most 1,000 pseudonyms and a
#: few short names (~40 KiB); a longer line is a finding, read in bounded memory.
MAX_LINE = 1 << 20


def _hex(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if len(raw) == _DIGEST else None


def parse_line(line: bytes, loc: str) -> StoredRecord | Malformed | Torn:
    """Parse one JSON line written by :class:`~custdata.audit.JsonLinesSink`.

    Never raises: a line that is not a record is :class:`Malformed` (or
    :class:`Torn` when it is the start of a record cut short), whatever its
    size, nesting or bytes.
    """
    if line.__class__ is _Oversized:
        return Malformed(loc)
    m = _FAST.match(line)
    if m is not None and line.endswith(b"}\n"):
        chain, seq, key_ref, prev, mac, digest = m.groups()
        return StoredRecord(
            loc,
            chain.decode(),
            int(seq),
            key_ref.decode(),
            _unhex(prev),
            _unhex(mac),
            _unhex(digest),
            line[m.end() : -2],
            None,
        )
    if line.startswith(_HEAD) and not _is_json(line):
        return Torn(loc)
    cut = line.find(_BODY_MARK)
    try:
        if cut < 0:
            env = json.loads(line)
            body = None
        else:
            env = json.loads(line[:cut] + b"}")
            body = line[cut + len(_BODY_MARK) :].rstrip(b"\r\n")
            body = body[:-1] if body.endswith(b"}") else None
        chain, seq, key_ref = env["chain"], env["seq"], env["key_ref"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return Malformed(loc)
    if (
        not isinstance(chain, str)
        or not isinstance(seq, int)
        or not isinstance(key_ref, str)
    ):
        return Malformed(loc)
    return StoredRecord(
        loc,
        chain,
        seq,
        key_ref,
        _hex(env.get("prev")),
        _hex(env.get("mac")),
        _hex(env.get("body_sha256")),
        body,
        None,
    )


def _is_json(line: bytes) -> bool:
    """Whether *line* is one complete JSON document (any nesting, no exception)."""
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def _split_records(line: bytes) -> list[bytes]:
    """Split a line at each start of a record (v1 or v2) after its first byte.

    Record starts cannot occur inside a record (names are JSON strings, where a
    quote is escaped), so a line holding two starts holds a torn record
    followed by the next one: a writer that did not start on a fresh line.
    """
    parts = []
    start = 0
    at = _next_start(line, 1)
    while at > 0:
        parts.append(line[start:at])
        start = at
        at = _next_start(line, at + 1)
    parts.append(line[start:])
    return parts


def _next_start(line: bytes, start: int) -> int:
    """Where the next record start (v1 or v2) is at or after *start*, or -1."""
    v1, v2 = line.find(_HEAD, start), line.find(V2_HEAD, start)
    if v1 < 0 or v2 < 0:
        return max(v1, v2)
    return min(v1, v2)


def _glued(line: bytes) -> bool:
    """Whether *line* holds a record start after its first byte."""
    return line.find(_HEAD, 1) > 0 or line.find(V2_HEAD, 1) > 0


#: What :meth:`CompactReader.feed` raises for a line it cannot use.
_V2_ERRORS = (ValueError, KeyError, TypeError, RecursionError, binascii.Error)
_RECORD_HEAD_LEN = len(RECORD_HEAD)


def _compact_record(
    reader: CompactReader, part: bytes, loc: str | int
) -> StoredRecord | Malformed | Torn | None:
    """Read one v2 line; ``None`` for a declaration or template."""
    try:
        got = reader.feed(part.rstrip(b"\r\n"))
    except _V2_ERRORS:
        return Malformed(str(loc)) if _is_json(part) else Torn(str(loc))
    if got is None:
        return None
    chain, seq, key_ref, prev, mac, digest, body, _ = got
    return StoredRecord(loc, chain, seq, key_ref, prev, mac, digest, body, None)


class TrailSource:
    """Base of the stored-trail readers."""

    #: What the source is, for reports (a path or a URL without password).
    description: str = ""

    def records(self) -> Iterator[StoredRecord | Malformed | Torn]:
        """Yield every stored record."""
        raise NotImplementedError

    def entries_after(
        self, heads: Mapping[str, int]
    ) -> Iterator[tuple[str, int, bytes | None]]:
        """Yield ``(chain, seq, mac)`` of records past *heads*, in checkpoint order.

        Checkpoint order is by chain id (as Python sorts strings), then by
        ``seq``; records that repeat a position keep their stored order. The
        checkpointer relies on it to extend its tree as it reads.
        """
        entries = [
            (rec.chain, rec.seq, rec.mac)
            for rec in self.records()
            if isinstance(rec, StoredRecord) and rec.seq > heads.get(rec.chain, 0)
        ]
        entries.sort(key=_position)
        return iter(entries)

    def close(self) -> None:
        """Release resources."""


class LineCursor:
    """Where :meth:`JsonLinesSource._block_lines` stands in its current block."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self) -> None:
        #: The block: whole lines up to ``end``, each ending with a newline.
        self.buf = b""
        #: The start of the next line to yield.
        self.pos = 0
        self.end = 0


class JsonLinesSource(TrailSource):
    """Read a JSON-lines trail file.

    Args:
        path: The file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = str(self.path)
        self._offset = 0
        self._file: tuple[int, int] | None = None
        self._pending: list[tuple[str, int, bytes | None]] = []
        # The declarations of the v2 lines read so far (entries_after).
        self._compact = CompactReader()
        # Where a one-pass verification that gave up left off (the verifier's).
        self._resume: Any = None

    def __repr__(self) -> str:
        return f"<JsonLinesSource {self.path}>"

    def records(self) -> Iterator[StoredRecord | Malformed | Torn]:
        """Yield every record in file order, and what is not one (malformed, torn)."""
        return self.records_from(self._lines(), 0, CompactReader())

    def records_from(
        self, lines: Iterator[bytes], n: int, compact: CompactReader
    ) -> Iterator[StoredRecord | Malformed | Torn]:
        """Yield the records of *lines* (from :meth:`_lines`), numbered after line *n*.

        *compact* holds the format-2 declarations read before these lines
        (where a one-pass check that gave up hands over to the full algorithm).
        """
        new = tuple.__new__
        unhex = _unhex
        names: dict[bytes, str] = {}
        for line in lines:
            n += 1
            # The fast path covers every line JsonLinesSink writes: fixed
            # separators at fixed offsets after the key id, found by slicing
            # rather than by a regular expression. Anything else takes the
            # JSON path. Locations are rendered lazily, only for findings.
            if line[:_HEAD_LEN] == _HEAD:
                i = line.find(b'","seq":', _HEAD_LEN)
                j = line.find(b',"key_ref":"', i)
                k = line.find(b'","prev":"', j)
                seq_text = line[i + 8 : j]
                if (
                    i > 0
                    and j > 0
                    and k > 0
                    and line[k + 74 : k + 83] == b'","mac":"'
                    and line[k + 147 : k + 164] == b'","body_sha256":"'
                    and line[k + 228 : k + 237] == b'","body":'
                    and line[-1:] == b"}"
                    and line.__class__ is bytes
                    and seq_text.isdigit()
                    and line.find(_HEAD, k) < 0
                    and len(seq_text) <= _SEQ_DIGITS
                ):
                    chain_b = line[_HEAD_LEN:i]
                    ref_b = line[j + 12 : k]
                    try:
                        chain = names.get(chain_b) or names.setdefault(
                            chain_b, _ident(chain_b)
                        )
                        key_ref = names.get(ref_b) or names.setdefault(
                            ref_b, _ident(ref_b)
                        )
                        record = new(
                            StoredRecord,
                            (
                                n,
                                chain,
                                int(seq_text),
                                key_ref,
                                unhex(line[k + 10 : k + 74]),
                                unhex(line[k + 83 : k + 147]),
                                unhex(line[k + 164 : k + 228]),
                                line[k + 237 : -1],
                                None,
                            ),
                        )
                    except (ValueError, binascii.Error):
                        pass
                    else:
                        yield record
                        continue
            elif (
                line[:_RECORD_HEAD_LEN] == RECORD_HEAD
                and line.__class__ is bytes
                and not _glued(line)
            ):
                # A format-2 line as the writer writes it; anything the
                # reader refuses is read again below, and named.
                try:
                    got = compact.feed(line)
                except _V2_ERRORS:
                    pass
                else:
                    if got is not None:
                        chain, seq, key_ref, prev, mac, digest, body, _ = got
                        yield new(
                            StoredRecord,
                            (n, chain, seq, key_ref, prev, mac, digest, body, None),
                        )
                    continue
            if not line.strip():
                continue
            loc = f"line {n}"
            if line.__class__ is _Oversized:
                yield Malformed(f"{loc} (longer than {MAX_LINE} bytes)")
                continue
            tail = line.__class__ is _Tail
            parts = _split_records(line) if _glued(line) else [line]
            for i, part in enumerate(parts):
                where = loc if len(parts) == 1 else f"{loc} part {i + 1}"
                if part.startswith(V2_HEAD):
                    found = _compact_record(compact, bytes(part), where)
                    if found is not None:
                        yield found
                elif part.startswith(_HEAD) and not _is_json(part):
                    # The start of a record whose write never finished.
                    yield Torn(where)
                elif tail and i == len(parts) - 1 and not part.startswith(_HEAD):
                    yield Malformed(where)  # bytes after the last line
                else:
                    yield parse_line(part + b"\n", where)

    def _lines(self) -> Iterator[bytes]:
        """Yield the file's lines without their newlines, in bounded memory.

        Reads in large blocks. A line longer than :data:`MAX_LINE` is yielded
        as an :class:`_Oversized` prefix (the rest is skipped, not held), and
        bytes after the last newline as a :class:`_Tail`.
        """
        with self.path.open("rb") as fh:
            rest = b""
            skipping = False
            while True:
                block = fh.read(_BLOCK)
                if not block:
                    if rest and not skipping:
                        yield _Tail(rest)
                    return
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if skipping:
                        skipping = False  # the end of an oversized line
                    elif len(line) > MAX_LINE:
                        yield _Oversized(line[:_HEAD_LEN])
                    else:
                        yield line
                if len(rest) > MAX_LINE and not skipping:
                    yield _Oversized(rest[:_HEAD_LEN])
                    skipping = True
                if skipping:
                    rest = b""

    def _block_lines(self, cursor: LineCursor) -> Iterator[bytes]:
        """Yield what :meth:`_lines` yields, exposing each block through *cursor*.

        The verifier's native run checks lines in ``cursor.buf`` from
        ``cursor.pos`` up to ``cursor.end`` (whole lines only) and moves
        ``cursor.pos`` past those it accepted; this generator goes on from there.
        """
        with self.path.open("rb") as fh:
            rest = b""
            skipping = False
            while True:
                block = fh.read(_BLOCK)
                if not block:
                    if rest and not skipping:
                        yield _Tail(rest)
                    return
                end = block.rfind(b"\n") + 1
                if end:
                    # The line across the blocks' boundary is joined; the
                    # others are sliced from the block itself (no copy of it).
                    first = block.find(b"\n")
                    line = rest + block[:first]
                    rest = block[end:]
                    cursor.buf, cursor.pos, cursor.end = block, first + 1, end
                    find = block.find
                    while True:
                        if skipping:
                            skipping = False  # the end of an oversized line
                        elif len(line) > MAX_LINE:
                            yield _Oversized(line[:_HEAD_LEN])
                        else:
                            yield line
                        pos = cursor.pos
                        if pos >= end:
                            break
                        nl = find(b"\n", pos)
                        cursor.pos = nl + 1
                        line = block[pos:nl]
                    # The block is let go before the next is read (bounded memory).
                    del find
                    cursor.buf = block = line = b""
                    cursor.pos = cursor.end = 0
                else:
                    rest += block
                if len(rest) > MAX_LINE and not skipping:
                    yield _Oversized(rest[:_HEAD_LEN])
                    skipping = True
                if skipping:
                    rest = b""

    def entries_after(
        self, heads: Mapping[str, int]
    ) -> Iterator[tuple[str, int, bytes | None]]:
        """Read only what was appended since the previous call (complete lines).

        In checkpoint order (see :meth:`TrailSource.entries_after`). A file
        that was replaced (:func:`custdata.audit.redact` rewrites it) or
        shrank is read again from the start; *heads* filter what was seen.
        """
        entries = [e for e in self._pending if e[1] > heads.get(e[0], 0)]
        with self.path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            if (st.st_dev, st.st_ino) != self._file or st.st_size < self._offset:
                self._file = (st.st_dev, st.st_ino)
                self._offset = 0
                self._compact = CompactReader()
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            # A torn record glued to the next (an old writer) is two parts.
            parts = _split_records(line) if _glued(line) else (line,)
            for part in parts:
                if part.startswith(V2_HEAD):
                    rec = _compact_record(self._compact, part, "")
                else:
                    rec = parse_line(part + b"\n", "")
                if isinstance(rec, StoredRecord) and rec.seq > heads.get(rec.chain, 0):
                    entries.append((rec.chain, rec.seq, rec.mac))
        self._offset += end
        entries.sort(key=_position)
        self._pending = entries
        return iter(entries)


class SqlSource(TrailSource):
    """Read the audit tables.

    Args:
        engine: The engine (not disposed here).
        tables: The tables of the trail's prefix.
        chunk: Rows fetched per round trip (a page when verifying: what the
            verifier holds of the tables at a time).

    Raises:
        ConfigurationError: *chunk* is not a positive whole number.
    """

    def __init__(
        self, engine: sa.Engine, tables: AuditTables, *, chunk: int = 2_000
    ) -> None:
        if chunk.__class__ is not int or chunk < 1:
            raise ConfigurationError("SqlSource chunk must be a positive whole number")
        self.engine = engine
        self.tables = tables
        self.chunk = chunk
        self.description = engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"<SqlSource {self.tables.event.name}>"

    def _columns(self) -> tuple[sa.ColumnElement[Any], ...]:
        t = self.tables.event
        return (
            t.c.id,
            t.c.chain,
            t.c.seq,
            t.c.key_ref,
            t.c.prev,
            t.c.mac,
            t.c.body_sha256,
            t.c.body,
            t.c.ts,
            t.c.action,
            t.c.outcome,
            t.c.actor_id,
            t.c.subject_ref,
            t.c.entity,
            t.c.purpose,
        )

    def records(self) -> Iterator[StoredRecord | Malformed | Torn]:
        """Yield every row ordered by (chain, seq), streaming."""
        t = self.tables.event
        stmt = sa.select(*self._columns()).order_by(t.c.chain, t.c.seq)
        with self.engine.connect() as conn:
            result = conn.execution_options(
                stream_results=True, yield_per=self.chunk
            ).execute(stmt)
            for row in result:
                yield _stored(row)

    def chains(self) -> list[str]:
        """Return the ids of the chains in the event table, sorted (as Python sorts)."""
        t = self.tables.event
        with self.engine.connect() as conn:
            return sorted(conn.scalars(sa.select(t.c.chain).distinct()))

    def chain_records(self, chain: str) -> Iterator[StoredRecord]:
        """Yield the rows of *chain* ordered by seq, about *chunk* rows at a time.

        Paged by sequence number (:func:`_seq_pages`): no cursor stays open
        between pages, so at most a page is held on every database, and rows
        that repeat a position (with the unique constraint dropped, whatever
        their ids) are all read. A database whose collation compares chain
        ids without regard to case returns the rows of every such spelling.
        """
        t = self.tables.event
        for rows in _seq_pages(self.engine, t, chain, self._columns(), self.chunk):
            for row in rows:
                yield _stored(row)

    def chain_fanout(self, chain: str) -> Iterator[tuple[str, int, str]]:
        """Yield *chain*'s subject fan-out rows as ``(chain, seq, subject_ref)``, by seq.

        Paged like :meth:`chain_records`.
        """
        s = self.tables.subject
        columns = (s.c.chain, s.c.seq, s.c.subject_ref)
        for rows in _seq_pages(self.engine, s, chain, columns, self.chunk):
            yield from ((r.chain, r.seq, r.subject_ref) for r in rows)

    def subject_rows(self) -> Iterator[tuple[str, int, str]]:
        """Yield the fan-out table as ``(chain, seq, subject_ref)``, chain by chain.

        Paged like :meth:`chain_fanout`: at most a page of rows is held, at
        any size of the table.
        """
        s = self.tables.subject
        with self.engine.connect() as conn:
            names = sorted(conn.scalars(sa.select(s.c.chain).distinct()))
        for name in names:
            # A collation that equates spellings of a chain id returns one
            # of them here, and the rows of all of them from chain_fanout.
            yield from self.chain_fanout(name)

    def entries_after(
        self, heads: Mapping[str, int]
    ) -> Iterator[tuple[str, int, bytes | None]]:
        """Yield the rows past the per-chain heads, in checkpoint order, streaming.

        One short query finds the chains with rows past their heads; each is
        then read in pages of about *chunk* rows by ``seq`` (as
        :meth:`chain_records`), so at most a page is held however far the
        table has grown since the last checkpoint.
        """
        t = self.tables.event
        # The exact chain ids: MariaDB/MySQL compare (and group) strings by a
        # collation that may equate spellings differing in case.
        exact: sa.ColumnElement[Any] = t.c.chain
        binary = self.engine.dialect.name in {"mysql", "mariadb"}
        if binary:
            exact = sa.cast(t.c.chain, sa.LargeBinary)
        with self.engine.connect() as conn:
            tops = conn.execute(sa.select(exact, sa.func.max(t.c.seq)).group_by(exact))
            found = [(bytes(c).decode() if binary else c, top) for c, top in tops.all()]
        columns = (t.c.chain, t.c.seq, t.c.mac)
        for chain, top in sorted(found):
            head = heads.get(chain, 0)
            if top <= head:
                continue
            pages = _seq_pages(self.engine, t, chain, columns, self.chunk, after=head)
            for rows in pages:
                page: Any = rows  # (chain, seq, mac) rows, unpacked as tuples
                for c, s, m in page:
                    if binary and c != chain:
                        continue
                    # The MAC as the driver returns it (bytes on every driver
                    # but a memoryview on some): _bytes only when it must.
                    yield (
                        c,
                        s,
                        m if m.__class__ is bytes and len(m) == _DIGEST else _bytes(m),
                    )


def _seq_pages(
    engine: sa.Engine,
    table: sa.Table,
    chain: str,
    columns: tuple[sa.ColumnElement[Any], ...],
    chunk: int,
    *,
    after: int | None = None,
) -> Iterator[Sequence[sa.Row[Any]]]:
    """Yield the rows of *chain* in *table* in pages of whole sequence numbers.

    Only rows past seq *after*, when given.

    Each page is the rows with ``lo < seq <= hi``, where *hi* is the seq of the
    *chunk*-th row after *lo* (found first, on the ``(chain, seq)`` index):
    about *chunk* rows (more only when rows repeat the last seq), each page a
    short query of its own, and every row read however the rows' other
    columns were altered.
    """
    seq = table.c.seq
    mine = table.c.chain == chain
    # Within a seq, by the rest of the primary key (the event row id; the
    # fan-out row's subject).
    ties = [c for c in table.primary_key.columns if c.name not in {"chain", "seq"}]
    lo = after
    while True:
        where = mine if lo is None else sa.and_(mine, seq > lo)
        bound = sa.select(seq).where(where).order_by(seq).offset(chunk - 1).limit(1)
        with engine.connect() as conn:
            hi = conn.scalar(bound)
            stmt = sa.select(*columns).where(where)
            if hi is not None:
                stmt = stmt.where(seq <= hi)
            rows = conn.execute(stmt.order_by(seq, *ties)).all()
        if rows:
            yield rows
        if hi is None:
            return
        lo = hi
        del rows


def _position(entry: tuple[str, int, bytes | None]) -> tuple[str, int]:
    """An entry's place in checkpoint order: chain id, then seq."""
    return entry[0], entry[1]


def _stored(row: sa.Row[Any]) -> StoredRecord:
    """Return the :class:`StoredRecord` of an event row (see :meth:`SqlSource._columns`)."""
    return StoredRecord(
        f"row id={row.id}",
        row.chain,
        row.seq,
        row.key_ref,
        _bytes(row.prev),
        _bytes(row.mac),
        _bytes(row.body_sha256),
        None if row.body is None else bytes(row.body),
        {
            "ts": row.ts,
            "action": row.action,
            "outcome": row.outcome,
            "actor_id": row.actor_id,
            "subject_ref": row.subject_ref,
            "entity": row.entity,
            "purpose": row.purpose,
        },
    )


def _bytes(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return raw if len(raw) == _DIGEST else None
    return None
