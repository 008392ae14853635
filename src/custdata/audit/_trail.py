"""The audit trail: a structlog pipeline custdata owns, sealing into per-process chains.

The pipeline is built with :func:`structlog.wrap_logger` and custdata's own
processors, wrapper class and context class, so the application's
``structlog.configure(...)`` or ``structlog.contextvars.clear_contextvars()``
cannot drop or alter audit events; custdata never calls ``structlog.configure``::

    trail method → _stamp → _encode (validate, canonicalise) → _Dispatcher.audit
                   → AuditTrail._seal (lock: reserve, seal, emit to every sink)

A decision about one subject with plain values (the event of nearly every SQL
statement that reveals customer data) takes a shorter way with the same
steps and bytes: :meth:`AuditTrail.record_decision` checks its dynamic values
as ``_encode`` does, fills them into its shape's prepared template (one
``%``-format of the canonical body) and hands the body to
:meth:`AuditTrail._seal`. No other code sees the event on either way.

Each writer process has one chain, started lazily with ``audit.chain_start``
and again in a child after ``fork``; :meth:`AuditTrail.close` (also run at
exit) appends ``audit.chain_stop``, flushes the sinks and anchors a final
checkpoint.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import operator
import os
import socket
import sys
import threading
import time
import weakref

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from types import MappingProxyType
from typing import Any, Final


if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

import structlog

from custdata._decision import AccessDecision, Action, Outcome
from custdata._errors import AuditError, AuditUnavailableError, ConfigurationError
from custdata._util import Admission

from . import _accel
from ._chain import ChainWriter, Fields, SealedRecord
from ._checkpoint import Checkpoint, Checkpointer
from ._keys import (
    AuditKeySource,
    PseudonymKey,
    pseudonym_key,
    pseudonym_root,
    subject_ref,
)
from ._schema import (
    _GOOD_IDENTS,
    _GOOD_REFS,
    _INT64_MAX,
    _INT64_MIN,
    EVENT_KEYS,
    IDENTIFIER,
    MAX_SUBJECTS_PER_EVENT,
    PLAIN_INT_KEYS,
    PLAIN_STR_KEYS,
    SCHEMA_VERSION,
    AuditAction,
    AuditOutcome,
    audit_name,
    canonical_json,
    check_plain,
    consent_ids,
    encode_value,
    epoch_us,
    stamps_from_us,
    validate_body,
)
from ._sinks import AuditSink


__all__ = ["AuditTrail"]

_log = logging.getLogger("custdata.audit")
_log.addHandler(logging.NullHandler())


def _lib_version() -> str:
    try:
        return metadata.version("custdata")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0+unknown"


_LIB: Final = _lib_version()

_SYNC_ANCHOR: Final = frozenset(
    {
        "key.rotate",
        "key.shred",
        "key.retire",
        "audit.config_change",
        "audit.redact",
        "record.purge.intent",
        "record.purge.done",
        "export.third_party",
        "export.subject",
    }
)

#: Subject pseudonyms kept per trail (first in, first out, one new pseudonym in
#: :data:`custdata._util.ADMIT_WHEN_FULL` let in once full; about 16 MiB when full).
#: A decision naming more subjects than this only fills free room (see
#: :meth:`AuditTrail._refs_of`).
_REF_CACHE: Final = 65_536
_time_ns = time.time_ns
_LIVE: weakref.WeakSet[AuditTrail] = weakref.WeakSet()


def _before_fork() -> None:
    for trail in list(_LIVE):
        trail._lock.acquire()  # noqa: SLF001 - fork protocol of this module


def _after_fork_parent() -> None:
    for trail in list(_LIVE):
        trail._lock.release()  # noqa: SLF001


def _after_fork_child() -> None:
    for trail in list(_LIVE):
        trail._reset_after_fork()  # noqa: SLF001


def _close_all_at_exit() -> None:
    for trail in list(_LIVE):
        _close_quietly(trail)


def _close_quietly(trail: AuditTrail) -> None:
    try:
        trail.close()
    except Exception:  # noqa: BLE001 - best effort at interpreter exit
        _log.exception("audit trail could not be closed at exit")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_parent,
        after_in_child=_after_fork_child,
    )
atexit.register(_close_all_at_exit)


class _AuditLogger(structlog.BoundLoggerBase):
    """The wrapper class of the audit pipeline: one method, ``audit``.

    It runs the bound context and the event through the processors the trail
    gave :func:`structlog.wrap_logger` and hands the final processor's
    ``(args, kwargs)`` to the wrapped logger, like structlog's own
    ``_process_event``, without its per-call copy of the (empty) context: the
    trail binds nothing, so the event dict the trail built is the event dict.
    The processors never drop an event, so there is no ``DropEvent`` handling.
    """

    def audit(self, **body: Any) -> SealedRecord:
        """Run *body* through the processors and seal it."""
        return self.audit_event(body)

    def audit_event(self, event: dict[str, Any]) -> SealedRecord:
        """Like :meth:`audit`, for an event already held in a dict (which it consumes)."""
        context = self._context
        if context:
            event = {**context, **event}
        logger = self._logger
        result: Any = event
        for proc in self._processors:
            result = proc(logger, "audit", result)
        args, kwargs = result
        if kwargs:
            return logger.audit(*args, **kwargs)  # type: ignore[no-any-return]
        return logger.audit(*args)  # type: ignore[no-any-return]


#: The event-dict key under which :meth:`AuditTrail.record_decision` passes
#: the prepared static part of a decision event through the pipeline.
_SHAPE: Final = "_shape"
_ENUMERATED: Final = frozenset({"v", "action", "outcome", "reason"})
# Plain strings a template writes between quotes: the stamps (made by _stamp,
# hex digits, digits and punctuation) and the checked identifiers.
_PLAIN_STR: Final = PLAIN_STR_KEYS | {"event_id", "ts"}


class _Template:
    """The body template of one shape for one set of dynamic keys.

    ``parts`` is the sorted canonical body cut at the dynamic values: the
    static text (fragments, keys and quotes) at even positions and a
    placeholder at each odd position, for the dynamic values in sorted key
    order, which ``values`` picks from an event. Plain strings (stamps,
    pseudonym, request and trace ids) go in between quotes as they are, plain
    integers in decimal, and the values of the keys in ``encoded`` as JSON.
    ``refs``, ``idents`` and ``ints`` name the values checked with a memoised
    fast check; ``int_slots`` and ``encoded_slots`` are their positions.
    ``body`` is the same body as one ``%``-format: ``body % values``, with the
    values in slot order as :meth:`AuditTrail.record_decision` has them (plain
    strings and integers), is the canonical body text in one C call; ``texts``
    are its static texts in UTF-8, which the native accelerator's ``fill``
    joins with the values into the same bytes.
    """

    __slots__ = (
        "_compact",
        "body",
        "encoded",
        "encoded_slots",
        "idents",
        "int_slots",
        "ints",
        "names",
        "parts",
        "refs",
        "texts",
        "values",
    )

    def __init__(self, shape: _Shape, keys: Iterable[str]) -> None:
        frags = shape.frags
        names = sorted(set(keys) - frags.keys() - {_SHAPE})
        parts: list[Any] = []
        text = "{"
        for n, key in enumerate(sorted(frags.keys() | set(names))):
            if n:
                text += ","
            frag = frags.get(key)
            if frag is not None:
                text += frag
                continue
            quote = '"' if key in _PLAIN_STR else ""
            parts += [f'{text}"{key}":{quote}', None]
            text = quote
        parts.append(text + "}")
        self.parts = parts
        # "%s" of an int is its decimal text and of a str the str itself:
        # what the slots of plain values hold (encoded values are not filled
        # this way; see record_decision).
        self.body = "%s".join(p.replace("%", "%%") for p in parts[::2])
        #: The same static texts, UTF-8, for the native fill (``_native.fill``).
        self.texts: tuple[bytes, ...] = tuple(p.encode("utf-8") for p in parts[::2])
        self.names = tuple(names)
        getter = operator.itemgetter(*names)
        self.values: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            getter if len(names) > 1 else lambda event: (getter(event),)
        )
        self.refs = tuple(k for k in names if k == "subject_ref")
        self.idents = tuple(k for k in names if k in PLAIN_STR_KEYS - {"subject_ref"})
        self.ints = tuple(k for k in names if k in PLAIN_INT_KEYS)
        self.encoded = tuple(
            k for k in names if k not in _PLAIN_STR and k not in PLAIN_INT_KEYS
        )
        slot = {k: 2 * n + 1 for n, k in enumerate(names)}
        self.int_slots = tuple(slot[k] for k in self.ints)
        self.encoded_slots = tuple(slot[k] for k in self.encoded)
        self._compact: tuple[list[str], str] | None = None

    def compact(self) -> tuple[list[str], str]:
        """Return this template for the compact (v2) JSON-lines format.

        ``(texts, values)``: the static texts of the body between the dynamic
        values, each value's JSON text excluded (so a plain string's quotes
        belong to the value, not the text), and a ``%``-format that renders
        the values of an event's slots (``parts[1::2]`` filled, or the plain
        values of :attr:`body`) as the JSON array of those values. ``texts[0] + v[0] + texts[1] + … + texts[-1]`` is the
        canonical body again. Computed once.
        """
        found = self._compact
        if found is not None:
            return found
        texts = [p for n, p in enumerate(self.parts) if not n % 2]
        formats = []
        for n, key in enumerate(self.names):
            if key in _PLAIN_STR:
                texts[n] = texts[n][:-1]
                texts[n + 1] = texts[n + 1][1:]
                formats.append('"%s"')
            else:
                formats.append("%s")
        found = (texts, "[" + ",".join(formats) + "]")
        self._compact = found
        return found


class _Shape:
    """The static part of the events of one kind of decision, prepared once.

    Decisions that differ only in their subjects, count and request ids (the
    common case: one per SQL statement) share the action, actor, purpose,
    policy version, entity, fields and categories. Those are validated once and
    encoded once into JSON fragments; each event then only checks and encodes
    its few dynamic values and fills them into a template of the sorted body.
    """

    __slots__ = ("action", "dynamic", "frags", "plain", "static", "sync", "templates")

    def __init__(self, static: dict[str, Any]) -> None:
        action = static["action"]
        probe = dict(static, event_id="0", ts="0")
        validate_body(probe)
        self.static = static
        self.action: str = action
        self.sync = action in _SYNC_ANCHOR
        #: The keys an event may add: allowlisted, not static, not enumerated.
        self.dynamic = (EVENT_KEYS[action] - static.keys() - _ENUMERATED) | {_SHAPE}
        self.frags = {k: f'"{k}":{encode_value(v)}' for k, v in static.items()}
        #: Templates by the event's keys in insertion order (``tuple(event)``).
        self.templates: dict[tuple[str, ...], _Template] = {}
        #: The templates of single-subject events with plain values, by
        #: whether a request id (1) and a trace id (2) are given: see
        #: :meth:`plain_template`.
        self.plain: list[_Template | None] = [None] * 4

    def plain_template(self, which: int) -> _Template:
        """Return the template :meth:`AuditTrail.record_decision` fills directly.

        Its slots, in sorted key order, are ``count``, ``event_id``,
        ``request_id`` (if *which* & 1), ``subject_ref``, ``trace_id`` (if
        *which* & 2) and ``ts``: plain integers and strings only.

        Raises:
            ValueError: A key is not allowed in this shape's events.
        """
        keys = ["subject_ref", "count", "event_id", "ts"]
        if which & 1:
            keys.append("request_id")
        if which & 2:
            keys.append("trace_id")
        found = self.template(tuple(keys))
        if found.encoded or found.names != tuple(sorted(keys)):  # pragma: no cover
            raise AssertionError("a plain decision template holds plain values")
        self.plain[which] = found
        return found

    def template(self, keys: tuple[str, ...]) -> _Template:
        """Return the template of events whose keys are *keys* (checked, cached).

        Raises:
            ValueError: A key is not allowed in this shape's events.
        """
        found = self.templates.get(keys)
        if found is not None:
            return found
        if not self.dynamic.issuperset(keys):
            extra = sorted(set(keys) - self.dynamic)
            raise ValueError(f"audit keys not allowed for {self.action}: {extra}")
        found = _Template(self, keys)
        if len(self.templates) < _TEMPLATES:
            self.templates[keys] = found
        return found


def _stamp(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Add the schema version, a UUIDv7 event id, the timestamp and the library version."""
    now = event.pop("now", None)
    event["event_id"], event["ts"] = stamps_from_us(
        _time_ns() // 1000 if now is None else epoch_us(now)
    )
    if _SHAPE in event:
        # A prepared decision event carries ``v`` and ``lib`` in its static
        # part and never holds a None.
        return event
    if None in event.values():
        for key in [k for k, v in event.items() if v is None]:
            del event[key]
    event["v"] = SCHEMA_VERSION
    event["lib"] = _LIB
    return event


