"""Column ciphers: randomized AES-256-GCM and deterministic AES-SIV."""

from __future__ import annotations

import os

from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from itertools import repeat
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from custdata._errors import DecryptionError

from . import _aead
from ._cache import Lease
from ._codecs import Codec, _str_decode, encode_all
from ._envelope import (
    GCM_OVERHEAD,
    HEADER_SIZE,
    NONCE_SIZE,
    SIV_OVERHEAD,
    Algorithm,
    Subject,
    context_bytes,
    header_bytes,
    length_prefixed,
    parse_header,
    subject_bytes,
)
from ._kdf import LABEL_FIELD_GCM, LABEL_FIELD_SIV, column_key
from ._legacy import looks_sealed
from ._subject import (
    DESTROYED,
    WITHDRAWN_AT,
    SubjectKeyScope,
    _prepared,
    _SubjectKey,
    checked_key,
)


if TYPE_CHECKING:
    from ._keyring import Keyring

__all__ = ["DeterministicFieldCipher", "FieldCipher"]

T = TypeVar("T")

_urandom = os.urandom

#: The last subject whose associated-data tail was built, and that tail. The
#: columns of one row share a subject, so a one-entry memo saves rebuilding the
#: tail for every value but the first of each row. It is replaced as a whole
#: (one tuple), so threads never see a subject paired with another's tail.
_last_tail: tuple[object, bytes] = (None, b"")

#: The subject keys of the batch being opened: its tails list (held, so its
#: identity is not reused), the scope, and the keys per tail. The columns of
#: one fetched batch are opened one after another with the same tails list.
_batch_memo: ContextVar[tuple[object, object, dict[bytes | None, Any]] | None] = (
    ContextVar("custdata_subject_batch", default=None)
)


class _NoMatch(Exception):  # noqa: N818 - never leaves this module
    """A value the fast path of a batch cannot open; the checked path names why."""


def _no_match() -> bytes:
    raise _NoMatch


#: The keys per tail of the statement being sealed: its tails list (held, so
#: its identity is not reused), the statement's prepared keys, the scope's
#: generation then, and the keys. The columns of one write statement are
#: sealed one after another with the same tails list.
_seal_memo: ContextVar[tuple[object, object, int, dict[bytes, Any]] | None] = (
    ContextVar("custdata_subject_seal", default=None)
)


def _subject_tail(subject: object) -> bytes:
    """Return ``len(subject bytes) ‖ subject bytes`` for the associated data (memoised)."""
    global _last_tail  # noqa: PLW0603 - a one-entry memo, replaced atomically
    last = _last_tail
    if last[0] is subject or (
        last[0].__class__ is subject.__class__ and last[0] == subject
    ):
        return last[1]
    tail = length_prefixed(subject_bytes(subject))
    _last_tail = (subject, tail)
    return tail


def _as_bytes(blob: object) -> bytes:
    if isinstance(blob, (bytearray, memoryview)):
        return bytes(blob)
    raise TypeError("an envelope must be bytes")


#: Reads a stored value that is no envelope as the column's plaintext (the
#: transitional read mode of a column migrated from plaintext).
LegacyReader = Callable[[object], Any]


@final
class _ColumnKey:
    """One data key's derived AEAD for one column, with its associated-data prefixes."""

    __slots__ = ("aad", "aad_subject", "aead", "header", "lease")

    def __init__(
        self,
        *,
        header: bytes,
        aead: Any,
        context: bytes,
        subject_context: bytes,
        lease: Lease | None,
    ) -> None:
        self.header = header
        self.aead = aead
        self.aad = header + context
        self.aad_subject = header + subject_context
        self.lease = lease


