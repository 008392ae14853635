"""Legal holds by subject or by case (R-RET-3).

A hold keeps a subject's data from disposal while a case (litigation, an
investigation, a regulator's request) needs it: the retention sweep skips the
held subjects' values, and crypto-shredding and record deletion of a held
subject are refused with :class:`custdata.LegalHoldError`. A hold is placed and
released by an actor with a reason, and both are kept as records. Once
released, the next sweep disposes of whatever has expired meanwhile.

Bad arguments to the register raise :class:`HoldError` (a ``ValueError``) and
releasing a hold that is not in force :class:`UnknownHoldError` (also a
``LookupError``), as :class:`~custdata.governance.Restrictions` does; neither
is a :class:`custdata.LegalHoldError`, which is the refusal of a disposal.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

from collections.abc import Collection, Iterable
from typing import Protocol, runtime_checkable

import attrs

from custdata._errors import CustdataError, LegalHoldError

from ._consent import subject_text


__all__ = [
    "HoldError",
    "HoldRecord",
    "HoldStore",
    "InMemoryHoldStore",
    "LegalHolds",
    "UnknownHoldError",
]


class HoldError(CustdataError, ValueError):
    """A legal hold cannot be placed or released as asked.

    A missing case, subject, reason or actor. Not a
    :class:`custdata.LegalHoldError` (the refusal of a disposal because a
    hold is in force). Messages name the hold's id, never a subject.
    """


class UnknownHoldError(HoldError, LookupError):
    """No hold in force has the id of the hold being released."""


@attrs.frozen(kw_only=True)
class HoldRecord:
    """One subject under one legal hold.

    Attributes:
        id: The hold's id (shared by every subject of the hold).
        case: The case the hold is for (a case number).
        subject: The held subject's id, as text.
        reason: Why the data is held.
        placed_by: Who placed the hold.
        placed_at: When (aware).
        released_by: Who released it, or ``None`` while in force.
        released_at: When it was released, or ``None``.
        release_reason: Why it was released.
    """

    id: str
    case: str
    subject: str = attrs.field(repr=False)
    reason: str
    placed_by: str
    placed_at: dt.datetime
    released_by: str | None = None
    released_at: dt.datetime | None = None
    release_reason: str | None = None

    def in_force(self, at: dt.datetime) -> bool:
        """Whether the hold is in force at *at*."""
        return self.placed_at <= at and (
            self.released_at is None or at < self.released_at
        )


@runtime_checkable
class HoldStore(Protocol):
    """Where hold records are kept (:class:`InMemoryHoldStore`, ``SqlHoldStore``)."""

    def add_many(self, records: Collection[HoldRecord]) -> None:
        """Store new records."""

    def release(self, hold_id: str, *, by: str, at: dt.datetime, reason: str) -> int:
        """Mark every record of a hold released; return how many were in force."""

    def records_for(self, subjects: Collection[str]) -> list[HoldRecord]:
        """Every hold record of *subjects*, released ones included."""


class InMemoryHoldStore:
    """Hold records in memory, for tests and tools. Thread-safe."""

    def __init__(self) -> None:
        self._records: list[HoldRecord] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<InMemoryHoldStore records={len(self._records)}>"

    def add_many(self, records: Collection[HoldRecord]) -> None:
        """Store new records."""
        with self._lock:
            self._records.extend(records)

    def release(self, hold_id: str, *, by: str, at: dt.datetime, reason: str) -> int:
        """Mark every record of a hold released; return how many were in force."""
        released = 0
        with self._lock:
            for i, r in enumerate(self._records):
                if r.id == hold_id and r.released_at is None:
                    self._records[i] = attrs.evolve(
                        r, released_by=by, released_at=at, release_reason=reason
                    )
                    released += 1
        return released

    def records_for(self, subjects: Collection[str]) -> list[HoldRecord]:
        """Every hold record of *subjects*."""
        wanted = set(subjects)
        with self._lock:
            return [r for r in self._records if r.subject in wanted]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: object) -> dt.datetime:
    if value is None:
        return _now()
    # Checked at run time too: the times come from application code.
    if not isinstance(value, dt.datetime):
        msg = f"the time of a legal hold must be a datetime, not {type(value).__name__}"
        raise HoldError(msg)
    if value.tzinfo is None or value.utcoffset() is None:
        msg = "the time of a legal hold must be time-zone aware"
        raise HoldError(msg)
    return value


class LegalHolds:
    """The legal-hold register: place, release, and which subjects are held.

    Give it to the custodian (``Custodian(holds=...)``) and to the sweep.

    Args:
        store: Where the records are kept (in memory by default).
    """

    def __init__(self, store: HoldStore | None = None) -> None:
        self._store: HoldStore = store if store is not None else InMemoryHoldStore()

    @property
    def store(self) -> HoldStore:
        """The store holding the records."""
        return self._store

    def __repr__(self) -> str:
        return f"<LegalHolds store={type(self._store).__name__}>"

    def place(
        self,
        *,
        case: str,
        subjects: Iterable[object],
        reason: str,
        actor: str,
        now: dt.datetime | None = None,
    ) -> str:
        """Place a hold for *case* on *subjects*; return the hold's id.

        Raises:
            HoldError: If *case*, *reason* or *actor* is empty, no subject is
                given, *subjects* is one string instead of a collection, or
                *now* is not time-zone aware.
        """
        if not case or not reason or not actor:
            msg = "a legal hold needs its case, a reason and the acting actor"
            raise HoldError(msg)
        if isinstance(subjects, (str, bytes)):
            msg = "a legal hold's subjects must be a collection of ids, not one string"
            raise HoldError(msg)
        at = _aware(now)
        texts = list(dict.fromkeys(subject_text(s) for s in subjects))
        if not texts:
            msg = "a legal hold needs at least one subject"
            raise HoldError(msg)
        hold_id = f"hold_{uuid.uuid4().hex}"
        self._store.add_many(
            [
                HoldRecord(
                    id=hold_id,
                    case=case,
                    subject=t,
                    reason=reason,
                    placed_by=actor,
                    placed_at=at,
                )
                for t in texts
            ]
        )
        return hold_id

    def release(
        self,
        hold_id: str,
        *,
        reason: str,
        actor: str,
        now: dt.datetime | None = None,
    ) -> int:
        """Release a hold; return how many subjects it released.

        Raises:
            HoldError: If *reason* or *actor* is empty, or *now* is not
                time-zone aware.
            UnknownHoldError: If no hold in force has that id.
        """
        if not reason or not actor:
            msg = "releasing a legal hold needs a reason and the acting actor"
            raise HoldError(msg)
        count = self._store.release(hold_id, by=actor, at=_aware(now), reason=reason)
        if not count:
            msg = f"no legal hold in force has id {hold_id!r}"
            raise UnknownHoldError(msg)
        return count

    def held(self, subjects: Iterable[object], at: dt.datetime) -> set[str]:
        """The subjects (as text) of *subjects* that a hold keeps at *at*.

        Raises:
            HoldError: If *at* is not time-zone aware.
        """
        at = _aware(at)
        texts = list(dict.fromkeys(subject_text(s) for s in subjects))
        if not texts:
            return set()
        return {r.subject for r in self._store.records_for(texts) if r.in_force(at)}

    def refuse_if_held(
        self, subjects: Iterable[object], at: dt.datetime, *, what: str
    ) -> None:
        """Raise :class:`custdata.LegalHoldError` if any of *subjects* is held.

        Raises:
            LegalHoldError: Naming how many subjects are held, never their ids.
        """
        held = self.held(subjects, at)
        if held:
            msg = f"{what} refused: {len(held)} subject(s) are under a legal hold"
            raise LegalHoldError(msg)
