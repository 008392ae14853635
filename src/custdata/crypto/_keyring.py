"""The keyring: versioned data and index keys, one primary of each, and what derives from them."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import json
import os
import secrets
import struct
import threading

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar, final

import attrs

from cryptography.exceptions import InvalidTag

from custdata._errors import ConfigurationError, DecryptionError, UnknownKeyError

from . import _aead
from ._aead import Aead
from ._blind_index import BlindIndex
from ._cache import DataKeyCache, Lease
from ._cipher import DeterministicFieldCipher, FieldCipher, LegacyReader
from ._codecs import Codec
from ._envelope import Subject, length_prefixed, subject_bytes
from ._files import read_private_file, write_private_file
from ._kdf import LABEL_AUDIT_ROOT, LABEL_SUBJECT_WRAP, hkdf
from ._providers import KeyProvider
from ._subject import (
    BatchSubjectKeyStore,
    SubjectKeyRecord,
    SubjectKeyScope,
    SubjectKeyStore,
    new_subject_key_id,
    same_subject_record,
    tombstone,
)


__all__ = ["KeyInfo", "KeyKind", "KeyStatus", "Keyring"]

T = TypeVar("T")

_KEY_SIZE = 32
_MAX_KEY_ID = 0xFFFFFFFF
_FORMAT = "custdata-keyring"
_U32 = struct.Struct(">I")
_U32_PAIR = struct.Struct(">II")


class KeyStatus(enum.Enum):
    """What a key may still do."""

    PRIMARY = "primary"
    """Encrypts (or indexes) new values, and decrypts."""
    ACTIVE = "active"
    """Decrypts values (or matches index entries) written under it; writes nothing new."""
    RETIRED = "retired"
    """Its material is gone: values under it raise :class:`~custdata.UnknownKeyError`."""


class KeyKind(enum.Enum):
    """What a key is for; the two kinds rotate independently."""

    DATA = "data"
    """Encrypts values (through per-column subkeys) and wraps per-subject keys."""
    INDEX = "index"
    """Keys blind indexes (through per-column subkeys)."""


@final
@attrs.frozen(kw_only=True)
class KeyInfo:
    """What may be shown about a key: never its material.

    Attributes:
        key_id: The key's 32-bit id, as written in envelope headers.
        kind: Data or index key.
        status: Primary, active or retired.
        created_at: When the key was created (UTC).
        retired_at: When it was retired, or ``None``.
    """

    key_id: int
    kind: KeyKind
    status: KeyStatus
    created_at: dt.datetime
    retired_at: dt.datetime | None = None


@attrs.define(kw_only=True, eq=False, repr=False)
class _Entry:
    """A key's metadata and material; mutable, internal to the keyring."""

    key_id: int
    kind: KeyKind
    status: KeyStatus
    created_at: dt.datetime
    retired_at: dt.datetime | None = None
    key: bytes | None = None
    wrapped_key: bytes | None = None
    audit_root: bytes | None = None
    wrapped_audit_root: bytes | None = None

    def info(self) -> KeyInfo:
        return KeyInfo(
            key_id=self.key_id,
            kind=self.kind,
            status=self.status,
            created_at=self.created_at,
            retired_at=self.retired_at,
        )


