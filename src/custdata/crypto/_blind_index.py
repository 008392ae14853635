"""Blind indexes: keyed hashes of normalised values, for equality search."""

from __future__ import annotations

import unicodedata

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from ._cache import Lease
from ._hmac import hmac_states
from ._kdf import LABEL_BLIND_INDEX, column_key


if TYPE_CHECKING:
    from ._keyring import Keyring

__all__ = ["BlindIndex", "normalize_email", "normalize_phone"]


def normalize_email(value: str) -> str:
    """Normalise an e-mail address for a blind index: NFKC, case-folded, stripped.

    ``" Ｊｏｅ@Example.COM "`` and ``"joe@example.com"`` normalise alike. The
    local part is case-folded too, as nearly every mail system treats it.

    Raises:
        TypeError: ``value`` is not a str.
    """
    if not isinstance(value, str):
        raise TypeError("an e-mail address must be a str")
    # Case folding can leave text that is not in NFKC, so normalise again after it.
    return unicodedata.normalize(
        "NFKC", unicodedata.normalize("NFKC", value).casefold()
    ).strip()


def normalize_phone(value: str) -> str:
    """Normalise a phone number for a blind index: its decimal digits only, as ASCII.

    ``"+81 (90) 1234-5678"`` becomes ``"819012345678"``; full-width and other
    Unicode decimal digits count. A country prefix is not added or removed, so
    ``"090…"`` and ``"+8190…"`` stay different.

    Raises:
        TypeError: ``value`` is not a str.
    """
    if not isinstance(value, str):
        raise TypeError("a phone number must be a str")
    return "".join(
        str(unicodedata.decimal(ch))
        for ch in value
        if unicodedata.decimal(ch, None) is not None
    )


@final
class _IndexKey:
    __slots__ = ("inner", "key_id", "lease", "outer")

    def __init__(
        self, *, key_id: int, inner: Any, outer: Any, lease: Lease | None
    ) -> None:
        self.key_id = key_id
        self.inner = inner
        self.outer = outer
        self.lease = lease


@final
class BlindIndex:
    """Computes the blind index of one column: truncated HMAC-SHA256 of normalised values.

    Get one from :meth:`Keyring.blind_index`. The HMAC key is an HKDF subkey, for
    this column only, of the keyring's index key (never of a data key). Store
    :meth:`compute` in a companion column and search with :meth:`candidates`.

    Truncating to ``bits`` bits makes equal digests of different values likely
    once a column holds about ``2 ** (bits / 2)`` distinct values, so a search must
    then decrypt and compare the rows it finds. Short indexes leak less (many values
    share a digest) and long ones find rows exactly; the security docs give the
    numbers.

    Attributes:
        table: The table name bound into the key.
        column: The column name bound into the key.
        bits: Digest length in bits; the digest is ``ceil(bits / 8)`` bytes with
            the unused low bits of the last byte zero.
        normalizer: Applied to each value first; must return str or bytes.
    """

    __slots__ = (
        "_clock",
        "_keyring",
        "_keys",
        "_mask",
        "_size",
        "bits",
        "column",
        "normalizer",
        "table",
    )

    def __init__(
        self,
        keyring: Keyring,
        *,
        table: str,
        column: str,
        normalizer: Callable[[Any], str | bytes] | None = None,
        bits: int = 256,
    ) -> None:
        if isinstance(bits, bool) or not isinstance(bits, int):
            raise TypeError("bits must be an int")
        if not 1 <= bits <= 256:  # noqa: PLR2004 - SHA-256
            raise ValueError("bits must be between 1 and 256")
        if not table or not column:
            raise ValueError("table and column must be non-empty")
        self.table = table
        self.column = column
        self.bits = bits
        self.normalizer = normalizer
        self._keyring = keyring
        self._clock = keyring.cache.clock
        self._size = (bits + 7) // 8
        self._mask = (0xFF << (-bits % 8)) & 0xFF
        self._keys: list[_IndexKey] | None = None

    def _reset(self) -> None:
        """Drop the derived keys; called by the keyring when its index keys change."""
        self._keys = None

    def _derive(self) -> list[_IndexKey]:
        keys = []
        for key_id in self._keyring._usable_index_ids():  # noqa: SLF001 - package-internal
            material, lease = self._keyring._index_key(key_id)  # noqa: SLF001
            inner, outer = hmac_states(
                column_key(material, LABEL_BLIND_INDEX, self.table, self.column)
            )
            keys.append(_IndexKey(key_id=key_id, inner=inner, outer=outer, lease=lease))
        self._keys = keys
        return keys

    def _usable_keys(self) -> list[_IndexKey]:
        keys = self._keys
        if keys is None:
            return self._derive()
        lease = keys[0].lease
        if lease is not None and lease.spend(self._clock()):
            return self._derive()
        return keys

    def _input(self, value: Any) -> bytes:
        normalized = value if self.normalizer is None else self.normalizer(value)
        if isinstance(normalized, str):
            return normalized.encode("utf-8")
        if isinstance(normalized, bytes):
            return normalized
        raise TypeError(
            "a blind index needs str or bytes (use a normalizer to convert other values)"
        )

    def _digest(self, key: _IndexKey, data: bytes) -> bytes:
        inner = key.inner.copy()
        inner.update(data)
        outer = key.outer.copy()
        outer.update(inner.digest())
        digest: bytes = outer.digest()[: self._size]
        if self._mask != 0xFF:  # noqa: PLR2004 - a full byte
            digest = digest[:-1] + bytes((digest[-1] & self._mask,))
        return digest

    def compute(self, value: Any) -> bytes:
        """Return the index digest of ``value`` under the primary index key; store this.

        Raises:
            TypeError: The (normalised) value is not str or bytes.
            KeyManagementError: The key provider could not unwrap the index key.
        """
        data = self._input(value)
        return self._digest(self._usable_keys()[0], data)

    def candidates(self, value: Any) -> tuple[bytes, ...]:
        """Return the digests of ``value`` under every usable index key, primary first.

        While an index key is being rotated, rows indexed under the old key and rows
        indexed under the new one both match a search for any of these digests
        (``WHERE email_bidx IN (...)``).

        Raises:
            TypeError: The (normalised) value is not str or bytes.
            KeyManagementError: The key provider could not unwrap an index key.
        """
        data = self._input(value)
        return tuple(dict.fromkeys(self._digest(key, data) for key in self._all_keys()))

    def _all_keys(self) -> list[_IndexKey]:
        """Every usable key, primary first, none past its lease."""
        keys = self._usable_keys()
        now = self._clock()
        if any(key.lease is not None and key.lease.spend(now) for key in keys[1:]):
            keys = self._derive()
        return keys

    def key_of(self, value: Any, digest: bytes) -> int | None:
        """Return the id of the usable index key *digest* was computed under.

        ``None`` when *digest* is the digest of *value* under no usable index
        key (a stale entry, or one under a retired key). This is how a stored
        entry is found to depend on an index key: the digest says nothing of
        its key by itself.

        Raises:
            TypeError: The (normalised) value is not str or bytes.
            KeyManagementError: The key provider could not unwrap an index key.
        """
        data = self._input(value)
        for key in self._all_keys():
            if self._digest(key, data) == bytes(digest):
                return key.key_id
        return None

    def __repr__(self) -> str:
        return f"<BlindIndex {self.table}.{self.column} bits={self.bits}>"
