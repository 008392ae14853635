"""Data-subject requests: the record, its state machine and its deadlines (R-DSR-2).

A :class:`DataSubjectRequest` is one request from a person about their data:
an APPI 利用目的の通知 (法32条2項), 開示 (33条1項) or 第三者提供記録の開示
(33条5項), 訂正・追加・削除 (34条), 利用停止・消去 (35条1項・5項) or
第三者提供の停止 (35条3項・5項); or a GDPR access (Art. 15), rectification (16),
erasure (17), restriction (18), portability (20) or objection (21) request.
The kinds, their articles, the grounds a refusal may cite and the deadlines
are the rule packs' ``requests`` topic; every request records the pack it was
decided under.

The record is frozen. Everything that happens to it is a :class:`RequestEvent`
appended to its history, and the record's state is the history replayed
(:func:`replay_request`)::

    received ──verify──▶ identity_verified ──decide(grant)──▶ in_progress
        │                     │                                  │
        └──decide(refuse)─────┴──────────decide(refuse)──────────┤
                                                                 ▼
                            fulfilled │ partially_fulfilled │ refused
    withdraw: from any open state ▶ withdrawn;  extend (GDPR): keeps the state

A refusal before the identity is verified must cite ``identity_not_verified``.

Deadlines are counted in the policy's ``[requests] time_zone``: an APPI
request (遅滞なく) is due at the end of the day ``sla_days`` after the day of
receipt (the day itself not counted, 民法140条); a GDPR request at the end of
the same day of the next calendar month (31 January → 28 or 29 February),
and after an extension (Art. 12(3)) three calendar months after receipt.

The subject is kept as given (an id or an identifier) and never appears in a
repr or an error message; the SQL store keeps it sealed and returns requests
without it (``subject`` is ``None``).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import threading
import uuid

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol

import attrs

from custdata._check import Finding
from custdata._errors import (
    ConfigurationError,
    RequestError,
    RequestTransitionError,
    UnknownRequestError,
)
from custdata._requests import RequestSettings
from custdata._retention import Period

from ._deadlines import _end_of_day
from ._packs import RulePack, rule_pack


__all__ = [
    "DataSubjectRequest",
    "InMemoryRequestStore",
    "RequestAction",
    "RequestDesk",
    "RequestEvent",
    "RequestKind",
    "RequestState",
    "RequestStore",
    "request_due_at",
    "request_findings",
    "request_from_dict",
    "request_kind",
    "request_kinds",
    "request_to_dict",
    "replay_request",
]

_REGIMES = ("appi", "gdpr")


class RequestState(str, enum.Enum):
    """Where a data-subject request stands."""

    RECEIVED = "received"
    IDENTITY_VERIFIED = "identity_verified"
    IN_PROGRESS = "in_progress"
    FULFILLED = "fulfilled"
    PARTIALLY_FULFILLED = "partially_fulfilled"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"

    @property
    def closed(self) -> bool:
        """The request is answered or withdrawn: nothing more is due."""
        return self in _CLOSED


_CLOSED = frozenset(
    {
        RequestState.FULFILLED,
        RequestState.PARTIALLY_FULFILLED,
        RequestState.REFUSED,
        RequestState.WITHDRAWN,
    }
)


class RequestAction(str, enum.Enum):
    """The kinds of history entry."""

    OPENED = "opened"
    VERIFIED = "verified"
    EXTENDED = "extended"
    DECIDED = "decided"
    FULFILLED = "fulfilled"
    WITHDRAWN = "withdrawn"
    NOTE = "note"


@attrs.frozen(kw_only=True)
class RequestKind:
    """A kind of request as a rule pack defines it.

    Attributes:
        key: Its key (``"appi_disclosure"``, ``"gdpr_erasure"``).
        regime: ``"appi"`` or ``"gdpr"``.
        article: The provision (``"法33条1項"``, ``"Art. 17"``).
        label_ja: Its name in Japanese.
        label_en: Its name in English.
        execution: What fulfilling it does: ``"notice"``, ``"disclose"``,
            ``"correct"``, ``"restrict"``, ``"erase"`` or ``"stop_provision"``.
        fee: A fee may be charged for it (法38条1項).
        formats: The forms of disclosure the person may choose.
        grounds: The grounds the person may cite (35条 stop requests).
        pack_id: The rule pack that defines it.
    """

    key: str
    regime: str
    article: str
    label_ja: str
    label_en: str
    execution: str
    fee: bool = False
    formats: tuple[str, ...] = ()
    grounds: tuple[str, ...] = ()
    pack_id: str

    def label(self, lang: str) -> str:
        """The kind's name in *lang* (``"ja"`` or ``"en"``)."""
        return self.label_ja if lang == "ja" else self.label_en