class _ColumnCipher(Generic[T]):
    """What the randomized and the deterministic cipher share."""

    __slots__ = (
        "_clock",
        "_codec",
        "_context",
        "_decode",
        "_encode",
        "_keyring",
        "_read",
        "_subject_context",
        "_write",
        "codec",
        "column",
        "table",
    )

    _algorithm: Algorithm

    def __init__(
        self, keyring: Keyring, *, table: str, column: str, codec: Codec[T]
    ) -> None:
        if not table or not column:
            raise ValueError("table and column must be non-empty")
        self.table = table
        self.column = column
        self.codec = codec
        self._keyring = keyring
        self._encode: Callable[[T], bytes] = codec.encode
        self._decode: Callable[[bytes], T] = codec.decode
        self._clock = keyring.cache.clock
        context = context_bytes(table, column)
        self._context = context
        # The subject-bound context has a field count of 3 and ends with the
        # subject's length-prefixed bytes, appended per value.
        self._subject_context = b"\x03" + context[1:]
        self._write: _ColumnKey | None = None
        self._read: dict[bytes, _ColumnKey] = {}

    def _reset(self) -> None:
        """Drop every derived key; called by the keyring when its keys change."""
        self._write = None
        self._read = {}

    def _derive(self, key: bytes) -> Any:
        raise NotImplementedError

    def _column_key(self, key_id: int) -> _ColumnKey:
        material, lease = self._keyring._data_key(key_id)  # noqa: SLF001 - package-internal
        return _ColumnKey(
            header=header_bytes(self._algorithm, key_id),
            aead=self._derive(material),
            context=self._context,
            subject_context=self._subject_context,
            lease=lease,
        )

    def _new_write_key(self) -> _ColumnKey:
        """Derive the primary key's column key: the slow path of every write."""
        entry = self._write = self._column_key(self._keyring.primary_key_id)
        return entry

    def _new_read_key(self, blob: bytes) -> _ColumnKey:
        """Parse the header and derive the column key it names: the slow path of a read."""
        algorithm, key_id = parse_header(blob)
        if algorithm is not self._algorithm:
            raise DecryptionError(
                f"{self} cannot decrypt an envelope of algorithm {algorithm.name}"
            )
        entry = self._column_key(key_id)
        self._read[entry.header] = entry
        return entry

    def _write_key(self) -> _ColumnKey:
        entry = self._write
        if entry is None or (
            entry.lease is not None and entry.lease.spend(self._clock())
        ):
            entry = self._new_write_key()
        return entry

    def _read_key(self, blob: bytes) -> _ColumnKey:
        entry = self._read.get(blob[:HEADER_SIZE])
        if entry is None or (
            entry.lease is not None and entry.lease.spend(self._clock())
        ):
            entry = self._new_read_key(blob)
        return entry

    def _fetched_bytes(self, blob: object) -> bytes:
        """A fetched value as bytes; anything else is no envelope of this column."""
        if isinstance(blob, (bytearray, memoryview)):
            return bytes(blob)
        raise DecryptionError(
            f"cannot decrypt a value of {self.table}.{self.column}: the stored value "
            "is not an envelope (text, a number or another type where binary was expected)"
        )

    def _failed(self) -> DecryptionError:
        return DecryptionError(
            f"cannot decrypt a value of {self.table}.{self.column}: authentication failed"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.table}.{self.column} codec={self.codec.name}>"

    def __str__(self) -> str:
        return f"{type(self).__name__}({self.table}.{self.column})"


