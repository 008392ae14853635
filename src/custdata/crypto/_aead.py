"""AES-256-GCM for the envelopes: the native accelerator, or cryptography's.

One place decides which AES-256-GCM key objects custdata makes and how it
opens and seals envelopes with them. With the optional extension
:mod:`custdata.crypto._native` built (see :mod:`._accel`), a key object is a
native ``AesGcm``, which calls OpenSSL's libcrypto directly with its key
schedule set up once per direction; otherwise, or with
``CUSTDATA_PURE_PYTHON=1``, it is cryptography's ``AESGCM``, the reference.
Both have ``encrypt(nonce, data, associated_data)`` and ``decrypt(...)``,
give the same bytes and raise the same ``InvalidTag``; and both are objects
the garbage collector does not track, so a cache of 65,536 of them adds
nothing to a collection's work.

Three functions take a key object and a whole envelope, so the read and
write paths neither slice envelopes nor concatenate associated data in
Python (each is the native type's own method, called unbound, or a Python
function over ``AESGCM``):

* ``open_envelope(key, blob, start, prefix, tail)`` -- the plaintext of the
  envelope *blob* whose nonce starts at *start*, under the associated data
  ``prefix + tail`` (*tail* may be ``None``); ``InvalidTag`` for a forgery
  or a blob too short to hold a nonce and a tag;
* ``open_text(key, blob, start, prefix, tail)`` -- the same for the str
  codec: a plain str frame (``0x01`` then UTF-8) comes back as ``str``, any
  other frame as bytes for the codec;
* ``seal_envelope(key, header, nonce, frame, prefix, tail)`` -- ``header +
  nonce + ciphertext + tag``.

And a str column's reader class, ``reader``: natively ``Reader(keys,
start, fallback, subject_context, held_fallback)``, whose ``read(blob,
tail=None)`` opens a value whose header is a key of the dict *keys*
(``header -> (key object, prefix, subject prefix)``, kept by the cipher)
and whose ``held(blob, tail, by_tail)`` opens a value under the subject key
``by_tail[tail]`` a batch fetched (``(header, key object, ...)``), each in
one C call, handing anything else to *fallback* (the cipher's
``open_value``) or *held_fallback* (its ``open_held``); ``None`` for the
reference, whose ciphers read through those two methods themselves.

And ``unwrap_keys(found, wrappers, label, head, expires_at, destroyed)``:
natively, a fetched batch's subject key records unwrapped straight into the
key scope's cache entries in one C call (``None`` where it declines, and for
the reference, whose callers unwrap in Python; see
``Keyring._unwrap_subject_entries``).

They are looked up on this module at each use (``_aead.open_text(...)``), so
a test may swap the implementation (``tests/test_crypto_native.py`` runs
both).
"""

from __future__ import annotations

from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._accel import native


__all__ = [
    "Aead",
    "aes_gcm",
    "open_envelope",
    "open_text",
    "py_open_envelope",
    "py_open_text",
    "py_seal_envelope",
    "reader",
    "seal_envelope",
    "unwrap_keys",
]

_NONCE_SIZE = 12
_TAG_SIZE = 16


class Aead(Protocol):
    """What an AES-256-GCM key object offers (internal)."""

    def encrypt(
        self, nonce: bytes, data: bytes, associated_data: bytes | None
    ) -> bytes: ...

    def decrypt(
        self, nonce: bytes, data: bytes, associated_data: bytes | None
    ) -> bytes: ...


def py_open_envelope(
    key: Any, blob: bytes, start: int, prefix: bytes, tail: bytes | None
) -> bytes:
    """The plaintext of an envelope, through ``AESGCM`` (the reference)."""
    end = start + _NONCE_SIZE
    if start < 0 or len(blob) < end + _TAG_SIZE:
        # Too short to hold a nonce and a tag: refused as a forgery is.
        raise InvalidTag
    return key.decrypt(  # type: ignore[no-any-return]
        blob[start:end], blob[end:], prefix if tail is None else prefix + tail
    )


def py_open_text(
    key: Any, blob: bytes, start: int, prefix: bytes, tail: bytes | None
) -> str | bytes:
    """As :func:`py_open_envelope`; a plain str frame comes back decoded."""
    frame = py_open_envelope(key, blob, start, prefix, tail)
    if frame[:1] == b"\x01":
        try:
            return frame[1:].decode()
        except UnicodeDecodeError:
            pass
    return frame


def py_seal_envelope(  # noqa: PLR0917 - the native method's signature
    key: Any,
    header: bytes,
    nonce: bytes,
    frame: bytes,
    prefix: bytes,
    tail: bytes | None,
) -> bytes:
    """The envelope ``header + nonce + ciphertext + tag``, through ``AESGCM``."""
    aad = prefix if tail is None else prefix + tail
    return header + nonce + key.encrypt(nonce, frame, aad)  # type: ignore[no-any-return]


#: The implementation in use: the key objects' class, the three envelope
#: functions (the native type's unbound methods, or the reference's) and
#: the str column's reader class (none for the reference).
aes_gcm: Any
open_envelope: Any
open_text: Any
seal_envelope: Any
reader: Any
unwrap_keys: Any
if native is None:
    aes_gcm = AESGCM
    open_envelope, open_text, seal_envelope = (
        py_open_envelope,
        py_open_text,
        py_seal_envelope,
    )
    reader = None
    unwrap_keys = None
else:
    aes_gcm = native.AesGcm
    open_envelope, open_text, seal_envelope = (
        native.AesGcm.open,
        native.AesGcm.open_text,
        native.AesGcm.seal,
    )
    reader = native.Reader
    unwrap_keys = native.unwrap_keys
