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
import threading

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import attrs

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custdata._errors import ConfigurationError, KeyDestroyedError, UnknownKeyError

from ._envelope import Algorithm, header_bytes
from ._files import read_private_file, write_private_file


if TYPE_CHECKING:
    from ._keyring import Keyring

__all__ = [
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


class _DictSubjectKeyStore:
    """Records in a dict behind a lock; subclasses persist after each change."""

    def __init__(self) -> None:
        self._records: dict[bytes, SubjectKeyRecord] = {}
        self._lock = threading.Lock()

    def _persist(self) -> None:
        """Called under the lock after every change."""

    def get(self, subject: bytes) -> SubjectKeyRecord | None:
        """Return the record of ``subject``, or ``None``."""
        return self._records.get(subject)

    def add(self, record: SubjectKeyRecord) -> SubjectKeyRecord:
        """Insert ``record`` unless its subject has one; return the stored record."""
        with self._lock:
            existing = self._records.get(record.subject)
            if existing is not None:
                return existing
            self._records[record.subject] = record
            self._persist()
            return record

    def put(self, record: SubjectKeyRecord) -> None:
        """Insert or replace the record of ``record.subject``."""
        with self._lock:
            self._records[record.subject] = record
            self._persist()

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
    :mod:`custdata.sqlalchemy` for anything shared. The file is::

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


@final
class _SubjectKey:
    """A subject's unwrapped key as a ready AEAD, with its envelope header."""

    __slots__ = ("aead", "expires_at", "header", "key_id")

    def __init__(self, *, key_id: int, aead: AESGCM, expires_at: float) -> None:
        self.key_id = key_id
        self.header = header_bytes(Algorithm.AES_256_GCM_SUBJECT, key_id)
        self.aead = aead
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"<_SubjectKey key_id={self.key_id}>"


@final
class SubjectKeyScope:
    """The per-subject keys of one keyring and one store, with a cache of unwrapped keys.

    Get it from :meth:`Keyring.subject_scope`; ciphers of every column that uses
    the store share it. Unwrapped keys stay cached for the keyring cache's TTL,
    up to ``max_entries`` subjects; a key destroyed by another process stays
    usable here until its cache entry expires.

    Attributes:
        store: The subject key store.
    """

    def __init__(
        self, keyring: Keyring, store: SubjectKeyStore, *, max_entries: int = 65_536
    ) -> None:
        self._keyring = keyring
        self.store = store
        self._max_entries = max_entries
        self._cache: dict[bytes, _SubjectKey] = {}
        self._lock = threading.Lock()

    def _remember(self, subject: bytes, record: SubjectKeyRecord) -> _SubjectKey:
        if record.destroyed:
            raise KeyDestroyedError("the data subject's key was destroyed")
        key = self._keyring._unwrap_subject_key(record)  # noqa: SLF001 - package-internal
        cache = self._keyring.cache
        entry = _SubjectKey(
            key_id=record.key_id, aead=AESGCM(key), expires_at=cache.clock() + cache.ttl
        )
        with self._lock:
            if len(self._cache) >= self._max_entries:
                # Dicts keep insertion order, so this drops the oldest entry.
                self._cache.pop(next(iter(self._cache)))
            self._cache[subject] = entry
        return entry

    def cached(self, subject: bytes) -> _SubjectKey | None:
        """Return ``subject``'s cached unwrapped key, or ``None`` if absent or expired."""
        entry = self._cache.get(subject)
        if entry is not None and self._keyring.cache.clock() < entry.expires_at:
            return entry
        return None

    def write_key(self, subject: bytes) -> _SubjectKey:
        """Return the key to encrypt ``subject``'s values with, creating it if needed.

        Raises:
            KeyDestroyedError: The subject's key was destroyed; no new key is made.
            UnknownKeyError: The key that wraps the subject's key is retired.
        """
        entry = self.cached(subject)
        if entry is not None:
            return entry
        record = self.store.get(subject)
        if record is None:
            record = self.store.add(self._keyring._new_subject_record(subject))  # noqa: SLF001
        return self._remember(subject, record)

    def read_key(self, subject: bytes, key_id: int) -> _SubjectKey:
        """Return the key that decrypts ``subject``'s values under ``key_id``.

        Raises:
            KeyDestroyedError: The subject's key was destroyed.
            UnknownKeyError: The subject has no key, or not the one named.
        """
        entry = self.cached(subject)
        if entry is None:
            record = self.store.get(subject)
            if record is None:
                raise UnknownKeyError("no key exists for the data subject")
            entry = self._remember(subject, record)
        if entry.key_id != key_id:
            raise UnknownKeyError(f"the data subject's key is not key id {key_id}")
        return entry

    def forget(self, subject: bytes) -> None:
        """Drop ``subject``'s unwrapped key from the cache."""
        with self._lock:
            self._cache.pop(subject, None)

    def clear(self) -> None:
        """Drop every unwrapped key from the cache."""
        with self._lock:
            self._cache.clear()

    def __repr__(self) -> str:
        return f"<SubjectKeyScope store={self.store!r} cached={len(self._cache)}>"


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