def _utcnow(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    return now


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _context(key_id: int, kind: str) -> dict[str, str]:
    return {"custdata:key-id": str(key_id), "custdata:kind": kind}


@final
class Keyring:
    """Versioned data keys and index keys, each kind with one primary.

    Build one with :meth:`generate`, :meth:`load` or :meth:`from_json`, never
    directly. Data keys encrypt values through per-column HKDF subkeys, so no AES
    key encrypts two columns; index keys key blind indexes the same way. Each key
    has a random 32-bit id, unique in the keyring, that envelopes name.

    With a :class:`KeyProvider`, the keys are kept wrapped under its
    key-encryption key and unwrapped on demand through a :class:`DataKeyCache`;
    without one, the keys live in the clear in the keyring file, which must be
    readable by its owner only (mode 0600).

    Rotation is three separate operations: :meth:`rewrap` moves every key under a
    new key-encryption key (no value is re-encrypted); :meth:`rotate` adds a new
    primary data key (older keys keep decrypting); :meth:`retire` destroys a
    non-primary key's material, after which its values provably refuse to decrypt.

    The repr shows key ids, never key material. Thread-safe.
    """

    def __init__(
        self,
        entries: list[_Entry],
        *,
        provider: KeyProvider | None = None,
        cache: DataKeyCache | None = None,
    ) -> None:
        self._entries = {e.key_id: e for e in entries}
        if len(self._entries) != len(entries):
            raise ConfigurationError("key ids must be unique", key_path="keys")
        self._provider = provider
        self.cache = DataKeyCache() if cache is None else cache
        self._lock = threading.RLock()
        self._ciphers: dict[
            tuple[Any, ...], FieldCipher[Any] | DeterministicFieldCipher[Any]
        ] = {}
        self._indexes: dict[tuple[Any, ...], BlindIndex] = {}
        self._scopes: dict[int, SubjectKeyScope] = {}
        self._subject_wrappers: dict[int, tuple[Aead, Lease | None]] = {}
        self._audit_roots: dict[int, bytes] = {}
        self._check()

    # -- building, loading, saving -----------------------------------------

    @classmethod
    def generate(
        cls,
        *,
        provider: KeyProvider | None = None,
        cache: DataKeyCache | None = None,
        now: dt.datetime | None = None,
    ) -> Keyring:
        """Return a new keyring with one primary data key and one primary index key.

        Args:
            provider: The key-encryption key to wrap the keys under, or ``None`` to
                keep them in the clear.
            cache: The cache for unwrapped keys; a default one if ``None``.
            now: The creation time to record (aware); defaults to the current time.

        Raises:
            KeyManagementError: The provider could not wrap the new keys.
        """
        created = _utcnow(now)
        cache = DataKeyCache() if cache is None else cache
        taken: set[int] = set()
        entries = [
            _new_entry(kind, created, provider=provider, cache=cache, taken=taken)
            for kind in KeyKind
        ]
        return cls(entries, provider=provider, cache=cache)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        provider: KeyProvider | None = None,
        cache: DataKeyCache | None = None,
    ) -> Keyring:
        """Load a keyring file written by :meth:`save`.

        The whole file is checked now, so a bad keyring fails at start-up. Wrapped
        keys are unwrapped later, when first needed.

        Args:
            path: The keyring file.
            provider: The key-encryption key the file's keys are wrapped under;
                required exactly when the file names one, and it must be that one.
            cache: The cache for unwrapped keys; a default one if ``None``.

        Raises:
            ConfigurationError: The file is missing, readable or writable by group
                or others, malformed, or needs another provider; the error names
                the file and the place in it.
        """
        text = read_private_file(path, what="keyring file")
        return cls.from_json(text, provider=provider, cache=cache, source=path)

    @classmethod
    def from_json(
        cls,
        text: str,
        *,
        provider: KeyProvider | None = None,
        cache: DataKeyCache | None = None,
        source: str | os.PathLike[str] | None = None,
    ) -> Keyring:
        """Build a keyring from the text of a keyring file (see :meth:`save`).

        Args:
            text: The JSON document.
            provider: As for :meth:`load`.
            cache: As for :meth:`load`.
            source: Where the text came from, for error messages.

        Raises:
            ConfigurationError: The document is malformed or needs another provider.
        """
        path = None if source is None else str(source)
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigurationError("not a JSON document", path=path) from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ConfigurationError(
                "not a custdata keyring", path=path, key_path="format"
            )
        if data.get("version") != 1:
            raise ConfigurationError(
                "unsupported keyring version", path=path, key_path="version"
            )
        kek = data.get("kek")
        if kek is not None and not isinstance(kek, str):
            raise ConfigurationError(
                "must be null or a string", path=path, key_path="kek"
            )
        if kek is None and provider is not None:
            raise ConfigurationError(
                "the keyring's keys are not wrapped; load it without a provider and call rewrap()",
                path=path,
                key_path="kek",
            )
        if kek is not None and provider is None:
            raise ConfigurationError(
                f"the keyring's keys are wrapped by {kek}; pass that provider",
                path=path,
            )
        if kek is not None and provider is not None and provider.kek_id != kek:
            raise ConfigurationError(
                f"the keyring's keys are wrapped by {kek}, not by {provider.kek_id}",
                path=path,
                key_path="kek",
            )
        keys = data.get("keys")
        if not isinstance(keys, list):
            raise ConfigurationError("must be a list", path=path, key_path="keys")
        entries = [
            _parse_entry(
                item, wrapped=kek is not None, path=path, key_path=f"keys[{i}]"
            )
            for i, item in enumerate(keys)
        ]
        try:
            return cls(entries, provider=provider, cache=cache)
        except ConfigurationError as exc:
            raise ConfigurationError(
                exc.reason, path=path, key_path=exc.key_path
            ) from None

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
        """Write the keyring to a file of mode 0600, atomically.

        The file is JSON::

            {"format": "custdata-keyring", "version": 1,
             "kek": null | "<provider kek_id>",
             "keys": [{"id": 3735928559, "kind": "data", "status": "primary",
                       "created_at": "2026-11-29T16:00:00+00:00",
                       "key": "<base64 of 32 bytes>"}, ...]}

        Keys appear as ``"key"`` (in the clear) when the keyring has no provider
        and as ``"wrapped_key"`` when it has one. Retired keys keep no material,
        only (for data keys) their audit root, so old audit chains still verify.

        Raises:
            FileExistsError: ``overwrite`` is false and ``path`` exists.
            OSError: The file cannot be written.
        """
        write_private_file(path, self._document(insecure=False), overwrite=overwrite)

    def export_insecure(self) -> str:
        """Return the keyring as a keyring-file document with every key in the clear.

        Dangerous: the result decrypts every value the keyring ever encrypted.
        Use it only to move keys into another key store; :meth:`from_json` reads
        it back.

        Raises:
            KeyManagementError: The provider could not unwrap a key.
        """
        return self._document(insecure=True)

    def _document(self, *, insecure: bool) -> str:
        wrapped = self._provider is not None and not insecure
        keys: list[dict[str, Any]] = []
        with self._lock:
            for entry in self._entries.values():
                item: dict[str, Any] = {
                    "id": entry.key_id,
                    "kind": entry.kind.value,
                    "status": entry.status.value,
                    "created_at": entry.created_at.isoformat(),
                }
                if entry.retired_at is not None:
                    item["retired_at"] = entry.retired_at.isoformat()
                if entry.status is not KeyStatus.RETIRED:
                    if wrapped:
                        item["wrapped_key"] = _b64(entry.wrapped_key)  # type: ignore[arg-type]
                    else:
                        item["key"] = _b64(self._material(entry)[0])
                elif entry.kind is KeyKind.DATA and (
                    entry.audit_root or entry.wrapped_audit_root
                ):
                    if wrapped:
                        item["wrapped_audit_root"] = _b64(entry.wrapped_audit_root)  # type: ignore[arg-type]
                    else:
                        item["audit_root"] = _b64(self.audit_root_key_for(entry.key_id))
                keys.append(item)
        document = {
            "format": _FORMAT,
            "version": 1,
            "kek": None if not wrapped else self._provider.kek_id,  # type: ignore[union-attr]
            "keys": keys,
        }
        return json.dumps(document, indent=2) + "\n"

    # -- what the keyring holds --------------------------------------------

    @property
    def provider(self) -> KeyProvider | None:
        """The key-encryption key the keys are wrapped under, or ``None``."""
        return self._provider

    @property
    def primary_key_id(self) -> int:
        """The id of the primary data key, which encrypts new values."""
        return self._primary(KeyKind.DATA)

    @property
    def primary_index_key_id(self) -> int:
        """The id of the primary index key, which computes new blind-index entries."""
        return self._primary(KeyKind.INDEX)

    @property
    def key_ids(self) -> tuple[int, ...]:
        """The ids of every data key, of any status, oldest first."""
        return tuple(e.key_id for e in self._entries.values() if e.kind is KeyKind.DATA)

    @property
    def index_key_ids(self) -> tuple[int, ...]:
        """The ids of every index key, of any status, oldest first."""
        return tuple(
            e.key_id for e in self._entries.values() if e.kind is KeyKind.INDEX
        )

    @property
    def keys(self) -> tuple[KeyInfo, ...]:
        """What may be shown about every key, oldest first."""
        return tuple(e.info() for e in self._entries.values())

    def key_info(self, key_id: int) -> KeyInfo:
        """Return what may be shown about one key.

        Raises:
            UnknownKeyError: The keyring has no key ``key_id``.
        """
        return self._entry(key_id).info()

    # -- rotation ----------------------------------------------------------

    def rotate(self, *, now: dt.datetime | None = None) -> int:
        """Add a new primary data key and return its id.

        The old primary becomes active: it still decrypts, but encrypts nothing
        new. Nothing is re-encrypted; save the keyring afterwards.

        Raises:
            KeyManagementError: The provider could not wrap the new key.
        """
        return self._add_key(KeyKind.DATA, _utcnow(now))

    def rotate_index_key(self, *, now: dt.datetime | None = None) -> int:
        """Add a new primary index key and return its id.

        Until the old index key is retired, :meth:`BlindIndex.candidates` returns
        digests under both keys, so searches find rows indexed under either while
        the index column is recomputed.

        Raises:
            KeyManagementError: The provider could not wrap the new key.
        """
        return self._add_key(KeyKind.INDEX, _utcnow(now))

    def retire(self, key_id: int, *, now: dt.datetime | None = None) -> None:
        """Destroy a non-primary key's material; values under it then refuse to decrypt.

        The key stays listed with status ``RETIRED``, so a value under it raises
        :class:`~custdata.UnknownKeyError` naming a retired key rather than an
        unknown one. A retired data key keeps its audit root (a one-way HKDF
        output), so audit chains written under it still verify. Re-encrypt the
        values, and re-wrap per-subject keys (:meth:`rewrap_subject_keys`), before
        retiring. Retiring a retired key does nothing.

        Raises:
            UnknownKeyError: The keyring has no key ``key_id``.
            ValueError: ``key_id`` is a primary key.
            KeyManagementError: The provider could not wrap the audit root.
        """
        when = _utcnow(now)
        with self._lock:
            entry = self._entry(key_id)
            if entry.status is KeyStatus.RETIRED:
                return
            if entry.status is KeyStatus.PRIMARY:
                raise ValueError(
                    f"key id {key_id} is a primary key; rotate before retiring it"
                )
            if entry.kind is KeyKind.DATA:
                root = self.audit_root_key_for(key_id)
                entry.audit_root = root
                if self._provider is not None:
                    entry.wrapped_audit_root = self._provider.wrap_key(
                        root, context=_context(key_id, "audit-root")
                    )
            entry.status = KeyStatus.RETIRED
            entry.retired_at = when
            entry.key = None
            entry.wrapped_key = None
            self.cache.discard(key_id)
            self._subject_wrappers.pop(key_id, None)
            self._reset_derived()

    def rewrap(self, provider: KeyProvider) -> None:
        """Wrap every key under a new key-encryption key; no value is re-encrypted.

        Also protects a keyring that had no provider. Save the keyring afterwards;
        it then loads only with the new provider.

        Raises:
            TypeError: ``provider`` is not a :class:`KeyProvider`.
            KeyManagementError: The old provider could not unwrap, or the new one
                could not wrap, a key.
        """
        if not isinstance(provider, KeyProvider):
            raise TypeError("provider must be a KeyProvider")
        with self._lock:
            rewrapped: dict[int, tuple[bytes | None, bytes | None]] = {}
            for entry in self._entries.values():
                wrapped_key = wrapped_root = None
                if entry.status is not KeyStatus.RETIRED:
                    key = self._material(entry)[0]
                    wrapped_key = provider.wrap_key(
                        key, context=_context(entry.key_id, entry.kind.value)
                    )
                elif entry.kind is KeyKind.DATA and (
                    entry.audit_root or entry.wrapped_audit_root
                ):
                    root = self.audit_root_key_for(entry.key_id)
                    wrapped_root = provider.wrap_key(
                        root, context=_context(entry.key_id, "audit-root")
                    )
                rewrapped[entry.key_id] = (wrapped_key, wrapped_root)
            for key_id, (wrapped_key, wrapped_root) in rewrapped.items():
                entry = self._entries[key_id]
                if entry.key is not None and self._provider is None:
                    # The key was in the clear; from now on it lives in the cache.
                    self.cache.put(key_id, entry.key)
                entry.key = None
                entry.wrapped_key = wrapped_key
                entry.wrapped_audit_root = wrapped_root
            self._provider = provider

    # -- ciphers, indexes, subject keys ------------------------------------

    def field_cipher(
        self,
        *,
        table: str,
        column: str,
        codec: Codec[T],
        subject_keys: SubjectKeyStore | None = None,
        legacy: LegacyReader | None = None,
    ) -> FieldCipher[T]:
        """Return the AES-256-GCM cipher of one column (the same object on each call).

        Args:
            table: The table name, bound into every value.
            column: The column name, bound into every value.
            codec: The codec of the column's values (:func:`codec_for`).
            subject_keys: A store of per-subject keys: each subject's values are
                then encrypted under that subject's own key (crypto-shredding).
            legacy: The transitional read mode of a column migrated from
                plaintext: called with each fetched value that is no envelope,
                it returns that value as plaintext (see
                :attr:`FieldCipher.legacy`). ``None`` (the default): such a
                value raises :class:`~custdata.DecryptionError`.

        Raises:
            ValueError: ``table`` or ``column`` is empty.
        """
        cache_key = (
            "gcm",
            table,
            column,
            codec,
            None if subject_keys is None else id(subject_keys),
            legacy,
        )
        with self._lock:
            cipher = self._ciphers.get(cache_key)
            if cipher is None:
                scope = (
                    None if subject_keys is None else self.subject_scope(subject_keys)
                )
                cipher = FieldCipher(
                    self,
                    table=table,
                    column=column,
                    codec=codec,
                    subject_keys=scope,
                    legacy=legacy,
                )
                self._ciphers[cache_key] = cipher
        return cipher  # type: ignore[return-value]

    def deterministic_field_cipher(
        self, *, table: str, column: str, codec: Codec[T]
    ) -> DeterministicFieldCipher[T]:
        """Return the deterministic AES-SIV cipher of one column; leaks equality.

        Equal values of the column encrypt to equal envelopes, which lets the
        database compare them and lets anyone who reads the column see which rows
        are equal. Prefer :meth:`field_cipher` with :meth:`blind_index`.

        Raises:
            ValueError: ``table`` or ``column`` is empty.
        """
        cache_key = ("siv", table, column, codec)
        with self._lock:
            cipher = self._ciphers.get(cache_key)
            if cipher is None:
                cipher = DeterministicFieldCipher(
                    self, table=table, column=column, codec=codec
                )
                self._ciphers[cache_key] = cipher
        return cipher  # type: ignore[return-value]

    def blind_index(
        self,
        *,
        table: str,
        column: str,
        normalizer: Callable[[Any], str | bytes] | None = None,
        bits: int = 256,
    ) -> BlindIndex:
        """Return the blind index of one column (the same object for the same arguments).

        Args:
            table: The table name, bound into the index key.
            column: The column name, bound into the index key.
            normalizer: Applied to each value before hashing
                (:func:`normalize_email`, :func:`normalize_phone`, ...).
            bits: Digest length in bits, 1 to 256; see :class:`BlindIndex` for the
                leakage of truncation.

        Raises:
            TypeError: ``bits`` is not an int.
            ValueError: ``bits`` is out of range, or ``table`` or ``column`` is empty.
        """
        cache_key = (table, column, normalizer, bits)
        with self._lock:
            index = self._indexes.get(cache_key)
            if index is None:
                index = BlindIndex(
                    self, table=table, column=column, normalizer=normalizer, bits=bits
                )
                self._indexes[cache_key] = index
        return index

    def subject_scope(self, store: SubjectKeyStore) -> SubjectKeyScope:
        """Return the per-subject key scope for ``store`` (one per store).

        Raises:
            TypeError: ``store`` is not a :class:`SubjectKeyStore`.
        """
        if not isinstance(store, SubjectKeyStore):
            raise TypeError("store must be a SubjectKeyStore")
        with self._lock:
            scope = self._scopes.get(id(store))
            if scope is None:
                scope = self._scopes[id(store)] = SubjectKeyScope(self, store)
        return scope

    def shred_subject(
        self,
        subject: Subject,
        store: SubjectKeyStore,
        *,
        now: dt.datetime | None = None,
    ) -> bool:
        """Destroy a data subject's key: every value encrypted for it becomes unreadable.

        Leaves a tombstone in ``store``, so later reads raise
        :class:`~custdata.KeyDestroyedError` (not "unknown key") and later writes for
        the subject are refused. Blind-index entries are not keyed per subject:
        clear the subject's index columns too.

        Args:
            subject: The subject's id (UUID, str, bytes or int).
            store: The store holding the subject's key.
            now: When the key was destroyed (aware); defaults to the current time.

        Returns:
            Whether a live key was destroyed (``False`` if the subject had no key
            or it was already destroyed).

        Raises:
            TypeError: ``subject`` has the wrong type.
        """
        return self.shred_subjects([subject], store, now=now) == 1

    def shred_subjects(
        self,
        subjects: Iterable[Subject],
        store: SubjectKeyStore,
        *,
        now: dt.datetime | None = None,
    ) -> int:
        """Destroy the keys of many data subjects as one batch.

        With a :class:`~custdata.crypto.BatchSubjectKeyStore` (every store in
        custdata) every tombstone is written, and the store's shred epoch
        raised, in one transaction, so other processes drop their cached keys
        before they serve another batch; the keys leave this keyring's cache
        at once.

        Args:
            subjects: The subjects' ids (UUID, str, bytes or int).
            store: The store holding their keys.
            now: When the keys were destroyed (aware); defaults to the current time.

        Returns:
            How many live keys were destroyed.

        Raises:
            TypeError: A subject has the wrong type.
        """
        canonical = list(dict.fromkeys(subject_bytes(s) for s in subjects))
        when = _utcnow(now)
        epoch: int | None = None
        if isinstance(store, BatchSubjectKeyStore):
            before, epoch = store.destroy_many(canonical, now=when)
        else:
            before = {s: store.get(s) for s in canonical}
            for subject, record in before.items():
                store.put(tombstone(subject, record, when))
        self.subject_scope(store).forget_many(canonical, epoch=epoch)
        return sum(r is not None and not r.destroyed for r in before.values())

    def rewrap_subject_keys(self, store: SubjectKeyStore) -> int:
        """Re-wrap every live subject key not wrapped by the primary data key.

        Run it after :meth:`rotate` and before retiring the old data key (the
        SQLAlchemy job :func:`custdata.sqlalchemy.reencrypt` does it in batches).
        Each record is replaced on its own, and only if it is still the record
        read (through the store's ``replace`` when it has one), so a subject
        shredded meanwhile stays shredded, and a run stopped midway leaves every
        record wrapped by either its old key or the primary one. Returns how many
        records were re-wrapped.

        Raises:
            UnknownKeyError: A record's wrapping key is retired already.
            DecryptionError: A record fails authentication.
        """
        primary = self.primary_key_id
        replace = getattr(store, "replace", None)
        count = 0
        for record in store.records():
            if record.destroyed or record.wrapping_key_id == primary:
                continue
            new = self._rewrap_subject_record(record)
            if replace is not None:
                count += bool(replace(record, new))
                continue
            if same_subject_record(store.get(record.subject), record):
                store.put(new)
                count += 1
        return count

    def _rewrap_subject_record(self, record: SubjectKeyRecord) -> SubjectKeyRecord:
        """Return ``record`` with its key wrapped by the primary data key instead.

        Raises:
            UnknownKeyError: The record's wrapping key is retired, or it is a
                tombstone.
            DecryptionError: The record fails authentication.
        """
        key = self._unwrap_subject_key(record)
        return self._wrap_subject_key(
            record.subject, record.key_id, key, created_at=record.created_at
        )

    # -- audit -------------------------------------------------------------

    def audit_root_key(self) -> tuple[int, bytes]:
        """Return the primary data key's id and its 32-byte audit root.

        The audit root is HKDF-SHA256 of the data key with the info
        ``b"custdata/audit/root/v1"``; the audit trail derives its chain keys from
        it.

        Raises:
            KeyManagementError: The provider could not unwrap the key.
        """
        key_id = self.primary_key_id
        return key_id, self.audit_root_key_for(key_id)

    def audit_root_key_for(self, key_id: int | str) -> bytes:
        """Return the audit root of data key ``key_id``, to verify older chains.

        Works for retired data keys too (the root is kept on retirement). A key id
        read back from a text record may be given as its decimal string.

        Raises:
            UnknownKeyError: The keyring has no data key ``key_id``, or it was
                retired without an audit root.
            KeyManagementError: The provider could not unwrap the key.
        """
        if isinstance(key_id, str):
            try:
                key_id = int(key_id, 10)
            except ValueError:
                raise UnknownKeyError(
                    "an audit key id must be a decimal key id"
                ) from None
        root = self._audit_roots.get(key_id)
        if root is not None:
            return root
        entry = self._entry(key_id)
        if entry.kind is not KeyKind.DATA:
            raise UnknownKeyError(f"key id {key_id} is not a data key")
        if entry.status is not KeyStatus.RETIRED:
            root = hkdf(self._material(entry)[0], info=LABEL_AUDIT_ROOT)
        elif entry.audit_root is not None:
            root = entry.audit_root
        elif entry.wrapped_audit_root is not None and self._provider is not None:
            root = self._provider.unwrap_key(
                entry.wrapped_audit_root, context=_context(key_id, "audit-root")
            )
        else:
            raise UnknownKeyError(f"key id {key_id} is retired and has no audit root")
        self._audit_roots[key_id] = root
        return root

    # -- internals used by ciphers, indexes and scopes ---------------------

    def _check(self) -> None:
        for kind in KeyKind:
            primaries = [
                e
                for e in self._entries.values()
                if e.kind is kind and e.status is KeyStatus.PRIMARY
            ]
            if len(primaries) != 1:
                raise ConfigurationError(
                    f"needs exactly one primary {kind.value} key", key_path="keys"
                )

    def _entry(self, key_id: int) -> _Entry:
        entry = self._entries.get(key_id)
        if entry is None:
            raise UnknownKeyError(f"the keyring has no key id {key_id}")
        return entry

    def _primary(self, kind: KeyKind) -> int:
        for entry in self._entries.values():
            if entry.kind is kind and entry.status is KeyStatus.PRIMARY:
                return entry.key_id
        raise UnknownKeyError(
            f"the keyring has no primary {kind.value} key"
        )  # pragma: no cover

    def _add_key(self, kind: KeyKind, created_at: dt.datetime) -> int:
        with self._lock:
            entry = _new_entry(
                kind,
                created_at,
                provider=self._provider,
                cache=self.cache,
                taken=set(self._entries),
            )
            key_id = entry.key_id
            for other in self._entries.values():
                if other.kind is kind and other.status is KeyStatus.PRIMARY:
                    other.status = KeyStatus.ACTIVE
            self._entries[key_id] = entry
            self._reset_derived()
        return key_id

    def _reset_derived(self) -> None:
        for cipher in self._ciphers.values():
            cipher._reset()  # noqa: SLF001 - package-internal
        for index in self._indexes.values():
            index._reset()  # noqa: SLF001
        for scope in self._scopes.values():
            scope.clear()

    def _material(self, entry: _Entry) -> tuple[bytes, Lease | None]:
        if entry.status is KeyStatus.RETIRED:
            raise UnknownKeyError(f"key id {entry.key_id} is retired")
        if entry.key is not None:
            return entry.key, None
        provider = self._provider
        wrapped = entry.wrapped_key
        if (
            provider is None or wrapped is None
        ):  # pragma: no cover - excluded by _check and load
            raise UnknownKeyError(f"key id {entry.key_id} has no material")
        context = _context(entry.key_id, entry.kind.value)
        return self.cache.get(
            entry.key_id, lambda: provider.unwrap_key(wrapped, context=context)
        )

    def _keyed(self, key_id: int, kind: KeyKind) -> tuple[bytes, Lease | None]:
        entry = self._entries.get(key_id)
        if entry is None or entry.kind is not kind:
            raise UnknownKeyError(f"the keyring has no {kind.value} key id {key_id}")
        return self._material(entry)

    def _data_key(self, key_id: int) -> tuple[bytes, Lease | None]:
        return self._keyed(key_id, KeyKind.DATA)

    def _index_key(self, key_id: int) -> tuple[bytes, Lease | None]:
        return self._keyed(key_id, KeyKind.INDEX)

    def _usable(self, kind: KeyKind) -> tuple[int, ...]:
        entries = [
            e
            for e in self._entries.values()
            if e.kind is kind and e.status is not KeyStatus.RETIRED
        ]
        entries.sort(key=lambda e: e.status is not KeyStatus.PRIMARY)
        return tuple(e.key_id for e in entries)

    def _usable_data_ids(self) -> tuple[int, ...]:
        return self._usable(KeyKind.DATA)

    def _usable_index_ids(self) -> tuple[int, ...]:
        return self._usable(KeyKind.INDEX)

    def _subject_wrapper(self, key_id: int) -> Aead:
        cached = self._subject_wrappers.get(key_id)
        if cached is not None and (
            cached[1] is None or cached[1].spend(self.cache.clock()) is False
        ):
            return cached[0]
        material, lease = self._data_key(key_id)
        aead: Aead = _aead.aes_gcm(hkdf(material, info=LABEL_SUBJECT_WRAP))
        self._subject_wrappers[key_id] = (aead, lease)
        return aead

    @staticmethod
    def _subject_wrap_aad(subject: bytes, key_id: int, wrapping_key_id: int) -> bytes:
        return (
            LABEL_SUBJECT_WRAP
            + length_prefixed(subject)
            + _U32.pack(key_id)
            + _U32.pack(wrapping_key_id)
        )

    def _wrap_subject_key(
        self, subject: bytes, key_id: int, key: bytes, *, created_at: dt.datetime
    ) -> SubjectKeyRecord:
        wrapping_key_id = self.primary_key_id
        nonce = os.urandom(12)
        aad = self._subject_wrap_aad(subject, key_id, wrapping_key_id)
        wrapped = nonce + self._subject_wrapper(wrapping_key_id).encrypt(
            nonce, key, aad
        )
        return SubjectKeyRecord(
            subject=subject,
            key_id=key_id,
            wrapped_key=wrapped,
            wrapping_key_id=wrapping_key_id,
            created_at=created_at,
        )

    def _new_subject_records(
        self, subjects: Collection[bytes]
    ) -> tuple[list[SubjectKeyRecord], list[bytes]]:
        """New random keys for ``subjects``, wrapped by the primary data key in one pass.

        Returns:
            The records, and the plain keys in the same order (for the cache).
        """
        wrapping_key_id = self.primary_key_id
        seal = self._subject_wrapper(wrapping_key_id).encrypt
        created_at = _utcnow(None)
        # One call to the system's random source for every key, nonce and key
        # id (a key id of 0, once in 2**32, is drawn again: ids are non-zero).
        size = _KEY_SIZE + 12 + 4
        material = os.urandom(size * len(subjects))
        records = []
        keys = []
        pack = _U32.pack
        wrapping = pack(wrapping_key_id)
        for i, subject in enumerate(subjects):
            at = i * size
            key = material[at : at + _KEY_SIZE]
            nonce = material[at + _KEY_SIZE : at + _KEY_SIZE + 12]
            key_id = int.from_bytes(material[at + _KEY_SIZE + 12 : at + size], "big")
            if not key_id:
                key_id = new_subject_key_id()
            # _subject_wrap_aad, inlined (no two calls per new key).
            aad = (
                LABEL_SUBJECT_WRAP
                + pack(len(subject))
                + subject
                + pack(key_id)
                + wrapping
            )
            keys.append(key)
            records.append(
                SubjectKeyRecord(
                    subject=subject,
                    key_id=key_id,
                    wrapped_key=nonce + seal(nonce, key, aad),
                    wrapping_key_id=wrapping_key_id,
                    created_at=created_at,
                )
            )
        return records, keys

    def _unwrap_subject_key(self, record: SubjectKeyRecord) -> bytes:
        if record.wrapped_key is None or record.wrapping_key_id is None:
            raise UnknownKeyError(
                "the data subject's key was destroyed"
            )  # pragma: no cover - checked by callers
        return self._unwrap_subject_parts(
            record.subject, record.key_id, record.wrapped_key, record.wrapping_key_id
        )

    def _unwrap_subject_keys(
        self, found: Mapping[bytes, Sequence[Any]]
    ) -> dict[bytes, bytes | None]:
        """Unwrap many subjects' keys in one pass (``None`` for a tombstone).

        ``found`` maps each subject to ``(subject, key_id, wrapped_key,
        wrapping_key_id)``. The wrapping key is resolved once per wrapping key
        id, not once per subject.

        Raises:
            DecryptionError: A record fails authentication.
            UnknownKeyError: A wrapping key is retired.
        """
        pack = _U32.pack
        ids = _U32_PAIR.pack
        join = b"".join
        # The record's nonce || ciphertext is an envelope without a header.
        open_wrapped = _aead.open_envelope
        wrappers: dict[int, Any] = {}
        out: dict[bytes, bytes | None] = {}
        try:
            for subject, w in found.items():
                key_id, wrapped, wrapping = w[1], w[2], w[3]
                if wrapped is None or wrapping is None:
                    out[subject] = None
                    continue
                if wrapped.__class__ is not bytes:
                    wrapped = bytes(wrapped)  # a driver's memoryview
                wrapper = wrappers.get(wrapping)
                if wrapper is None:
                    wrapper = wrappers[wrapping] = self._subject_wrapper(wrapping)
                # _subject_wrap_aad, inlined: one call per key, not four.
                out[subject] = open_wrapped(
                    wrapper,
                    wrapped,
                    0,
                    join(
                        (
                            LABEL_SUBJECT_WRAP,
                            pack(len(subject)),
                            subject,
                            ids(key_id, wrapping),
                        )
                    ),
                    None,
                )
        except (InvalidTag, ValueError, TypeError, struct.error):
            # (struct.error: a key id or wrapping id that is no 32-bit number;
            # TypeError: a wrapped key that is no bytes, as a column of
            # another type would read.)
            raise DecryptionError(
                "the data subject's key record failed authentication"
            ) from None
        return out

    def _unwrap_subject_entries(
        self,
        found: Mapping[bytes, Sequence[Any]],
        head: bytes,
        expires_at: float,
        destroyed: object,
    ) -> dict[bytes, Any] | None:
        """:meth:`_unwrap_subject_keys` straight into a key scope's cache entries, natively.

        Each live record becomes ``(head + u32(key_id), key object, key_id,
        expires_at)``, a tombstone *destroyed*, in one C call for the whole
        batch (``_aead.unwrap_keys``). ``None`` without the native
        accelerator, or where it declines a record it does not expect
        (another type, a key id out of range): then the caller unwraps in
        Python, which names what is wrong.

        Raises:
            DecryptionError: A record fails authentication.
            UnknownKeyError: A wrapping key is retired.
        """
        unwrap = _aead.unwrap_keys
        if unwrap is None:
            return None
        wrappers: dict[Any, Any] = {}
        for w in found.values():
            wrapping = w[3]
            if wrapping is not None and w[2] is not None and wrapping not in wrappers:
                wrappers[wrapping] = self._subject_wrapper(wrapping)
        try:
            return unwrap(  # type: ignore[no-any-return]
                found, wrappers, LABEL_SUBJECT_WRAP, head, expires_at, destroyed
            )
        except InvalidTag:
            raise DecryptionError(
                "the data subject's key record failed authentication"
            ) from None

    def _unwrap_subject_parts(
        self, subject: bytes, key_id: int, wrapped: bytes, wrapping_key_id: int
    ) -> bytes:
        aad = self._subject_wrap_aad(subject, key_id, wrapping_key_id)
        try:
            return self._subject_wrapper(wrapping_key_id).decrypt(
                wrapped[:12], wrapped[12:], aad
            )
        except (InvalidTag, ValueError):
            raise DecryptionError(
                "the data subject's key record failed authentication"
            ) from None

    def __repr__(self) -> str:
        kek = "none" if self._provider is None else self._provider.kek_id
        return (
            f"<Keyring primary_key_id={self.primary_key_id} data_keys={len(self.key_ids)} "
            f"index_keys={len(self.index_key_ids)} kek={kek!r}>"
        )