def _encode(logger: object, method: str, event: structlog.typing.EventDict) -> Any:
    """Validate the event and encode its body as canonical JSON for the dispatcher.

    A generic event is checked against the schema in full and encoded. A
    prepared decision event (its shape under ``_SHAPE``) checks only its
    dynamic keys and values, which must have exactly the types its template
    writes verbatim (the static part was checked when the shape was prepared),
    and fills them into the template: the same bytes as ``canonical_json`` of
    the body.

    Returns:
        ``((body, fields), {})``: the dispatcher's arguments, where *fields* is
        the decoded body, or for a prepared event its static and dynamic parts.

    Raises:
        ValueError: A key is not allowed or a value has the wrong shape.
    """
    shape: _Shape | None = event.pop(_SHAPE, None)
    if shape is None:
        validate_body(event)
        return ((canonical_json(event), event), _NO_KWARGS)
    keys = tuple(event)
    template = shape.templates.get(keys) or shape.template(keys)
    # The memoised checks of the values written verbatim; anything else (a
    # new pseudonym or id, a wrong type) takes the full check, which raises
    # or remembers the value.
    good = _GOOD_REFS
    for key in template.refs:
        value = event[key]
        if value.__class__ is not str or value not in good:
            check_plain(((key, value),))
    good = _GOOD_IDENTS
    for key in template.idents:
        value = event[key]
        if value.__class__ is not str or value not in good:
            check_plain(((key, value),))
    for key in template.ints:
        value = event[key]
        if value.__class__ is not int or not _INT64_MIN <= value <= _INT64_MAX:
            check_plain(((key, value),))
    parts = template.parts.copy()
    parts[1::2] = template.values(event)
    for slot in template.int_slots:
        parts[slot] = _INT_STR(parts[slot])
    if template.encoded:
        check_plain([(k, event[k]) for k in template.encoded])
        for slot in template.encoded_slots:
            parts[slot] = encode_value(parts[slot])
    # The decoded body stays in parts until a sink asks for it; a compact
    # JSON-lines sink writes the filled slots of the template instead.
    return (
        (
            "".join(parts).encode("utf-8"),
            (shape.static, event, template, tuple(parts[1::2])),
        ),
        _NO_KWARGS,
    )