def _kinds_of(pack: RulePack) -> tuple[RequestKind, ...]:
    topic = pack.topic("requests")
    return tuple(
        RequestKind(
            key=str(k["key"]),
            regime=pack.jurisdiction,
            article=str(k["article"]),
            label_ja=str(k["label_ja"]),
            label_en=str(k["label_en"]),
            execution=str(k["execution"]),
            fee=bool(k.get("fee", False)),
            formats=tuple(k.get("formats", ())),
            grounds=tuple(k.get("grounds", ())),
            pack_id=pack.pack_id,
        )
        for k in topic["kinds"]
    )


def request_kinds(
    at: dt.date | None = None, *, regime: str | None = None
) -> tuple[RequestKind, ...]:
    """Every kind of request in the packs in force on *at* (today when omitted).

    Args:
        at: The day asked about (a request's day of receipt).
        regime: Only this regime's kinds (``"appi"`` or ``"gdpr"``).

    Raises:
        RequestError: An unknown regime, or no pack of it in force on *at*.
    """
    if regime is not None and regime not in _REGIMES:
        msg = f"unknown regime {regime!r}; choose 'appi' or 'gdpr'"
        raise RequestError(msg)
    regimes = _REGIMES if regime is None else (regime,)
    return tuple(k for r in regimes for k in _kinds_of(_pack_for(r, at, None)))


def _pack_for(regime: str, at: dt.date | None, pack_id: str | None) -> RulePack:
    """The pack of *regime* for *at* or *pack_id*; none in force is a request error."""
    if pack_id is not None:
        return rule_pack(regime, pack_id=pack_id)
    try:
        return rule_pack(regime, at)
    except ConfigurationError:
        day = "today" if at is None else at.isoformat()
        msg = (
            f"no {regime.upper()} rule pack was in force on {day}: a request "
            "received then is outside what custdata's rule packs cover"
        )
        raise RequestError(msg) from None


def request_kind(
    key: str, at: dt.date | None = None, *, pack_id: str | None = None
) -> RequestKind:
    """The kind *key* as the pack in force on *at* (or the pack *pack_id*) defines it.

    Raises:
        RequestError: No pack defines that kind, or no pack of its regime was
            in force on *at*.
    """
    regime = str(key).partition("_")[0]
    if regime in _REGIMES:
        pack = _pack_for(regime, at, pack_id)
        for kind in _kinds_of(pack):
            if kind.key == key:
                return kind
    choices = ", ".join(k.key for k in request_kinds(at))
    msg = f"unknown request kind {key!r}; choose one of {choices}"
    raise RequestError(msg)


def _refusal_grounds(kind: RequestKind) -> dict[str, Mapping[str, Any]]:
    topic = rule_pack(kind.regime, pack_id=kind.pack_id).topic("requests")
    return {
        str(g["key"]): g
        for g in topic["refusal_grounds"]
        if "*" in g["kinds"] or kind.key in g["kinds"]
    }


def request_due_at(
    kind: RequestKind,
    received_at: dt.datetime,
    *,
    settings: RequestSettings,
    extended: bool = False,
) -> dt.datetime:
    """When a request of *kind* received at *received_at* is due.

    APPI: the end of the day ``settings.sla_days`` after the day of receipt.
    GDPR: the end of the same day one calendar month later (the month's last
    day when it has no such day), or, *extended*, the pack's further months
    later. Both are counted in ``settings.time_zone``.

    Raises:
        RequestError: *received_at* is naive, or *extended* for a kind whose
            regime has no extension.
    """
    if received_at.tzinfo is None:
        msg = "received_at must be a time-zone aware datetime"
        raise RequestError(msg)
    deadline = rule_pack(kind.regime, pack_id=kind.pack_id).topic("requests")[
        "deadline"
    ]
    zone = settings.zone
    day = received_at.astimezone(zone).date()
    extra = int(deadline.get("extension_months", 0))
    if extended and not extra:
        msg = f"{kind.regime.upper()} requests ({kind.key}) have no extension"
        raise RequestError(msg)
    if deadline["basis"] == "sla":
        return _end_of_day(day + dt.timedelta(days=settings.sla_days), zone)
    months = int(deadline["months"]) + (extra if extended else 0)
    start = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    return _end_of_day(Period(months=months).after(start).date(), zone)


