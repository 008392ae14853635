"""AES-256-GCM for the envelopes: the native accelerator, or cryptography's.

:func:`aes_gcm` is the one place an AES-256-GCM key object is made. With the
optional extension :mod:`custdata.crypto._native` built (see :mod:`._accel`) it
is a native ``AesGcm``, which calls OpenSSL's libcrypto directly with its key
schedule set up once per key; otherwise, or with ``CUSTDATA_PURE_PYTHON=1``,
it is :class:`PyAesGcm` over :class:`cryptography`'s ``AESGCM``. Both give
the same bytes and raise the same ``InvalidTag``; the tests run the envelope
suite on both (``tests/test_crypto_native.py``).

Besides ``AESGCM``'s ``encrypt`` and ``decrypt``, both open and seal a whole
envelope in one call, so the read and write paths do not slice envelopes or
concatenate associated data in Python:

* ``open(blob, start, prefix, tail)`` -- the plaintext of the envelope
  *blob* whose nonce starts at *start*, under the associated data
  ``prefix + tail`` (*tail* may be ``None``);
* ``open_text(blob, start, prefix, tail)`` -- the same for the str codec:
  a plain str frame (``0x01`` then UTF-8) comes back as ``str``, any other
  frame as bytes for the codec;
* ``seal(header, nonce, frame, prefix, tail)`` -- ``header + nonce +
  ciphertext + tag``.
"""

from __future__ import annotations

from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._accel import native


__all__ = ["Aead", "PyAesGcm", "aes_gcm"]

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

    def open(
        self, blob: bytes, start: int, prefix: bytes, tail: bytes | None
    ) -> bytes: ...

    def open_text(
        self, blob: bytes, start: int, prefix: bytes, tail: bytes | None
    ) -> str | bytes: ...

    def seal(
        self,
        header: bytes,
        nonce: bytes,
        frame: bytes,
        prefix: bytes,
        tail: bytes | None,
    ) -> bytes: ...


class PyAesGcm:
    """AES-256-GCM over cryptography's ``AESGCM``: the pure-Python reference.

    The interface of the native ``AesGcm`` (see the module's docstring); its
    ``repr`` names no key, and it cannot be pickled or copied.
    """

    __slots__ = ("_aead", "decrypt", "encrypt")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:  # noqa: PLR2004 - AES-256
            raise ValueError("AesGcm takes a 32-byte key")
        self._aead = aead = AESGCM(key)
        self.encrypt = aead.encrypt
        self.decrypt = aead.decrypt

    def open(self, blob: bytes, start: int, prefix: bytes, tail: bytes | None) -> bytes:
        """The plaintext of an envelope (see the module's docstring)."""
        end = start + _NONCE_SIZE
        if start < 0 or len(blob) < end + _TAG_SIZE:
            # Too short to hold a nonce and a tag: refused as a forgery is.
            raise InvalidTag
        return self._aead.decrypt(
            blob[start:end], blob[end:], prefix if tail is None else prefix + tail
        )

    def open_text(
        self, blob: bytes, start: int, prefix: bytes, tail: bytes | None
    ) -> str | bytes:
        """As :meth:`open`; a plain str frame comes back decoded."""
        frame = self.open(blob, start, prefix, tail)
        if frame[:1] == b"\x01":
            try:
                return frame[1:].decode()
            except UnicodeDecodeError:
                pass
        return frame

    def seal(
        self,
        header: bytes,
        nonce: bytes,
        frame: bytes,
        prefix: bytes,
        tail: bytes | None,
    ) -> bytes:
        """The envelope ``header + nonce + ciphertext + tag``."""
        return (
            header
            + nonce
            + self._aead.encrypt(
                nonce, frame, prefix if tail is None else prefix + tail
            )
        )

    def __repr__(self) -> str:
        return "<custdata AES-256-GCM key>"

    def __reduce__(self) -> Any:
        raise TypeError("an AesGcm key cannot be pickled or copied")

    def __copy__(self) -> Any:
        raise TypeError("an AesGcm key cannot be pickled or copied")

    def __deepcopy__(self, memo: object) -> Any:
        raise TypeError("an AesGcm key cannot be pickled or copied")


#: The class :func:`aes_gcm` makes its key objects of.
_factory: Any = PyAesGcm if native is None else native.AesGcm


def aes_gcm(key: bytes) -> Aead:
    """An AES-256-GCM key object for the 32-byte *key* (native where built)."""
    return _factory(key)  # type: ignore[no-any-return]