_INT_STR: Final = int.__repr__
#: The (unused) keyword arguments of the dispatcher call; never mutated.
_NO_KWARGS: Final[Mapping[str, Any]] = MappingProxyType({})


class _Dispatcher:
    """The "logger" at the end of the pipeline: seals and fans out to the sinks."""

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = weakref.ref(trail)

    def audit(self, body: bytes, fields: Fields) -> SealedRecord:
        """Seal *body* into the trail's chain and emit it to every sink."""
        trail = self._trail()
        if trail is None:  # pragma: no cover - the trail owns the dispatcher
            raise AuditUnavailableError("the audit trail is gone")
        return trail._seal(body, fields)  # noqa: SLF001 - the trail's own dispatcher


_DECISION_ACTIONS: Final = {
    Action.READ: AuditAction.FIELD_REVEAL.value,
    Action.EXPORT: AuditAction.EXPORT_THIRD_PARTY.value,
    Action.DELETE: AuditAction.RECORD_DELETE.value,
    Action.UPDATE: AuditAction.RECORD_BULK_UPDATE.value,
    Action.SEARCH: AuditAction.FIELD_SEARCH.value,
}
_SHAPES: Final = 4096
_PLAIN_OR_NONE: Final = (str, type(None))
_TEMPLATES: Final = 64


