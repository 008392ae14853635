"""Small converters shared by the attrs classes of the core."""

from __future__ import annotations

from collections.abc import Iterable


def str_tuple(value: Iterable[object] | str) -> tuple[str, ...]:
    """Convert a string or an iterable of strings to a tuple of strings.

    A lone string becomes a one-item tuple, not a tuple of characters.
    """
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)
