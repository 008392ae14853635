"""The cache of unwrapped data keys."""

from __future__ import annotations

import math
import threading
import time

from collections.abc import Callable
from typing import final


__all__ = ["DataKeyCache", "Lease"]


@final
class Lease:
    """How long an unwrapped data key may still be used.

    Every value encrypted or decrypted under the key spends one use; the lease
    ends when its uses run out or the clock reaches ``expires_at``. Objects
    derived from the key (column subkeys) share the lease and are dropped with it.
    """

    __slots__ = ("expires_at", "uses_left")

    def __init__(self, *, expires_at: float, uses_left: float) -> None:
        self.expires_at = expires_at
        self.uses_left = uses_left

    def spend(self, now: float) -> bool:
        """Spend one use at time ``now``; return whether the lease has ended."""
        self.uses_left -= 1
        return self.uses_left < 0 or now >= self.expires_at

    def __repr__(self) -> str:
        return f"<Lease expires_at={self.expires_at} uses_left={self.uses_left}>"


@final
class DataKeyCache:
    """Keeps unwrapped data keys for a while, so the provider is not asked per value.

    An entry lives until ``ttl`` seconds have passed since the unwrap or until it
    has been used ``max_uses`` times, whichever comes first; the next use after
    that unwraps the key again (one provider call). Only keys wrapped by a
    :class:`~custdata.crypto.KeyProvider` go through the cache; a keyring without
    a provider holds its keys in memory for its lifetime.

    Args:
        ttl: Seconds an unwrapped key stays usable. Must be positive.
        max_uses: Values one unwrapped key may encrypt or decrypt; ``None`` for
            no limit.
        clock: Monotonic clock in seconds; tests pass a fake one.

    Raises:
        ValueError: ``ttl`` or ``max_uses`` is not positive.
    """

    __slots__ = ("_entries", "_lock", "clock", "max_uses", "ttl")

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        max_uses: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0:
            raise ValueError("ttl must be positive")
        if max_uses is not None and max_uses < 1:
            raise ValueError("max_uses must be positive")
        self.ttl = float(ttl)
        self.max_uses = max_uses
        self.clock = clock
        self._entries: dict[int, tuple[bytes, Lease]] = {}
        self._lock = threading.Lock()

    def get(
        self, key_id: int, unwrap: Callable[[], bytes], *, now: float | None = None
    ) -> tuple[bytes, Lease]:
        """Return the unwrapped key ``key_id`` and its lease, unwrapping it if needed.

        Args:
            key_id: The data key's id.
            unwrap: Called (once) when the key is not cached or its lease ended.
            now: The clock reading to use; ``None`` reads :attr:`clock`.

        Raises:
            Whatever ``unwrap`` raises (a :class:`~custdata.KeyManagementError`).
        """
        if now is None:
            now = self.clock()
        with self._lock:
            entry = self._entries.get(key_id)
            if (
                entry is not None
                and entry[1].uses_left > 0
                and now < entry[1].expires_at
            ):
                return entry
            self._entries.pop(key_id, None)
        key = unwrap()
        return self.put(key_id, key, now=now)

    def put(
        self, key_id: int, key: bytes, *, now: float | None = None
    ) -> tuple[bytes, Lease]:
        """Cache an unwrapped key with a fresh lease and return both."""
        if now is None:
            now = self.clock()
        uses = math.inf if self.max_uses is None else float(self.max_uses)
        entry = (key, Lease(expires_at=now + self.ttl, uses_left=uses))
        with self._lock:
            self._entries[key_id] = entry
        return entry

    def discard(self, key_id: int) -> None:
        """Forget the unwrapped key ``key_id`` and end its lease."""
        with self._lock:
            entry = self._entries.pop(key_id, None)
        if entry is not None:
            entry[1].uses_left = -math.inf

    def clear(self) -> None:
        """Forget every unwrapped key and end every lease."""
        with self._lock:
            entries, self._entries = self._entries, {}
        for _, lease in entries.values():
            lease.uses_left = -math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<DataKeyCache ttl={self.ttl} max_uses={self.max_uses} entries={len(self._entries)}>"
