"""Per-subject data keys: records, stores and the scope that caches them.

In a per-subject scope every data subject has its own random 256-bit data key.
The key is wrapped (AES-256-GCM) under a subkey of the keyring's primary data key
and kept in a :class:`SubjectKeyStore` that the application persists. Destroying
a subject's key (:meth:`Keyring.shred_subject`) makes every value ever encrypted
for that subject unreadable, in the database and in every backup of it, as long
as the store's backups age out; the store keeps a tombstone so that "destroyed"
stays distinguishable from "never existed".
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import struct
import threading

from collections import OrderedDict
from collections.abc import (
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextvars import ContextVar, Token
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, final, runtime_checkable

import attrs

from custdata._errors import ConfigurationError, KeyDestroyedError, UnknownKeyError
from custdata._util import Admission

from . import _aead
from ._aead import Aead
from ._envelope import Algorithm, header_bytes
from ._files import read_private_file, write_private_file


if TYPE_CHECKING:
    from ._keyring import Keyring

__all__ = [
    "BatchSubjectKeyStore",
    "FileSubjectKeyStore",
    "InMemorySubjectKeyStore",
    "SubjectKeyRecord",
    "SubjectKeyScope",
    "SubjectKeyStore",
]


@final
@attrs.frozen(kw_only=True, eq=False)
class SubjectKeyRecord:
    """One subject's wrapped data key, or the tombstone left when it was destroyed.

    Attributes:
        subject: The subject's canonical id bytes (a type byte and the id; see
            the envelope context in the security docs).
        key_id: The subject key's random 32-bit id, written into each envelope.
        wrapped_key: ``nonce(12) ‖ AES-256-GCM(key) ‖ tag(16)``, or ``None`` once
            destroyed.
        wrapping_key_id: The keyring data key whose subkey wraps the key, or
            ``None`` once destroyed.
        created_at: When the key was created (UTC).
        destroyed_at: When the key was destroyed, or ``None``.
    """

    subject: bytes = attrs.field(repr=False)
    key_id: int
    wrapped_key: bytes | None = attrs.field(repr=False)
    wrapping_key_id: int | None
    created_at: dt.datetime
    destroyed_at: dt.datetime | None = None

    @property
    def destroyed(self) -> bool:
        """Whether this record is a tombstone."""
        return self.wrapped_key is None

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict (bytes in base64, times in ISO 8601)."""
        return {
            "subject": base64.b64encode(self.subject).decode("ascii"),
            "key_id": self.key_id,
            "wrapped_key": None
            if self.wrapped_key is None
            else base64.b64encode(self.wrapped_key).decode("ascii"),
            "wrapping_key_id": self.wrapping_key_id,
            "created_at": self.created_at.isoformat(),
            "destroyed_at": None
            if self.destroyed_at is None
            else self.destroyed_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubjectKeyRecord:
        """Build a record from :meth:`to_json` output.

        Raises:
            KeyError, TypeError, ValueError: ``data`` is malformed.
        """
        wrapped = data["wrapped_key"]
        destroyed_at = data["destroyed_at"]
        return cls(
            subject=base64.b64decode(data["subject"], validate=True),
            key_id=int(data["key_id"]),
            wrapped_key=None
            if wrapped is None
            else base64.b64decode(wrapped, validate=True),
            wrapping_key_id=None
            if data["wrapping_key_id"] is None
            else int(data["wrapping_key_id"]),
            created_at=dt.datetime.fromisoformat(data["created_at"]),
            destroyed_at=None
            if destroyed_at is None
            else dt.datetime.fromisoformat(destroyed_at),
        )


@runtime_checkable
class SubjectKeyStore(Protocol):
    """Where per-subject wrapped keys are persisted.

    Implementations must be safe to call from several threads; a store shared by
    several processes (a SQL table) must make :meth:`add` atomic, so two writers
    racing for a new subject end up with one key.

    A store may also offer the batch methods of :class:`BatchSubjectKeyStore`;
    :class:`SubjectKeyScope` then creates, fetches and destroys the keys of a
    whole batch of subjects at once, and notices shreds made by other processes.
    """

    def get(self, subject: bytes) -> SubjectKeyRecord | None:
        """Return the record of ``subject`` (live or tombstone), or ``None``."""
        ...

    def add(self, record: SubjectKeyRecord) -> SubjectKeyRecord:
        """Insert ``record`` unless its subject already has one; return the stored record."""
        ...

    def put(self, record: SubjectKeyRecord) -> None:
        """Insert or replace the record of ``record.subject`` (re-wrapping, shredding)."""
        ...

    def records(self) -> Iterator[SubjectKeyRecord]:
        """Iterate over every record, live and tombstone."""
        ...


@runtime_checkable
class BatchSubjectKeyStore(SubjectKeyStore, Protocol):
    """A :class:`SubjectKeyStore` that reads, adds and destroys records in batches.

    Every store in custdata implements it. The *shred epoch* is a counter the
    store raises in the same transaction as every :meth:`destroy_many`; a scope
    that sees it change drops its cached keys, so a key destroyed by another
    process is never served from a cache once the destruction has committed.

    ``transaction`` is the store's own notion of an open transaction of the
    application (for the SQL store, a SQLAlchemy ``Connection``); ``None``
    means the store's own, committed at once.
    """

    def lookup(
        self, subjects: Collection[bytes], *, transaction: object = None
    ) -> tuple[dict[bytes, WrappedKey], int]:
        """Return the wrapped keys of those of ``subjects`` that have one, and the shred epoch.

        Each value is ``(subject, key_id, wrapped_key, wrapping_key_id)``, the
        last two ``None`` for a tombstone: what unwrapping needs, without the
        record's times.
        """
        ...

    def add_many(
        self, records: Sequence[SubjectKeyRecord], *, transaction: object = None
    ) -> dict[bytes, SubjectKeyRecord]:
        """Insert each record whose subject has none; return each subject's stored record."""
        ...

    def destroy_many(
        self, subjects: Collection[bytes], *, now: dt.datetime
    ) -> tuple[dict[bytes, SubjectKeyRecord | None], int]:
        """Replace each subject's record by its tombstone and raise the shred epoch.

        One transaction: every tombstone and the new epoch commit together.

        Returns:
            Each subject's record before (``None`` if it had none), and the new
            shred epoch.
        """
        ...

    def watch(
        self, transaction: object, on_end: Callable[[object, int, bool], None]
    ) -> int:
        """Have ``on_end(transaction, depth, kept)`` called as ``transaction`` ends.

        ``depth`` counts the savepoints still open. ``kept`` false: what was
        added deeper than ``depth`` is gone (rolled back; ``depth`` -1 when the
        whole transaction ended, committed or not). ``kept`` true: a savepoint
        was released, so what was added deeper now belongs to ``depth``.

        Returns:
            The savepoint depth now open in ``transaction`` (0 outside any).
        """
        ...


class _DictSubjectKeyStore:
    """Records in a dict behind a lock; subclasses persist after each change."""

    def __init__(self) -> None:
        self._records: dict[bytes, SubjectKeyRecord] = {}
        self._lock = threading.Lock()
        self._epoch = 0

    def _persist(self) -> None:
        """Called under the lock after every change."""

    def get(self, subject: bytes) -> SubjectKeyRecord | None:
        """Return the record of ``subject``, or ``None``."""
        return self._records.get(subject)

    def lookup(
        self, subjects: Collection[bytes], *, transaction: object = None
    ) -> tuple[dict[bytes, WrappedKey], int]:
        """Return the wrapped keys of those of ``subjects`` that have one, and the shred epoch."""
        del transaction  # every change is committed at once
        records = self._records
        found = {
            s: wrapped_key_of(r) for s in subjects if (r := records.get(s)) is not None
        }
        return found, self._epoch

    def add(self, record: SubjectKeyRecord) -> SubjectKeyRecord:
        """Insert ``record`` unless its subject has one; return the stored record."""
        return self.add_many([record])[record.subject]

    def add_many(
        self, records: Sequence[SubjectKeyRecord], *, transaction: object = None
    ) -> dict[bytes, SubjectKeyRecord]:
        """Insert each record whose subject has none, persisting once; return the stored ones."""
        del transaction
        out: dict[bytes, SubjectKeyRecord] = {}
        with self._lock:
            changed = False
            for record in records:
                existing = self._records.get(record.subject)
                if existing is None:
                    self._records[record.subject] = existing = record
                    changed = True
                out[record.subject] = existing
            if changed:
                self._persist()
        return out

    def put(self, record: SubjectKeyRecord) -> None:
        """Insert or replace the record of ``record.subject``."""
        with self._lock:
            self._records[record.subject] = record
            self._persist()

    def destroy_many(
        self, subjects: Collection[bytes], *, now: dt.datetime
    ) -> tuple[dict[bytes, SubjectKeyRecord | None], int]:
        """Replace each subject's record by its tombstone, persisting once; raise the epoch."""
        with self._lock:
            before = {s: self._records.get(s) for s in subjects}
            for subject, record in before.items():
                self._records[subject] = tombstone(subject, record, now)
            self._epoch += 1
            self._persist()
            return before, self._epoch

    def watch(
        self, transaction: object, on_end: Callable[[object, int, bool], None]
    ) -> int:
        """Nothing to watch: every change is committed at once."""
        del transaction, on_end
        return 0

    def replace(self, old: SubjectKeyRecord, new: SubjectKeyRecord) -> bool:
        """Store ``new`` only if ``old.subject``'s record is still ``old``; return whether.

        A compare-and-swap for re-wrapping: a record shredded or re-wrapped in
        between is left as it is, so a tombstone is never overwritten.
        """
        with self._lock:
            if not same_subject_record(self._records.get(old.subject), old):
                return False
            self._records[old.subject] = new
            self._persist()
            return True

    def records(self) -> Iterator[SubjectKeyRecord]:
        """Iterate over a snapshot of every record."""
        with self._lock:
            snapshot = list(self._records.values())
        return iter(snapshot)

    def __len__(self) -> int:
        return len(self._records)


@final
class InMemorySubjectKeyStore(_DictSubjectKeyStore):
    """A :class:`SubjectKeyStore` in a dict; for tests and short-lived processes."""

    def __repr__(self) -> str:
        return f"<InMemorySubjectKeyStore records={len(self._records)}>"


@final
class FileSubjectKeyStore(_DictSubjectKeyStore):
    """A :class:`SubjectKeyStore` in a JSON file (mode 0600), rewritten on each change.

    For one process and modest numbers of subjects; use the SQL table store from
    :mod:`custdata.sqlalchemy` for anything shared. A batch of new subjects
    (:meth:`add_many`) or of shreds (:meth:`destroy_many`) rewrites the file
    once. The file is::

        {"format": "custdata-subject-keys", "version": 1, "records": [...]}

    with each record as :meth:`SubjectKeyRecord.to_json` gives it.

    Args:
        path: The file; created on the first write if it does not exist.

    Raises:
        ConfigurationError: The file exists but is readable by group or others, or
            is not a subject-key file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        if self.path.exists():
            text = read_private_file(self.path, what="subject key file")
            try:
                data = json.loads(text)
                if (
                    data.get("format") != "custdata-subject-keys"
                    or data.get("version") != 1
                ):
                    raise ValueError("not a custdata subject key file of version 1")  # noqa: TRY301
                for item in data["records"]:
                    record = SubjectKeyRecord.from_json(item)
                    self._records[record.subject] = record
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ConfigurationError(
                    f"malformed subject key file ({type(exc).__name__})", path=self.path
                ) from None

    def _persist(self) -> None:
        document = {
            "format": "custdata-subject-keys",
            "version": 1,
            "records": [r.to_json() for r in self._records.values()],
        }
        write_private_file(self.path, json.dumps(document, indent=1) + "\n")

    def __repr__(self) -> str:
        return f"<FileSubjectKeyStore {str(self.path)!r} records={len(self._records)}>"


#: A subject's unwrapped key, ready: ``(header, aead, key_id, expires_at)`` --
#: its envelope header, its ``AESGCM`` object (built once, used for every
#: column: the column is bound through the associated data), its key id and
#: when the cache must forget it. A plain tuple of atoms on purpose: the
#: garbage collector stops tracking it after its first collection, so a full
#: cache adds nothing to the work of a collection. Test for one with
#: ``key.__class__ is tuple`` (a store's lookup rows are never plain tuples
#: here; what else a scope hands out is :data:`DESTROYED` or nothing).
_SubjectKey = tuple[bytes, Aead, int, float]

#: The header of a per-subject envelope without its key id.
_SUBJECT_HEADER = header_bytes(Algorithm.AES_256_GCM_SUBJECT, 0)[:2]

#: A per-subject envelope's header: those two bytes, then the key id.
_HEADER_WITH_ID = struct.Struct(">2sI")


def _subject_key(key_id: int, key: bytes, expires_at: float) -> _SubjectKey:
    """The ready key (see :data:`_SubjectKey`) of an unwrapped subject key."""
    return (
        _HEADER_WITH_ID.pack(_SUBJECT_HEADER, key_id),
        _aead.aes_gcm(key),
        key_id,
        expires_at,
    )


#: What :meth:`SubjectKeyScope.keys_for` maps a subject whose key was destroyed to.
DESTROYED: Final = "destroyed"

#: Where a batch's held keys (:meth:`FieldCipher.held_keys`) note the tails
#: whose keys :meth:`FieldCipher.current_held` found destroyed after the
#: batch was fetched (a set; no tail is empty: it starts with its length).
WITHDRAWN_AT: Final = b""

#: The default number of unwrapped subject keys a scope keeps. Each is an
#: AES-GCM key object holding an OpenSSL context per direction it was used in
#: (with the native accelerator about 1.2 KiB for a key that only decrypted,
#: 2.3 KiB for one that also encrypted; about 2.4 KiB through cryptography's
#: ``AESGCM``), so a full cache takes 80-160 MiB; set
#: :attr:`SubjectKeyScope.max_entries` lower (or higher) to trade memory for
#: cold lookups.
DEFAULT_SUBJECT_KEY_CACHE: Final = 65_536

#: Subjects per store lookup: one ``IN`` list of at most this many ids.
LOOKUP_CHUNK: Final = 500


#: The keys a statement's hook just made ready in its transaction, for the
#: encryption of that statement's values (see :meth:`SubjectKeyScope.write_keys`).
_prepared: ContextVar[tuple[SubjectKeyScope, dict[bytes, _SubjectKey], int] | None] = (
    ContextVar("custdata_prepared_subject_keys", default=None)
)


#: What the SQL layer knows of the fetched batch whose keys are being fetched
#: (see :func:`reading_through`): ``(connection, store, epoch, found)``.
_Through = tuple[
    object, object, "int | None", "Mapping[bytes, WrappedKey | None] | None"
]

_read_through: ContextVar[_Through | None] = ContextVar(
    "custdata_subject_key_read_through", default=None
)


def reading_through(
    connection: object,
    *,
    store: object = None,
    epoch: int | None = None,
    found: Mapping[bytes, WrappedKey | None] | None = None,
) -> Token[_Through | None]:
    """Offer ``connection`` for the key lookups of the batch being read (internal).

    The SQL layer calls it around the decryption of a fetched batch, with the
    connection the batch came through, and hands the token back to
    :func:`done_reading_through`. A store uses the connection only where a
    read on it sees every committed key and no uncommitted one (its
    ``reads_committed_on``); the keys found are then cached as any others.

    Args:
        connection: The batch's connection (``None``: none to offer).
        store: The store whose shred epoch (and keys) the batch's statement read.
        epoch: That epoch, read in the same statement as the rows, on a
            connection the store ``reads_committed_on``: a batch whose keys
            are all cached (or in ``found``) is checked against it, with no
            statement of its own.
        found: Subjects whose wrapped keys the batch's statement read too
            (what :meth:`BatchSubjectKeyStore.lookup` would give; ``None`` for
            a subject without a record).
    """
    return _read_through.set((connection, store, epoch, found))


def done_reading_through(token: Token[_Through | None]) -> None:
    """End what :func:`reading_through` began (internal)."""
    _read_through.reset(token)


#: A key created (or read) inside an open transaction of the application:
#: ``(key, id of the transaction, savepoint depth)`` -- a tuple of atoms, which
#: the garbage collector stops tracking. The transaction itself is kept in
#: :attr:`SubjectKeyScope._pending_txns` while any of its keys is held, so its
#: id cannot be reused meanwhile.
_Held = tuple[_SubjectKey, int, int]


@final
class SubjectKeyScope:
    """The per-subject keys of one keyring and one store, with a bounded cache.

    Get it from :meth:`Keyring.subject_scope`; ciphers of every column that uses
    the store share it.

    **Batches.** Reads ask for the keys of a whole fetched batch at once
    (:meth:`keys_for`): keys not cached are read from the store in one lookup
    per :data:`LOOKUP_CHUNK` subjects and unwrapped in one pass. Writes do the
    same (:meth:`write_keys`) and create the missing subjects' keys with one
    :meth:`~BatchSubjectKeyStore.add_many` per batch; inside an application
    transaction that the store shares, the keys are added in that transaction,
    so they commit or roll back with the rows.

    **Cache.** Up to ``max_entries`` unwrapped keys (default
    :data:`DEFAULT_SUBJECT_KEY_CACHE`), each for at most the keyring cache's
    TTL; the least recently used key is evicted first, and once the cache is
    full only one new key in :data:`~custdata._util.ADMIT_WHEN_FULL` takes a
    place (the others serve their batch and are not kept), so a pass over
    more subjects than it holds keeps most of its hits instead of none. A
    batch larger than the
    cache still reads each subject's key once: the batch works from its own
    mapping, the cache only carries keys over to later batches. Keys of an
    uncommitted transaction are kept apart (never evicted, never used by
    another transaction's writes) until it ends, then dropped.

    **Shreds.** A key destroyed through this scope is dropped at once. Every
    batch served from the cache first checks the store's shred epoch (in the
    same query as the batch's uncached keys; when all are cached, as read by
    the batch's own statement where the SQL layer could add it there, else in
    one small query); when another process has shredded since, the whole
    cache is dropped, so no destroyed key is served after its destruction
    committed.

    Attributes:
        store: The subject key store.
        max_entries: The cache's size (change it at any time, e.g.
            ``keyring.subject_scope(store).max_entries = 16_384``; 1.2 to
            2.4 KiB per key, see :data:`DEFAULT_SUBJECT_KEY_CACHE`).
    """

    def __init__(
        self,
        keyring: Keyring,
        store: SubjectKeyStore,
        *,
        max_entries: int = DEFAULT_SUBJECT_KEY_CACHE,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._keyring = keyring
        self.store = store
        self.max_entries = max_entries
        self._cache: OrderedDict[bytes, _SubjectKey] = OrderedDict()
        self._admit = Admission()
        self._pending: dict[bytes, _Held] = {}
        self._pending_txns: dict[int, object] = {}
        self._epoch: int | None = None
        # Raised whenever a key may have been withdrawn (a shred, a cleared
        # cache, a transaction's held keys dropped): keys handed out at an
        # unchanged generation are all still good.
        # In a one-item list the native reader reads too: a batch's keys
        # held by loaded objects are checked against it when they are read.
        self._generation: list[int] = [0]
        self._lock = threading.RLock()
        self._batched = isinstance(store, BatchSubjectKeyStore)

    # -- the store, batched or not ---------------------------------------------

    def _read(
        self, subjects: Collection[bytes], transaction: object
    ) -> tuple[dict[bytes, Any], int | None]:
        """Look up and unwrap the keys of ``subjects``; also return the shred epoch.

        One store lookup per :data:`LOOKUP_CHUNK` subjects, each chunk
        unwrapped before the next is read: a chunk's rows are freed at once,
        so a large batch never holds every subject's row at the same time
        (fewer live objects, fewer garbage collections).
        """
        store = self.store
        if not self._batched:
            get = store.get
            found_one = {s: r for s in subjects if (r := get(s)) is not None}
            return self._unwrap(
                {s: wrapped_key_of(r) for s, r in found_one.items()}
            ), None
        keys: dict[bytes, Any] = {}
        epoch = 0
        ordered = list(subjects)
        lookup = store.lookup  # type: ignore[attr-defined]
        if transaction is None:
            through = _read_through.get()
            via = None if through is None else through[0]
            if via is not None:
                committed_on = getattr(store, "reads_committed_on", None)
                if committed_on is not None and committed_on(via):
                    # The batch's own connection sees exactly what the store's
                    # would (committed keys, the current epoch): no checkout.
                    transaction = via
        for start in range(0, max(len(ordered), 1), LOOKUP_CHUNK):
            records, epoch = lookup(
                ordered[start : start + LOOKUP_CHUNK], transaction=transaction
            )
            if records:
                keys.update(self._unwrap(records))
            del records
        return keys, epoch

    def _unwrap(self, found: dict[bytes, WrappedKey]) -> dict[bytes, Any]:
        """Unwrap live keys in one pass; tombstones map to :data:`DESTROYED`."""
        keyring = self._keyring
        expires_at = keyring.cache.clock() + keyring.cache.ttl
        entries = keyring._unwrap_subject_entries(  # noqa: SLF001 - package-internal
            found, _SUBJECT_HEADER, expires_at, DESTROYED
        )
        if entries is not None:
            return entries
        plain = keyring._unwrap_subject_keys(found)  # noqa: SLF001 - package-internal
        # _subject_key, inlined: one pass, no call per key.
        aes_gcm = _aead.aes_gcm
        header = _HEADER_WITH_ID.pack
        out: dict[bytes, Any] = {}
        for subject, key in plain.items():
            if key is None:
                out[subject] = DESTROYED
                continue
            key_id = found[subject][1]
            out[subject] = (
                header(_SUBJECT_HEADER, key_id),
                aes_gcm(key),
                key_id,
                expires_at,
            )
        return out

    def _cache_all(self, keys: dict[bytes, Any]) -> None:
        """Put live keys in the cache (under the lock), as room and admission allow.

        Where all fit, all go in; once the cache is full, one new key in
        :data:`~custdata._util.ADMIT_WHEN_FULL` takes the least recently
        used key's place (see :class:`~custdata._util.Admission`), so passes
        over more subjects than the cache holds keep most of its hits.
        """
        cache = self._cache
        limit = self.max_entries
        # A key cached already moves to the most recent end; a new one is
        # put there by its insertion.
        for subject in keys.keys() & cache.keys():
            cache.move_to_end(subject)
        if DESTROYED in keys.values():
            # Tombstones are not cached: a destroyed key is looked up again.
            keys = {s: k for s, k in keys.items() if k.__class__ is tuple}
        while len(cache) > limit:  # max_entries lowered since
            cache.popitem(last=False)
        if len(cache) + len(keys) <= limit:
            cache.update(keys)
            return
        put = self._admit.put
        for subject, key in keys.items():
            if subject in cache:
                cache[subject] = key
            else:
                put(cache, subject, key, limit)

    def _check_epoch(self, epoch: int | None) -> bool:
        """Record the store's epoch (under the lock); return whether the cache was valid.

        Epochs only grow; one read in an older snapshot (an application
        transaction under repeatable read) says nothing about the cache.
        """
        if epoch is None or (self._epoch is not None and epoch <= self._epoch):
            return True
        valid = self._epoch is None and not self._cache
        self._cache.clear()
        self._generation[0] += 1
        self._epoch = epoch
        return valid

    def _from_cache(
        self, subjects: Collection[bytes], transaction: object, *, writing: bool
    ) -> tuple[dict[bytes, Any], dict[bytes, Any], list[bytes]]:
        """Split ``subjects`` into cached keys, held keys and the rest (under the lock).

        A key held for an open transaction serves any read, but a write only
        in that same transaction: a value written elsewhere under it would
        outlive the key if that transaction rolled back.
        """
        cache = self._cache
        pending = self._pending
        if not pending and cache.keys().isdisjoint(subjects):
            # Nothing of the batch cached nor held (a cold cache): every
            # subject is a miss, with no lookup per subject.
            return {}, {}, list(subjects)
        now = self._keyring.cache.clock()
        hits: dict[bytes, Any] = {}
        held: dict[bytes, Any] = {}
        misses: list[bytes] = []
        for subject in subjects:
            key = cache.get(subject)
            if key is not None and now < key[3]:
                cache.move_to_end(subject)
                hits[subject] = key
                continue
            entry = pending.get(subject)
            if entry is not None and (entry[1] == id(transaction) if writing else True):
                # Reads may use any transaction's key: a row they can see was
                # written with a committed key or in their own transaction.
                held[subject] = entry[0]
                continue
            misses.append(subject)
        return hits, held, misses

    def _fetch(
        self, subjects: Collection[bytes], transaction: object, *, writing: bool
    ) -> dict[bytes, Any]:
        """The keys of ``subjects`` (live, :data:`DESTROYED`, or absent), cache checked."""
        with self._lock:
            hits, held, misses = self._from_cache(
                subjects, transaction, writing=writing
            )
        if not misses and (not hits or not self._batched):
            # Without batch methods the store has no shred epoch: it is this
            # process's alone, and shreds through the keyring drop keys at once.
            hits.update(held)
            return hits
        through = _read_through.get() if transaction is None else None
        if through is None or through[1] is not self.store:
            through = None
        read_with_rows = None if through is None else through[2]
        found = None if through is None else through[3]
        keys: dict[bytes, Any]
        epoch: int | None
        if read_with_rows is not None and (
            not misses or (found is not None and all(s in found for s in misses))
        ):
            # Every key cached, or read by the batch's own statement with the
            # shred epoch that checks the cached ones: no statement of the
            # store's runs for this batch.
            records = {s: w for s in misses if (w := found[s]) is not None}  # type: ignore[index]
            keys = self._unwrap(records) if records else {}
            epoch = read_with_rows
        else:
            keys, epoch = self._read(misses, transaction)
        with self._lock:
            stale = not self._check_epoch(epoch)
            if transaction is None and keys:
                self._cache_all(keys)
        if stale and hits:
            # Shredded elsewhere since these were cached: read them again.
            hits, _ = self._read(list(hits), transaction)
            if transaction is None:
                with self._lock:
                    self._cache_all(hits)
            else:
                self._hold(hits, transaction)
        if transaction is not None:
            self._hold(keys, transaction)
        hits.update(held)
        hits.update(keys)
        return hits

    def _hold(self, keys: dict[bytes, Any], transaction: object) -> None:
        """Keep keys read or made inside ``transaction`` apart until it ends."""
        depth = self.store.watch(transaction, self._ended)  # type: ignore[attr-defined]
        owner = id(transaction)
        with self._lock:
            self._pending_txns[owner] = transaction
            pending = self._pending
            for subject, key in keys.items():
                if key.__class__ is tuple:
                    pending[subject] = (key, owner, depth)

    def _ended(self, transaction: object, depth: int, kept: bool) -> None:
        """Drop (or, ``kept``, re-file) the keys ``transaction`` holds deeper than ``depth``."""
        owner = id(transaction)
        with self._lock:
            pending = self._pending
            deeper = [
                s for s, held in pending.items() if held[1] == owner and held[2] > depth
            ]
            if kept:
                for subject in deeper:
                    pending[subject] = (pending[subject][0], owner, depth)
            else:
                for subject in deeper:
                    del pending[subject]
                if deeper:
                    self._generation[0] += 1
            if depth < 0:
                self._pending_txns.pop(owner, None)

    def caches(self, subject: bytes) -> bool:
        """Whether a live key of ``subject`` is in the cache now (a hint, internal).

        The SQL layer asks before it adds a subject's key record to a
        ``get``'s statement: a cached key needs only the shred epoch read
        with the row. A key evicted or expired in between is read from the
        store when the row is opened (:meth:`keys_for`), as any miss is.
        """
        key = self._cache.get(subject)
        return key is not None and self._keyring.cache.clock() < key[3]

    # -- what the ciphers ask ----------------------------------------------------

    def keys_for(self, subjects: Collection[bytes]) -> dict[bytes, Any]:
        """Return the keys that decrypt ``subjects``' values, fetched as one batch.

        Returns:
            Per subject, its key, :data:`DESTROYED`, or nothing when it has no key.

        Raises:
            DecryptionError: A stored key record fails authentication.
            UnknownKeyError: The key that wraps a subject's key is retired.
        """
        return self._fetch(subjects, None, writing=False)

    def write_keys(
        self,
        subjects: Collection[bytes],
        *,
        transaction: object = None,
        fresh: bool = False,
    ) -> dict[bytes, _SubjectKey]:
        """Return the keys to encrypt ``subjects``' values with, creating missing ones.

        Missing keys are made in one pass and added with one
        :meth:`~BatchSubjectKeyStore.add_many` (one statement per batch in the
        SQL store), in ``transaction`` when given.

        With ``fresh`` (an ``INSERT``: its subjects are most likely new) and
        none of the subjects cached, the store is not asked first: a key is
        made for each, and where a subject has a record already (another
        writer's key, or a tombstone) ``add_many`` keeps that one and hands
        it back, so the outcome is the same -- one lookup fewer per batch of
        new subjects, one key made in vain per subject that had one.

        Raises:
            KeyDestroyedError: A subject's key was destroyed; no new key is made.
            UnknownKeyError: The key that wraps a subject's key is retired.
        """
        if transaction is None:
            held = _prepared.get()
            if held is not None and held[0] is self:
                if held[2] == self._generation[0]:
                    # Nothing withdrawn since the statement's hook made them.
                    prepared = held[1]
                    try:
                        return {s: prepared[s] for s in subjects}
                    except KeyError:
                        pass
                ready = self._still_held(held[1], subjects)
                if ready is not None:
                    return ready
        keys: dict[bytes, Any] | None = None
        if fresh and self._batched:
            with self._lock:
                hits, held_here, _ = self._from_cache(
                    subjects, transaction, writing=True
                )
            if not hits:
                # Nothing cached that the shred epoch would have to check.
                keys = held_here
        if keys is None:
            keys = self._fetch(subjects, transaction, writing=True)
        if DESTROYED in keys.values():
            raise KeyDestroyedError("the data subject's key was destroyed")
        missing = [s for s in subjects if s not in keys]
        if missing:
            new, raw = self._keyring._new_subject_records(missing)  # noqa: SLF001
            if self._batched:
                stored = self.store.add_many(new, transaction=transaction)  # type: ignore[attr-defined]
            else:
                stored = {r.subject: self.store.add(r) for r in new}
            # Keys this batch made need no unwrapping; only where another
            # writer's key won the race is the stored one unwrapped.
            expires_at = self._keyring.cache.clock() + self._keyring.cache.ttl
            made: dict[bytes, Any] = {
                r.subject: _subject_key(r.key_id, key, expires_at)
                for r, key in zip(new, raw, strict=True)
                if stored.get(r.subject) is r
            }
            if len(made) < len(new):
                made.update(
                    self._unwrap(
                        {
                            s: wrapped_key_of(r)
                            for s, r in stored.items()
                            if s not in made
                        }
                    )
                )
            if DESTROYED in made.values():
                raise KeyDestroyedError("the data subject's key was destroyed")
            if transaction is None:
                with self._lock:
                    self._cache_all(made)
            else:
                self._hold(made, transaction)
            keys.update(made)
        return keys

    def prepare(
        self,
        subjects: Collection[bytes],
        *,
        transaction: object = None,
        fresh: bool = False,
    ) -> None:
        """:meth:`write_keys` for a statement whose values are encrypted right after.

        The SQL layer calls it once per write statement, in the statement's
        transaction (``fresh`` for an ``INSERT``); the encryption of that
        statement's values then takes the keys from here without asking the
        store again (as long as each is still cached or held: a shred in this
        process withdraws them).
        """
        generation = self._generation[0]
        keys = self.write_keys(subjects, transaction=transaction, fresh=fresh)
        _prepared.set((self, keys, generation))

    def _still_held(
        self, keys: dict[bytes, _SubjectKey], subjects: Collection[bytes]
    ) -> dict[bytes, _SubjectKey] | None:
        """``keys`` of ``subjects`` if each is still cached or held, else ``None``."""
        cache = self._cache
        pending = self._pending
        out = {}
        for subject in subjects:
            key = keys.get(subject)
            if key is None:
                return None
            entry = pending.get(subject)
            if not (
                (entry is not None and entry[0] is key) or cache.get(subject) is key
            ):
                return None
            out[subject] = key
        return out

    def write_key(self, subject: bytes) -> _SubjectKey:
        """Return the key to encrypt ``subject``'s values with, creating it if needed.

        Raises:
            KeyDestroyedError: The subject's key was destroyed; no new key is made.
            UnknownKeyError: The key that wraps the subject's key is retired.
        """
        return self.write_keys((subject,))[subject]

    def read_key(self, subject: bytes, key_id: int) -> _SubjectKey:
        """Return the key that decrypts ``subject``'s values under ``key_id``.

        Raises:
            KeyDestroyedError: The subject's key was destroyed.
            UnknownKeyError: The subject has no key, or not the one named.
        """
        return checked_key(self.keys_for((subject,)).get(subject), key_id)

    def cached(self, subject: bytes) -> _SubjectKey | None:
        """Return ``subject``'s cached unwrapped key, or ``None`` if absent or expired.

        The cache is not checked against the store here; :meth:`keys_for` does.
        """
        entry = self._cache.get(subject)
        if entry is not None and self._keyring.cache.clock() < entry[3]:
            return entry
        return None

    def forget(self, subject: bytes) -> None:
        """Drop ``subject``'s unwrapped key from the cache."""
        self.forget_many((subject,))

    def forget_many(
        self, subjects: Iterable[bytes], *, epoch: int | None = None
    ) -> None:
        """Drop the unwrapped keys of ``subjects`` from the cache.

        Args:
            subjects: The subjects.
            epoch: The store's shred epoch after this process destroyed them;
                when it is the next after the one the cache was checked
                against, nobody else has shredded since and the rest of the
                cache stays.
        """
        with self._lock:
            self._generation[0] += 1
            for subject in subjects:
                self._cache.pop(subject, None)
                self._pending.pop(subject, None)
            if epoch is not None:
                if self._epoch is not None and epoch == self._epoch + 1:
                    self._epoch = epoch
                else:
                    self._cache.clear()
                    self._epoch = epoch

    def clear(self) -> None:
        """Drop every unwrapped key from the cache."""
        with self._lock:
            self._cache.clear()
            self._generation[0] += 1

    def __len__(self) -> int:
        return len(self._cache)

    def __repr__(self) -> str:
        return f"<SubjectKeyScope store={self.store!r} cached={len(self._cache)}>"


#: A subject's wrapped key as a store's lookup returns it:
#: ``(subject, key_id, wrapped_key, wrapping_key_id)``; the last two ``None``
#: for a tombstone.
WrappedKey = Sequence[Any]


def wrapped_key_of(record: SubjectKeyRecord) -> WrappedKey:
    """Return ``record`` as a :data:`WrappedKey`."""
    return (record.subject, record.key_id, record.wrapped_key, record.wrapping_key_id)


def checked_key(key: Any, key_id: int) -> _SubjectKey:
    """Return ``key`` if it is the live key ``key_id``, else raise what is wrong.

    Raises:
        KeyDestroyedError: ``key`` is :data:`DESTROYED`.
        UnknownKeyError: There is no key, or it is not ``key_id``.
    """
    if key.__class__ is tuple:
        if key[2] == key_id:
            return key
        raise UnknownKeyError(f"the data subject's key is not key id {key_id}")
    if key is DESTROYED:
        raise KeyDestroyedError("the data subject's key was destroyed")
    raise UnknownKeyError("no key exists for the data subject")


def tombstone(
    subject: bytes, record: SubjectKeyRecord | None, now: dt.datetime
) -> SubjectKeyRecord:
    """Return the tombstone that replaces ``record`` (``None``: the subject had none)."""
    return SubjectKeyRecord(
        subject=subject,
        key_id=0 if record is None else record.key_id,
        wrapped_key=None,
        wrapping_key_id=None,
        created_at=now if record is None else record.created_at,
        destroyed_at=now
        if record is None or record.destroyed_at is None
        else record.destroyed_at,
    )


def same_subject_record(
    current: SubjectKeyRecord | None, expected: SubjectKeyRecord
) -> bool:
    """Whether ``current`` is still ``expected``: same live key, same wrapping.

    A tombstone or a record re-wrapped since ``expected`` was read is not the same.
    """
    return (
        current is not None
        and current.wrapped_key is not None
        and current.subject == expected.subject
        and current.key_id == expected.key_id
        and current.wrapping_key_id == expected.wrapping_key_id
        and current.wrapped_key == expected.wrapped_key
    )


def new_subject_key_id() -> int:
    """Return a random non-zero 32-bit subject key id."""
    return secrets.randbelow(0xFFFFFFFF) + 1
