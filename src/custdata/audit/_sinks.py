"""Audit sinks: where sealed records go.

A sink receives sealed records in chain order. :class:`JsonLinesSink` writes
one JSON line per record to a file (opened ``O_APPEND``, one ``write`` per line,
so several processes can share it) or to a text or binary stream such as
stdout. :class:`custdata.audit.SqlSink` writes to database tables through a
background flusher. :class:`MemorySink` keeps records in a list, for tests.
"""

from __future__ import annotations

import io
import os
import sys
import threading

from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from custdata._errors import AuditUnavailableError

from ._chain import _LINE, SealedRecord, _hexlify, render_line


__all__ = ["AuditSink", "JsonLinesSink", "MemorySink"]


@runtime_checkable
class AuditSink(Protocol):
    """What :class:`~custdata.audit.AuditTrail` needs from a sink.

    The trail calls :meth:`reserve` on every sink, then seals the record, then
    calls :meth:`emit` on every sink, all under the chain lock. A sink that
    cannot take the record raises :class:`custdata.AuditUnavailableError` from
    :meth:`reserve` (nothing sealed yet) or from :meth:`emit`.
    """

    #: A short, value-free name for configuration events (``"jsonl"``, ``"sql"``).
    name: str

    def reserve(self) -> None:
        """Make room for one record or raise ``AuditUnavailableError``."""

    def emit(self, record: SealedRecord) -> None:
        """Accept one sealed record, in chain order."""

    def flush(self, timeout: float | None = None) -> None:
        """Persist every accepted record; raise ``AuditUnavailableError`` on failure."""

    def close(self, timeout: float | None = None) -> None:
        """Flush (waiting at most *timeout* seconds) and release resources; idempotent."""

    def after_fork_in_child(self) -> None:
        """Drop state inherited from the parent process (queues, threads, pools)."""


_write = os.write


class JsonLinesSink:
    """Write sealed records as JSON lines to a file or a stream.

    Args:
        target: A path (opened for appending, mode 0600 when created) or an open
            text or binary stream (``sys.stdout`` when omitted). Streams are
            flushed after every line; files get one ``os.write`` per line.

    Raises:
        AuditUnavailableError: From :meth:`emit`, when the write fails.
    """

    name = "jsonl"

    def __init__(
        self, target: str | os.PathLike[str] | IO[str] | IO[bytes] | None = None
    ) -> None:
        self._fd: int | None = None
        self._stream: IO[str] | IO[bytes] | None = None
        self.path: Path | None = None
        if target is None:
            self._stream = sys.stdout
        elif isinstance(target, (str, os.PathLike)):
            self.path = Path(target)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        else:
            self._stream = target
        self._closed = False

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "<stream>"
        return f"<JsonLinesSink {where}>"

    def reserve(self) -> None:
        """Refuse when closed; a stream needs no reservation otherwise."""
        if self._closed:
            raise AuditUnavailableError("the audit JSON-lines sink is closed")

    def emit(self, record: SealedRecord) -> None:
        """Write *record* as one line."""
        fd = self._fd
        if fd is not None:
            # render_line, inlined.
            line = _LINE % (
                record.chain.encode("ascii"),
                record.seq,
                record.key_ref.encode("ascii"),
                _hexlify(record.prev),
                _hexlify(record.mac),
                _hexlify(record.body_sha256),
                record.body,
            )
            # The hot path: one write on the O_APPEND descriptor.
            try:
                if _write(fd, line) == len(line):
                    return
            except OSError as exc:
                raise AuditUnavailableError(
                    f"the audit JSON-lines sink cannot write ({type(exc).__name__})"
                ) from None
            raise AuditUnavailableError(
                "the audit JSON-lines sink cannot write (short write)"
            )
        line = render_line(record)
        try:
            if self._stream is not None:
                if isinstance(self._stream, io.TextIOBase):
                    self._stream.write(line.decode("utf-8"))
                else:
                    self._stream.write(line)  # type: ignore[arg-type]
                self._stream.flush()
        except (OSError, ValueError) as exc:
            raise AuditUnavailableError(
                f"the audit JSON-lines sink cannot write ({type(exc).__name__})"
            ) from None

    def flush(self, timeout: float | None = None) -> None:
        """Make written lines durable (``fsync`` for files)."""
        if self._fd is not None and not self._closed:
            os.fsync(self._fd)

    def close(self, timeout: float | None = None) -> None:
        """Close the file (never the caller's stream)."""
        if self._closed:
            return
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def after_fork_in_child(self) -> None:
        """Nothing to do: the ``O_APPEND`` descriptor is shared safely."""

    def reopen(self) -> None:
        """Point the descriptor at the file now at :attr:`path` (after a rewrite).

        :func:`custdata.audit.redact` replaces a JSON-lines file with a
        rewritten copy; a sink that keeps its descriptor would go on appending
        to the replaced file. The new descriptor takes the old one's number
        (``dup2``), so a concurrent write goes to one file or the other, whole.
        """
        if self._fd is None or self.path is None or self._closed:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.dup2(fd, self._fd)
        finally:
            os.close(fd)

    def writes_to(self, st: os.stat_result) -> bool:
        """Whether this sink's descriptor is open on the file *st* describes."""
        if self._fd is None or self._closed:
            return False
        own = os.fstat(self._fd)
        return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


class MemorySink:
    """Keep sealed records in memory (tests and examples).

    Attributes:
        records: The records accepted, in order.
    """

    name = "memory"

    def __init__(self) -> None:
        self.records: list[SealedRecord] = []
        self._lock = threading.Lock()
        #: Set to make every :meth:`reserve` fail, to test fail-closed paths.
        self.unavailable = False

    def __repr__(self) -> str:
        return f"<MemorySink records={len(self.records)}>"

    def reserve(self) -> None:
        """Raise ``AuditUnavailableError`` when :attr:`unavailable` is set."""
        if self.unavailable:
            raise AuditUnavailableError("the audit memory sink is unavailable")

    def emit(self, record: SealedRecord) -> None:
        """Append *record*."""
        with self._lock:
            self.records.append(record)

    def lines(self) -> bytes:
        """Return every record rendered as JSON lines."""
        return b"".join(render_line(r) for r in self.records)

    def flush(self, timeout: float | None = None) -> None:
        """Nothing to flush."""

    def close(self, timeout: float | None = None) -> None:
        """Nothing to close."""

    def after_fork_in_child(self) -> None:
        """Start the child with no records."""
        self.records = []
        self._lock = threading.Lock()