@final
class FieldCipher(_ColumnCipher[T]):
    """Encrypts and decrypts the values of one column with AES-256-GCM.

    Get one from :meth:`Keyring.field_cipher`. Each value gets a fresh random
    96-bit nonce, so equal values give unrelated ciphertexts. The envelope is
    described in :mod:`custdata.crypto._envelope` and the security docs; its
    associated data binds the value to the envelope header, the table, the column
    and, when given, the data subject.

    Without a subject key store, values are encrypted under the keyring's primary
    data key (through a per-column HKDF subkey) and decrypted under whichever key
    their header names. With one, each subject's values are encrypted under that
    subject's own data key and ``subject`` is required.

    Attributes:
        table: The table name bound into every value.
        column: The column name bound into every value.
        codec: The codec that frames the plaintext.
        subject_keys: The per-subject key scope, or ``None``.
        legacy: The transitional read mode of a column migrated from
            plaintext, or ``None``: called by :meth:`open_value` (and
            :meth:`open_fetched`) with a fetched value that is no envelope, it
            returns that value as plaintext. An envelope-shaped value that
            fails to authenticate still raises :class:`DecryptionError`.
    """

    __slots__ = ("_fast", "_held_native", "held", "legacy", "read", "subject_keys")

    _algorithm = Algorithm.AES_256_GCM

    #: ``read(blob, tail=None)``: :meth:`open_value`, and ``held(blob, tail,
    #: by_tail)``: :meth:`open_held` (internal, for the SQL layer's one-value
    #: reads). For a str column, the native accelerator's reader: ``read``
    #: opens a value under a column key without a lease in one C call (under
    #: column keys), ``held`` a value under its subject's key a batch fetched
    #: (under per-subject keys); anything else goes to the method (see
    #: :mod:`._aead`).
    read: Callable[..., T]
    held: Callable[..., T | None]

    def __init__(
        self,
        keyring: Keyring,
        *,
        table: str,
        column: str,
        codec: Codec[T],
        subject_keys: SubjectKeyScope | None = None,
        legacy: LegacyReader | None = None,
    ) -> None:
        super().__init__(keyring, table=table, column=column, codec=codec)
        self.subject_keys = subject_keys
        self.legacy = legacy
        #: header -> (key object, prefix, subject prefix) of the read keys
        #: without a lease: what the reader opens by itself.
        self._fast: dict[bytes, tuple[Any, bytes, bytes]] = {}
        self.read, self.held = self.open_value, self.open_held
        #: Whether held is the native reader's (then batches open through it too).
        self._held_native = False
        reader = _aead.reader
        if reader is not None and self._decode is _str_decode:
            native = reader(
                self._fast,
                HEADER_SIZE,
                self.open_value,
                self._subject_context,
                self.open_held,
                None if subject_keys is None else subject_keys._generation,  # noqa: SLF001
            )
            if subject_keys is None:
                self.read = native.read
            else:
                self.held = native.held
                self._held_native = True

    def _new_read_key(self, blob: bytes) -> _ColumnKey:
        entry = super()._new_read_key(blob)
        if entry.lease is None:
            self._fast[entry.header] = (entry.aead, entry.aad, entry.aad_subject)
        return entry

    def _reset(self) -> None:
        super()._reset()
        # The reader holds this dict: emptied, not replaced.
        self._fast.clear()

    def _derive(self, key: bytes) -> Any:
        return _aead.aes_gcm(column_key(key, LABEL_FIELD_GCM, self.table, self.column))

    def encrypt(self, value: T, subject: Subject | None = None) -> bytes:
        """Encrypt one value and return its envelope.

        Args:
            value: The value; its type must match the column's codec.
            subject: The data subject's id (UUID, str, bytes or int) to bind the
                value to; required when the column uses per-subject keys.

        Raises:
            TypeError: ``value`` or ``subject`` has the wrong type, or a subject is
                missing for a per-subject column.
            ValueError: The codec cannot encode ``value``.
            KeyDestroyedError: The subject's key was destroyed.
            UnknownKeyError: The key that wraps the subject's key is retired.
            KeyManagementError: The key provider could not unwrap a data key.
        """
        if self.subject_keys is not None:
            return self._encrypt_for_subject(value, subject)
        entry = self._write
        if entry is None or (
            entry.lease is not None and entry.lease.spend(self._clock())
        ):
            entry = self._new_write_key()
        frame = self._encode(value)
        nonce = _urandom(NONCE_SIZE)
        return _aead.seal_envelope(  # type: ignore[no-any-return]
            entry.aead,
            entry.header,
            nonce,
            frame,
            entry.aad if subject is None else entry.aad_subject,
            None if subject is None else _subject_tail(subject),
        )

    def decrypt(self, blob: bytes, subject: Subject | None = None) -> T:
        """Decrypt one envelope made by :meth:`encrypt` for this column.

        Performs exactly one AEAD open, under the key the header names.

        Args:
            blob: The envelope (bytes, bytearray or memoryview).
            subject: The data subject the value was bound to, if any.

        Raises:
            TypeError: ``blob`` is not bytes-like, or ``subject`` has the wrong type
                or is missing for a per-subject column.
            DecryptionError: The envelope is malformed, truncated, tampered with,
                of an unknown version, or belongs to another column or subject.
            UnknownKeyError: The header names a key the keyring does not hold or
                has retired.
            KeyDestroyedError: The subject's key was destroyed.
            KeyManagementError: The key provider could not unwrap a data key.
        """
        if type(blob) is not bytes:
            blob = _as_bytes(blob)
        if self.subject_keys is not None:
            return self._decrypt_for_subject(blob, subject)
        if len(blob) < GCM_OVERHEAD:
            raise DecryptionError(
                f"cannot decrypt a value of {self.table}.{self.column}: truncated envelope"
            )
        entry = self._read.get(blob[:HEADER_SIZE])
        if entry is None or (
            entry.lease is not None and entry.lease.spend(self._clock())
        ):
            entry = self._new_read_key(blob)
        try:
            frame = _aead.open_envelope(
                entry.aead,
                blob,
                HEADER_SIZE,
                entry.aad if subject is None else entry.aad_subject,
                None if subject is None else _subject_tail(subject),
            )
        except InvalidTag:
            raise self._failed() from None
        return self._decode(frame)

    def encrypt_many(
        self, values: Iterable[T], subjects: Iterable[Subject | None] | None = None
    ) -> list[bytes]:
        """Encrypt many values; equivalent to calling :meth:`encrypt` for each.

        Args:
            values: The values.
            subjects: One subject per value, or ``None`` for no subject binding.

        Raises:
            The same errors as :meth:`encrypt`; ``ValueError`` if ``subjects`` is
            not as long as ``values``.
        """
        values = list(values)
        subject_list = None if subjects is None else list(subjects)
        if subject_list is not None and len(subject_list) != len(values):
            raise ValueError("values and subjects differ in length")
        if self.subject_keys is not None and subject_list is not None and values:
            if None in subject_list:
                raise TypeError(
                    f"{self.table}.{self.column} uses per-subject keys: pass subject="
                )
            return self._seal_for_subjects(
                values, [length_prefixed(subject_bytes(s)) for s in subject_list]
            )
        if self.subject_keys is not None or not values:
            if subject_list is None:
                return [self.encrypt(v) for v in values]
            return [
                self.encrypt(v, s) for v, s in zip(values, subject_list, strict=True)
            ]
        entry = self._write_key()
        if entry.lease is not None:
            return [
                self.encrypt(v, None if subject_list is None else subject_list[i])
                for i, v in enumerate(values)
            ]
        # One call to the system's random source for all nonces is a third
        # cheaper per value than one call each.
        nonces = _urandom(NONCE_SIZE * len(values))
        key, header, seal, aad, encode = (
            entry.aead,
            entry.header,
            _aead.seal_envelope,
            entry.aad,
            self._encode,
        )
        out = []
        if subject_list is None:
            for i, value in enumerate(values):
                nonce = nonces[i * NONCE_SIZE : (i + 1) * NONCE_SIZE]
                out.append(seal(key, header, nonce, encode(value), aad, None))
            return out
        aad_subject = entry.aad_subject
        for i, (value, subject) in enumerate(zip(values, subject_list, strict=True)):
            nonce = nonces[i * NONCE_SIZE : (i + 1) * NONCE_SIZE]
            out.append(
                seal(
                    key,
                    header,
                    nonce,
                    encode(value),
                    aad if subject is None else aad_subject,
                    None if subject is None else _subject_tail(subject),
                )
            )
        return out

    def decrypt_many(
        self, blobs: Iterable[bytes], subjects: Iterable[Subject | None] | None = None
    ) -> list[T]:
        """Decrypt many envelopes of this column, for bulk loads.

        Equivalent to calling :meth:`decrypt` for each, with the per-value work
        hoisted out of the loop for the common case of no subjects.

        Args:
            blobs: The envelopes.
            subjects: One subject per envelope, or ``None`` if none were bound.

        Raises:
            The same errors as :meth:`decrypt`, for the first value that fails;
            ``ValueError`` if ``subjects`` is not as long as ``blobs``.
        """
        if subjects is not None:
            blob_list = list(blobs)
            subject_list = list(subjects)
            if len(subject_list) != len(blob_list):
                raise ValueError("blobs and subjects differ in length")
            if self.subject_keys is not None:
                if None in subject_list:
                    raise TypeError(
                        f"{self.table}.{self.column} uses per-subject keys: pass subject="
                    )
                blob_list = [b if type(b) is bytes else _as_bytes(b) for b in blob_list]
                return self._open_for_subjects(  # type: ignore[return-value]
                    blob_list, [length_prefixed(subject_bytes(s)) for s in subject_list]
                )
            return [
                self.decrypt(b, s) for b, s in zip(blob_list, subject_list, strict=True)
            ]
        if self.subject_keys is not None:
            raise TypeError(
                f"{self.table}.{self.column} uses per-subject keys: pass subjects"
            )
        read = self._read
        decode = self._decode
        clock = self._clock
        out: list[T] = []
        append = out.append
        for blob in blobs:
            if type(blob) is not bytes:
                blob = _as_bytes(blob)  # noqa: PLW2901 - normalised in place
            if len(blob) < GCM_OVERHEAD:
                raise DecryptionError(
                    f"cannot decrypt a value of {self.table}.{self.column}: truncated envelope"
                )
            entry = read.get(blob[:HEADER_SIZE])
            if entry is None or (
                entry.lease is not None and entry.lease.spend(clock())
            ):
                entry = self._new_read_key(blob)
                read = self._read
            try:
                frame = _aead.open_envelope(
                    entry.aead, blob, HEADER_SIZE, entry.aad, None
                )
            except InvalidTag:
                raise self._failed() from None
            append(decode(frame))
        return out

    def open_fetched(
        self, blobs: Sequence[Any], tails: Sequence[bytes | None] | None = None
    ) -> list[T | None]:
        """Decrypt one column of a fetched batch (internal, for the SQL layer).

        Args:
            blobs: The envelopes; ``None`` stays ``None``.
            tails: Per envelope, the length-prefixed canonical subject bytes
                (``len ‖ subject_bytes(subject)``) it is bound to; ``None`` for
                the whole column when no value is bound to a subject. A ``None``
                tail (a row without a subject id) reads as ``None``.

        Raises:
            The same errors as :meth:`decrypt`, for the first value that fails.
        """
        if self.subject_keys is not None or self.legacy is not None:
            if self.subject_keys is not None and tails is None:
                raise TypeError(
                    f"{self.table}.{self.column} uses per-subject keys: pass subjects"
                )
            if self.legacy is None:
                return self._open_for_subjects(blobs, tails)  # type: ignore[arg-type]
            # One value at a time, each through open_value (which reads a
            # legacy plaintext value in the transitional mode).
            if tails is None:
                return [None if b is None else self.open_value(b) for b in blobs]
            return [
                None if blob is None or tail is None else self.open_value(blob, tail)
                for blob, tail in zip(blobs, tails, strict=True)
            ]
        read = self._read
        decode = self._decode
        entry: Any
        if blobs and None not in blobs and (tails is None or None not in tails):
            # The common batch: every value present, under one data key. A
            # value of another type (text, a number) leaves it to the loop
            # below, which names the problem.
            try:
                headers = (
                    {blob[:HEADER_SIZE] for blob in blobs}
                    if min(map(len, blobs)) >= GCM_OVERHEAD
                    else set()
                )
            except TypeError:
                headers = set()
            header = headers.pop() if len(headers) == 1 else None
            if header.__class__ is bytes:
                entry = read.get(header)
                if entry is None:
                    entry = self._new_read_key(blobs[0])
                if entry.lease is None:
                    if tails is not None and len(tails) != len(blobs):
                        raise ValueError("blobs and tails differ in length")
                    # The whole column through C callables (map, repeat, the
                    # key object's own method): no Python code runs per value.
                    n = len(blobs)
                    prefix = entry.aad if tails is None else entry.aad_subject
                    text = decode is _str_decode
                    try:
                        frames: list[Any] = list(
                            map(
                                _aead.open_text if text else _aead.open_envelope,
                                repeat(entry.aead, n),
                                blobs,
                                repeat(HEADER_SIZE, n),
                                repeat(prefix, n),
                                repeat(None, n) if tails is None else tails,
                            )
                        )
                    except InvalidTag:
                        raise self._failed() from None
                    except TypeError:
                        # A bytearray or memoryview: the loop below copies it.
                        frames = []
                    if text and frames:
                        # The str codec's plain frames came back as str; any
                        # other goes to the codec, which names the problem.
                        if any(map(isinstance, frames, repeat(bytes, n))):
                            return [
                                f if f.__class__ is str else decode(f)  # type: ignore[misc]
                                for f in frames
                            ]
                        return frames
                    if frames:
                        return list(map(decode, frames))
        clock = self._clock
        failed = self._failed
        out: list[T | None] = []
        append = out.append
        last_header = b""
        entry = None
        for i, blob in enumerate(blobs):
            if blob is None:
                append(None)
                continue
            tail: bytes | None = None
            if tails is not None:
                tail = tails[i]
                if tail is None:
                    append(None)
                    continue
            if type(blob) is not bytes:
                blob = self._fetched_bytes(blob)  # noqa: PLW2901 - normalised in place
            if len(blob) < GCM_OVERHEAD:
                raise DecryptionError(
                    f"cannot decrypt a value of {self.table}.{self.column}: truncated envelope"
                )
            header = blob[:HEADER_SIZE]
            if header != last_header or (
                entry.lease is not None and entry.lease.spend(clock())
            ):
                entry = read.get(header)
                if entry is None or (
                    entry.lease is not None and entry.lease.spend(clock())
                ):
                    entry = self._new_read_key(blob)
                    read = self._read
                last_header = header
            try:
                frame = _aead.open_envelope(
                    entry.aead,
                    blob,
                    HEADER_SIZE,
                    entry.aad if tail is None else entry.aad_subject,
                    tail,
                )
            except InvalidTag:
                raise failed() from None
            append(decode(frame))
        return out

    def open_value(self, blob: Any, tail: bytes | None = None) -> T:
        """Decrypt one fetched envelope bound to *tail* (see :meth:`open_fetched`).

        This is the one function every fetched value of the column is opened
        through (the batch and one-row paths take a shortcut only for values
        under a cached key). A stored value that is no envelope -- text in a
        binary column, legacy plaintext, empty bytes -- raises
        :class:`DecryptionError`, or, in the transitional read mode
        (:attr:`legacy`), is read as the column's plaintext.

        Raises:
            The same errors as :meth:`decrypt`, with :class:`DecryptionError`
            (never ``TypeError``) for a value that is not bytes.
        """
        if type(blob) is not bytes:
            if self.legacy is not None and not isinstance(
                blob, (bytearray, memoryview)
            ):
                return self.legacy(blob)  # type: ignore[no-any-return]
            blob = self._fetched_bytes(blob)
        entry = self._read.get(blob[:HEADER_SIZE])
        if (
            entry is None
            or entry.lease is not None
            or self.subject_keys is not None
            or len(blob) < GCM_OVERHEAD
        ):
            # Not simply a cached column key without a lease: check it all.
            if self.legacy is not None and not looks_sealed(blob):
                return self.legacy(blob)  # type: ignore[no-any-return]
            if self.subject_keys is not None:
                if tail is None:
                    raise TypeError(
                        f"{self.table}.{self.column} uses per-subject keys: pass subjects"
                    )
                return self._decrypt_for_canonical(blob, tail[4:])
            if len(blob) < GCM_OVERHEAD:
                raise DecryptionError(
                    f"cannot decrypt a value of {self.table}.{self.column}: truncated envelope"
                )
            if entry is None or (
                entry.lease is not None and entry.lease.spend(self._clock())
            ):
                entry = self._new_read_key(blob)
        decode = self._decode
        # The str codec's plain frame comes back as str (open_text); any other
        # frame goes to the codec, which names the problem.
        opener = _aead.open_text if decode is _str_decode else _aead.open_envelope
        try:
            frame = opener(
                entry.aead,
                blob,
                HEADER_SIZE,
                entry.aad if tail is None else entry.aad_subject,
                tail,
            )
        except InvalidTag:
            raise self._failed() from None
        return frame if frame.__class__ is str else decode(frame)  # type: ignore[return-value]

    def seal_many(
        self, values: Sequence[T], tails: Sequence[bytes] | None = None
    ) -> list[bytes]:
        """Encrypt the values of one column of many rows (internal, for the SQL layer).

        Equivalent to :meth:`encrypt` for each, with one call to the system's
        random source for all the nonces.

        Args:
            values: The values (none of them ``None``).
            tails: Per value, the length-prefixed canonical subject bytes
                (``len ‖ subject_bytes(subject)``) to bind it to; ``None`` for
                no subject binding.

        Raises:
            The same errors as :meth:`encrypt`.
        """
        if tails is not None and len(tails) != len(values):
            raise ValueError("values and tails differ in length")
        if self.subject_keys is not None:
            if tails is None:
                raise TypeError(
                    f"{self.table}.{self.column} uses per-subject keys: pass subject="
                )
            return self._seal_for_subjects(values, tails)
        nonces = _urandom(NONCE_SIZE * len(values))
        encode = self._encode
        entry = self._write_key()
        lease = entry.lease
        if lease is None:
            n = len(values)
            cuts = [
                nonces[i : i + NONCE_SIZE] for i in range(0, len(nonces), NONCE_SIZE)
            ]
            frames = encode_all(self.codec, values)
            # The whole column through C callables (map, repeat, the key
            # object's own method): no Python code runs per value.
            return list(
                map(
                    _aead.seal_envelope,
                    repeat(entry.aead, n),
                    repeat(entry.header, n),
                    cuts,
                    frames,
                    repeat(entry.aad if tails is None else entry.aad_subject, n),
                    repeat(None, n) if tails is None else tails,
                )
            )
        out: list[bytes] = []
        append = out.append
        start = 0
        for i, value in enumerate(values):
            if i:
                # Under a lease, each value spends it and may need a new key.
                entry = self._write_key()
            end = start + NONCE_SIZE
            nonce = nonces[start:end]
            start = end
            append(
                _aead.seal_envelope(
                    entry.aead,
                    entry.header,
                    nonce,
                    encode(value),
                    entry.aad if tails is None else entry.aad_subject,
                    None if tails is None else tails[i],
                )
            )
        return out

    def _batch_keys(self, tails: Sequence[bytes | None]) -> dict[bytes | None, Any]:
        """The subject keys of a fetched batch, per tail, fetched once per batch.

        The columns of one batch are opened one after another with the same
        ``tails`` list; the keys the first column fetched serve the others.
        """
        scope: SubjectKeyScope = self.subject_keys  # type: ignore[assignment]
        held = _batch_memo.get()
        if held is not None and held[0] is tails and held[1] is scope:
            return held[2]
        distinct: set[Any] = set(tails)
        distinct.discard(None)
        # Each subject's canonical id is its tail without the length prefix.
        tail_of: dict[bytes, bytes] = {t[4:]: t for t in distinct}
        keys = scope.keys_for(tail_of.keys())
        by_tail: dict[bytes | None, Any] = {tail_of[s]: k for s, k in keys.items()}
        # The scope's generation as of the fetch (see current_held): read
        # after it, since the fetch itself may raise it (a moved shred
        # epoch drops the cache before these keys are checked).
        by_tail[None] = scope._generation[0]  # noqa: SLF001 - package-internal
        _batch_memo.set((tails, scope, by_tail))
        return by_tail

    def held_keys(self, tails: Sequence[bytes | None]) -> dict[bytes | None, Any]:
        """The subject keys of a fetched batch, per tail, in one fetch (internal).

        For the SQL layer, which keeps a batch's values sealed in ORM objects
        and opens each when it is read: the batch's keys are fetched when the
        batch is, and :meth:`open_held` opens its values with them (after
        :meth:`current_held`: a key withdrawn since is never used).
        """
        return self._batch_keys(tails)

    def current_held(self, by_tail: dict[bytes | None, Any]) -> dict[bytes | None, Any]:
        """*by_tail* (a batch's :meth:`held_keys`), its keys checked again if need be (internal).

        The mapping records the key scope's generation when its keys were
        fetched (under ``None``). When the scope has withdrawn a key since
        (a shred in this process, a cleared cache, a shred elsewhere seen by
        a later statement), the batch's keys are fetched again, in place: a
        destroyed subject's value held by an object loaded before the shred
        is then refused, never opened with the key it was loaded with.
        """
        scope = self.subject_keys
        if scope is None:
            return by_tail
        generation = scope._generation[0]  # noqa: SLF001 - package-internal
        if by_tail.get(None) is generation:
            return by_tail
        # The tails (None keys the generation, WITHDRAWN_AT the withdrawn).
        tails = [t for t in by_tail if t]
        keys = scope.keys_for({t[4:] for t in tails})
        withdrawn: set[bytes] = by_tail.get(WITHDRAWN_AT) or set()
        for tail in tails:
            key = keys.get(tail[4:])
            if key is DESTROYED and by_tail[tail] is not DESTROYED:
                withdrawn.add(tail)
            by_tail[tail] = key
        if withdrawn:
            by_tail[WITHDRAWN_AT] = withdrawn
        by_tail[None] = generation
        return by_tail

    def open_held(
        self, blob: Any, tail: bytes | None, by_tail: dict[bytes | None, Any]
    ) -> T | None:
        """Open one per-subject-key value with its batch's keys (internal).

        Raises:
            The same errors as :meth:`open_value`.
        """
        if blob is None or tail is None:
            return None
        if type(blob) is not bytes:
            if not isinstance(blob, (bytearray, memoryview)):
                # Not an envelope at all: open_value names the problem.
                return self.open_value(blob, tail)
            blob = bytes(blob)
        key = self.current_held(by_tail).get(tail)
        if (
            key.__class__ is not tuple
            or key[0] != blob[:HEADER_SIZE]
            or len(blob) < GCM_OVERHEAD
        ):
            key = self._subject_key_of(blob, key)
        decode = self._decode
        # As in open_value: the str codec's plain frame comes back as str.
        opener = _aead.open_text if decode is _str_decode else _aead.open_envelope
        try:
            frame = opener(
                key[1], blob, HEADER_SIZE, key[0] + self._subject_context, tail
            )
        except InvalidTag:
            raise self._failed() from None
        return frame if frame.__class__ is str else decode(frame)  # type: ignore[return-value]

    def _open_for_subjects(
        self, blobs: Sequence[Any], tails: Sequence[bytes | None]
    ) -> list[T | None]:
        """Decrypt a batch under per-subject keys, each subject's key fetched once."""
        return self.open_held_many(blobs, tails, self._batch_keys(tails))

    def open_held_many(
        self,
        blobs: Sequence[Any],
        tails: Sequence[bytes | None],
        by_tail: dict[bytes | None, Any],
    ) -> list[T | None]:
        """:meth:`open_held` for many values with their batch's keys (internal).

        *by_tail* is the :meth:`held_keys` of a batch that holds *tails* (the
        SQL layer opens a large batch a slice of rows at a time with the whole
        batch's keys). The values are opened in one comprehension (natively,
        one ``map`` over the reader's ``held``); the first value it cannot
        open with its subject's key as the header names it (no key, a
        destroyed or another key, not bytes, truncated, tampered) goes
        through :meth:`open_held`, which names what is wrong.

        Raises:
            The same errors as :meth:`open_value`, for the first value that fails.
        """
        if self._held_native:
            # The native reader's held(): one C call per value, each value
            # it does not open itself going to open_held (which names it).
            if len(blobs) != len(tails):
                raise ValueError("blobs and tails differ in length")
            return list(map(self.held, blobs, tails, repeat(by_tail)))
        # As the reader checks per value: no key withdrawn since the fetch.
        by_tail = self.current_held(by_tail)
        get: Any = by_tail.get  # a _SubjectKey tuple, DESTROYED or None
        context = self._subject_context
        open_envelope = _aead.open_envelope
        try:
            frames = [
                None
                if blob is None or tail is None
                else (
                    open_envelope(key[1], blob, HEADER_SIZE, key[0] + context, tail)
                    if blob[:HEADER_SIZE] == (key := get(tail))[0]
                    and key.__class__ is tuple
                    else _no_match()
                )
                for blob, tail in zip(blobs, tails, strict=True)
            ]
        except (_NoMatch, IndexError, TypeError, ValueError, InvalidTag):
            open_held = self.open_held
            return [
                open_held(blob, tail, by_tail)
                for blob, tail in zip(blobs, tails, strict=True)
            ]
        decode = self._decode
        if decode is _str_decode:
            # The str codec's decode, inlined as in open_fetched; a malformed
            # frame goes to the codec below, which names the problem.
            try:
                opened: list[Any] = [  # T is str with the str codec
                    None if f is None else f[1:].decode() if f[0] == 1 else decode(f)
                    for f in frames
                ]
            except (ValueError, IndexError):
                pass
            else:
                return opened
        if None in frames:
            return [None if f is None else decode(f) for f in frames]
        return list(map(decode, frames))  # type: ignore[arg-type]

    def _subject_key_of(self, blob: bytes, key: Any) -> _SubjectKey:
        """Check the envelope's header properly and name what is wrong with it.

        Raises:
            DecryptionError: The envelope is malformed or not a per-subject one.
            KeyDestroyedError: The subject's key was destroyed.
            UnknownKeyError: The subject has no key, or not the one named.
        """
        algorithm, key_id = parse_header(blob)
        if algorithm is not Algorithm.AES_256_GCM_SUBJECT:
            raise DecryptionError(
                f"{self} cannot decrypt an envelope of algorithm {algorithm.name}"
            )
        if len(blob) < GCM_OVERHEAD:
            raise DecryptionError(
                f"cannot decrypt a value of {self.table}.{self.column}: truncated envelope"
            )
        return checked_key(key, key_id)

    def _seal_for_subjects(
        self, values: Sequence[T], tails: Sequence[bytes]
    ) -> list[bytes]:
        """Encrypt a batch under per-subject keys, missing keys made as one batch."""
        scope: SubjectKeyScope = self.subject_keys  # type: ignore[assignment]
        prepared = _prepared.get()
        memo = _seal_memo.get()
        generation = scope._generation[0]  # noqa: SLF001 - package-internal
        if (
            memo is not None
            and memo[0] is tails
            and memo[1] is prepared
            and memo[2] == generation
        ):
            # Another column of the same statement's rows: the same keys.
            by_tail = memo[3]
        else:
            distinct = set(tails)
            keys = scope.write_keys({t[4:] for t in distinct})
            by_tail = {t: keys[t[4:]] for t in distinct}
            if prepared is not None and prepared[0] is scope:
                _seal_memo.set((tails, prepared, generation, by_tail))
        context = self._subject_context
        seal = _aead.seal_envelope
        frames = encode_all(self.codec, values)
        nonces = _urandom(NONCE_SIZE * len(values))
        out: list[bytes] = []
        append = out.append
        start = 0
        for frame, tail in zip(frames, tails, strict=True):
            key = by_tail[tail]
            end = start + NONCE_SIZE
            nonce = nonces[start:end]
            start = end
            header = key[0]
            append(seal(key[1], header, nonce, frame, header + context, tail))
        return out

    def _encrypt_for_subject(self, value: T, subject: object) -> bytes:
        if subject is None:
            raise TypeError(
                f"{self.table}.{self.column} uses per-subject keys: pass subject="
            )
        return self._encrypt_for_canonical(value, subject_bytes(subject))

    def _encrypt_for_canonical(self, value: T, canonical: bytes) -> bytes:
        return self._seal_for_subjects([value], [length_prefixed(canonical)])[0]

    def _decrypt_for_subject(self, blob: bytes, subject: Subject | None) -> T:
        if subject is None:
            raise TypeError(
                f"{self.table}.{self.column} uses per-subject keys: pass subject="
            )
        return self._decrypt_for_canonical(blob, subject_bytes(subject))

    def _decrypt_for_canonical(self, blob: bytes, canonical: bytes) -> T:
        return self._open_for_subjects([blob], [length_prefixed(canonical)])[0]  # type: ignore[return-value]


