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
import stat
import sys
import threading
import time

from pathlib import Path
from typing import IO, Final, Protocol, runtime_checkable

from custdata._errors import AuditUnavailableError, ConfigurationError

from . import _accel
from ._chain import (
    _LINE,
    SealedRecord,
    _hexlify,
    line_format,
    line_parts,
    render_line,
)
from ._compact import V2_HEAD, CompactWriter
from ._watch import CHECK_EVERY, CHECK_INTERVAL_NS, Watcher, watcher


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
_stat = os.stat
_monotonic_ns = time.monotonic_ns


class JsonLinesSink:
    """Write sealed records as JSON lines to a file or a stream.

    A file sink guards the file against three faults:

    * **A torn last line.** A writer that crashed mid-line leaves a line
      without its newline; a new sink on that file starts its first line on a
      fresh line, so the torn bytes stay a line of their own (the verifier
      names it ``CRASH_TRUNCATED``, not tampering).
    * **A short write** (a full disk): the fragment is ended with a newline at
      once, or, if even that fails, before the next line; the record counts as
      not written (the chain does not advance) and :meth:`emit` raises.
    * **The path is no longer the file** (moved, deleted or replaced while the
      application runs): :meth:`emit` checks that the path still names the
      file the sink opened, and fails closed with
      :class:`custdata.AuditUnavailableError` otherwise, so no event goes to an
      unlinked file. The exact check (``stat`` of the path against the opened
      file) runs before the first event, whenever the kernel reported a change
      to the file or its directory since the last check (Linux ``inotify``,
      noticed by the very next event), and at least every 1,024 events and
      every 50 ms; without ``inotify`` it runs before every event.

    Args:
        target: A path (opened for appending, mode 0600 when created) or an open
            text or binary stream (``sys.stdout`` when omitted). Streams are
            flushed after every line; files get one ``os.write`` per line.
        version: The line format: ``1`` (each line a self-contained JSON
            object with the record's envelope and body) or ``2``, the compact
            format (chain ids, key ids and each decision template written once
            per chain, values by reference; about a quarter of the bytes).
            Omitted, a new or empty file gets format 2 and an existing file
            goes on in the format of its first record, so a file written by
            an older release stays in format 1 (a file never mixes formats
            unless asked to); a stream gets format 1, whose every line stands
            alone (a reader of a stream may start anywhere). Both verify with
            the same tools, and so does a file that mixes them.

    Raises:
        ConfigurationError: The path cannot be opened for appending (a
            directory, a read-only directory, a missing parent), or *version*
            is not 1 or 2.
        AuditUnavailableError: From :meth:`emit`, when the write fails or the
            path no longer names the opened file; from :meth:`flush` and
            :meth:`close` when the file cannot be synced or closed.
    """

    name = "jsonl"

    def __init__(
        self,
        target: str | os.PathLike[str] | IO[str] | IO[bytes] | None = None,
        *,
        version: int | None = None,
    ) -> None:
        if version not in (None, 1, 2):
            raise ConfigurationError("the audit JSON-lines format version is 1 or 2")
        #: The line format written: 1 (one self-contained line per record) or
        #: 2 (compact; see the module :mod:`custdata.audit._compact`).
        self.version = 1
        self._compact: CompactWriter | None = None
        self._fd: int | None = None
        self._stream: IO[str] | IO[bytes] | None = None
        self.path: Path | None = None
        #: The (device, inode) of the opened file.
        self._ident: tuple[int, int] = (-1, -1)
        #: Whether the next line must begin with a newline (a torn line before it).
        self._fresh_line = False
        self._regular = False
        self._where = ""
        #: The process's inotify watcher when it watches this file (else ``None``).
        self._watcher: Watcher | None = None
        #: The watcher generation, event count and time of the last exact check.
        self._generation = -1
        self._since = 0
        self._checked_ns = 0
        #: (chain, key id, line format, its head and mid: see line_parts) of
        #: the last chain written (v1 lines).
        self._format: tuple[str, str, bytes, bytes, bytes] = ("", "", b"", b"", b"")
        #: The native accelerator's line renderer, when it runs (looked up once).
        self._native = _accel.native
        if target is None:
            self._stream = sys.stdout
        elif isinstance(target, (str, os.PathLike)):
            self.path = Path(target)
            # The path as a str: stat() takes it without converting a Path.
            self._where = os.fspath(self.path)
            self._open()
            if version is None:
                version = _existing_version(self.path) or 2
        else:
            self._stream = target
        self.version = version or 1
        if self.version == 2:  # noqa: PLR2004 - the compact format
            self._compact = CompactWriter()
        self._closed = False

    def _open(self) -> None:
        """Open :attr:`path` for appending and note whether it ends mid-line."""
        assert self.path is not None  # noqa: S101 - file sinks only
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError(
                f"the audit JSON-lines file {str(self.path)!r} cannot be opened "
                f"for appending ({type(exc).__name__})"
            ) from None
        st = os.fstat(fd)
        torn = stat.S_ISREG(st.st_mode) and st.st_size > 0 and not _ends_line(self.path)
        self._fd = fd
        self._ident = (st.st_dev, st.st_ino)
        self._fresh_line = torn
        # Devices and pipes cannot be synced (and need not be).
        self._regular = stat.S_ISREG(st.st_mode)
        self._watch()

    def _watch(self) -> None:
        """Have the kernel report changes to the file; the next event checks exactly."""
        w = watcher()
        self._watcher = w if w is not None and w.watch(self._where) else None
        self._generation = -1

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
        compact = self._compact
        if fd is not None:
            if compact is not None:
                line = compact.render(record)
            else:
                # render_line, inlined, with the chain's line format made once
                # (and its parts for the native renderer, the same bytes).
                chain, key_ref, fmt, head, mid = self._format
                if chain is not record.chain or key_ref is not record.key_ref:
                    chain, key_ref = record.chain, record.key_ref
                    fmt = line_format(chain, key_ref)
                    head, mid = line_parts(fmt)
                    self._format = (chain, key_ref, fmt, head, mid)
                native = self._native
                line = (
                    fmt
                    % (
                        record.seq,
                        _hexlify(record.prev),
                        _hexlify(record.mac),
                        _hexlify(record.body_sha256),
                        record.body,
                    )
                    if native is None
                    else native.v1_line(
                        head,
                        record.seq,
                        mid,
                        record.prev,
                        record.mac,
                        record.body_sha256,
                        record.body,
                    )
                )
            # The path must still name the opened file: a moved, deleted or
            # replaced file would take this event out of the trail. The exact
            # check runs when the kernel reported a change (or cannot report
            # one) and at least every CHECK_EVERY events and CHECK_INTERVAL_NS.
            w = self._watcher
            if w is None:
                self._check_identity()
            else:
                self._since += 1
                now = _monotonic_ns()
                generation = w.drain() if w.poll(0) else w.generation
                if (
                    generation != self._generation
                    or self._since >= CHECK_EVERY
                    or now - self._checked_ns >= CHECK_INTERVAL_NS
                ):
                    self._check_identity()
                    self._generation, self._since, self._checked_ns = (
                        generation,
                        0,
                        now,
                    )
            fresh = self._fresh_line
            if fresh:
                line = b"\n" + line
            # The hot path: one write on the O_APPEND descriptor.
            try:
                written = _write(fd, line)
            except OSError as exc:
                raise AuditUnavailableError(
                    f"the audit JSON-lines sink cannot write ({type(exc).__name__})"
                ) from None
            if written == len(line):
                if fresh:
                    self._fresh_line = False
                if compact is not None and compact.pending:
                    compact.written()
                return
            self._end_fragment(fd, written)
            raise AuditUnavailableError(
                "the audit JSON-lines sink cannot write (short write); the event "
                "was not recorded"
            )
        line = render_line(record) if compact is None else compact.render(record)
        try:
            if self._stream is not None:
                if isinstance(self._stream, io.TextIOBase):
                    self._stream.write(line.decode("utf-8"))
                else:
                    self._stream.write(line)  # type: ignore[arg-type]
                self._stream.flush()
            if compact is not None:
                compact.written()
        except (OSError, ValueError) as exc:
            raise AuditUnavailableError(
                f"the audit JSON-lines sink cannot write ({type(exc).__name__})"
            ) from None

    def _check_identity(self) -> None:
        """Fail closed unless the path still names the opened file."""
        try:
            st = _stat(self._where)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self._ident:
            raise AuditUnavailableError(
                "the audit JSON-lines file was moved, deleted or replaced; "
                "the event was not recorded"
            )

    def _end_fragment(self, fd: int, written: int) -> None:
        """End the fragment a short write left, so the next line starts fresh."""
        if written == 0:
            return
        try:
            if _write(fd, b"\n") == 1:
                self._fresh_line = False
                return
        except OSError:
            pass
        self._fresh_line = True

    def flush(self, timeout: float | None = None) -> None:
        """Make written lines durable (``fsync`` for files).

        Raises:
            AuditUnavailableError: The file cannot be synced.
        """
        if self._fd is not None and not self._closed and self._regular:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise AuditUnavailableError(
                    f"the audit JSON-lines file cannot be synced ({type(exc).__name__})"
                ) from None

    def close(self, timeout: float | None = None) -> None:
        """Close the file (never the caller's stream).

        Raises:
            AuditUnavailableError: The file cannot be closed (its last lines
                may not be on disk).
        """
        if self._closed:
            return
        self._closed = True
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                raise AuditUnavailableError(
                    f"the audit JSON-lines file cannot be closed ({type(exc).__name__})"
                ) from None

    def after_fork_in_child(self) -> None:
        """Watch the file with the child's own watcher (the descriptor is shared safely)."""
        if self._fd is not None and not self._closed:
            self._watch()

    def reopen(self) -> None:
        """Point the descriptor at the file now at :attr:`path` (after a rewrite).

        :func:`custdata.audit.redact` replaces a JSON-lines file with a
        rewritten copy; a sink that keeps its descriptor would go on appending
        to the replaced file. The new descriptor takes the old one's number
        (``dup2``), so a concurrent write goes to one file or the other, whole.
        """
        if self._fd is None or self.path is None or self._closed:
            return
        old = self._fd
        if self._compact is not None:
            self._compact.reset()
        self._open()
        fd = self._fd
        try:
            os.dup2(fd, old)
        finally:
            os.close(fd)
            self._fd = old

    def writes_to(self, st: os.stat_result) -> bool:
        """Whether this sink's descriptor is open on the file *st* describes."""
        if self._fd is None or self._closed:
            return False
        own = os.fstat(self._fd)
        return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _ends_line(path: Path) -> bool:
    """Whether the file at *path* ends with a newline (unreadable: assume not)."""
    try:
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
    except OSError:
        # A write-only file: start on a fresh line; at worst a blank line,
        # which readers skip.
        return False


#: How much of an existing file is read to find the format of its first record.
_SNIFF = 1 << 16
_V1_HEAD: Final = _LINE[: _LINE.index(b",")]


def _existing_version(path: Path) -> int | None:
    """The format of the first record in the file at *path* (``None``: no record).

    Only the first :data:`_SNIFF` bytes are read; lines that are not records
    (blank, torn, garbage) are passed over.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF)
    except OSError:
        return None
    for line in head.split(b"\n"):
        if line.startswith(_V1_HEAD):
            return 1
        if line.startswith(V2_HEAD):
            return 2
    return None


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
