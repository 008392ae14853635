"""Audit event schema v1: allowlisted keys per action and canonical JSON.

A *body* is the part of an audit event that the chain MAC covers. It is a JSON
object with sorted keys, no insignificant whitespace, UTF-8, no floats, integers
in the signed 64-bit range and strings of at most 256 characters. Each action
has an allowlist of keys; anything else is refused before sealing, so a value
can never ride along under an unexpected key.

Identifiers (entity, field and category names, ids the library makes) must
match :data:`IDENTIFIER`, which excludes spaces and ``@``. Names a user can type
(actor ids, roles, purposes) are recorded as given — e-mail addresses are
common actor ids — once :func:`audit_name` has escaped control characters and
replaced an over-long name by its digest, so any such name can be recorded.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import itertools
import json
import os
import re
import time

from collections.abc import Callable, Iterable, Iterator, Mapping
from json.encoder import encode_basestring
from typing import Any, Final

from custdata._decision import DenyReason


__all__ = [
    "EVENT_KEYS",
    "IDENTIFIER",
    "MAX_SUBJECTS_PER_EVENT",
    "PLAIN_INT_KEYS",
    "PLAIN_STR_KEYS",
    "REASONS",
    "REDACT_REASONS",
    "SCHEMA_VERSION",
    "AuditAction",
    "AuditOutcome",
    "audit_name",
    "canonical_json",
    "check_plain",
    "check_values",
    "consent_ids",
    "encode_value",
    "epoch_us",
    "event_id_from_us",
    "format_ts",
    "new_event_id",
    "parse_ts",
    "stamps_from_us",
    "ts_from_us",
    "validate_body",
]

#: The schema version written in every body as ``v``.
SCHEMA_VERSION: Final = 1
#: The largest number of subject pseudonyms one event may list.
MAX_SUBJECTS_PER_EVENT: Final = 1000

#: Identifiers: surrogate ids and names, never free text or e-mail addresses.
IDENTIFIER: Final = re.compile(r"[A-Za-z0-9_.:/+\-]{1,256}")
#: The longest name (actor id, role, purpose) recorded as given.
NAME_MAX: Final = 256
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
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
    FIELD_SEARCH = "field.search"
    PURPOSE_CHECK = "purpose.check"
    EXPORT_THIRD_PARTY = "export.third_party"
    #: A disclosure to the data subject (APPI 33条, GDPR Art. 15 and 20).
    EXPORT_SUBJECT = "export.subject"
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
    SUBJECT_RESTRICT = "subject.restrict"
    SUBJECT_RESTRICT_LIFT = "subject.restrict_lift"
    AUDIT_CHAIN_START = "audit.chain_start"
    AUDIT_CHAIN_STOP = "audit.chain_stop"
    AUDIT_CONFIG_CHANGE = "audit.config_change"
    AUDIT_REDACT = "audit.redact"


class AuditOutcome(str, enum.Enum):
    """How the audited operation ended."""

    ALLOWED = "allowed"
    DENIED = "denied"
    ERROR = "error"
    #: An intent whose completion was not (yet) recorded.
    UNKNOWN = "unknown"


#: The enumerated reasons, the access-decision ones first; never free text.
REASONS: Final = frozenset(r.value for r in DenyReason) | frozenset(
    {
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
        "legacy_plaintext",
    }
)

#: The reasons an ``audit.redact`` event may give (a subset of :data:`REASONS`).
REDACT_REASONS: Final = frozenset(
    {"erasure_request", "retention_expired", "operator_request"}
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
        # The consent records a decision relied on (optional; R-CON-1).
        "consents",
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
    "field.search": _COMMON | _DATA,
    "purpose.check": _COMMON | _DATA | {"denied_fields", "requested"},
    "export.third_party": _COMMON | _DATA | {"recipient", "keys"},
    "export.subject": _COMMON | _DATA,
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
    "subject.restrict": _COMMON | {"subject_ref"},
    "subject.restrict_lift": _COMMON | {"subject_ref"},
    "audit.chain_start": _COMMON | {"chain_info", "reason"},
    "audit.chain_stop": _COMMON | {"final_seq", "reason"},
    "audit.config_change": _COMMON | {"change", "reason"},
    "audit.redact": _COMMON | {"target", "reason"},
}

_IDENT_KEYS: Final = frozenset(
    {"policy_version", "entity", "request_id", "trace_id", "lib"}
    | {"retention_policy", "purge_id", "requested"}
)
_IDENT_LISTS: Final = frozenset(
    {"fields", "data_categories", "denied_fields", "consents"}
)


def _escape_control(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def audit_name(value: str) -> str:
    r"""Return how a name a user can type (actor id, role, purpose) is recorded.

    Any string is a valid name. Control characters are written as ``\uXXXX``
    escapes (so ``"billing\x00"`` is recorded as the 13 characters
    ``billing\u0000``, never a NUL byte), and a name longer than
    :data:`NAME_MAX` characters after that is recorded as ``sha256:`` and the
    hex SHA-256 of its UTF-8 bytes. Everything else, spaces, ``@`` and
    non-ASCII letters included, is recorded unchanged.
    """
    text = _CONTROL.sub(_escape_control, value)
    if len(text) > NAME_MAX or not text:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return f"sha256:{digest}"
    return text


def consent_ids(ids: Iterable[str]) -> list[str]:
    """Return how the consent ids a decision relied on are recorded (``consents``).

    Distinct and sorted; an id that is not an identifier (a custom consent
    source's) is recorded as ``sha256:`` and the hex SHA-256 of its UTF-8 bytes.
    """
    out: set[str] = set()
    for cid in ids:
        if cid.__class__ is str and IDENTIFIER.fullmatch(cid) is not None:
            out.add(cid)
        else:
            text = str(cid).encode("utf-8", "surrogatepass")
            out.add(f"sha256:{hashlib.sha256(text).hexdigest()}")
    return sorted(out)


class _SchemaError(ValueError):
    """A body does not conform to the schema (raised as ``ValueError``)."""


# Strings that already passed a check, so the hot path re-checks a repeated
# actor, purpose or field name with one set lookup instead of a regex. The sets
# are bounded: when one fills up it is emptied and refilled.
_MEMO_LIMIT: Final = 65_536
_GOOD_IDENTS: Final[set[str]] = set()
_GOOD_REFS: Final[set[str]] = set()
_GOOD_NAMES: Final[set[str]] = set()


def _remember(memo: set[str], value: str) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo.add(value)


def _check_ident(key: str, value: object) -> None:
    if value.__class__ is str and value in _GOOD_IDENTS:
        return
    if not isinstance(value, str) or IDENTIFIER.fullmatch(value) is None:
        raise _SchemaError(f"audit key {key!r} must be an identifier")
    if value.__class__ is str:
        _remember(_GOOD_IDENTS, value)


def _check_name(key: str, value: object) -> None:
    """Check a recorded name (see :func:`audit_name`): 1 to 256 characters, no controls."""
    if value.__class__ is str and value in _GOOD_NAMES:
        return
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= NAME_MAX
        or _CONTROL.search(value) is not None
    ):
        raise _SchemaError(f"audit key {key!r} must be a recorded name")
    if value.__class__ is str:
        _remember(_GOOD_NAMES, value)


_ACTOR_KEYS: Final = frozenset({"type", "id", "roles"})


def _check_actor(key: str, value: object) -> None:
    """Check an actor: ``{"type": identifier, "id": name, "roles": [name, ...]}``."""
    if (
        not isinstance(value, dict)
        or "type" not in value
        or not value.keys() <= _ACTOR_KEYS
    ):
        raise _SchemaError("audit key 'actor' must be {type, id?, roles?}")
    _check_ident(key, value["type"])
    if "id" in value:
        _check_name(key, value["id"])
    roles = value.get("roles")
    if roles is not None:
        if not isinstance(roles, list):
            raise _SchemaError("audit key 'actor' must list its roles")
        for role in roles:
            _check_name(key, role)


def _check_ident_list(key: str, value: object) -> None:
    if not isinstance(value, list):
        raise _SchemaError(f"audit key {key!r} must be a list")
    good = _GOOD_IDENTS
    for item in value:
        if item.__class__ is not str or item not in good:
            _check_ident(key, item)


def _check_ref(key: str, value: object) -> None:
    if value.__class__ is str and value in _GOOD_REFS:
        return
    if not isinstance(value, str) or _SUBJECT_REF.fullmatch(value) is None:
        raise _SchemaError("audit key 'subject_ref' must be a subject pseudonym")
    if value.__class__ is str:
        _remember(_GOOD_REFS, value)


def _check_refs(key: str, value: object) -> None:
    if not isinstance(value, list) or len(value) > MAX_SUBJECTS_PER_EVENT:
        raise _SchemaError("audit key 'subjects' must list at most 1000 refs")
    good = _GOOD_REFS
    match = _SUBJECT_REF.fullmatch
    for item in value:
        if item.__class__ is str and item in good:
            continue
        if not isinstance(item, str) or match(item) is None:
            raise _SchemaError("audit key 'subjects' must hold pseudonyms")
        if item.__class__ is str:
            _remember(good, item)


def _check_stamp(key: str, value: object) -> None:
    if not isinstance(value, str) or len(value) > _MAX_STAMP:
        raise _SchemaError(f"audit key {key!r} must be a short string")


def _check_hex(key: str, value: object) -> None:
    if not isinstance(value, str) or _HEX.fullmatch(value) is None:
        raise _SchemaError("audit key 'statement_fp' must be a hex digest")


_MAC_HEX: Final = re.compile(r"[0-9a-f]{64}")
_TARGET_KEYS: Final = frozenset({"chain", "seq", "mac"})


def _check_target(key: str, value: object) -> None:
    """Check an ``audit.redact`` target: ``{chain, seq, mac}`` of one record."""
    if (
        not isinstance(value, dict)
        or value.keys() != _TARGET_KEYS
        or not isinstance(value["chain"], str)
        or IDENTIFIER.fullmatch(value["chain"]) is None
        or value["seq"].__class__ is not int
        or not 1 <= value["seq"] <= _INT64_MAX
        or not isinstance(value["mac"], str)
        or _MAC_HEX.fullmatch(value["mac"]) is None
    ):
        raise _SchemaError("audit key 'target' must be {chain, seq, mac} of one record")


def _check_int(key: str, value: object) -> None:
    if value.__class__ is int and _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator, unused-ignore]
        return
    _check_flat(key, value)


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


_Check = Callable[[str, object], None]

# The value check of each key; a key not listed takes the generic check. The
# keys checked against enumerations (``v``, ``action``, ``outcome``,
# ``reason``) are handled by :func:`validate_body` itself.
_CHECKS: Final[Mapping[str, _Check]] = {
    **dict.fromkeys(_IDENT_KEYS, _check_ident),
    **dict.fromkeys(_IDENT_LISTS, _check_ident_list),
    "purpose": _check_name,
    "actor": _check_actor,
    "subject_ref": _check_ref,
    "subjects": _check_refs,
    "event_id": _check_stamp,
    "ts": _check_stamp,
    "statement_fp": _check_hex,
    "count": _check_int,
    "final_seq": _check_int,
    "target": _check_target,
}
_ENUMERATED: Final = frozenset({"v", "action", "outcome", "reason"})
_REQUIRED: Final = frozenset({"v", "event_id", "ts", "outcome", "actor"})
_OUTCOMES: Final = frozenset(o.value for o in AuditOutcome)


def check_values(items: Iterable[tuple[str, Any]]) -> None:
    """Check the shape of each ``(key, value)`` (not whether the key is allowed).

    Raises:
        ValueError: A value has the wrong type or shape; the message names the
            key, never the value.
    """
    checks = _CHECKS
    flat = _check_flat
    for key, value in items:
        if key in _ENUMERATED:
            continue
        checks.get(key, flat)(key, value)


#: Keys a prepared decision event may write verbatim: between quotes once
#: checked as a plain ``str`` (identifiers and pseudonyms need no escaping), or
#: as a decimal ``int``. See :func:`check_plain`.
PLAIN_STR_KEYS: Final = frozenset({"subject_ref", "request_id", "trace_id"})
PLAIN_INT_KEYS: Final = frozenset({"count", "final_seq"})


def check_plain(
    items: Iterable[tuple[str, Any]], *, skip: frozenset[str] = frozenset()
) -> None:
    """Check values like :func:`check_values`, with plain types where written verbatim.

    Keys in :data:`PLAIN_STR_KEYS` and :data:`PLAIN_INT_KEYS` must hold exactly
    a ``str`` or an ``int`` (not a subclass such as an enum or ``bool``).

    Keys in *skip* are not checked.

    Raises:
        ValueError: A value has the wrong type or shape.
    """
    idents = _GOOD_IDENTS
    refs = _GOOD_REFS
    for key, value in items:
        if key in skip:
            continue
        cls = value.__class__
        if key in PLAIN_STR_KEYS:
            if cls is not str:
                raise _SchemaError(f"audit key {key!r} must be a plain string")
            if value not in (refs if key == "subject_ref" else idents):
                _CHECKS[key](key, value)
        elif key in PLAIN_INT_KEYS:
            if cls is not int or not _INT64_MIN <= value <= _INT64_MAX:
                raise _SchemaError(f"audit key {key!r} must be a 64-bit integer")
        elif key in _ENUMERATED:
            raise _SchemaError(f"audit key {key!r} cannot be given here")
        else:
            _CHECKS.get(key, _check_flat)(key, value)


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
    keys = body.keys()
    if not keys <= allowed:
        extra = sorted(set(keys) - allowed)
        raise _SchemaError(f"audit keys not allowed for {action}: {extra}")
    if not keys >= _REQUIRED:
        missing = min(_REQUIRED - set(keys))
        raise _SchemaError(f"audit body lacks {missing!r}")
    if body["v"] != SCHEMA_VERSION:
        raise _SchemaError("audit body has an unknown schema version")
    if body["outcome"] not in _OUTCOMES:
        raise _SchemaError("audit key 'outcome' is not an outcome")
    reason = body.get("reason")
    if reason is not None and reason not in REASONS:
        raise _SchemaError("audit key 'reason' is not an enumerated reason")
    if action == "audit.redact" and (
        reason not in REDACT_REASONS or "target" not in keys
    ):
        raise _SchemaError("audit.redact needs a target and a redaction reason")
    check_values(body.items())


# ``check_circular=False``: bodies are small trees built by custdata, and the
# circular-reference bookkeeping is a measurable share of the encoding time.
_ENCODE: Final = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
).encode
# The C string encoder json itself uses with ``ensure_ascii=False``.
_STR: Final[Callable[[str], str]] = encode_basestring
_INT_REPR: Final = int.__repr__


def encode_value(value: object) -> str:
    """Return the canonical JSON text of one body value.

    The same text as ``json.dumps(value, sort_keys=True, separators=(",",
    ":"), ensure_ascii=False)``; plain strings and integers skip the encoder.
    """
    cls = value.__class__
    if cls is str:
        return _STR(value)  # type: ignore[arg-type]
    if cls is int:
        return _INT_REPR(value)  # type: ignore[arg-type, unused-ignore]
    return _ENCODE(value)


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """Encode *body* as canonical JSON bytes.

    Sorted keys, ``","`` and ``":"`` separators, no whitespace, UTF-8 without
    ASCII escaping (:mod:`json`'s C encoder). Bodies hold no floats, so the
    encoding is unique. Decision events normally skip this: their static part
    is encoded once and their few dynamic values are filled into a template of
    the same bytes (see :class:`custdata.audit.AuditTrail`).

    Args:
        body: A validated body.

    Returns:
        The exact bytes the chain hashes.
    """
    return _ENCODE(body).encode("utf-8")


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_EPOCH_NAIVE: Final = dt.datetime(1970, 1, 1)  # noqa: DTZ001 - UTC by construction
_US: Final = 1_000_000
_MS_MASK: Final = (1 << 48) - 1
# The time part of the last event id, rendered once per millisecond.
_millisecond: tuple[int, str] = (-1, "")
# The seconds part of the last timestamp written, rendered once per second.
_second: tuple[int, str] = (-1, "")
# The millisecond of the last stamps, the event-id head with the process's
# random middle, and the timestamp up to the milliseconds.
_ms_parts: tuple[int, str, str] = (-1, "", "")
# The end of a timestamp after the milliseconds: "000Z" to "999Z".
_MICROS: Final = tuple(f"{n:03d}Z" for n in range(1000))


def _id_state() -> tuple[str, Iterator[int]]:
    """Return this process's random event-id middle and its 48-bit counter.

    Event ids follow RFC 9562 (UUIDv7, method 2 of section 6.2): after the
    48-bit millisecond and the version come 12 random bits, the variant and 14
    random bits fixed per process, then 48 bits counting up from a random
    start. Ids of one process are therefore distinct even if the clock steps
    back, and ids of two processes collide only if 26 random bits and the
    counter ranges coincide within one millisecond.
    """
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68
    rand_b_high = (rand >> 54) & 0x3FFF
    middle = f"{rand_a:03x}-{0x8000 | rand_b_high:04x}-"
    start = rand & _COUNTER_MASK
    return middle, itertools.count(start)


_COUNTER_MASK: Final = (1 << 48) - 1
_id_middle, _id_counter = _id_state()


def _reset_ids_after_fork() -> None:
    global _id_middle, _id_counter, _ms_parts  # noqa: PLW0603
    _id_middle, _id_counter = _id_state()
    _ms_parts = (-1, "", "")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_ids_after_fork)


def epoch_us(now: dt.datetime | None = None) -> int:
    """Return *now* (the wall clock when omitted) as integer microseconds since 1970 UTC.

    Raises:
        ValueError: *now* is naive.
    """
    if now is None:
        return time.time_ns() // 1000
    if now.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    delta = now - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def ts_from_us(us: int) -> str:
    """Format microseconds since 1970 UTC as ``2026-11-29T15:38:12.123456Z``."""
    global _second  # noqa: PLW0603 - a one-entry cache, replaced atomically
    sec, frac = divmod(us, _US)
    cached_sec, prefix = _second
    if cached_sec != sec:
        prefix = (_EPOCH_NAIVE + dt.timedelta(seconds=sec)).strftime(
            "%Y-%m-%dT%H:%M:%S"
        )
        _second = (sec, prefix)
    return f"{prefix}.{frac:06d}Z"


def stamps_from_us(us: int) -> tuple[str, str]:
    """Return ``(event_id, ts)`` for microseconds *us* since 1970 UTC.

    The same as :func:`event_id_from_us` and :func:`ts_from_us`, in one call
    (the hot path): what stays the same within a millisecond is rendered once
    per millisecond.
    """
    ms = us // 1000
    parts = _ms_parts
    if parts[0] != ms:
        parts = _new_ms_parts(ms)
    # next() on itertools.count is atomic, so threads never share a value.
    return (
        "%s%012x" % (parts[1], next(_id_counter) & _COUNTER_MASK),  # noqa: UP031 - the fastest here
        parts[2] + _MICROS[us % 1000],
    )


def _new_ms_parts(ms: int) -> tuple[int, str, str]:
    """Render and cache the parts of the stamps shared within millisecond *ms*."""
    global _ms_parts, _second  # noqa: PLW0603 - one-entry caches, replaced atomically
    sec, milli = divmod(ms, 1000)
    cached_sec, prefix = _second
    if cached_sec != sec:
        prefix = (_EPOCH_NAIVE + dt.timedelta(seconds=sec)).strftime(
            "%Y-%m-%dT%H:%M:%S"
        )
        _second = (sec, prefix)
    h = f"{ms & _MS_MASK:012x}"
    parts = (ms, f"{h[:8]}-{h[8:]}-7{_id_middle}", f"{prefix}.{milli:03d}")
    _ms_parts = parts
    return parts


def event_id_from_us(us: int) -> str:
    """Return a new UUIDv7 (RFC 9562) embedding the millisecond of *us*.

    48 bits of Unix milliseconds, version 7, then the process's random bits
    and counter (see :func:`_id_state`), as ``xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx``.
    """
    global _millisecond  # noqa: PLW0603 - a one-entry cache, replaced atomically
    ms = us // 1000
    cached_ms, head = _millisecond
    if cached_ms != ms:
        h = f"{ms & _MS_MASK:012x}"
        head = f"{h[:8]}-{h[8:]}-7"
        _millisecond = (ms, head)
    return f"{head}{_id_middle}{next(_id_counter) & _COUNTER_MASK:012x}"


def new_event_id(*, now: dt.datetime | None = None) -> str:
    """Return a new UUIDv7 (RFC 9562) as a string: time-ordered and unique.

    Args:
        now: The time to embed; the wall clock when omitted.
    """
    return event_id_from_us(epoch_us(now))


def format_ts(now: dt.datetime) -> str:
    """Format an aware datetime as UTC ISO-8601 with microseconds and ``Z``.

    Raises:
        ValueError: *now* is naive.
    """
    return ts_from_us(epoch_us(now))


def parse_ts(value: str) -> dt.datetime:
    """Parse a timestamp written by :func:`format_ts` into an aware datetime."""
    if len(value) != _TS_LEN or value[-1] != "Z":
        raise ValueError("not an audit timestamp")
    return dt.datetime.fromisoformat(value[:-1]).replace(tzinfo=dt.timezone.utc)