def open_in_place(
    row: list[Any],
    columns: Sequence[tuple[int, FieldCipher[Any]]],
    tail: bytes | None,
    tails: list[bytes | None] | None = None,
) -> None:
    """Decrypt the envelopes of one fetched row in place (internal, for the SQL layer).

    ``row[position]`` becomes ``cipher.read(row[position], tail)`` (that is,
    :meth:`FieldCipher.open_value`) for
    each (position, cipher) of *columns*; ``None`` stays ``None``. The same
    checks and errors as :meth:`FieldCipher.open_value`, in one call per row:
    a single-row fetch (a ``get``) pays for its decryption and little else.
    *tails* is ``[tail]``, given when the row's subject keys were fetched
    with it already (:meth:`FieldCipher.held_keys`), so they are not fetched
    again.

    Raises:
        The same errors as :meth:`FieldCipher.open_value`.
    """
    if tails is None:
        tails = [tail]
    for position, cipher in columns:
        blob = row[position]
        if blob is None:
            continue
        if type(blob) is not bytes:
            if not isinstance(blob, (bytearray, memoryview)):
                # Not an envelope at all: open_value names the problem.
                row[position] = cipher.open_value(blob, tail)
                continue
            blob = bytes(blob)
        if (
            cipher.subject_keys is not None
            and tail is not None
            and cipher.legacy is None
        ):
            # The row's columns share one key fetch (one batch of one tail).
            row[position] = cipher._open_for_subjects([blob], tails)[0]  # noqa: SLF001
            continue
        row[position] = cipher.read(blob, tail)