def _aware(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        msg = f"{attribute.name} must be a time-zone aware datetime"
        raise RequestError(msg)


def _text(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        msg = f"{attribute.name} must be a non-empty string"
        raise RequestError(msg)


def _strs(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        return (values,)
    return tuple(values)


def _events(values: Iterable[RequestEvent]) -> tuple[RequestEvent, ...]:
    return tuple(values)


def _detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return dict(json.loads(json.dumps(dict(detail), sort_keys=True)))
    except (TypeError, ValueError):
        msg = "a request event's detail must be JSON-serialisable"
        raise RequestError(msg) from None


@attrs.frozen(kw_only=True)
class RequestEvent:
    """One entry of a request's history (append-only).

    Attributes:
        request_id: The request.
        seq: Its position in the history, from 1.
        at: When it happened (time-zone aware).
        actor: Who recorded it.
        action: What kind of entry it is.
        detail: What it says (JSON-serialisable; never a customer value).
    """

    request_id: str
    seq: int
    at: dt.datetime = attrs.field(validator=_aware)
    actor: str = attrs.field(validator=_text)
    action: RequestAction = attrs.field(converter=RequestAction)
    detail: Mapping[str, Any] = attrs.field(factory=dict, converter=_detail)

    def as_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-serialisable dict."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action.value,
            "detail": dict(self.detail),
        }


@attrs.frozen(kw_only=True)
class DataSubjectRequest:
    """A data-subject request and where it stands.

    The first group of attributes is what was recorded when it was opened;
    the second is its history replayed (:func:`replay_request`).

    Attributes:
        request_id: The request's id (``REQ-20260203-1a2b3c4d``).
        kind: The kind's key (``"appi_disclosure"``).
        regime: ``"appi"`` or ``"gdpr"``.
        pack_id: The rule pack the request is decided under.
        subject: The subject as given: an id or an identifier (never shown in
            a repr or an error); ``None`` when the store keeps it sealed
            (:class:`custdata.sqlalchemy.SqlRequestStore`: read it with
            ``open_subject``).
        received_at: When the request was received (time-zone aware).
        fee_yen: The fee charged, if any (法38条).
        disclosure_format: The form of disclosure the person chose.
        purposes: The purposes a stop or restriction covers (empty: all).
        recipients: The third parties a stop covers (empty: all).
        grounds: The grounds the person cites (35条).
        note: A note recorded on opening (never a customer value).
        state: Where it stands.
        due_at: When it is due (after an extension, the extended date).
        verification_method: How the identity was verified.
        verified_at: When it was verified.
        extension_reason: Why the deadline was extended (GDPR Art. 12(3)).
        decision: ``"granted"`` or ``"refused"``, once decided.
        refusal_grounds: The grounds of a refusal or a partial fulfilment.
        refusal_reason: The reasons as told to the person.
        closed_at: When it was answered or withdrawn.
        history: Every event, in order.
    """

    request_id: str = attrs.field(validator=_text)
    kind: str = attrs.field(validator=_text)
    regime: str
    pack_id: str
    subject: str | None = attrs.field(
        validator=attrs.validators.optional(_text), repr=False
    )
    received_at: dt.datetime = attrs.field(validator=_aware)
    fee_yen: int | None = None
    disclosure_format: str | None = None
    purposes: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    recipients: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    grounds: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    note: str = ""
    state: RequestState = attrs.field(
        default=RequestState.RECEIVED, converter=RequestState
    )
    due_at: dt.datetime = attrs.field(validator=_aware)
    verification_method: str | None = None
    verified_at: dt.datetime | None = None
    extension_reason: str | None = None
    decision: str | None = None
    refusal_grounds: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    refusal_reason: str = ""
    closed_at: dt.datetime | None = None
    history: tuple[RequestEvent, ...] = attrs.field(default=(), converter=_events)

    @staticmethod
    def new_id(received_at: dt.datetime) -> str:
        """Return a fresh request id (``REQ-20260203-1a2b3c4d``)."""
        return f"REQ-{received_at:%Y%m%d}-{uuid.uuid4().hex[:8]}"

    @property
    def kind_info(self) -> RequestKind:
        """The request's kind as its pack defines it."""
        return request_kind(self.kind, pack_id=self.pack_id)

    @property
    def extended(self) -> bool:
        """The deadline has been extended."""
        return self.extension_reason is not None

    def overdue(self, now: dt.datetime) -> bool:
        """The request is open and its due time has passed at *now*."""
        return not self.state.closed and now > self.due_at

    def as_dict(self) -> dict[str, Any]:
        """Return the request and its history as a JSON-serialisable dict."""
        data = request_to_dict(self)
        data.update(
            state=self.state.value,
            due_at=self.due_at.isoformat(),
            verification_method=self.verification_method,
            verified_at=_iso(self.verified_at),
            extension_reason=self.extension_reason,
            decision=self.decision,
            refusal_grounds=list(self.refusal_grounds),
            refusal_reason=self.refusal_reason,
            closed_at=_iso(self.closed_at),
            history=[e.as_dict() for e in self.history],
        )
        return data


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


_OPENING = (
    "request_id",
    "kind",
    "regime",
    "pack_id",
    "subject",
    "fee_yen",
    "disclosure_format",
    "note",
)


def request_to_dict(request: DataSubjectRequest) -> dict[str, Any]:
    """Return what was recorded when *request* was opened, as a JSON-serialisable dict."""
    data: dict[str, Any] = {k: getattr(request, k) for k in _OPENING}
    data["received_at"] = request.received_at.isoformat()
    data["due_at"] = (
        request.history[0].detail["due_at"]
        if request.history
        else (request.due_at.isoformat())
    )
    data["purposes"] = list(request.purposes)
    data["recipients"] = list(request.recipients)
    data["grounds"] = list(request.grounds)
    return data


def request_from_dict(
    data: Mapping[str, Any], history: Iterable[RequestEvent] = ()
) -> DataSubjectRequest:
    """Rebuild a request from :func:`request_to_dict`'s form and its history.

    Raises:
        RequestError: The data does not describe a valid request, or the
            history holds a step its state does not allow.
    """
    try:
        raw = {k: data[k] for k in _OPENING}
        opened = DataSubjectRequest(
            **raw,
            received_at=dt.datetime.fromisoformat(data["received_at"]),
            due_at=dt.datetime.fromisoformat(data["due_at"]),
            purposes=data.get("purposes", ()),
            recipients=data.get("recipients", ()),
            grounds=data.get("grounds", ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, RequestError):
            raise
        msg = f"not a valid request record ({type(exc).__name__})"
        raise RequestError(msg) from None
    return replay_request(opened, history)


# The states each step may start from.
_FROM: dict[RequestAction, frozenset[RequestState]] = {
    RequestAction.VERIFIED: frozenset({RequestState.RECEIVED}),
    RequestAction.EXTENDED: frozenset(RequestState) - _CLOSED,
    RequestAction.DECIDED: frozenset({RequestState.IDENTITY_VERIFIED}),
    RequestAction.FULFILLED: frozenset({RequestState.IN_PROGRESS}),
    RequestAction.WITHDRAWN: frozenset(RequestState) - _CLOSED,
    RequestAction.NOTE: frozenset(RequestState),
}


_VERBS = {
    RequestAction.OPENED: "open",
    RequestAction.VERIFIED: "verify",
    RequestAction.EXTENDED: "extend",
    RequestAction.DECIDED: "decide",
    RequestAction.FULFILLED: "fulfil",
    RequestAction.WITHDRAWN: "withdraw",
    RequestAction.NOTE: "annotate",
}


def _apply(request: DataSubjectRequest, event: RequestEvent) -> DataSubjectRequest:
    """Return *request* after *event*; the state machine (pure)."""
    action = event.action
    state = request.state
    refusing = action is RequestAction.DECIDED and event.detail.get("decision") == (
        "refused"
    )
    allowed = _FROM.get(action, frozenset())
    if refusing:
        allowed = allowed | {RequestState.RECEIVED, RequestState.IN_PROGRESS}
    if state not in allowed:
        msg = (
            f"request {request.request_id}: cannot {_VERBS[action]} "
            f"a request that is {state.value}"
        )
        if action is RequestAction.OPENED:
            msg = f"request {request.request_id}: already opened"
        raise RequestTransitionError(msg, state=state.value, action=action.value)
    d = event.detail
    changes: dict[str, Any] = {"history": (*request.history, event)}
    if action is RequestAction.VERIFIED:
        changes.update(
            state=RequestState.IDENTITY_VERIFIED,
            verification_method=str(d["method"]),
            verified_at=event.at,
        )
    elif action is RequestAction.EXTENDED:
        changes.update(
            due_at=dt.datetime.fromisoformat(str(d["due_at"])),
            extension_reason=str(d["reason"]),
        )
    elif action is RequestAction.DECIDED:
        if refusing:
            changes.update(
                state=RequestState.REFUSED,
                decision="refused",
                refusal_grounds=tuple(d.get("grounds", ())),
                refusal_reason=str(d.get("reason", "")),
                closed_at=event.at,
            )
        else:
            changes.update(state=RequestState.IN_PROGRESS, decision="granted")
    elif action is RequestAction.FULFILLED:
        partial = bool(d.get("partial", False))
        changes.update(
            state=RequestState.PARTIALLY_FULFILLED
            if partial
            else RequestState.FULFILLED,
            refusal_grounds=tuple(d.get("grounds", ())),
            refusal_reason=str(d.get("reason", "")),
            closed_at=event.at,
        )
    elif action is RequestAction.WITHDRAWN:
        changes.update(state=RequestState.WITHDRAWN, closed_at=event.at)
    return attrs.evolve(request, **changes)


def replay_request(
    opened: DataSubjectRequest, history: Iterable[RequestEvent]
) -> DataSubjectRequest:
    """Return *opened* (as recorded when opened) with *history* replayed.

    The first event must be the ``opened`` one; its position numbers follow on.

    Raises:
        RequestError: The history is out of order or holds a step the state
            machine does not allow (:class:`RequestTransitionError`).
    """
    request = attrs.evolve(opened, history=())
    for n, event in enumerate(history, start=1):
        if event.seq != n or event.request_id != opened.request_id:
            msg = f"request {opened.request_id}: history entry {n} is out of order"
            raise RequestError(msg)
        if n == 1:
            if event.action is not RequestAction.OPENED:
                msg = f"request {opened.request_id}: history must start with 'opened'"
                raise RequestError(msg)
            request = attrs.evolve(request, history=(event,))
            continue
        request = _apply(request, event)
    return request


class RequestStore(Protocol):
    """Where data-subject requests and their histories are kept (append-only).

    :class:`InMemoryRequestStore` serves tests; the SQL store is
    :class:`custdata.sqlalchemy.SqlRequestStore`.
    """

    def add(self, request: DataSubjectRequest) -> None:
        """Store a newly opened request with its ``opened`` event.

        Raises:
            RequestError: A request with that id already exists.
        """
        ...

    def append(self, event: RequestEvent) -> None:
        """Append *event* at its position in the request's history.

        Raises:
            UnknownRequestError: No request has that id.
            RequestTransitionError: Another writer took that position first
                (the request changed meanwhile).
        """
        ...

    def get(self, request_id: str) -> DataSubjectRequest:
        """Return the request with its history replayed.

        Raises:
            UnknownRequestError: No request has that id.
        """
        ...

    def requests(self) -> tuple[DataSubjectRequest, ...]:
        """Every request, oldest receipt first."""
        ...


class InMemoryRequestStore:
    """A request store in memory, for tests and examples."""

    def __init__(self) -> None:
        self._opened: dict[str, dict[str, Any]] = {}
        self._history: dict[str, list[RequestEvent]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<InMemoryRequestStore of {len(self._opened)} requests>"

    def add(self, request: DataSubjectRequest) -> None:
        """Store a newly opened request (see :class:`RequestStore`)."""
        with self._lock:
            if request.request_id in self._opened:
                msg = f"request {request.request_id!r} already exists"
                raise RequestError(msg)
            self._opened[request.request_id] = request_to_dict(request)
            self._history[request.request_id] = list(request.history[:1])

    def append(self, event: RequestEvent) -> None:
        """Append *event* (see :class:`RequestStore`)."""
        with self._lock:
            entries = self._entries(event.request_id)
            if event.seq != len(entries) + 1:
                msg = f"request {event.request_id}: changed meanwhile; try again"
                raise RequestTransitionError(msg, action=event.action.value)
            entries.append(event)

    def _entries(self, request_id: str) -> list[RequestEvent]:
        try:
            return self._history[request_id]
        except KeyError:
            raise UnknownRequestError(f"no request {request_id!r}") from None

    def get(self, request_id: str) -> DataSubjectRequest:
        """Return the request (see :class:`RequestStore`)."""
        entries = tuple(self._entries(request_id))
        return request_from_dict(self._opened[request_id], entries)

    def requests(self) -> tuple[DataSubjectRequest, ...]:
        """Every request, oldest receipt first."""
        out = [self.get(rid) for rid in list(self._opened)]
        return tuple(sorted(out, key=lambda r: (r.received_at, r.request_id)))


class RequestDesk:
    """The request workflow over a :class:`RequestStore`.

    Every step takes the time it happens (``at``, time-zone aware) and the
    actor recording it, checks the step against the request's state and the
    rule pack, and appends one event. Steps the state does not allow raise
    :class:`~custdata.RequestTransitionError`; invalid values raise
    :class:`~custdata.RequestError`.

    Args:
        store: Where requests are kept.
        settings: The policy's ``[requests]`` settings.
        purposes: The policy's purpose ids, to check the purposes a stop
            covers (not checked when omitted).
    """

    def __init__(
        self,
        store: RequestStore,
        *,
        settings: RequestSettings | None = None,
        purposes: Collection[str] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or RequestSettings()
        self._purposes = None if purposes is None else frozenset(purposes)

    def __repr__(self) -> str:
        return f"<RequestDesk over {self.store!r}>"

    def open(
        self,
        kind: str,
        *,
        subject: str,
        received_at: dt.datetime,
        actor: str,
        request_id: str | None = None,
        fee_yen: int | None = None,
        disclosure_format: str | None = None,
        purposes: Iterable[str] = (),
        recipients: Iterable[str] = (),
        grounds: Iterable[str] = (),
        note: str = "",
    ) -> DataSubjectRequest:
        """Record a new request, dated by the pack in force on the day of receipt.

        Args:
            kind: The kind's key (:func:`request_kinds`).
            subject: The subject's id or identifier, as given.
            received_at: When it was received (time-zone aware).
            actor: Who records it.
            request_id: Its id (generated when omitted).
            fee_yen: The fee charged; the policy's ``fee_yen`` for a kind that
                may carry one when omitted.
            disclosure_format: The form of disclosure chosen (for a kind with
                formats).
            purposes: The purposes a stop or restriction covers.
            recipients: The third parties a stop of provision covers.
            grounds: The grounds the person cites (35条 stop requests).
            note: A note (never a customer value).

        Raises:
            RequestError: An unknown kind, a value the kind does not take, a
                naive time, or an id already used.
        """
        if received_at.tzinfo is None:
            msg = "received_at must be a time-zone aware datetime"
            raise RequestError(msg)
        info = request_kind(kind, received_at.astimezone(self.settings.zone).date())
        purposes, recipients, grounds = (
            _strs(purposes),
            _strs(recipients),
            _strs(grounds),
        )
        self._check_opening(info, fee_yen, disclosure_format, purposes, recipients)
        unknown = sorted(set(grounds) - set(info.grounds))
        if unknown:
            allowed = ", ".join(info.grounds) or "none"
            msg = f"{info.key} takes the grounds {allowed}; not {', '.join(unknown)}"
            raise RequestError(msg)
        if fee_yen is None and info.fee:
            fee_yen = self.settings.fee_yen
        rid = request_id or DataSubjectRequest.new_id(received_at)
        due = request_due_at(info, received_at, settings=self.settings)
        event = RequestEvent(
            request_id=rid,
            seq=1,
            at=received_at,
            actor=actor,
            action=RequestAction.OPENED,
            detail={
                "due_at": due.isoformat(),
                "pack_id": info.pack_id,
                "basis": f"{info.pack_id}: {info.article}",
            },
        )
        request = DataSubjectRequest(
            request_id=rid,
            kind=info.key,
            regime=info.regime,
            pack_id=info.pack_id,
            subject=subject,
            received_at=received_at,
            fee_yen=fee_yen,
            disclosure_format=disclosure_format,
            purposes=purposes,
            recipients=recipients,
            grounds=grounds,
            note=note,
            due_at=due,
            history=(event,),
        )
        self.store.add(request)
        return request

    def _check_opening(
        self,
        info: RequestKind,
        fee_yen: int | None,
        disclosure_format: str | None,
        purposes: tuple[str, ...],
        recipients: tuple[str, ...],
    ) -> None:
        if fee_yen is not None:
            if type(fee_yen) is not int or fee_yen < 0:
                msg = "fee_yen must be a whole number >= 0"
                raise RequestError(msg)
            if fee_yen and not info.fee:
                msg = f"no fee may be charged for {info.key} ({info.article})"
                raise RequestError(msg)
        if disclosure_format is not None and disclosure_format not in info.formats:
            allowed = ", ".join(info.formats) or "none"
            msg = f"{info.key} takes the formats {allowed}; not {disclosure_format!r}"
            raise RequestError(msg)
        if purposes and info.execution not in {"restrict", "erase", "stop_provision"}:
            msg = f"{info.key} does not cover purposes"
            raise RequestError(msg)
        if recipients and info.execution != "stop_provision":
            msg = f"{info.key} does not cover recipients"
            raise RequestError(msg)
        if self._purposes is not None:
            unknown = sorted(set(purposes) - self._purposes)
            if unknown:
                msg = f"unknown purpose(s): {', '.join(unknown)}"
                raise RequestError(msg)

    def get(self, request_id: str) -> DataSubjectRequest:
        """Return the request.

        Raises:
            UnknownRequestError: No request has that id.
        """
        return self.store.get(request_id)

    def _step(
        self,
        request_id: str,
        action: RequestAction,
        *,
        at: dt.datetime,
        actor: str,
        detail: Mapping[str, Any],
    ) -> DataSubjectRequest:
        request = self.store.get(request_id)
        event = RequestEvent(
            request_id=request_id,
            seq=len(request.history) + 1,
            at=at,
            actor=actor,
            action=action,
            detail=detail,
        )
        if at < request.received_at:
            msg = f"request {request_id}: {action.value} before it was received"
            raise RequestError(msg)
        after = _apply(request, event)
        self.store.append(event)
        return after

    def verify(
        self, request_id: str, *, method: str, at: dt.datetime, actor: str
    ) -> DataSubjectRequest:
        """Record that the person's identity was verified, and how (法37条2項).

        Raises:
            RequestError: *method* is empty or not among the policy's
                ``verification_methods``.
            RequestTransitionError: The request is not ``received``.
        """
        accepted = self.settings.verification_methods
        if not method.strip():
            msg = "the verification method must be named"
            raise RequestError(msg)
        if accepted and method not in accepted:
            msg = f"verification method {method!r} is not one of {', '.join(accepted)}"
            raise RequestError(msg)
        return self._step(
            request_id,
            RequestAction.VERIFIED,
            at=at,
            actor=actor,
            detail={"method": method},
        )

    def extend(
        self, request_id: str, *, reason: str, at: dt.datetime, actor: str
    ) -> DataSubjectRequest:
        """Extend a GDPR request's deadline by the pack's further months (Art. 12(3)).

        The extension must be decided, with its reasons, before the first
        deadline passes, and only once.

        Raises:
            RequestError: No reason, a regime without extensions, already
                extended, or the first deadline has passed.
            RequestTransitionError: The request is closed.
        """
        request = self.store.get(request_id)
        if not reason.strip():
            msg = "an extension needs its reasons (GDPR Art. 12(3))"
            raise RequestError(msg)
        if request.extended:
            msg = f"request {request_id}: already extended"
            raise RequestError(msg)
        if request.state.closed:
            msg = f"request {request_id}: cannot extend a request that is {request.state.value}"
            raise RequestTransitionError(
                msg, state=request.state.value, action="extended"
            )
        due = request_due_at(
            request.kind_info,
            request.received_at,
            settings=self.settings,
            extended=True,
        )
        if at > request.due_at:
            msg = (
                f"request {request_id}: the extension comes after the deadline "
                f"{request.due_at.isoformat()}"
            )
            raise RequestError(msg)
        return self._step(
            request_id,
            RequestAction.EXTENDED,
            at=at,
            actor=actor,
            detail={
                "due_at": due.isoformat(),
                "reason": reason,
                "pack_id": request.pack_id,
            },
        )

    def decide(
        self,
        request_id: str,
        *,
        grant: bool,
        at: dt.datetime,
        actor: str,
        grounds: Iterable[str] = (),
        reason: str = "",
    ) -> DataSubjectRequest:
        """Grant the request (it goes in progress) or refuse it with its grounds.

        A refusal cites one or more of the pack's refusal grounds for the
        kind and its reasons as told to the person (法36条: 理由の説明).
        Before the identity is verified only ``identity_not_verified`` may
        be cited.

        Raises:
            RequestError: A refusal without grounds or reasons, or with a
                ground the pack does not allow for the kind.
            RequestTransitionError: The state does not allow the decision.
        """
        request = self.store.get(request_id)
        detail: dict[str, Any] = {"pack_id": request.pack_id}
        if grant:
            if _strs(grounds):
                msg = "a grant cites no refusal grounds"
                raise RequestError(msg)
            detail["decision"] = "granted"
        else:
            cited = self._grounds(request, _strs(grounds), reason)
            if request.state is RequestState.RECEIVED and cited != (
                "identity_not_verified",
            ):
                msg = (
                    f"request {request_id}: before the identity is verified a "
                    "refusal cites 'identity_not_verified' only"
                )
                raise RequestTransitionError(msg, state="received", action="decided")
            detail.update(decision="refused", grounds=list(cited), reason=reason)
        return self._step(
            request_id, RequestAction.DECIDED, at=at, actor=actor, detail=detail
        )

    def _grounds(
        self, request: DataSubjectRequest, grounds: tuple[str, ...], reason: str
    ) -> tuple[str, ...]:
        if not grounds or not reason.strip():
            msg = "a refusal needs its grounds and the reasons told to the person"
            raise RequestError(msg)
        allowed = _refusal_grounds(request.kind_info)
        unknown = sorted(set(grounds) - set(allowed))
        if unknown:
            msg = (
                f"{request.kind} may be refused on {', '.join(sorted(allowed))}; "
                f"not {', '.join(unknown)}"
            )
            raise RequestError(msg)
        return tuple(dict.fromkeys(grounds))

    def fulfil(
        self,
        request_id: str,
        *,
        at: dt.datetime,
        actor: str,
        partial: bool = False,
        grounds: Iterable[str] = (),
        reason: str = "",
        result: Mapping[str, Any] | None = None,
    ) -> DataSubjectRequest:
        """Record that the request was answered, in whole or (*partial*) in part.

        Args:
            request_id: The request.
            at: When the answer was given.
            actor: Who records it.
            partial: Only part was granted; *grounds* and *reason* say why
                the rest was refused.
            grounds: The refusal grounds of the part not granted.
            reason: The reasons told to the person.
            result: What the execution did (counts, the export's name; never
                a customer value).

        Raises:
            RequestError: A partial answer without grounds, or grounds on a
                full one.
            RequestTransitionError: The request is not in progress.
        """
        request = self.store.get(request_id)
        detail: dict[str, Any] = {
            "partial": partial,
            "pack_id": request.pack_id,
            "result": dict(result or {}),
        }
        if partial:
            cited = self._grounds(request, _strs(grounds), reason)
            detail.update(grounds=list(cited), reason=reason)
        elif _strs(grounds):
            msg = "a full answer cites no refusal grounds; pass partial=True"
            raise RequestError(msg)
        return self._step(
            request_id, RequestAction.FULFILLED, at=at, actor=actor, detail=detail
        )

    def withdraw(
        self, request_id: str, *, at: dt.datetime, actor: str, reason: str = ""
    ) -> DataSubjectRequest:
        """Record that the person withdrew the request.

        Raises:
            RequestTransitionError: The request is already closed.
        """
        return self._step(
            request_id,
            RequestAction.WITHDRAWN,
            at=at,
            actor=actor,
            detail={"reason": reason},
        )

    def note(
        self, request_id: str, text: str, *, at: dt.datetime, actor: str
    ) -> DataSubjectRequest:
        """Append a note to the request's history (never a customer value)."""
        return self._step(
            request_id, RequestAction.NOTE, at=at, actor=actor, detail={"text": text}
        )

    def open_requests(self) -> tuple[DataSubjectRequest, ...]:
        """The requests not yet answered or withdrawn, earliest due first."""
        return tuple(
            sorted(
                (r for r in self.store.requests() if not r.state.closed),
                key=lambda r: (r.due_at, r.request_id),
            )
        )

    def findings(self, *, now: dt.datetime) -> list[Finding]:
        """The ``custdata check`` findings about the open requests at *now*."""
        return request_findings(self.store.requests(), settings=self.settings, now=now)


def request_findings(
    requests: Iterable[DataSubjectRequest],
    *,
    settings: RequestSettings,
    now: dt.datetime,
) -> list[Finding]:
    """The ``custdata check`` findings about *requests* at *now*.

    The codes:

    - ``REQ001``: an open request is past its due time.
    - ``REQ002``: an open request falls due within the policy's
      ``due_soon_days``.

    Raises:
        RequestError: *now* is naive.
    """
    if now.tzinfo is None:
        msg = "now must be a time-zone aware datetime"
        raise RequestError(msg)
    soon = now + dt.timedelta(days=settings.due_soon_days)
    out: list[Finding] = []
    for r in sorted(requests, key=lambda r: (r.due_at, r.request_id)):
        if r.state.closed:
            continue
        where = f"requests.{r.request_id}"
        due = r.due_at.isoformat()
        info = r.kind_info
        what = f"{info.label_en} ({info.article}) is {r.state.value}"
        if r.overdue(now):
            out.append(
                Finding(
                    code="REQ001",
                    key_path=where,
                    message=f"{what} and was due {due}: answer it now",
                )
            )
        elif r.due_at <= soon:
            out.append(
                Finding(
                    code="REQ002",
                    key_path=where,
                    message=f"{what} and is due {due}",
                )
            )
    return out
