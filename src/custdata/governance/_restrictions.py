"""Restriction of use per data subject (利用停止, GDPR Art. 18).

A data subject may ask that their data stop being used (APPI 35条: 利用停止;
GDPR Art. 18: restriction of processing). While a restriction is in force the
subject's data stays stored, but reads, writes and exports of it are refused
for every purpose except the restriction's *allowed purposes* (those the law
still permits: keeping it for legal claims, say). The custodian checks it once
per fetched batch, like consent (``Custodian(restrictions=...)``); a denial
names :attr:`custdata.DenyReason.RESTRICTED` and the restricted subjects.

A restriction is set and lifted by an actor with a reason, and both are kept
as records (:class:`RestrictionRecord`) and, with an audit trail, recorded as
``subject.restrict`` and ``subject.restrict_lift`` events. The records live in
a :class:`RestrictionStore`: :class:`InMemoryRestrictionStore` for tests and
tools, :class:`custdata.sqlalchemy.SqlRestrictionStore` in the application's
database.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from custdata._errors import CustdataError

from ._consent import purpose_chain, subject_text


__all__ = [
    "InMemoryRestrictionStore",
    "RestrictionError",
    "RestrictionRecord",
    "RestrictionStore",
    "Restrictions",
    "UnknownRestrictionError",
]


class RestrictionError(CustdataError, ValueError):
    """A restriction cannot be set or lifted as asked (a missing reason or actor)."""


class UnknownRestrictionError(RestrictionError, LookupError):
    """No restriction is in force for the subject whose restriction is lifted."""


def _purposes(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(sorted(set(value)))


@attrs.frozen(kw_only=True)
class RestrictionRecord:
    """One restriction of use of one subject's data.

    It holds identifiers and metadata only; the repr leaves the subject out.

    Attributes:
        id: The restriction's id.
        subject: The restricted subject's id, as text.
        allowed_purposes: The purposes that may still use the data (sorted);
            empty: none.
        reason: Why the use is restricted (free text, kept in the store only).
        placed_by: Who set it.
        placed_at: When (aware).
        request_id: The data-subject request it answers, if any.
        lifted_by: Who lifted it, or ``None`` while in force.
        lifted_at: When it was lifted, or ``None``.
        lift_reason: Why it was lifted.
    """

    id: str
    subject: str = attrs.field(repr=False)
    allowed_purposes: tuple[str, ...] = attrs.field(default=(), converter=_purposes)
    reason: str
    placed_by: str
    placed_at: dt.datetime
    request_id: str | None = None
    lifted_by: str | None = None
    lifted_at: dt.datetime | None = None
    lift_reason: str | None = None

    def in_force(self, at: dt.datetime) -> bool:
        """Whether the restriction is in force at *at*."""
        return self.placed_at <= at and (self.lifted_at is None or at < self.lifted_at)


@runtime_checkable
class RestrictionStore(Protocol):
    """Where restriction records are kept.

    :class:`InMemoryRestrictionStore` and
    :class:`custdata.sqlalchemy.SqlRestrictionStore` implement it.
    """

    def add(self, record: RestrictionRecord) -> None:
        """Store a new record."""

    def lift(self, subject: str, *, by: str, at: dt.datetime, reason: str) -> int:
        """Mark every restriction of *subject* in force lifted; return how many."""

    def records_for(self, subjects: Collection[str]) -> list[RestrictionRecord]:
        """Every restriction record of *subjects*, lifted ones included."""


class InMemoryRestrictionStore:
    """Restriction records in memory, for tests and tools. Thread-safe."""

    def __init__(self) -> None:
        self._records: list[RestrictionRecord] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<InMemoryRestrictionStore records={len(self._records)}>"

    def add(self, record: RestrictionRecord) -> None:
        """Store a new record."""
        with self._lock:
            self._records.append(record)

    def lift(self, subject: str, *, by: str, at: dt.datetime, reason: str) -> int:
        """Mark every restriction of *subject* not yet lifted as lifted at *at*."""
        lifted = 0
        with self._lock:
            for i, r in enumerate(self._records):
                if r.subject == subject and r.lifted_at is None:
                    self._records[i] = attrs.evolve(
                        r, lifted_by=by, lifted_at=at, lift_reason=reason
                    )
                    lifted += 1
        return lifted

    def records_for(self, subjects: Collection[str]) -> list[RestrictionRecord]:
        """Every restriction record of *subjects*."""
        wanted = set(subjects)
        with self._lock:
            return [r for r in self._records if r.subject in wanted]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return _now()
    if value.tzinfo is None or value.utcoffset() is None:
        msg = "the time of a restriction must be time-zone aware"
        raise RestrictionError(msg)
    return value


class Restrictions:
    """The register of restrictions of use: restrict, lift, and who is restricted.

    Give it to the custodian (``Custodian(restrictions=...)``): reads, writes
    and exports of a restricted subject's data are refused for every purpose
    but the restriction's allowed purposes (and the purposes below them),
    checked once per fetched batch with one store lookup.

    Args:
        store: Where the records are kept (in memory by default).
        audit: The audit trail recording ``subject.restrict`` and
            ``subject.restrict_lift`` events, or ``None``.
        parents: Purpose id -> its parent's id, so an allowed purpose covers
            the purposes below it (:meth:`for_policy` gives this).
    """

    def __init__(
        self,
        store: RestrictionStore | None = None,
        *,
        audit: Any = None,
        parents: Mapping[str, str | None] | None = None,
    ) -> None:
        self._store: RestrictionStore = (
            store if store is not None else InMemoryRestrictionStore()
        )
        self._audit = audit
        self._parents = dict(parents or {})

    @classmethod
    def for_policy(
        cls, policy: Any, store: RestrictionStore | None = None, *, audit: Any = None
    ) -> Restrictions:
        """A register that knows *policy*'s purpose tree.

        Args:
            policy: The :class:`custdata.Policy`.
            store: Where the records are kept (in memory by default).
            audit: The audit trail recording set and lift events.
        """
        return cls(
            store,
            audit=audit,
            parents={pid: p.parent for pid, p in policy.purposes.items()},
        )

    @property
    def store(self) -> RestrictionStore:
        """The store holding the records."""
        return self._store

    def __repr__(self) -> str:
        return f"<Restrictions store={type(self._store).__name__}>"

    def restrict(
        self,
        subject: object,
        *,
        allowed_purposes: Collection[str] = frozenset(),
        reason: str,
        actor: str,
        request_id: str | None = None,
        at: dt.datetime | None = None,
    ) -> RestrictionRecord:
        """Restrict the use of *subject*'s data from *at* on.

        Args:
            subject: The subject's id (its ``subject_key()`` value).
            allowed_purposes: The purposes that may still use the data.
            reason: Why (kept in the store, never in the audit trail).
            actor: Who restricts it.
            request_id: The data-subject request it answers, if any.
            at: When (aware); defaults to now.

        Returns:
            The new record.

        Raises:
            RestrictionError: If *reason* or *actor* is empty, or *at* is naive.
        """
        if not reason or not actor:
            msg = "a restriction needs a reason and the acting actor"
            raise RestrictionError(msg)
        when = _aware(at)
        record = RestrictionRecord(
            id=f"rst_{uuid.uuid4().hex}",
            subject=subject_text(subject),
            allowed_purposes=tuple(allowed_purposes),
            reason=reason,
            placed_by=actor,
            placed_at=when,
            request_id=request_id,
        )
        self._record("subject.restrict", actor, record.subject, request_id, when)
        self._store.add(record)
        return record

    def lift(
        self,
        subject: object,
        *,
        reason: str,
        actor: str,
        at: dt.datetime | None = None,
    ) -> int:
        """Lift every restriction of *subject* in force; return how many.

        Raises:
            RestrictionError: If *reason* or *actor* is empty, or *at* is naive.
            UnknownRestrictionError: If no restriction of *subject* is in force.
        """
        if not reason or not actor:
            msg = "lifting a restriction needs a reason and the acting actor"
            raise RestrictionError(msg)
        when = _aware(at)
        text = subject_text(subject)
        if not any(r.in_force(when) for r in self._store.records_for([text])):
            msg = "no restriction of this subject is in force"
            raise UnknownRestrictionError(msg)
        self._record("subject.restrict_lift", actor, text, None, when)
        return self._store.lift(text, by=actor, at=when, reason=reason)

    def _record(
        self,
        action: str,
        actor: str,
        subject: str,
        request_id: str | None,
        at: dt.datetime,
    ) -> None:
        audit = self._audit
        if audit is None:
            return
        body: dict[str, Any] = {"subject_ref": audit.subject_ref(subject)}
        if request_id is not None:
            body["request_id"] = request_id
        audit.record(
            action,
            outcome="allowed",
            actor={"type": "user", "id": actor},
            now=at,
            **body,
        )

    def in_force(
        self, subjects: Iterable[object], at: dt.datetime
    ) -> dict[str, frozenset[str]]:
        """The restricted subjects of *subjects* at *at*, in one store lookup.

        Returns:
            Subject text -> the purposes still allowed for it (the purposes
            every restriction in force allows); subjects not restricted are
            absent.
        """
        texts = list(dict.fromkeys(subject_text(s) for s in subjects))
        if not texts:
            return {}
        in_force = getattr(self._store, "in_force", None)
        found: list[tuple[str, tuple[str, ...]]] = (
            # The store filters by time itself (SqlRestrictionStore).
            in_force(texts, at)
            if in_force is not None
            else [
                (r.subject, r.allowed_purposes)
                for r in self._store.records_for(texts)
                if r.in_force(at)
            ]
        )
        out: dict[str, frozenset[str]] = {}
        for subject, purposes in found:
            allowed = frozenset(purposes)
            held = out.get(subject)
            out[subject] = allowed if held is None else held & allowed
        return out

    def refused(
        self, subjects: Iterable[object], purpose: str | None, at: dt.datetime
    ) -> tuple[str, ...]:
        """The subjects of *subjects* whose data *purpose* may not use at *at*.

        This is what the custodian asks once per fetched batch.
        """
        restricted = self.in_force(subjects, at)
        if not restricted:
            return ()
        chain = purpose_chain(purpose, self._parents) if purpose is not None else ()
        return tuple(
            s
            for s, allowed in restricted.items()
            if not any(p in allowed for p in chain)
        )

    def history(self, subject: object) -> list[RestrictionRecord]:
        """Every restriction record of *subject*, oldest first."""
        records = self._store.records_for([subject_text(subject)])
        return sorted(records, key=lambda r: r.placed_at)
