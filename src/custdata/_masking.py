"""Display masks for customer data and log redaction (R-SEC-3).

:func:`mask` turns a value into a display mask that keeps just enough to
recognise it (``t***@example.com``, ``****-****-****-1234``).
:class:`MaskingProcessor` (for structlog) and :class:`MaskingFilter` (for the
standard :mod:`logging` module) mask declared customer-data keys in the
application's own logs. custdata never installs either: the application adds
them to its own logging configuration.
"""

from __future__ import annotations

import logging
import re

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from ._policy import Policy


__all__ = ["MASK_KINDS", "MaskingFilter", "MaskingProcessor", "mask"]

_STARS = "***"
_PREFECTURE = re.compile(r"^(.{1,3}?[都道府県])")


def _mask_email(text: str) -> str:
    local, at, domain = text.rpartition("@")
    if not at or not local:
        return _STARS
    return f"{local[0]}{_STARS}@{domain}"


# Fewer digits than this and a phone mask would reveal most of the number.
_MIN_PHONE_DIGITS = 7
# Payment card numbers have 12 to 19 digits (ISO/IEC 7812).
_MIN_CARD_DIGITS = 12


def _mask_phone(text: str) -> str:
    digits = [c for c in text if c.isdigit()]
    keep = 4 if len(digits) >= _MIN_PHONE_DIGITS else 0
    seen = 0
    out = []
    for c in text:
        if c.isdigit():
            seen += 1
            out.append(c if seen > len(digits) - keep else "*")
        else:
            out.append(c)
    return "".join(out) if digits else _STARS


def _mask_card(text: str) -> str:
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) < _MIN_CARD_DIGITS:
        return _STARS
    return f"****-****-****-{digits[-4:]}"


def _mask_name(text: str) -> str:
    words = text.split()
    if not words:
        return _STARS
    return " ".join(w[0] + "*" * max(len(w) - 1, 2) for w in words)


def _mask_address(text: str) -> str:
    stripped = text.strip()
    match = _PREFECTURE.match(stripped)
    if match:
        return f"{match.group(1)}{_STARS}"
    tail = stripped.rsplit(",", 1)
    if len(tail) == 2 and tail[1].strip():  # noqa: PLR2004 - head and tail
        return f"{_STARS}, {tail[1].strip()}"
    return _STARS


def _mask_default(text: str) -> str:
    return _STARS


#: The mask kinds :func:`mask` knows, by name.
MASK_KINDS: Mapping[str, Callable[[str], str]] = {
    "address": _mask_address,
    "card": _mask_card,
    "default": _mask_default,
    "email": _mask_email,
    "name": _mask_name,
    "phone": _mask_phone,
}


def mask(value: object, kind: str = "default") -> str:
    """Return the display mask of *value*.

    Args:
        value: The value; ``None`` masks to ``""`` and non-strings are masked
            as ``"***"`` except for the ``card`` and ``phone`` kinds, which use
            their digits.
        kind: One of :data:`MASK_KINDS`: ``email`` (``t***@example.com``),
            ``phone`` (``***-****-5678``), ``card`` (``****-****-****-1234``),
            ``name`` (``T*** Y*****``), ``address`` (``東京都***``) or
            ``default`` (``***``).

    Raises:
        ValueError: If *kind* is not a known mask kind.
    """
    try:
        masker = MASK_KINDS[kind]
    except KeyError:
        msg = f"unknown mask kind {kind!r}; expected one of {sorted(MASK_KINDS)}"
        raise ValueError(msg) from None
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value) if kind in {"card", "phone"} else ""
    return masker(value)


def _resolve_kinds(keys: Mapping[str, str], policy: Policy | None) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for key, kind in keys.items():
        if kind in MASK_KINDS:
            kinds[key] = kind
        elif policy is not None and kind in policy.taxonomy:
            kinds[key] = policy.taxonomy[kind].mask
        else:
            msg = f"log key {key!r}: {kind!r} is neither a mask kind nor a category"
            raise ValueError(msg)
    return kinds


class MaskingProcessor:
    """A structlog processor that masks declared customer-data keys.

    Args:
        keys: Log keys to mask, each with a mask kind (``"email"``) or, when
            *policy* is given, a category key (``"contact.email"``) whose mask
            kind is used.
        policy: The policy whose taxonomy resolves category keys.

    Nested dictionaries are masked too. The processor never raises on a value.

    Raises:
        ValueError: At construction, for an unknown mask kind or category.
    """

    def __init__(
        self, keys: Mapping[str, str], *, policy: Policy | None = None
    ) -> None:
        self._kinds = _resolve_kinds(keys, policy)

    def __repr__(self) -> str:
        return f"<MaskingProcessor keys={sorted(self._kinds)}>"

    def _mask_mapping(self, data: MutableMapping[str, Any]) -> None:
        for key, value in data.items():
            kind = self._kinds.get(key)
            if kind is not None:
                data[key] = mask(value, kind)
            elif isinstance(value, dict):
                copy = dict(value)
                self._mask_mapping(copy)
                data[key] = copy

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        self._mask_mapping(event_dict)
        return event_dict


class MaskingFilter(logging.Filter):
    """A :mod:`logging` filter that masks declared customer-data keys.

    It masks attributes passed with ``extra={...}`` and the keys of a mapping
    passed as the message arguments (``log.info("%(email)s", {"email": ...})``).

    Args:
        keys: As for :class:`MaskingProcessor`.
        policy: As for :class:`MaskingProcessor`.
    """

    def __init__(
        self, keys: Mapping[str, str], *, policy: Policy | None = None
    ) -> None:
        super().__init__()
        self._processor = MaskingProcessor(keys, policy=policy)
        self._kinds = self._processor._kinds  # noqa: SLF001 - same module family

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record in place; always keep it."""
        for key, kind in self._kinds.items():
            if key in record.__dict__:
                record.__dict__[key] = mask(record.__dict__[key], kind)
        if isinstance(record.args, Mapping):
            args = dict(record.args)
            self._processor._mask_mapping(args)  # noqa: SLF001
            record.args = args
        return True
