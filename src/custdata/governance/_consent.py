"""Consent: who agreed to what, and whether that agreement is in force.

This module is the one home of consent in custdata. The consent ledger and its
rules are built on the :class:`ConsentSource` protocol below; every other part
that needs to know whether a subject consented (reads for consent-required
purposes, the provision gate, data-subject requests) asks a ``ConsentSource``.

The ledger (R-CON-1) keeps one :class:`Consent` record per grant: subject,
purpose, scope (fields), when it was granted and withdrawn, how it was given,
the privacy-notice version shown and a reference to the evidence. The rules
are pure (:func:`consents_in_force`); the records live in a
:class:`ConsentStore`: :class:`InMemoryConsentStore` for tests and tools,
:class:`custdata.sqlalchemy.SqlConsentStore` in the application's database.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from custdata._errors import ConfigurationError, CustdataError


__all__ = [
    "Consent",
    "ConsentLedger",
    "ConsentSource",
    "ConsentStore",
    "InMemoryConsentStore",
    "UnknownConsentError",
    "consents_in_force",
]


class ConsentSource(Protocol):
    """Answers whether a subject's consent to a purpose is in force.

    Subjects are named by their subject-key value as the application declares
    it (a UUID, an int or a str; the ledger canonicalises it).
    """

    def consent_in_force(
        self, subject: object, purpose: str, at: dt.datetime
    ) -> str | None:
        """The id of the consent record in force for *subject* and *purpose*.

        Args:
            subject: The subject's id (its ``subject_key()`` value).
            purpose: The purpose's name.
            at: The time the question is about (time-zone aware).

        Returns:
            The consent record's id, or ``None`` when no consent is in force
            (never given, withdrawn, or out of the consent's scope).
        """
        ...


class UnknownConsentError(CustdataError, LookupError):
    """No consent record has the id given (withdrawing an unknown consent)."""


def _aware(value: object, what: str) -> dt.datetime:
    # Checked at run time too: the times come from application code.
    if not isinstance(value, dt.datetime):
        msg = f"{what} must be a datetime, not {type(value).__name__}"
        raise TypeError(msg)
    if value.tzinfo is None or value.utcoffset() is None:
        msg = f"{what} must be time-zone aware"
        raise ValueError(msg)
    return value


def _aware_or_none(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else _aware(value, "withdrawn_at")


def _scope(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(sorted(set(value)))


def subject_text(subject: object) -> str:
    """The canonical text of a subject id, as the ledger stores it (``str()``)."""
    return subject if isinstance(subject, str) else str(subject)


def purpose_chain(purpose: str, parents: Mapping[str, str | None]) -> tuple[str, ...]:
    """*purpose* and the purposes above it (*parents*: purpose -> its parent)."""
    chain = [purpose]
    parent = parents.get(purpose)
    while parent is not None and parent not in chain:
        chain.append(parent)
        parent = parents.get(parent)
    return tuple(chain)


@attrs.frozen(kw_only=True)
class Consent:
    """One consent record of the ledger (R-CON-1).

    It holds identifiers and metadata only: never a customer value. The repr
    leaves the subject id out.

    Attributes:
        id: The record's id; decisions that relied on it name it.
        subject: The subject's id, as text (``str()`` of its subject-key value).
        purpose: The purpose consented to; it covers the purposes below it.
        scope: The fields consented to (column names); empty for every field
            the purpose may use.
        granted_at: When consent was given (aware).
        withdrawn_at: When it was withdrawn (aware), or ``None``.
        method: How it was given (``web_form``, ``paper``, ``verbal``...).
        notice_version: The version of the privacy notice shown (21条).
        evidence_ref: Where the evidence is kept (a document id), if anywhere.
    """

    id: str
    subject: str = attrs.field(repr=False)
    purpose: str
    scope: tuple[str, ...] = attrs.field(default=(), converter=_scope)
    granted_at: dt.datetime = attrs.field(
        validator=lambda _i, _a, v: _aware(v, "granted_at")
    )
    withdrawn_at: dt.datetime | None = attrs.field(
        default=None, converter=_aware_or_none
    )
    method: str
    notice_version: str
    evidence_ref: str | None = None

    def in_force(self, at: dt.datetime) -> bool:
        """Whether the consent is in force at *at*: granted, and not yet withdrawn."""
        return self.granted_at <= at and (
            self.withdrawn_at is None or at < self.withdrawn_at
        )

    def covers(self, fields: Collection[str]) -> bool:
        """Whether the consent's scope covers every one of *fields*."""
        return not self.scope or all(f in self.scope for f in fields)


def consents_in_force(
    records: Iterable[Consent],
    *,
    purposes: Collection[str],
    at: dt.datetime,
    fields: Collection[str] = (),
) -> dict[str, str]:
    """The consent in force per subject: the rule every consent check applies.

    A record counts when its purpose is one of *purposes* (the purpose in
    force and the purposes above it), it is in force at *at* and its scope
    covers *fields*. Of several that count, the latest granted is named.

    Args:
        records: Candidate records (any subjects).
        purposes: The purposes whose consent serves.
        at: The time of the operation (aware).
        fields: The fields the operation uses.

    Returns:
        Subject text -> the id of the consent record in force. Subjects
        without one are absent.
    """
    best: dict[str, Consent] = {}
    for record in records:
        if record.purpose in purposes and record.in_force(at) and record.covers(fields):
            held = best.get(record.subject)
            if held is None or held.granted_at < record.granted_at:
                best[record.subject] = record
    return {subject: record.id for subject, record in best.items()}


@runtime_checkable
class ConsentStore(Protocol):
    """Where consent records are kept.

    :class:`InMemoryConsentStore` and :class:`custdata.sqlalchemy.SqlConsentStore`
    implement it.
    """

    def add(self, consent: Consent) -> None:
        """Store a new record."""

    def set_withdrawn(self, consent_id: str, at: dt.datetime) -> Consent | None:
        """Mark a record withdrawn at *at* (if not already); return it, or ``None``."""

    def records_for(
        self, subjects: Collection[str], purposes: Collection[str] | None
    ) -> list[Consent]:
        """Every record of *subjects* for *purposes* (``None``: any), withdrawn ones included."""

    def get(self, consent_id: str) -> Consent | None:
        """The record with *consent_id*, or ``None``."""


class InMemoryConsentStore:
    """A consent store in memory, for tests and tools. Thread-safe."""

    def __init__(self) -> None:
        self._records: dict[str, Consent] = {}
        self._by_subject: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<InMemoryConsentStore records={len(self._records)}>"

    def add(self, consent: Consent) -> None:
        """Store a new record.

        Raises:
            ValueError: If a record with the same id exists.
        """
        with self._lock:
            if consent.id in self._records:
                msg = f"consent {consent.id!r} already exists"
                raise ValueError(msg)
            self._records[consent.id] = consent
            self._by_subject.setdefault(consent.subject, []).append(consent.id)

    def set_withdrawn(self, consent_id: str, at: dt.datetime) -> Consent | None:
        """Mark a record withdrawn at *at* unless it already is; return it."""
        with self._lock:
            record = self._records.get(consent_id)
            if record is None:
                return None
            if record.withdrawn_at is None:
                record = attrs.evolve(record, withdrawn_at=at)
                self._records[consent_id] = record
            return record

    def records_for(
        self, subjects: Collection[str], purposes: Collection[str] | None
    ) -> list[Consent]:
        """Every record of *subjects* for *purposes* (``None``: any purpose)."""
        out: list[Consent] = []
        with self._lock:
            for subject in dict.fromkeys(subjects):
                for cid in self._by_subject.get(subject, ()):
                    record = self._records[cid]
                    if purposes is None or record.purpose in purposes:
                        out.append(record)
        return out

    def get(self, consent_id: str) -> Consent | None:
        """The record with *consent_id*, or ``None``."""
        return self._records.get(consent_id)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ConsentLedger:
    """The consent ledger: grant, withdraw, and answer what is in force.

    It implements :class:`ConsentSource`; give it to the custodian
    (``Custodian(consent=ledger)``) and reads and writes for purposes that
    say ``consent_required`` release only subjects whose consent is in force,
    checked once per fetched batch. A withdrawal takes effect for the next
    operation: the ledger keeps no cache.

    Grants and withdrawals are recorded as ``consent.change`` events when an
    audit trail is given (:class:`custdata.audit.AuditTrail`).

    Args:
        store: Where the records are kept (in memory by default).
        audit: The audit trail recording grants and withdrawals, or ``None``.
        purposes: The purpose ids a grant may name (the policy's purposes);
            ``None`` accepts any.
        parents: Purpose id -> its parent's id, so a consent to a purpose
            serves the purposes below it (``Policy`` gives this through
            :meth:`for_policy`).
    """

    def __init__(
        self,
        store: ConsentStore | None = None,
        *,
        audit: Any = None,
        purposes: Collection[str] | None = None,
        parents: Mapping[str, str | None] | None = None,
    ) -> None:
        self._store: ConsentStore = (
            store if store is not None else InMemoryConsentStore()
        )
        self._audit = audit
        self._purposes = None if purposes is None else frozenset(purposes)
        self._parents = dict(parents or {})

    @classmethod
    def for_policy(
        cls, policy: Any, store: ConsentStore | None = None, *, audit: Any = None
    ) -> ConsentLedger:
        """A ledger that knows *policy*'s purposes and their tree.

        Args:
            policy: The :class:`custdata.Policy`.
            store: Where the records are kept (in memory by default).
            audit: The audit trail recording grants and withdrawals.
        """
        return cls(
            store,
            audit=audit,
            purposes=tuple(policy.purposes),
            parents={pid: p.parent for pid, p in policy.purposes.items()},
        )

    @property
    def store(self) -> ConsentStore:
        """The store holding the records."""
        return self._store

    def __repr__(self) -> str:
        return f"<ConsentLedger store={type(self._store).__name__}>"

    def _chain(self, purpose: str) -> tuple[str, ...]:
        """*purpose* and the purposes above it: a consent to any of them serves."""
        return purpose_chain(purpose, self._parents)

    def grant(
        self,
        subject: object,
        purpose: str,
        *,
        method: str,
        notice_version: str,
        scope: Sequence[str] = (),
        evidence_ref: str | None = None,
        actor: str = "system",
        now: dt.datetime | None = None,
    ) -> Consent:
        """Record that *subject* consented to *purpose*.

        Args:
            subject: The subject's id (its ``subject_key()`` value).
            purpose: The purpose consented to.
            method: How consent was given (``web_form``, ``paper``...).
            notice_version: The privacy-notice version shown.
            scope: The fields consented to; empty for all.
            evidence_ref: Where the evidence is kept.
            actor: Who records it (recorded in the ``consent.change`` event).
            now: When consent was given (aware); defaults to now.

        Returns:
            The new record.

        Raises:
            ConfigurationError: If *purpose* is not one of the policy's.
            ValueError: If *now* is naive, or *method* or *notice_version* is
                empty.
        """
        if self._purposes is not None and purpose not in self._purposes:
            msg = f"purpose {purpose!r} is not declared in the policy"
            raise ConfigurationError(msg)
        if not method or not notice_version:
            msg = "a consent needs its method and the notice version shown"
            raise ValueError(msg)
        record = Consent(
            id=f"con_{uuid.uuid4().hex}",
            subject=subject_text(subject),
            purpose=purpose,
            scope=tuple(scope),
            granted_at=now if now is not None else _now(),
            method=method,
            notice_version=notice_version,
            evidence_ref=evidence_ref,
        )
        self._record(actor, record, reason=None, now=record.granted_at)
        self._store.add(record)
        return record

    def withdraw(
        self,
        consent_id: str,
        *,
        actor: str = "system",
        now: dt.datetime | None = None,
    ) -> Consent:
        """Withdraw a consent; it stops serving from *now* on.

        Withdrawing an already withdrawn consent keeps its first withdrawal.

        Args:
            consent_id: The record's id.
            actor: Who records it.
            now: When it was withdrawn (aware); defaults to now.

        Returns:
            The withdrawn record.

        Raises:
            UnknownConsentError: If no record has that id.
        """
        at = _aware(now, "now") if now is not None else _now()
        record = self._store.get(consent_id)
        if record is None:
            msg = f"no consent record {consent_id!r}"
            raise UnknownConsentError(msg)
        self._record(actor, record, reason="consent_withdrawn", now=at)
        withdrawn = self._store.set_withdrawn(consent_id, at)
        assert withdrawn is not None  # noqa: S101 - found just above
        return withdrawn

    def withdraw_all(
        self,
        subject: object,
        purpose: str,
        *,
        actor: str = "system",
        now: dt.datetime | None = None,
    ) -> list[Consent]:
        """Withdraw every consent of *subject* in force for *purpose* at *now*.

        Returns:
            The records withdrawn (none if nothing was in force).
        """
        at = _aware(now, "now") if now is not None else _now()
        text = subject_text(subject)
        return [
            self.withdraw(r.id, actor=actor, now=at)
            for r in self._store.records_for([text], [purpose])
            if r.in_force(at)
        ]

    def _record(
        self, actor: str, record: Consent, *, reason: str | None, now: dt.datetime
    ) -> None:
        audit = self._audit
        if audit is None:
            return
        body: dict[str, Any] = {
            "purpose": record.purpose,
            "subject_ref": audit.subject_ref(record.subject),
        }
        if reason is not None:
            body["reason"] = reason
        audit.record(
            "consent.change",
            outcome="allowed",
            actor={"type": "user", "id": actor},
            now=now,
            **body,
        )

    def consent_in_force(
        self, subject: object, purpose: str, at: dt.datetime
    ) -> str | None:
        """The id of the consent in force for *subject* and *purpose* at *at*.

        A consent to a purpose above *purpose* serves too.
        """
        text = subject_text(subject)
        return self.consents_in_force([text], purpose, at).get(text)

    def consents_in_force(
        self,
        subjects: Collection[object],
        purpose: str,
        at: dt.datetime,
        *,
        fields: Collection[str] = (),
    ) -> dict[str, str]:
        """The consent in force for each of *subjects*, in one store lookup.

        This is what the custodian asks once per fetched batch.

        Args:
            subjects: The subjects' ids.
            purpose: The purpose in force.
            at: The time of the operation (aware).
            fields: The fields the operation uses; a scoped consent must cover
                them all.

        Returns:
            Subject text -> consent id, for the subjects with consent in force.
        """
        chain = self._chain(purpose)
        texts = list(dict.fromkeys(subject_text(s) for s in subjects))
        if not texts:
            return {}
        in_force = getattr(self._store, "in_force", None)
        if in_force is None:
            records = self._store.records_for(texts, chain)
            return consents_in_force(records, purposes=chain, at=at, fields=fields)
        # The store filters by time itself and returns only what serves:
        # (subject, consent id, scope, granted at), no record objects.
        best: dict[str, tuple[dt.datetime, str]] = {}
        for subject, cid, scope, granted in in_force(texts, chain, at):
            if scope and not all(f in scope for f in fields):
                continue
            held = best.get(subject)
            if held is None or held[0] < granted:
                best[subject] = (granted, cid)
        return {subject: cid for subject, (_g, cid) in best.items()}

    def history(self, subject: object) -> list[Consent]:
        """Every consent record of *subject* (in force or not), oldest first."""
        text = subject_text(subject)
        records = self._store.records_for([text], None)
        return sorted(records, key=lambda r: r.granted_at)