class AuditTrail:
    """The tamper-evident audit trail; implements :class:`custdata.DecisionRecorder`.

    Args:
        keys: The audit root key source (a :class:`custdata.crypto.Keyring`).
        sinks: Where sealed records go (at least one).
        checkpointer: Makes signed checkpoints; ``None`` for a writer that leaves
            checkpointing to another process. Forked children never checkpoint.
        checkpoint_interval: Seconds between periodic checkpoints (heartbeats),
            or ``None`` to checkpoint only on demand and after key, purge,
            export and audit-configuration events.
        deployment: First part of chain ids (an identifier).
        service: Second part of chain ids (an identifier).
        fail_closed: Refuse (raise) when an event cannot be recorded. When
            false, :meth:`record_decision` logs a warning instead; changing it is
            itself audited (:meth:`set_fail_closed`).
        tenant: Mixed into subject pseudonyms.
        actor_type: The ``actor.type`` written for decision actors.
        checkpointed_by: For a writer without a *checkpointer* whose trail
            another process checkpoints (a sidecar, a cron job): that log's
            origin. Each chain records at its start whether, and by which
            log, it is checkpointed (``chain_info.checkpointed`` is
            ``"writer"`` or ``"external"``, ``chain_info.checkpoint_origin``
            the origin), so a verifier treats a missing, emptied or older
            checkpoint file as a finding (``CHECKPOINT_MISSING``). Forked
            children of a checkpointing writer record ``"external"``.

    Raises:
        ConfigurationError: No sink is given, *deployment*, *service* or
            *actor_type* is not an identifier, or *checkpoint_interval* is not
            positive (a ``ValueError``).
    """

    def __init__(
        self,
        keys: AuditKeySource,
        *,
        sinks: Sequence[AuditSink],
        checkpointer: Checkpointer | None = None,
        checkpoint_interval: float | None = 60.0,
        deployment: str = "custdata",
        service: str = "app",
        fail_closed: bool = True,
        tenant: str = "",
        actor_type: str = "user",
        checkpointed_by: str | None = None,
    ) -> None:
        if not sinks:
            raise ConfigurationError("an audit trail needs at least one sink")
        for what, value in (
            ("deployment", deployment),
            ("service", service),
            ("actor_type", actor_type),
        ):
            if IDENTIFIER.fullmatch(str(value)) is None:
                raise ConfigurationError(
                    f"the audit trail's {what} must be an identifier"
                )
        if checkpoint_interval is not None and not checkpoint_interval > 0:
            raise ConfigurationError("checkpoint_interval must be positive or None")
        #: How this trail's chains are checkpointed: ("writer" | "external", origin).
        self._checkpointed: tuple[str, str] | None = None
        if checkpointer is not None:
            self._checkpointed = ("writer", checkpointer.signer.origin)
        elif checkpointed_by is not None:
            self._checkpointed = ("external", checkpointed_by)
        self._keys = keys
        self._sinks: list[AuditSink] = list(sinks)
        self._checkpointer = checkpointer
        self._deployment = deployment
        self._service = service
        self._fail_closed = fail_closed
        self._tenant = tenant
        self._actor_type = actor_type
        self._lock = threading.Lock()
        self._writer: ChainWriter | None = None
        self._parent_chain: str | None = None
        self._pid = os.getpid()
        self._closed = False
        # Pseudonyms stay stable across key rotation (see _keys.pseudonym_root).
        self._pseudo = PseudonymKey(pseudonym_key(pseudonym_root(keys)))
        # Pseudonyms of recently seen subjects (raw ids stay in memory only):
        # at most _REF_CACHE; once full, one new pseudonym in ADMIT_WHEN_FULL
        # takes the oldest one's place (first in, first out), so passes over
        # more distinct subjects than that keep most of the cache's hits.
        self._refs: OrderedDict[str, str] = OrderedDict()
        self._admit = Admission()
        # Prepared static parts of decision events, by decision kind.
        self._shapes: dict[tuple[Any, ...], _Shape] = {}
        self._log: _AuditLogger = structlog.wrap_logger(
            _Dispatcher(self),
            processors=[_stamp, _encode],
            wrapper_class=_AuditLogger,
            context_class=dict,
            cache_logger_on_first_use=True,
        ).bind()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if checkpointer is not None and checkpoint_interval is not None:
            self._ticker = threading.Thread(
                target=self._tick,
                args=(checkpoint_interval,),
                name="custdata-audit-checkpointer",
                daemon=True,
            )
            self._ticker.start()
        _LIVE.add(self)

    def __repr__(self) -> str:
        chain = self._writer.chain if self._writer is not None else None
        return f"<AuditTrail chain={chain!r} sinks={[s.name for s in self._sinks]}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties --------------------------------------------------------

    @property
    def chain(self) -> str | None:
        """The id of this process's chain, once the first event started it."""
        return self._writer.chain if self._writer is not None else None

    @property
    def fail_closed(self) -> bool:
        """Whether an event that cannot be recorded refuses the operation."""
        return self._fail_closed

    @property
    def sinks(self) -> tuple[AuditSink, ...]:
        """The sinks, in emit order."""
        return tuple(self._sinks)

    def subject_ref(self, subject: str) -> str:
        """Return the keyed pseudonym written for *subject* (``sr_…``)."""
        ref = self._refs.get(subject)
        if ref is None:
            ref = subject_ref(self._pseudo, subject, tenant=self._tenant)
            self._admit.put(self._refs, subject, ref, _REF_CACHE)
        return ref

    def _refs_of(self, subjects: Iterable[str]) -> list[str]:
        """The distinct pseudonyms of *subjects*, in order (cached as they allow).

        A decision that names more subjects than the cache holds cannot keep
        them all: evicting the oldest for each would push out each of its own
        pseudonyms before the next pass over the same rows needs it (a scan
        larger than the cache would then compute every pseudonym every time)
        and flush the pseudonyms of the recent small reads. Such a decision
        reads the cache and fills only its free room, evicting nothing; a
        smaller one caches its new subjects as :meth:`subject_ref` does (first
        in, first out; once the cache is full, one in
        :data:`~custdata._util.ADMIT_WHEN_FULL`).
        """
        named = subjects if isinstance(subjects, (list, tuple)) else list(subjects)
        if len(named) <= _REF_CACHE:
            return list(dict.fromkeys(self.subject_ref(s) for s in named))
        cache = self._refs
        get = cache.get
        key = self._pseudo
        tenant = self._tenant
        room = _REF_CACHE - len(cache)
        refs: list[str] = []
        append = refs.append
        for subject in named:
            ref = get(subject)
            if ref is None:
                ref = subject_ref(key, subject, tenant=tenant)
                if room > 0:
                    cache[subject] = ref
                    room -= 1
            append(ref)
        return list(dict.fromkeys(refs))

    # -- the core emit path --------------------------------------------------

    def _start_chain_locked(self) -> ChainWriter:
        writer = ChainWriter(
            self._keys, deployment=self._deployment, service=self._service
        )
        info: dict[str, Any] = {"pid": os.getpid(), "host": _hostname()}
        if self._parent_chain is not None:
            info["parent_chain"] = self._parent_chain
        if self._checkpointed is not None:
            info["checkpointed"], info["checkpoint_origin"] = self._checkpointed
        body: dict[str, Any] = {
            "action": AuditAction.AUDIT_CHAIN_START.value,
            "outcome": AuditOutcome.ALLOWED.value,
            "actor": {"type": "system", "id": "custdata"},
            "chain_info": info,
            "reason": "startup",
        }
        _stamp(None, "audit", body)
        validate_body(body)
        self._emit_locked(writer, canonical_json(body), body)
        self._writer = writer
        return writer

    def _seal(self, body: bytes, fields: Fields) -> SealedRecord:
        """Seal *body* into this process's chain and emit it to every sink.

        The hot path of every event (:meth:`_emit_locked`, with the lock,
        the chain's lazy start and :meth:`ChainWriter.advance` instead of
        the checks of :meth:`ChainWriter.commit`).

        Raises:
            AuditUnavailableError: The trail is closed or a sink refused.
        """
        with self._lock:
            if self._closed:
                raise AuditUnavailableError("the audit trail is closed")
            writer = self._writer
            if writer is None:
                writer = self._start_chain_locked()
            sinks = self._sinks
            for sink in sinks:
                sink.reserve()
            record = writer.prepare(body, fields)
            accepted = 0
            try:
                for sink in sinks:
                    sink.emit(record)
                    accepted += 1
            finally:
                # A record some sink holds is part of the chain; one nobody
                # took is not.
                if accepted:
                    writer.advance(record.mac)
            return record

    def _emit_locked(
        self, writer: ChainWriter, body: bytes, fields: dict[str, Any]
    ) -> SealedRecord:
        for sink in self._sinks:
            sink.reserve()
        record = writer.prepare(body, fields)
        accepted = 0
        try:
            for sink in self._sinks:
                sink.emit(record)
                accepted += 1
        finally:
            # A record some sink holds is part of the chain; one nobody took is not.
            if accepted:
                writer.commit(record)
        return record

    def record(
        self,
        action: AuditAction | str,
        *,
        outcome: AuditOutcome | str,
        actor: Mapping[str, Any],
        now: dt.datetime | None = None,
        **fields: Any,
    ) -> SealedRecord:
        """Record one event of *action* with allowlisted *fields*.

        Args:
            action: The action.
            outcome: The outcome.
            actor: ``{"type": ..., "id": ...}`` (ids are surrogate keys).
            now: The event time; the wall clock when omitted.
            **fields: Further body keys allowlisted for the action.

        Returns:
            The sealed record.

        Raises:
            ValueError: A key is not allowed or a value has the wrong shape.
            AuditUnavailableError: A sink could not take the event.
        """
        action_s = action.value if isinstance(action, AuditAction) else action
        outcome_s = outcome.value if isinstance(outcome, AuditOutcome) else outcome
        purpose = fields.get("purpose")
        if purpose.__class__ is str:
            fields["purpose"] = audit_name(purpose)
        record = self._log.audit(
            action=action_s,
            outcome=outcome_s,
            actor=_recorded_actor(actor),
            now=now,
            **fields,
        )
        if action_s in _SYNC_ANCHOR:
            self._anchor_now(now)
        return record

    # -- decisions -----------------------------------------------------------

    def record_decision(
        self, decision: AccessDecision, *, now: dt.datetime | None = None
    ) -> None:
        """Record one access decision before its effect is released.

        READ allowed → ``field.reveal``; any denial → ``purpose.check`` denied
        with the reason; CLAIM and WRITE → ``purpose.check``; EXPORT →
        ``export.third_party``; DELETE → ``record.delete``; UPDATE →
        ``record.bulk_update``. Subjects are pseudonymised; more than 1,000 are
        split over several events.

        Raises:
            AuditUnavailableError: The event could not be recorded (unless the
                trail is fail-open, which logs a warning instead).
        """
        # The single-subject case is inlined: this runs once per SQL statement
        # that reveals customer data.
        d = decision
        key = _shape_key(d)
        try:
            shape = self._shapes.get(key)
        except TypeError:  # lists where tuples were expected: do not cache
            shape = self._new_shape(d)
        if shape is None:
            shape = self._decision_shape(d)
        subjects = d.subjects
        count = d.count
        rid = d.request_id
        tid = d.trace_id
        if (
            len(subjects) == 1
            and not d.consents
            and count.__class__ is int
            and _INT64_MIN <= count <= _INT64_MAX
            and rid.__class__ in _PLAIN_OR_NONE
            and tid.__class__ in _PLAIN_OR_NONE
        ):
            # The body is the shape's template filled with plain values: one
            # %-format, checked as _encode checks them (memoised), and sealed
            # without the pipeline's generic steps.
            subject = subjects[0]
            ref = self._refs.get(subject) or self.subject_ref(subject)
            if ref not in _GOOD_REFS:
                check_plain((("subject_ref", ref),))
            good = _GOOD_IDENTS
            which = 0
            if rid is not None:
                which = 1
                if rid not in good:
                    check_plain((("request_id", rid),))
            if tid is not None:
                which += 2
                if tid not in good:
                    check_plain((("trace_id", tid),))
            template = shape.plain[which] or shape.plain_template(which)
            event_id, ts = stamps_from_us(
                _time_ns() // 1000 if now is None else epoch_us(now)
            )
            if which == 0:
                values: tuple[Any, ...] = (count, event_id, ref, ts)
            elif which == 1:
                values = (count, event_id, rid, ref, ts)
            elif which == 2:  # noqa: PLR2004 - a trace id, no request id
                values = (count, event_id, ref, tid, ts)
            else:
                values = (count, event_id, rid, ref, tid, ts)
            native = _accel.native
            # The native fill writes the same bytes (None for a value it
            # does not write: then the %-format does).
            body = None if native is None else native.fill(template.texts, values)
            if body is None:
                body = (template.body % values).encode("utf-8")
            try:
                self._seal(body, (shape.static, None, template, values))
            except AuditUnavailableError:
                if self._fail_closed:
                    raise
                _log.warning(
                    "audit event not recorded (fail-open trail): %s", shape.action
                )
                return
            if shape.sync:
                self._anchor_now(now)
            return
        try:
            self._record_decision(shape, decision, now)
        except AuditUnavailableError:
            if self._fail_closed:
                raise
            _log.warning("audit event not recorded (fail-open trail): %s", shape.action)

    def _decision_shape(self, decision: AccessDecision) -> _Shape:
        """Return the prepared static part of *decision*'s event (cached)."""
        d = decision
        key = _shape_key(d)
        try:
            shape = self._shapes.get(key)
        except TypeError:  # lists where tuples were expected: do not cache
            return self._new_shape(decision)
        if shape is None:
            shape = self._new_shape(decision)
            if len(self._shapes) >= _SHAPES:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    def _new_shape(self, decision: AccessDecision) -> _Shape:
        if decision.allowed:
            action = _DECISION_ACTIONS.get(
                decision.action, AuditAction.PURPOSE_CHECK.value
            )
        else:
            action = AuditAction.PURPOSE_CHECK.value
        static: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "lib": _LIB,
            "action": action,
            "outcome": (
                AuditOutcome.ALLOWED if decision.allowed else AuditOutcome.DENIED
            ).value,
            "purpose": None
            if decision.purpose is None
            else audit_name(decision.purpose),
            "policy_version": decision.policy_version,
            "entity": decision.entity,
            "fields": sorted(set(decision.fields)) or None,
            "data_categories": sorted(set(decision.categories)) or None,
        }
        if action == AuditAction.PURPOSE_CHECK.value:
            static["requested"] = decision.action.value
            static["denied_fields"] = sorted(set(decision.denied_fields)) or None
        if decision.outcome is Outcome.DENIED:
            static["reason"] = decision.reason.value if decision.reason else "no_policy"
        actor: dict[str, Any] = {"type": self._actor_type}
        if decision.actor is not None:
            actor["id"] = decision.actor
            if decision.role is not None:
                actor["roles"] = [decision.role]
        else:
            actor = {"type": "none"}
        static["actor"] = _recorded_actor(actor)
        return _Shape({k: v for k, v in static.items() if v is not None})

    def _record_decision(
        self, shape: _Shape, decision: AccessDecision, now: dt.datetime | None
    ) -> None:
        subjects = decision.subjects
        plain = (
            decision.count.__class__ is int
            and decision.request_id.__class__ in _PLAIN_OR_NONE
            and decision.trace_id.__class__ in _PLAIN_OR_NONE
        )
        # Values of unexpected types (an enum as request id, say) cannot be
        # written verbatim by the shape's template: such events take the
        # generic path, fully validated and encoded (the same body bytes).
        event: dict[str, Any] = {_SHAPE: shape} if plain else dict(shape.static)
        if len(subjects) == 1:
            subject = subjects[0]
            event["subject_ref"] = self._refs.get(subject) or self.subject_ref(subject)
            refs: list[str] = []
        else:
            refs = self._refs_of(subjects)
            if len(refs) == 1:
                event["subject_ref"] = refs[0]
        consents = decision.consents
        # Per pseudonym, the consent relied on (``consents`` follows ``subjects``).
        by_ref: dict[str, str] | None = None
        if consents:
            event["consents"] = consent_ids(consents)
            if len(refs) > 1 and len(consents) == len(subjects):
                by_ref = {
                    self.subject_ref(s): c
                    for s, c in zip(subjects, consents, strict=True)
                }
        event["count"] = decision.count
        if decision.request_id is not None:
            event["request_id"] = decision.request_id
        if decision.trace_id is not None:
            event["trace_id"] = decision.trace_id
        if now is not None:
            event["now"] = now
        if len(refs) <= 1:
            self._log.audit_event(event)
            if shape.sync:
                self._anchor_now(now)
            return
        # Bulk: at most 1,000 pseudonyms per event, the count shared out.
        count = decision.count
        total = -(-len(refs) // MAX_SUBJECTS_PER_EVENT)
        given = 0
        for n in range(1, total + 1):
            chunk = refs[(n - 1) * MAX_SUBJECTS_PER_EVENT : n * MAX_SUBJECTS_PER_EVENT]
            share = count - given if n == total else count * len(chunk) // len(refs)
            given += share
            part = dict(event, subjects=chunk, count=share)
            if by_ref is not None and total > 1:
                part["consents"] = consent_ids(by_ref[r] for r in chunk)
            if total > 1:
                part["batch"] = {"index": n, "total": total}
            self._log.audit_event(part)
            if shape.sync:
                self._anchor_now(now)

    def _record_for_subjects(
        self,
        action: AuditAction,
        *,
        outcome: AuditOutcome,
        actor: Mapping[str, Any],
        subjects: Iterable[str],
        count: int,
        now: dt.datetime | None,
        fields: Mapping[str, Any],
    ) -> list[SealedRecord]:
        refs = self._refs_of(subjects)
        if len(refs) <= 1:
            return [
                self.record(
                    action,
                    outcome=outcome,
                    actor=actor,
                    now=now,
                    subject_ref=refs[0] if refs else None,
                    count=count,
                    **fields,
                )
            ]
        chunks = [
            refs[i : i + MAX_SUBJECTS_PER_EVENT]
            for i in range(0, len(refs), MAX_SUBJECTS_PER_EVENT)
        ]
        out = []
        given = 0
        for n, chunk in enumerate(chunks, 1):
            share = (
                count - given if n == len(chunks) else count * len(chunk) // len(refs)
            )
            given += share
            out.append(
                self.record(
                    action,
                    outcome=outcome,
                    actor=actor,
                    now=now,
                    subjects=chunk,
                    count=share,
                    batch={"index": n, "total": len(chunks)}
                    if len(chunks) > 1
                    else None,
                    **fields,
                )
            )
        return out

    # -- events for the upper layers ----------------------------------------

    def export(
        self,
        *,
        actor: str,
        recipient_id: str,
        basis: str,
        purpose: str,
        policy_version: str,
        entity: str,
        fields: Sequence[str],
        subjects: Iterable[str] = (),
        categories: Sequence[str] = (),
        count: int = 0,
        provision_record_id: str | None = None,
        payload_sha256: str | None = None,
        country: str | None = None,
        now: dt.datetime | None = None,
    ) -> list[SealedRecord]:
        """Record a third-party provision (``export.third_party``) and anchor at once.

        Args:
            actor: Who exports.
            recipient_id: The recipient's registry id.
            basis: The legal basis id (e.g. ``consent_27_1``).
            purpose: The purpose of the provision.
            policy_version: The policy version in force.
            entity: The table or model exported.
            fields: The fields exported.
            subjects: The subjects' raw ids (pseudonymised here).
            categories: The data categories exported.
            count: How many (subject, field) values.
            provision_record_id: The provision record's id.
            payload_sha256: Hex SHA-256 of the *ciphertext* bundle, never of values.
            country: The recipient's country code.
            now: The event time.
        """
        optional = {
            "provision_record_id": provision_record_id,
            "payload_sha256": payload_sha256,
            "country": country,
        }
        recipient: dict[str, Any] = {
            "recipient_id": recipient_id,
            "basis": basis,
            **{k: v for k, v in optional.items() if v is not None},
        }
        return self._record_for_subjects(
            AuditAction.EXPORT_THIRD_PARTY,
            outcome=AuditOutcome.ALLOWED,
            actor={"type": self._actor_type, "id": actor},
            subjects=subjects,
            count=count,
            now=now,
            fields={
                "purpose": purpose,
                "policy_version": policy_version,
                "entity": entity,
                "fields": sorted(set(fields)),
                "data_categories": sorted(set(categories)) or None,
                "recipient": recipient,
            },
        )

    def subject_export(
        self,
        *,
        actor: str,
        subject: str,
        purpose: str,
        policy_version: str,
        entity: str,
        fields: Sequence[str],
        categories: Sequence[str] = (),
        count: int = 0,
        request_id: str | None = None,
        now: dt.datetime | None = None,
    ) -> list[SealedRecord]:
        """Record a disclosure to the data subject (``export.subject``), anchored at once.

        Written by :func:`custdata.sqlalchemy.disclose_subject` for each table
        disclosed: which fields, how many values, under which purpose -- never
        the values.

        Args:
            actor: Who discloses.
            subject: The subject's raw id (pseudonymised here).
            purpose: The disclosure purpose the values were read under.
            policy_version: The policy version in force.
            entity: The table disclosed.
            fields: The columns disclosed.
            categories: Their data categories.
            count: How many values.
            request_id: The data-subject request answered, if any.
            now: The event time.
        """
        extra: dict[str, Any] = {}
        if request_id is not None:
            extra["request_id"] = request_id
        return self._record_for_subjects(
            AuditAction.EXPORT_SUBJECT,
            outcome=AuditOutcome.ALLOWED,
            actor={"type": self._actor_type, "id": actor},
            subjects=[subject],
            count=count,
            now=now,
            fields={
                "purpose": purpose,
                "policy_version": policy_version,
                "entity": entity,
                "fields": sorted(set(fields)),
                "data_categories": sorted(set(categories)) or None,
                **extra,
            },
        )

    @property
    def actor_type(self) -> str:
        """The actor type written for people acting (``"user"`` by default)."""
        return self._actor_type

    def key_rotated(
        self,
        *,
        old_key_id: str | None,
        new_key_id: str,
        actor: str,
        kind: str = "data",
        now: dt.datetime | None = None,
    ) -> SealedRecord:
        """Record a key rotation (``key.rotate``) and anchor at once."""
        keys: dict[str, Any] = {"new": new_key_id, "kind": kind}
        if old_key_id is not None:
            keys["old"] = old_key_id
        return self.record(
            AuditAction.KEY_ROTATE,
            outcome=AuditOutcome.ALLOWED,
            actor={"type": self._actor_type, "id": actor},
            keys=keys,
            now=now,
        )

    def key_shredded(
        self,
        *,
        key_id: str,
        actor: str,
        subject: str | None = None,
        reason: str = "erasure_request",
        now: dt.datetime | None = None,
    ) -> SealedRecord:
        """Record the destruction of a key (``key.shred``) and anchor at once."""
        return self.record(
            AuditAction.KEY_SHRED,
            outcome=AuditOutcome.ALLOWED,
            actor={"type": self._actor_type, "id": actor},
            keys={"shredded": key_id},
            subject_ref=None if subject is None else self.subject_ref(subject),
            reason=reason,
            now=now,
        )

    def key_retired(
        self, *, key_id: str, actor: str, now: dt.datetime | None = None
    ) -> SealedRecord:
        """Record that a key no longer encrypts (``key.retire``) and anchor at once."""
        return self.record(
            AuditAction.KEY_RETIRE,
            outcome=AuditOutcome.ALLOWED,
            actor={"type": self._actor_type, "id": actor},
            keys={"retired": key_id},
            now=now,
        )

    def purge(
        self,
        *,
        stage: str,
        purge_id: str,
        actor: str,
        entity: str,
        subjects: Iterable[str] = (),
        count: int = 0,
        retention_policy: str | None = None,
        reason: str = "retention_expired",
        outcome: AuditOutcome | str | None = None,
        now: dt.datetime | None = None,
    ) -> list[SealedRecord]:
        """Record a purge intent (before) or its completion (after), anchoring at once.

        Args:
            stage: ``"intent"`` (outcome ``unknown``) or ``"done"``.
            purge_id: Links the intent to its outcome.
            actor: The job or person purging.
            entity: The table or model purged.
            subjects: The subjects' raw ids.
            count: How many records.
            retention_policy: The retention rule applied.
            reason: An enumerated reason.
            outcome: For ``"done"``: ``allowed`` (default) or ``error``.
            now: The event time.

        Raises:
            ValueError: *stage* is neither ``"intent"`` nor ``"done"``.
        """
        if stage == "intent":
            action, result = AuditAction.RECORD_PURGE_INTENT, AuditOutcome.UNKNOWN
        elif stage == "done":
            action = AuditAction.RECORD_PURGE_DONE
            result = (
                AuditOutcome(outcome) if outcome is not None else AuditOutcome.ALLOWED
            )
        else:
            raise ValueError("stage must be 'intent' or 'done'")
        return self._record_for_subjects(
            action,
            outcome=result,
            actor={"type": "job", "id": actor},
            subjects=subjects,
            count=count,
            now=now,
            fields={
                "purge_id": purge_id,
                "entity": entity,
                "retention_policy": retention_policy,
                "reason": reason,
            },
        )

    def config_changed(
        self,
        *,
        setting: str,
        old: str | int | bool | None,
        new: str | int | bool | None,
        actor: str,
        now: dt.datetime | None = None,
    ) -> SealedRecord:
        """Record a change of the audit configuration and anchor at once."""
        change: dict[str, Any] = {"setting": setting}
        if old is not None:
            change["old"] = old
        if new is not None:
            change["new"] = new
        return self.record(
            AuditAction.AUDIT_CONFIG_CHANGE,
            outcome=AuditOutcome.ALLOWED,
            actor={"type": self._actor_type, "id": actor},
            change=change,
            now=now,
        )

    def set_fail_closed(
        self, value: bool, *, actor: str, now: dt.datetime | None = None
    ) -> None:
        """Switch fail-closed on or off; the change is audited (before it applies)."""
        self.config_changed(
            setting="fail_closed",
            old=self._fail_closed,
            new=value,
            actor=actor,
            now=now,
        )
        self._fail_closed = value

    def add_sink(
        self, sink: AuditSink, *, actor: str, now: dt.datetime | None = None
    ) -> None:
        """Add a sink; the change is audited (to the existing sinks, then applies)."""
        self.config_changed(
            setting="sink_added", old=None, new=sink.name, actor=actor, now=now
        )
        with self._lock:
            self._sinks.append(sink)

    # -- checkpoints, flushing, shutdown -------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every sink has persisted every record.

        Raises:
            AuditUnavailableError: A sink could not persist in time.
        """
        for sink in self._sinks:
            sink.flush(timeout)

    def checkpoint(self, *, now: dt.datetime | None = None) -> Checkpoint:
        """Flush the sinks, then sign and anchor a checkpoint.

        Raises:
            AuditError: This trail has no checkpointer (or is a forked child).
        """
        if self._checkpointer is None:
            raise AuditError("this audit trail has no checkpointer")
        self.flush()
        return self._checkpointer.checkpoint(now=now)

    def _anchor_now(self, now: dt.datetime | None) -> None:
        if self._checkpointer is None:
            return
        try:
            self.checkpoint(now=now)
        except Exception:  # noqa: BLE001 - anchor failures alert, never block writers
            _log.warning("audit checkpoint after a high-risk event failed; will retry")

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._anchor_now(None)

    def close(
        self, *, now: dt.datetime | None = None, timeout: float | None = None
    ) -> None:
        """Append ``audit.chain_stop``, flush, anchor a final checkpoint, close sinks.

        Idempotent; also run at interpreter exit.

        Args:
            now: The time of the stop event and final checkpoint.
            timeout: How long each sink may take to persist (30 s when omitted).

        Raises:
            AuditUnavailableError: Records could not be persisted.
        """
        if self._closed or self._pid != os.getpid():
            return
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        try:
            # Drain first, so a queue that was momentarily full has room for
            # the stop event: shutting down waits rather than failing.
            self.flush(timeout)
            with self._lock:
                if self._writer is not None:
                    body: dict[str, Any] = {
                        "action": AuditAction.AUDIT_CHAIN_STOP.value,
                        "outcome": AuditOutcome.ALLOWED.value,
                        "actor": {"type": "system", "id": "custdata"},
                        "final_seq": self._writer.seq + 1,
                        "reason": "shutdown",
                        "now": now,
                    }
                    _stamp(None, "audit", body)
                    validate_body(body)
                    self._emit_locked(self._writer, canonical_json(body), body)
                self._closed = True
            self.flush(timeout)
            if self._checkpointer is not None:
                try:
                    self._checkpointer.checkpoint(now=now)
                except AuditError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any anchor or store failure
                    raise AuditUnavailableError(
                        f"the final audit checkpoint failed ({type(exc).__name__})"
                    ) from None
        finally:
            self._closed = True
            _LIVE.discard(self)
            self._close_sinks(timeout)

    def _close_sinks(self, timeout: float | None) -> None:
        """Close every sink, then raise the first failure (typed)."""
        failure: AuditError | None = None
        for sink in self._sinks:
            try:
                sink.close(timeout)
            except AuditError as exc:  # noqa: PERF203 - every sink is closed
                failure = failure or exc
            except Exception as exc:  # noqa: BLE001 - a third-party sink's failure
                failure = failure or AuditUnavailableError(
                    f"the audit sink {sink.name!r} cannot be closed ({type(exc).__name__})"
                )
        if failure is not None:
            raise failure

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        if self._writer is not None:
            self._parent_chain = self._writer.chain
        self._writer = None
        self._pid = os.getpid()
        if self._checkpointed is not None:
            # The parent's checkpointer covers the child's chain.
            self._checkpointed = ("external", self._checkpointed[1])
        self._checkpointer = None
        self._ticker = None
        self._stop = threading.Event()
        for sink in self._sinks:
            sink.after_fork_in_child()


def _recorded_actor(actor: Mapping[str, Any]) -> dict[str, Any]:
    """Return *actor* with its id and roles as recorded (:func:`audit_name`)."""
    out = dict(actor)
    ident = out.get("id")
    if ident.__class__ is str:
        out["id"] = audit_name(ident)
    roles = out.get("roles")
    if isinstance(roles, list):
        out["roles"] = [audit_name(r) if r.__class__ is str else r for r in roles]
    return out


def _shape_key(d: AccessDecision) -> tuple[object, ...]:
    """Everything of a decision that its prepared event template depends on.

    One definition for the cache lookup and the cache fill: a field missing
    here would make two different decisions share a template.
    """
    return (
        d.outcome,
        d.action,
        d.reason,
        d.actor,
        d.role,
        d.purpose,
        d.policy_version,
        d.entity,
        d.fields,
        d.categories,
        d.denied_fields,
    )


def _hostname() -> str:
    name = socket.gethostname().split(".")[0] or "unknown"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:64]
