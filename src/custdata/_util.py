"""Small helpers shared across the package: converters, a full cache's admission."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Any, Final


def str_tuple(value: Iterable[object] | str) -> tuple[str, ...]:
    """Convert a string or an iterable of strings to a tuple of strings.

    A lone string becomes a one-item tuple, not a tuple of characters.
    """
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


#: When a bounded cache is full, one new entry in this many takes the place of
#: its oldest (or least recently used) entry; the others are used once and not
#: kept (see :class:`Admission`).
ADMIT_WHEN_FULL: Final = 16


class Admission:
    """Whether a new entry goes into a full bounded cache: one miss in *every*.

    A cache that evicts its oldest entry for every new one keeps nothing of a
    pass over more distinct keys than it holds: each entry is evicted just
    before the next pass needs it, so every pass misses every key -- a step
    from all hits to none at the cache's size. Letting in only one new key in
    *every* once the cache is full keeps most of what it holds from one pass
    to the next (with a cache of C keys and passes over N > C, about
    ``(C/N - 1/every) / (1 - 1/every)`` of each pass hits: 63 % at C = 65,536
    and N = 100,000), so the cost of a pass grows with N instead of stepping;
    a key used again and again still gets in, after *every* misses at most
    on average. Deterministic (a count, not a random draw), thread-safe
    enough for a cache: a lost count only delays an admission.
    """

    __slots__ = ("_skipped", "every")

    def __init__(self, every: int = ADMIT_WHEN_FULL) -> None:
        if every < 1:
            raise ValueError("every must be positive")
        self.every = every
        self._skipped = 0

    def put(
        self, cache: OrderedDict[Any, Any], key: Hashable, value: Any, limit: int
    ) -> None:
        """Keep *key* in *cache* (of at most *limit* entries) if there is room, or now and then."""
        if len(cache) < limit:
            cache[key] = value
            return
        self._skipped += 1
        if self._skipped >= self.every:
            self._skipped = 0
            cache.popitem(last=False)
            cache[key] = value
