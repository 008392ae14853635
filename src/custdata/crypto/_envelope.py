"""The binary envelope every encrypted value is stored in, and its context.

Envelope version 1, all integers big-endian::

    offset  size  field
    0       1     version         0x01
    1       1     algorithm       0x01 AES-256-GCM, keyring data key (random nonce)
                                  0x02 AES-SIV-512, keyring data key (deterministic)
                                  0x03 AES-256-GCM, per-subject data key
    2       4     key id          unsigned 32-bit id of the data key
    6       12    nonce           algorithms 0x01 and 0x03 only
    18      n     ciphertext      the encrypted plaintext frame
    18+n    16    tag             GCM authentication tag

For AES-SIV (0x02) the 16-byte synthetic IV follows the header directly and the
ciphertext comes after it: ``header(6) ‖ siv(16) ‖ ciphertext``.

The associated data of every value is ``header(6) ‖ context`` where the context is
a canonical, length-prefixed encoding of where the value lives::

    count(1) ‖ len(table)(4) ‖ table(UTF-8) ‖ len(column)(4) ‖ column(UTF-8)
             [ ‖ len(subject)(4) ‖ subject ]

``count`` is 2 without a subject and 3 with one. The subject is encoded with a
one-byte type prefix so that equal-looking ids of different types never collide:
``b"u"`` + 16 bytes for a UUID, ``b"s"`` + UTF-8 for a str, ``b"b"`` + the bytes
for bytes and ``b"i"`` + a signed big-endian integer for an int.
"""

from __future__ import annotations

import enum
import struct
import uuid

from custdata._errors import DecryptionError


__all__ = [
    "GCM_OVERHEAD",
    "HEADER_SIZE",
    "NONCE_SIZE",
    "SIV_OVERHEAD",
    "TAG_SIZE",
    "VERSION_1",
    "Algorithm",
    "Subject",
    "context_bytes",
    "envelope_key_id",
    "header_bytes",
    "length_prefixed",
    "parse_header",
    "subject_bytes",
]

#: The only envelope version so far.
VERSION_1 = 1
#: Bytes of version, algorithm and key id.
HEADER_SIZE = 6
#: Bytes of a GCM nonce.
NONCE_SIZE = 12
#: Bytes of a GCM tag or an AES-SIV synthetic IV.
TAG_SIZE = 16
#: Bytes an AES-256-GCM envelope adds to its plaintext frame (34).
GCM_OVERHEAD = HEADER_SIZE + NONCE_SIZE + TAG_SIZE
#: Bytes an AES-SIV envelope adds to its plaintext frame (22).
SIV_OVERHEAD = HEADER_SIZE + TAG_SIZE

#: A data-subject id as the library accepts it.
Subject = uuid.UUID | str | bytes | int

_MAX_KEY_ID = 0xFFFFFFFF
_U32 = struct.Struct(">I")


class Algorithm(enum.IntEnum):
    """The algorithm byte of an envelope."""

    AES_256_GCM = 1
    """AES-256-GCM with a random 96-bit nonce under a keyring data key."""
    AES_SIV = 2
    """AES-SIV (RFC 5297, 512-bit key): deterministic, under a keyring data key."""
    AES_256_GCM_SUBJECT = 3
    """AES-256-GCM with a random 96-bit nonce under a per-subject data key."""


_MIN_SIZE = {
    Algorithm.AES_256_GCM: GCM_OVERHEAD,
    Algorithm.AES_SIV: SIV_OVERHEAD,
    Algorithm.AES_256_GCM_SUBJECT: GCM_OVERHEAD,
}


def header_bytes(algorithm: Algorithm, key_id: int) -> bytes:
    """Return the 6-byte envelope header for ``algorithm`` and ``key_id``.

    Raises:
        ValueError: ``key_id`` does not fit in an unsigned 32-bit integer.
    """
    if not 0 <= key_id <= _MAX_KEY_ID:
        raise ValueError("key id must be an unsigned 32-bit integer")
    return bytes((VERSION_1, algorithm)) + _U32.pack(key_id)


def parse_header(blob: bytes) -> tuple[Algorithm, int]:
    """Parse and check an envelope's header.

    Checks the version, the algorithm and that the envelope is at least as long
    as that algorithm's fixed overhead.

    Returns:
        The algorithm and the key id.

    Raises:
        DecryptionError: The envelope is malformed, truncated or of an unknown
            version or algorithm.
    """
    if len(blob) < HEADER_SIZE or blob[0] != VERSION_1:
        raise DecryptionError("not a custdata envelope of a known version")
    try:
        algorithm = Algorithm(blob[1])
    except ValueError:
        raise DecryptionError("unknown envelope algorithm") from None
    if len(blob) < _MIN_SIZE[algorithm]:
        raise DecryptionError("truncated envelope")
    return algorithm, _U32.unpack_from(blob, 2)[0]


def envelope_key_id(blob: bytes | bytearray | memoryview) -> int:
    """Return the key id named in an envelope's header, without decrypting it.

    The key id sits at the fixed offset 2..6, so a database can also index or count
    it with a substring expression.

    Raises:
        TypeError: ``blob`` is not bytes-like.
        DecryptionError: The envelope is malformed, truncated or of an unknown
            version or algorithm.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError("envelope must be bytes")
    return parse_header(blob if isinstance(blob, bytes) else bytes(blob))[1]


def length_prefixed(data: bytes) -> bytes:
    """Return ``len(data)`` as 4 big-endian bytes followed by ``data``."""
    return _U32.pack(len(data)) + data


def subject_bytes(subject: object) -> bytes:
    """Return the canonical, type-prefixed encoding of a data-subject id.

    Raises:
        TypeError: ``subject`` is not a UUID, str, bytes or int.
    """
    if isinstance(subject, uuid.UUID):
        return b"u" + subject.bytes
    if isinstance(subject, str):
        return b"s" + subject.encode("utf-8")
    if isinstance(subject, (bytes, bytearray, memoryview)):
        return b"b" + bytes(subject)
    if isinstance(subject, int) and not isinstance(subject, bool):
        return b"i" + subject.to_bytes(
            (subject.bit_length() + 8) // 8, "big", signed=True
        )
    raise TypeError("subject must be a UUID, str, bytes or int")


def context_bytes(table: str, column: str, subject: bytes | None = None) -> bytes:
    """Return the canonical context of a value, as described in the module docstring.

    Args:
        table: The table name.
        column: The column name.
        subject: The subject's canonical bytes from :func:`subject_bytes`, if any.
    """
    parts = [table.encode("utf-8"), column.encode("utf-8")]
    if subject is not None:
        parts.append(subject)
    return bytes((len(parts),)) + b"".join(length_prefixed(p) for p in parts)
