"""Audit event schema v1: allowlisted keys per action and canonical JSON.

A *body* is the part of an audit event that the chain MAC covers. It is a JSON
object with sorted keys, no insignificant whitespace, UTF-8, no floats, integers
in the signed 64-bit range and strings of at most 256 characters. Each action
has an allowlist of keys; anything else is refused before sealing, so a value
can never ride along under an unexpected key.

Identifiers (actor ids, entity, field, purpose and category names) must match
:data:`IDENTIFIER`, which excludes spaces and ``@``: free text and e-mail
addresses cannot be logged by mistake.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import re
import time

from collections.abc import Mapping
from typing import Any, Final


__all__ = [
    "EVENT_KEYS",
    "IDENTIFIER",
    "MAX_SUBJECTS_PER_EVENT",
    "REASONS",
    "SCHEMA_VERSION",
    "AuditAction",
    "AuditOutcome",
    "canonical_json",
    "format_ts",
    "new_event_id",
    "parse_ts",
    "validate_body",
]

#: The schema version written in every body as ``v``.
SCHEMA_VERSION: Final = 1
#: The largest number of subject pseudonyms one event may list.
MAX_SUBJECTS_PER_EVENT: Final = 1000

#: Identifiers: surrogate ids and names, never free text or e-mail addresses.
IDENTIFIER: Final = re.compile(r"[A-Za-z0-9_.:/+\-]{1,256}")
_SUBJECT_REF: Final = re.compile(r"sr_[a-z2-7]{26}")
_HEX: Final = re.compile(r"[0-9a-f]{1,128}")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_MAX_DEPTH: Final = 2
_MAX_STAMP: Final = 64
_TS_LEN: Final = len("2026-11-29T15:38:12.123456Z")


class AuditAction(str, enum.Enum):
    """The actions an audit event can record (schema v1)."""

    FIELD_REVEAL = "field.reveal"
    FIELD_REVEAL_MASKED = "field.reveal_masked"
    PURPOSE_CHECK = "purpose.check"
    EXPORT_THIRD_PARTY = "export.third_party"
    RECORD_DELETE = "record.delete"
    RECORD_BULK_UPDATE = "record.bulk_update"
    RECORD_BULK_DELETE = "record.bulk_delete"
    RECORD_PURGE_INTENT = "record.purge.intent"
    RECORD_PURGE_DONE = "record.purge.done"
    RETENTION_EXPIRE = "retention.expire"
    KEY_ROTATE = "key.rotate"
    KEY_SHRED = "key.shred"
    KEY_RETIRE = "key.retire"
    CONSENT_CHANGE = "consent.change"
    AUDIT_CHAIN_START = "audit.chain_start"
    AUDIT_CHAIN_STOP = "audit.chain_stop"
    AUDIT_CONFIG_CHANGE = "audit.config_change"


class AuditOutcome(str, enum.Enum):
    """How the audited operation ended."""

    ALLOWED = "allowed"
    DENIED = "denied"
    ERROR = "error"
    #: An intent whose completion was not (yet) recorded.
    UNKNOWN = "unknown"


#: The enumerated reasons; never free text.
REASONS: Final = frozenset(
    {
        "no_actor",
        "no_purpose",
        "unknown_purpose",
        "unknown_role",
        "purpose_not_granted",
        "purpose_not_permitted",
        "untagged_field",
        "consent_withdrawn",
        "consent_missing",
        "retention_expired",
        "legal_hold",
        "no_policy",
        "erasure_request",
        "scheduled",
        "operator_request",
        "audit_unavailable",
        "startup",
        "shutdown",
        "compromise",
    }
)

_COMMON: Final = frozenset(
    {
        "v",
        "event_id",
        "ts",
        "action",
        "outcome",
        "actor",
        "lib",
        "request_id",
        "trace_id",
    }
)
_DATA: Final = frozenset(
    {
        "purpose",
        "policy_version",
        "reason",
        "subject_ref",
        "subjects",
        "entity",
        "fields",
        "data_categories",
        "count",
        "batch",
    }
)
_PURGE: Final = frozenset(
    {
        "reason",
        "entity",
        "fields",
        "data_categories",
        "count",
        "subject_ref",
        "subjects",
        "retention_policy",
        "purge_id",
        "batch",
    }
)

#: The keys each action allows in its body.
EVENT_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "field.reveal": _COMMON | _DATA | {"keys"},
    "field.reveal_masked": _COMMON | _DATA,
    "purpose.check": _COMMON | _DATA | {"denied_fields", "requested"},
    "export.third_party": _COMMON | _DATA | {"recipient", "keys"},
    "record.delete": _COMMON | _DATA | {"statement_fp"},
    "record.bulk_update": _COMMON | _DATA | {"statement_fp"},
    "record.bulk_delete": _COMMON | _DATA | {"statement_fp"},
    "record.purge.intent": _COMMON | _PURGE,
    "record.purge.done": _COMMON | _PURGE,
    "retention.expire": _COMMON | _PURGE,
    "key.rotate": _COMMON | {"keys", "reason"},
    "key.shred": _COMMON | {"keys", "reason", "subject_ref"},
    "key.retire": _COMMON | {"keys", "reason"},
    "consent.change": _COMMON | {"purpose", "policy_version", "subject_ref", "reason"},
    "audit.chain_start": _COMMON | {"chain_info", "reason"},
    "audit.chain_stop": _COMMON | {"final_seq", "reason"},
    "audit.config_change": _COMMON | {"change", "reason"},
}

_IDENT_KEYS: Final = frozenset(
    {"purpose", "policy_version", "entity", "request_id", "trace_id", "lib"}
    | {"retention_policy", "purge_id", "requested"}
)
_IDENT_LISTS: Final = frozenset({"fields", "data_categories", "denied_fields"})


class _SchemaError(ValueError):
    """A body does not conform to the schema (raised as ``ValueError``)."""


def _check_ident(key: str, value: object) -> None:
    if not isinstance(value, str) or IDENTIFIER.fullmatch(value) is None:
        raise _SchemaError(f"audit key {key!r} must be an identifier")


def _check_flat(key: str, value: object, depth: int = 0) -> None:
    """Check a generic nested value: ints, bools, identifiers, lists, objects."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _SchemaError(f"audit key {key!r} holds an integer out of range")
        return
    if isinstance(value, str):
        _check_ident(key, value)
        return
    if depth < _MAX_DEPTH and isinstance(value, list):
        for item in value:
            _check_flat(key, item, depth + 1)
        return
    if depth < _MAX_DEPTH and isinstance(value, dict):
        for sub, item in value.items():
            _check_ident(key, sub)
            _check_flat(key, item, depth + 1)
        return
    raise _SchemaError(f"audit key {key!r} holds a {type(value).__name__}")