@final
class DeterministicFieldCipher(_ColumnCipher[T]):
    """Encrypts the values of one column deterministically, with AES-SIV.

    Get one from :meth:`Keyring.deterministic_field_cipher`. Equal values in the
    same column (and under the same data key and subject) give equal envelopes, so
    the database can compare and index them. That is also what it leaks: anyone
    who sees the column sees which rows hold equal values, and how often each value
    occurs. Prefer :class:`FieldCipher` with a :class:`BlindIndex`; see the
    security docs for the leakage of each mode.

    The associated data is the envelope header and the column's context, so equal
    values in different columns give unrelated envelopes. Envelope:
    ``header(6, algorithm 0x02) ‖ synthetic IV(16) ‖ ciphertext``.

    Attributes:
        table: The table name bound into every value.
        column: The column name bound into every value.
        codec: The codec that frames the plaintext.
    """

    __slots__ = ()

    _algorithm = Algorithm.AES_SIV

    def _derive(self, key: bytes) -> Any:
        return AESSIV(
            column_key(key, LABEL_FIELD_SIV, self.table, self.column, length=64)
        )

    def _seal(self, entry: _ColumnKey, value: T, subject: object) -> bytes:
        context = (
            entry.aad
            if subject is None
            else entry.aad_subject + length_prefixed(subject_bytes(subject))
        )
        # AES-SIV takes the associated data as a vector; the header and the context
        # go in as one component, exactly as the GCM cipher binds them.
        sealed: bytes = entry.aead.encrypt(self._encode(value), [context])
        return entry.header + sealed

    def encrypt(self, value: T, subject: Subject | None = None) -> bytes:
        """Encrypt one value deterministically under the primary data key.

        Args:
            value: The value; its type must match the column's codec.
            subject: A data subject to bind the value to, if any.

        Raises:
            TypeError: ``value`` or ``subject`` has the wrong type.
            ValueError: The codec cannot encode ``value``.
            KeyManagementError: The key provider could not unwrap a data key.
        """
        return self._seal(self._write_key(), value, subject)

    def candidates(self, value: T, subject: Subject | None = None) -> tuple[bytes, ...]:
        """Return the envelopes of ``value`` under every usable data key.

        During a data-key rotation, rows written before it carry the old key's
        envelope; an equality search matches any of these (primary key first).

        Raises:
            The same errors as :meth:`encrypt`.
        """
        return tuple(
            self._seal(self._column_key(k), value, subject)
            for k in self._keyring._usable_data_ids()  # noqa: SLF001
        )

    def decrypt(self, blob: bytes, subject: Subject | None = None) -> T:
        """Decrypt one envelope made by :meth:`encrypt` for this column.

        Raises:
            TypeError: ``blob`` is not bytes-like or ``subject`` has the wrong type.
            DecryptionError: The envelope is malformed, truncated, tampered with,
                of an unknown version, or belongs to another column or subject.
            UnknownKeyError: The header names a key the keyring does not hold or
                has retired.
            KeyManagementError: The key provider could not unwrap a data key.
        """
        if type(blob) is not bytes:
            blob = _as_bytes(blob)
        if len(blob) < SIV_OVERHEAD:
            raise DecryptionError(
                f"cannot decrypt a value of {self.table}.{self.column}: truncated envelope"
            )
        entry = self._read_key(blob)
        context = (
            entry.aad
            if subject is None
            else entry.aad_subject + length_prefixed(subject_bytes(subject))
        )
        try:
            frame = entry.aead.decrypt(blob[HEADER_SIZE:], [context])
        except InvalidTag:
            raise self._failed() from None
        return self._decode(frame)

    def decrypt_many(
        self, blobs: Iterable[bytes], subjects: Sequence[Subject | None] | None = None
    ) -> list[T]:
        """Decrypt many envelopes; equivalent to calling :meth:`decrypt` for each.

        Raises:
            The same errors as :meth:`decrypt`; ``ValueError`` if ``subjects`` is
            not as long as ``blobs``.
        """
        blob_list = list(blobs)
        if subjects is None:
            return [self.decrypt(b) for b in blob_list]
        if len(subjects) != len(blob_list):
            raise ValueError("blobs and subjects differ in length")
        return [self.decrypt(b, s) for b, s in zip(blob_list, subjects, strict=True)]