def _new_entry(
    kind: KeyKind,
    created_at: dt.datetime,
    *,
    provider: KeyProvider | None,
    cache: DataKeyCache,
    taken: set[int],
) -> _Entry:
    """Make a new primary key with a fresh id; wrap it and cache it if there is a provider."""
    key_id = secrets.randbelow(_MAX_KEY_ID) + 1
    while key_id in taken:
        key_id = secrets.randbelow(_MAX_KEY_ID) + 1  # pragma: no cover - 1 in 2**32
    taken.add(key_id)
    key = os.urandom(_KEY_SIZE)
    entry = _Entry(
        key_id=key_id, kind=kind, status=KeyStatus.PRIMARY, created_at=created_at
    )
    if provider is None:
        entry.key = key
    else:
        entry.wrapped_key = provider.wrap_key(key, context=_context(key_id, kind.value))
        cache.put(key_id, key)
    return entry


def _parse_entry(
    item: object, *, wrapped: bool, path: str | None, key_path: str
) -> _Entry:
    """Check one key of a keyring document and build its entry."""

    def fail(reason: str, field: str | None = None) -> ConfigurationError:
        return ConfigurationError(
            reason,
            path=path,
            key_path=key_path if field is None else f"{key_path}.{field}",
        )

    if not isinstance(item, dict):
        raise fail("must be an object")
    key_id = item.get("id")
    if (
        isinstance(key_id, bool)
        or not isinstance(key_id, int)
        or not 1 <= key_id <= _MAX_KEY_ID
    ):
        raise fail("must be an integer from 1 to 2**32 - 1", "id")
    try:
        kind = KeyKind(item.get("kind"))
    except ValueError:
        raise fail("must be 'data' or 'index'", "kind") from None
    try:
        status = KeyStatus(item.get("status"))
    except ValueError:
        raise fail("must be 'primary', 'active' or 'retired'", "status") from None
    times: dict[str, dt.datetime | None] = {}
    for field in ("created_at", "retired_at"):
        value = item.get(field)
        if value is None and field == "retired_at":
            times[field] = None
            continue
        try:
            parsed = dt.datetime.fromisoformat(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise fail("must be an ISO 8601 time", field) from None
        if parsed.tzinfo is None:
            raise fail("must include a UTC offset", field)
        times[field] = parsed

    def material(field: str, size: int | None) -> bytes | None:
        value = item.get(field)
        if value is None:
            return None
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise fail("must be base64", field) from None
        if size is not None and len(raw) != size:
            raise fail(f"must be {size} bytes", field)
        return raw

    entry = _Entry(
        key_id=key_id,
        kind=kind,
        status=status,
        created_at=times["created_at"],  # type: ignore[arg-type]
        retired_at=times["retired_at"],
    )
    if status is KeyStatus.RETIRED:
        if "key" in item or "wrapped_key" in item:
            raise fail("a retired key must not keep its material")
        entry.audit_root = material("audit_root", _KEY_SIZE)
        entry.wrapped_audit_root = material("wrapped_audit_root", None)
    elif wrapped:
        entry.wrapped_key = material("wrapped_key", None)
        if entry.wrapped_key is None or "key" in item:
            raise fail("the keyring is wrapped: needs 'wrapped_key' and no 'key'")
    else:
        entry.key = material("key", _KEY_SIZE)
        if entry.key is None or "wrapped_key" in item:
            raise fail("the keyring is not wrapped: needs 'key' and no 'wrapped_key'")
    return entry