def validate_body(body: Mapping[str, Any]) -> None:
    """Check *body* against schema v1.

    Args:
        body: The event body, before canonicalisation.

    Raises:
        ValueError: A key is not allowlisted for the action, or a value has the
            wrong type or shape. The message names the key, never the value.
    """
    action = body.get("action")
    allowed = EVENT_KEYS.get(action) if isinstance(action, str) else None
    if allowed is None:
        raise _SchemaError("audit body has an unknown action")
    extra = set(body) - allowed
    if extra:
        raise _SchemaError(f"audit keys not allowed for {action}: {sorted(extra)}")
    for key in ("v", "event_id", "ts", "outcome", "actor"):
        if key not in body:
            raise _SchemaError(f"audit body lacks {key!r}")
    if body["v"] != SCHEMA_VERSION:
        raise _SchemaError("audit body has an unknown schema version")
    if body["outcome"] not in AuditOutcome._value2member_map_:
        raise _SchemaError("audit key 'outcome' is not an outcome")
    reason = body.get("reason")
    if reason is not None and reason not in REASONS:
        raise _SchemaError("audit key 'reason' is not an enumerated reason")
    for key, value in body.items():
        if key in {"v", "action", "outcome", "reason"}:
            continue
        if key in _IDENT_KEYS:
            _check_ident(key, value)
        elif key in _IDENT_LISTS:
            if not isinstance(value, list):
                raise _SchemaError(f"audit key {key!r} must be a list")
            for item in value:
                _check_ident(key, item)
        elif key == "subject_ref":
            if not isinstance(value, str) or _SUBJECT_REF.fullmatch(value) is None:
                raise _SchemaError(
                    "audit key 'subject_ref' must be a subject pseudonym"
                )
        elif key == "subjects":
            if not isinstance(value, list) or len(value) > MAX_SUBJECTS_PER_EVENT:
                raise _SchemaError("audit key 'subjects' must list at most 1000 refs")
            for item in value:
                if not isinstance(item, str) or _SUBJECT_REF.fullmatch(item) is None:
                    raise _SchemaError("audit key 'subjects' must hold pseudonyms")
        elif key in {"event_id", "ts"}:
            if not isinstance(value, str) or len(value) > _MAX_STAMP:
                raise _SchemaError(f"audit key {key!r} must be a short string")
        elif key == "statement_fp":
            if not isinstance(value, str) or _HEX.fullmatch(value) is None:
                raise _SchemaError("audit key 'statement_fp' must be a hex digest")
        else:
            _check_flat(key, value)


_ENCODE: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """Encode *body* as canonical JSON bytes.

    Sorted keys, ``","`` and ``":"`` separators, no whitespace, UTF-8 without
    ASCII escaping. Bodies hold no floats, so the encoding is unique.

    Args:
        body: A validated body.

    Returns:
        The exact bytes the chain hashes.
    """
    return _ENCODE(body).encode("utf-8")


def new_event_id(*, now: dt.datetime | None = None) -> str:
    """Return a new UUIDv7 (RFC 9562) as a string: time-ordered and unique.

    Args:
        now: The time to embed; the wall clock when omitted.
    """
    ms = int(now.timestamp() * 1000) if now is not None else time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = ((ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (rand_a << 64)
    value |= (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_ts(now: dt.datetime) -> str:
    """Format an aware datetime as UTC ISO-8601 with microseconds and ``Z``.

    Raises:
        ValueError: *now* is naive.
    """
    if now.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str) -> dt.datetime:
    """Parse a timestamp written by :func:`format_ts` into an aware datetime."""
    if len(value) != _TS_LEN or value[-1] != "Z":
        raise ValueError("not an audit timestamp")
    return dt.datetime.fromisoformat(value[:-1]).replace(tzinfo=dt.timezone.utc)
