"""The custodian: the one runtime object that holds policy, keys and audit trail."""

from __future__ import annotations

import contextlib
import datetime as dt
import time

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ._context import _access, _custodian, _default_custodian, current_access
from ._decision import (
    AccessDecision,
    Action,
    DecisionRecorder,
    DenyReason,
    Outcome,
)
from ._errors import (
    ActorRequiredError,
    ConfigurationError,
    ConsentRequiredError,
    CustdataError,
    HandlerNotRegisteredError,
    KeyDestroyedError,
    LegalHoldError,
    PurposeNotGrantedError,
    PurposeRequiredError,
    PurposeViolationError,
    SubjectRestrictedError,
)
from ._lifecycle import lifecycle_message, lifecycle_window, my_number_permitted
from ._policy import FieldPolicy, Policy
from ._taxonomy import is_my_number


if TYPE_CHECKING:  # the crypto layer is above this one: types only, never imported
    from .crypto import Keyring, SubjectKeyStore


__all__ = ["Custodian", "current_custodian"]

_ERRORS: Mapping[DenyReason, type[CustdataError]] = {
    DenyReason.NO_ACTOR: ActorRequiredError,
    DenyReason.NO_PURPOSE: PurposeRequiredError,
    DenyReason.UNKNOWN_PURPOSE: PurposeViolationError,
    DenyReason.UNKNOWN_ROLE: PurposeNotGrantedError,
    DenyReason.PURPOSE_NOT_GRANTED: PurposeNotGrantedError,
    DenyReason.PURPOSE_NOT_PERMITTED: PurposeViolationError,
    DenyReason.UNTAGGED_FIELD: PurposeViolationError,
    DenyReason.ERASURE_NOT_PERMITTED: PurposeViolationError,
    DenyReason.CONSENT_MISSING: ConsentRequiredError,
    DenyReason.PURPOSE_NOT_EFFECTIVE: PurposeViolationError,
    DenyReason.MY_NUMBER_NOT_PERMITTED: PurposeViolationError,
    DenyReason.LEGAL_HOLD: LegalHoldError,
    DenyReason.UNREGISTERED_HANDLER: HandlerNotRegisteredError,
    DenyReason.RETENTION_EXPIRED: PurposeViolationError,
    DenyReason.RESTRICTED: SubjectRestrictedError,
    DenyReason.KEY_DESTROYED: KeyDestroyedError,
}

#: The actions that use subjects' values, so need their consent where the
#: purpose does (reads, writes and exports; not claims, searches or erasure).
_SUBJECT_ACTIONS = frozenset({Action.READ, Action.WRITE, Action.UPDATE, Action.EXPORT})
#: The actions that acquire values (special-care acquisition needs consent).
_ACQUIRING = frozenset({Action.WRITE, Action.UPDATE})


def _local_now() -> dt.datetime:
    return dt.datetime.now().astimezone()


class Custodian:
    """Holds the policy, the keyring and the audit trail, and decides access.

    An application builds one at start-up and makes it current with
    :meth:`make_current`; tests may build several and scope each with
    :meth:`activate`. Nothing else in custdata is global.

    Args:
        policy: The policy that decides.
        keyring: The :class:`custdata.crypto.Keyring` used by encrypted columns.
        audit: Where decisions are recorded (:class:`custdata.audit.AuditTrail`
            or any :class:`custdata.DecisionRecorder`); ``None`` records nothing,
            which is for tests and tools only.
        subject_keys: The per-subject key store, for crypto-shredding.
        consent: The consent ledger (:class:`custdata.governance.ConsentLedger`,
            or any :class:`custdata.governance.ConsentSource`). Reads and writes
            for purposes that say ``consent_required``, and writes of
            special-care fields, release only subjects whose consent is in
            force; without a ledger they are refused (fail closed).
        holds: The legal-hold register (:class:`custdata.governance.LegalHolds`):
            shredding, and deleting the records of, a held subject are
            refused with :class:`custdata.LegalHoldError`.
        restrictions: The register of restrictions of use
            (:class:`custdata.governance.Restrictions`): reads, writes and
            exports of a restricted subject's data are refused for every
            purpose but the restriction's allowed purposes, once per batch
            (:class:`custdata.SubjectRestrictedError`). A ``subject_disclosure``
            purpose is never refused: the person may always see their data.
        retention: Answers which subjects' records have outlived the retention
            of the purpose in force (``expired_subjects(entity, fields,
            purpose, subjects, now)``, as
            :class:`custdata.sqlalchemy.SqlRetentionGuard` does): reads of
            those are refused like out-of-purpose reads, once per batch.
        clock: Returns the current time (aware); it decides which purposes are
            in force (``effective_from``, ``retired_on``, the policy's
            ``effective_date``) and which consents. Defaults to the local
            wall clock; tests pass a frozen one.

    Raises:
        TypeError: If *policy* is not a :class:`Policy` or *audit* does not
            implement ``record_decision``.
    """

    def __init__(
        self,
        *,
        policy: Policy,
        keyring: Keyring | None = None,
        audit: DecisionRecorder | None = None,
        subject_keys: SubjectKeyStore | None = None,
        consent: Any = None,
        holds: Any = None,
        restrictions: Any = None,
        retention: Any = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        _check_arguments(policy, audit)
        self._policy = policy
        self._keyring = keyring
        self._audit = audit
        self._subject_keys = subject_keys
        self._consent = consent
        self._holds = holds
        self._restrictions = restrictions
        self._retention = retention
        self._clock = clock if clock is not None else _local_now
        self._wall_clock = clock is None
        #: (today, monotonic time until which it is today) for the wall clock.
        self._day: tuple[dt.date, float] = (dt.date.min, -1.0)
        #: Per purpose: (first day, day retired or None, needs consent).
        self._lifecycles: dict[str, tuple[dt.date, dt.date | None, bool]] = {}
        # The policy is immutable: whether strict handler mode is on is read once.
        self._strict_handlers = policy.registers.handlers.strict
        self._verdicts: dict[tuple[object, ...], _Verdict] = {}
        #: (access context, field mapping, verdict) of the last decision.
        self._last: tuple[object, object, _Verdict | None] = (None, None, None)

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self._policy

    @property
    def keyring(self) -> Keyring | None:
        """The keyring, or ``None`` if none was given."""
        return self._keyring

    @property
    def audit(self) -> DecisionRecorder | None:
        """The audit recorder, or ``None``."""
        return self._audit

    @property
    def subject_keys(self) -> SubjectKeyStore | None:
        """The per-subject key store, or ``None``."""
        return self._subject_keys

    @property
    def holds(self) -> Any:
        """The legal-hold register, or ``None``."""
        return self._holds

    @property
    def restrictions(self) -> Any:
        """The register of restrictions of use, or ``None``."""
        return self._restrictions

    @property
    def consent(self) -> Any:
        """The consent ledger (a ``ConsentSource``), or ``None``."""
        return self._consent

    def now(self) -> dt.datetime:
        """The current time by the custodian's clock."""
        return self._clock()

    def __repr__(self) -> str:
        return (
            f"<Custodian policy={self._policy.organisation!r} v{self._policy.version}>"
        )

    # -- currency ------------------------------------------------------------------

    def make_current(self) -> None:
        """Make this the process-wide current custodian (at application start-up)."""
        _default_custodian[0] = self

    @contextlib.contextmanager
    def activate(self) -> Iterator[Custodian]:
        """Make this the current custodian within the block, in this context only."""
        token = _custodian.set(self)
        try:
            yield self
        finally:
            _custodian.reset(token)

    # -- key operations ----------------------------------------------------------

    def rotate_key(self, *, index: bool = False, now: dt.datetime | None = None) -> int:
        """Add a new primary key to the keyring and record the rotation.

        Old keys keep decrypting (and matching searches) until the stored
        values are re-encrypted (``custdata reencrypt``) and the old key is
        retired. The ``key.rotate`` event names the acting actor and both key
        ids. Save the keyring afterwards (:meth:`custdata.crypto.Keyring.save`).

        Args:
            index: Rotate the blind-index key instead of the data key.
            now: When the key is created (aware); defaults to now.

        Returns:
            The new primary key's id.

        Raises:
            ActorRequiredError: If no actor is in force.
            ConfigurationError: If the custodian has no keyring.
            AuditUnavailableError: If the event cannot be recorded; the new key
                is then already in the keyring (in memory only until saved).
        """
        actor = self._operator("rotating a key")
        keyring = self._require_keyring("rotating a key")
        if index:
            old, new = keyring.primary_index_key_id, keyring.rotate_index_key(now=now)
        else:
            old, new = keyring.primary_key_id, keyring.rotate(now=now)
        record = getattr(self._audit, "key_rotated", None)
        if record is not None:
            record(
                old_key_id=str(old),
                new_key_id=str(new),
                actor=actor,
                kind="index" if index else "data",
                now=now,
            )
        return int(new)

    def _require_keyring(self, what: str) -> Keyring:
        if self._keyring is None:
            msg = f"{what} needs a custodian with a keyring"
            raise ConfigurationError(msg)
        return self._keyring

    def _operator(self, what: str) -> str:
        """Return the acting actor of a key operation, which needs a keyring."""
        actor = current_access().actor
        if actor is None:
            msg = f"{what} needs an actor: use custdata.acting_as()"
            raise ActorRequiredError(msg)
        if self._keyring is None:
            msg = f"{what} needs a custodian with a keyring"
            raise ConfigurationError(msg)
        return actor

    # -- erasure -----------------------------------------------------------------

    def shred(
        self,
        subject_id: object,
        *,
        erasers: Sequence[Callable[[object], int]] = (),
        reason: str = "erasure_request",
        now: dt.datetime | None = None,
    ) -> int:
        """Crypto-shred one data subject: destroy its data key for good.

        Every value stored for the subject under a per-subject key becomes
        unreadable (:class:`custdata.KeyDestroyedError`), in the database and in
        every backup. The destruction is recorded in the audit trail first (a
        ``key.shred`` event naming the acting actor and the subject's pseudonym);
        if it cannot be recorded, nothing is destroyed. Then each of *erasers* is
        called with the subject id: the SQLAlchemy layer's
        :func:`custdata.sqlalchemy.blind_index_eraser` clears the subject's
        blind-index entries so searches can no longer link them.

        Shredding an already shredded subject destroys nothing more and is
        recorded again. :meth:`shred_many` does the same for many subjects.

        Args:
            subject_id: The subject's id, as stored in its ``subject_key`` column.
            erasers: Callables that remove what else links to the subject; each
                returns how many rows it changed.
            reason: The enumerated reason recorded with the event.
            now: When the key is destroyed (aware); defaults to now.

        Returns:
            The total the erasers returned.

        Raises:
            ActorRequiredError: If no actor is in force.
            ConfigurationError: If the custodian has no keyring or no subject key
                store.
            AuditUnavailableError: If the event cannot be recorded.
        """
        return self.shred_many([subject_id], erasers=erasers, reason=reason, now=now)

    def shred_many(
        self,
        subject_ids: Iterable[object],
        *,
        erasers: Sequence[Callable[[object], int]] = (),
        reason: str = "erasure_request",
        now: dt.datetime | None = None,
    ) -> int:
        """Crypto-shred many data subjects as one batch.

        Like :meth:`shred` for each subject, but batched: every ``key.shred``
        event is recorded first (one per subject; if one cannot be recorded,
        nothing is destroyed), then every key is destroyed in one operation of
        the subject key store (one transaction in the SQL store, a few
        statements per 500 subjects), then each eraser runs once for the whole
        batch when it offers a ``many(subject_ids)`` method (as
        :func:`custdata.sqlalchemy.blind_index_eraser` does), else once per
        subject.

        Args:
            subject_ids: The subjects' ids, as stored in their ``subject_key``
                column; repeated ids count once.
            erasers: Callables that remove what else links to a subject.
            reason: The enumerated reason recorded with each event.
            now: When the keys are destroyed (aware); defaults to now.

        Returns:
            The total the erasers returned.

        Raises:
            ActorRequiredError: If no actor is in force.
            ConfigurationError: If the custodian has no keyring or no subject key
                store.
            LegalHoldError: If a legal hold keeps one of the subjects; nothing
                is destroyed.
            AuditUnavailableError: If an event cannot be recorded.
        """
        actor = self._operator("shredding a subject")
        if self._subject_keys is None:
            msg = "shredding needs a custodian with subject_keys"
            raise ConfigurationError(msg)
        keyring = self._require_keyring("shredding a subject")
        ids: list[Any] = list(dict.fromkeys(subject_ids))
        if self._holds is not None:
            self._holds.refuse_if_held(
                ids, now if now is not None else self._clock(), what="shredding"
            )
        record = getattr(self._audit, "key_shredded", None)
        if record is not None:
            for subject_id in ids:
                record(
                    key_id="subject",
                    actor=actor,
                    subject=str(subject_id),
                    reason=reason,
                    now=now,
                )
        keyring.shred_subjects(ids, self._subject_keys, now=now)
        total = 0
        for eraser in erasers:
            many = getattr(eraser, "many", None)
            if many is not None:
                total += many(ids)
            else:
                total += sum(eraser(subject_id) for subject_id in ids)
        return total

    # -- decisions -------------------------------------------------------------

    def _verdict(
        self,
        actor: str | None,
        role: str | None,
        purpose: str | None,
        fields: Mapping[str, FieldPolicy | None] | None,
        *,
        erase: bool = False,
    ) -> _Verdict:
        # The verdict depends only on the policy (immutable), whether there is
        # an actor, the role, the purpose, the field policies and whether the
        # records are erased, so it is memoised. Callers such as the column
        # types pass the same mapping object for every statement on a table,
        # so its identity is the key; the cached entry keeps that mapping
        # alive, so the id cannot be reused.
        key = (actor is None, role, purpose, id(fields), erase)
        cached = self._verdicts.get(key)
        if cached is not None and cached.source is fields:
            return cached
        verdict = _decide(self._policy, actor, role, purpose, fields, erase=erase)
        if len(self._verdicts) >= _VERDICT_CACHE_SIZE:
            self._verdicts.clear()
        self._verdicts[key] = verdict
        return verdict

    def check_claim(self) -> AccessDecision:
        """Check that the actor in force may claim the purpose in force.

        Called by :func:`custdata.purpose` on entry. The decision is recorded.

        Raises:
            ActorRequiredError: If no actor is in force.
            PurposeRequiredError: If no purpose is in force.
            PurposeViolationError: If the purpose is not declared.
            PurposeNotGrantedError: If the role may not claim it.
            AuditUnavailableError: If the decision cannot be recorded.
        """
        return self.authorize(action=Action.CLAIM)

    def authorize(
        self,
        *,
        action: Action,
        entity: str | None = None,
        fields: Mapping[str, FieldPolicy | None] | None = None,
        subjects: Sequence[object] = (),
        count: int = 0,
        unreadable: Collection[object] = (),
        whole_batch: bool = False,
        pending: list[AccessDecision] | None = None,
    ) -> AccessDecision:
        """Decide whether the access context in force may do *action* on *fields*.

        This is the one function every access decision passes through. The
        decision, allowed or denied, is handed to the audit recorder before this
        returns or raises, so no value can be released without its record.

        Args:
            action: What is attempted.
            entity: The table or model.
            fields: The fields concerned, by name, with their policies; ``None``
                for a field on a customer table that has no tags (always denied).
            subjects: The data subjects concerned.
            count: How many (subject, field) values are concerned.
            unreadable: Those of *subjects* whose values can never be opened:
                their data key was destroyed (crypto-shredding). When the
                access is otherwise allowed, their refusal is recorded first,
                as a decision of its own (``denied``, reason
                ``key_destroyed``, their share of *count*), and the allowed
                decision names only the others (recorded only if any are
                left): nothing records them as revealed.
            whole_batch: The caller releases all of *subjects* or none (a
                Core result hands over whole batches): with any of them
                *unreadable*, nothing is released and nothing is recorded as
                allowed; the refusal of the unreadable ones is recorded and
                raised.
            pending: Where an allowed decision goes instead of the audit
                trail, when it is one of several the caller makes before
                releasing anything (one per table of a join): the caller
                records them with :meth:`record_pending` once every one was
                allowed, so a statement refused on a later table records no
                reveal on an earlier one. Denials are recorded at once.

        Returns:
            The allowed decision. Fields whose policy says ``on_violation="mask"``
            and whose purpose check failed are listed in ``denied_fields``: the
            caller may reveal only their masks.

        Raises:
            ActorRequiredError: No actor is in force.
            PurposeRequiredError: No purpose is in force.
            PurposeNotGrantedError: The actor's role may not claim the purpose.
            PurposeViolationError: The purpose is unknown, or not permitted for a
                field that does not mask on violation, or a field is untagged;
                for ``Action.DELETE``, the purpose may not erase records
                (the policy's ``may_erase``); the purpose (or the policy) is
                not yet effective or is retired; a My Number field is used for a
                purpose the My Number Act does not permit; the retention of the
                purpose has ended for a record read (with a ``retention``
                guard).
            ConsentRequiredError: The purpose needs consent (or the write
                acquires special-care data) and a subject of the batch has no
                consent in force; the denial names those subjects.
            LegalHoldError: ``Action.DELETE`` of records whose subject is under
                a legal hold.
            SubjectRestrictedError: A read, write or export of a subject whose
                use is restricted, for a purpose the restriction does not
                allow (with a ``restrictions`` register); the denial names
                those subjects.
            KeyDestroyedError: *whole_batch*, and a subject is *unreadable*
                (recorded as denied, reason ``key_destroyed``).
            AuditUnavailableError: The decision could not be recorded.
        """
        ctx = _access.get()
        last = self._last
        verdict: _Verdict | None = last[2]
        if action is Action.DELETE:
            verdict = self._verdict(
                ctx.actor, ctx.role, ctx.purpose, fields, erase=True
            )
            if verdict.reason is None and self._holds is not None and subjects:
                held = self._holds.held(subjects, self._clock())
                if held:
                    verdict = attrs.evolve(verdict, reason=DenyReason.LEGAL_HOLD)
        elif verdict is None or last[0] is not ctx or last[1] is not fields:
            # Not the same (immutable) access context and field mapping as
            # the last decision, whose verdict would be this one's.
            verdict = self._verdict(ctx.actor, ctx.role, ctx.purpose, fields)
            self._last = (ctx, fields, verdict)
        reason = verdict.reason
        named = tuple(map(str, subjects))
        consents: tuple[str, ...] = ()
        withheld: tuple[str, ...] = ()
        message: str | None = None
        purpose = ctx.purpose
        if reason is None and purpose is not None:
            lifecycle = self._lifecycles.get(purpose) or self._lifecycle(purpose)
            # _today(), inlined for the wall clock's memoised day.
            day, until = self._day
            today = (
                day if self._wall_clock and time.monotonic() < until else self._today()
            )
            if today < lifecycle[0] or (
                lifecycle[1] is not None and today >= lifecycle[1]
            ):
                reason = DenyReason.PURPOSE_NOT_EFFECTIVE
                message = lifecycle_message(self._policy, purpose, today)
            elif action in _SUBJECT_ACTIONS and (
                lifecycle[2] or (verdict.special and action in _ACQUIRING)
            ):
                refused, consents, message = self._decide_subjects(
                    purpose, verdict, named, count, self._clock()
                )
                if message is not None:
                    if refused and action is Action.READ and _maskable(verdict):
                        # Per-subject masking: the others are released.
                        withheld = refused
                        named, count = self._withhold(
                            ctx,
                            action,
                            entity,
                            verdict,
                            named,
                            withheld,
                            count,
                            DenyReason.CONSENT_MISSING,
                        )
                        message = None
                    else:
                        reason = DenyReason.CONSENT_MISSING
                        named = refused
                        consents = ()
            if (
                reason is None
                and self._restrictions is not None
                and named
                and action in _SUBJECT_ACTIONS
                # Disclosure to the subject stays allowed while use is restricted.
                and purpose not in self._policy.disclosure_purposes
            ):
                restricted = self._restrictions.refused(named, purpose, self._clock())
                if restricted and action is Action.READ and _maskable(verdict):
                    consents = _consents_without(named, consents, restricted)
                    named, count = self._withhold(
                        ctx,
                        action,
                        entity,
                        verdict,
                        named,
                        restricted,
                        count,
                        DenyReason.RESTRICTED,
                    )
                    withheld = (*withheld, *restricted)
                elif restricted:
                    reason = DenyReason.RESTRICTED
                    named = restricted
                    consents = ()
                    message = (
                        f"the use of {len(named)} data subject(s)' data is "
                        f"restricted; purpose {purpose!r} is not allowed"
                    )
            if (
                reason is None
                and action is Action.READ
                and self._retention is not None
                and named
            ):
                expired = self._retention.expired_subjects(
                    entity, verdict.source, purpose, named, self._clock()
                )
                if expired:
                    reason = DenyReason.RETENTION_EXPIRED
                    named = tuple(s for s in named if s in expired)
                    message = (
                        f"the retention of purpose {purpose!r} has ended for "
                        f"{len(named)} record(s) of {entity or 'this table'}"
                    )
        if reason is None and self._strict_handlers:
            message = self._strict_handler_refusal(ctx.actor, ctx.role)
            if message is not None:
                reason = DenyReason.UNREGISTERED_HANDLER
        gone: tuple[str, ...] = ()
        if reason is None and unreadable:
            lost = set(map(str, unreadable))
            gone = tuple(s for s in named if s in lost)
            if gone and whole_batch:
                reason = DenyReason.KEY_DESTROYED
                count = count * len(gone) // len(named)
                named, consents = gone, ()
                message = (
                    f"the data key of {len(gone)} data subject(s) was destroyed: "
                    f"the values of {entity or 'this table'} fetched with them "
                    "cannot be read"
                )
            elif gone:
                consents = _consents_without(named, consents, lost)
                named, count = self._withhold(
                    ctx,
                    action,
                    entity,
                    verdict,
                    named,
                    gone,
                    count,
                    DenyReason.KEY_DESTROYED,
                )
        decision = AccessDecision(
            outcome=Outcome.ALLOWED if reason is None else Outcome.DENIED,
            reason=reason,
            action=action,
            actor=ctx.actor,
            role=ctx.role,
            purpose=purpose,
            policy_version=self._policy.version,
            entity=entity,
            fields=verdict.fields,
            categories=verdict.categories,
            denied_fields=verdict.denied_fields,
            subjects=named,
            count=count,
            request_id=ctx.request_id,
            trace_id=ctx.trace_id,
            consents=consents,
            withheld=withheld,
        )
        if self._audit is not None and (named or not (withheld or gone)):
            if pending is not None and reason is None:
                pending.append(decision)
            else:
                # AuditUnavailableError propagates: an access whose decision
                # cannot be recorded is refused, allowed or not (fail closed).
                self._audit.record_decision(decision)
        if reason is DenyReason.LEGAL_HOLD:
            message = (
                f"erasing records of {entity or 'this table'} refused: "
                "a data subject is under a legal hold"
            )
        if reason is not None:
            if message is not None:
                raise _ERRORS[reason](message)
            raise _ERRORS[reason](
                _message(
                    reason,
                    actor=ctx.actor,
                    role=ctx.role,
                    purpose=ctx.purpose,
                    entity=entity,
                    fields=verdict.refused,
                )
            )
        return decision

    def record_pending(self, decisions: Sequence[AccessDecision]) -> None:
        """Record the allowed decisions :meth:`authorize` held back in its *pending* list.

        Raises:
            AuditUnavailableError: A decision could not be recorded (nothing
                may be released).
        """
        if self._audit is not None:
            for decision in decisions:
                self._audit.record_decision(decision)

    def _today(self) -> dt.date:
        """Today by the custodian's clock (the wall clock's day is memoised)."""
        if not self._wall_clock:
            return self._clock().date()
        day, until = self._day
        tick = time.monotonic()
        if tick < until:
            return day
        now = self._clock()
        midnight = dt.datetime.combine(
            now.date() + dt.timedelta(days=1), dt.time(), tzinfo=now.tzinfo
        )
        self._day = (now.date(), tick + (midnight - now).total_seconds())
        return now.date()

    def _lifecycle(self, purpose: str) -> tuple[dt.date, dt.date | None, bool]:
        """When *purpose* may be used, and whether it needs consent (memoised)."""
        policy = self._policy
        start, end = lifecycle_window(policy, purpose)
        entry = (start, end, policy.needs_consent(purpose))
        self._lifecycles[purpose] = entry
        return entry

    def _decide_subjects(
        self,
        purpose: str,
        verdict: _Verdict,
        subjects: tuple[str, ...],
        count: int,
        now: dt.datetime,
    ) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
        """The subject-level decision of one batch: is each subject's consent in force?

        Called by :meth:`authorize` once per decision (so once per fetched
        batch and per written statement), with one ledger lookup for all the
        batch's subjects.

        Returns:
            The subjects refused, the consent ids of the others (in the order
            of *subjects*), and the denial message (``None`` when allowed).
        """
        acquiring = not self._policy.needs_consent(purpose)
        what = (
            f"acquiring special-care data for purpose {purpose!r}"
            if acquiring
            else f"purpose {purpose!r}"
        )
        if not subjects:
            if count == 0:
                return (), (), None
            return (), (), f"{what} needs consent, but the data subjects are unknown"
        source = self._consent
        if source is None:
            return (
                subjects,
                (),
                f"{what} needs consent and no consent ledger is configured",
            )
        released = set(verdict.denied_fields)
        fields = [f for f in verdict.fields if f not in released]
        many = getattr(source, "consents_in_force", None)
        if many is not None:
            found: Mapping[str, str] = many(subjects, purpose, now, fields=fields)
        else:
            found = {}
            for subject in subjects:
                cid = source.consent_in_force(subject, purpose, now)
                if cid is not None:
                    found[subject] = cid
        refused = tuple(s for s in subjects if s not in found)
        if refused:
            message = (
                f"{what} needs consent in force: {len(refused)} of "
                f"{len(subjects)} data subject(s) have none"
            )
            # The consents of the others, should they be released alone.
            return refused, tuple(found[s] for s in subjects if s in found), message
        return (), tuple(found[s] for s in subjects), None

    def _withhold(  # noqa: PLR0917
        self,
        ctx: Any,
        action: Action,
        entity: str | None,
        verdict: _Verdict,
        named: tuple[str, ...],
        withheld: tuple[str, ...],
        count: int,
        reason: DenyReason,
    ) -> tuple[tuple[str, ...], int]:
        """Record the denial of *withheld* (masked, or never opened); return the rest.

        Returns:
            The subjects released and their share of *count*.
        """
        out = set(withheld)
        released = tuple(s for s in named if s not in out)
        share = count * len(released) // len(named) if named else 0
        if self._audit is not None:
            self._audit.record_decision(
                AccessDecision(
                    outcome=Outcome.DENIED,
                    reason=reason,
                    action=action,
                    actor=ctx.actor,
                    role=ctx.role,
                    purpose=ctx.purpose,
                    policy_version=self._policy.version,
                    entity=entity,
                    fields=verdict.fields,
                    categories=verdict.categories,
                    denied_fields=verdict.fields,
                    subjects=withheld,
                    count=count - share,
                    request_id=ctx.request_id,
                    trace_id=ctx.trace_id,
                )
            )
        return released, share

    def _strict_handler_refusal(
        self, actor: str | None, role: str | None
    ) -> str | None:
        """The strict-handler-mode hook (R-GOV-1, R-GOV-3): why *actor* is refused.

        Checked after the purpose verdict, outside its cache, because it
        depends on the actor's identity and on today's date (training expiry).
        """
        if actor is None:  # pragma: no cover - the verdict refuses it first
            return None
        today = self._clock().date()
        return self._policy.registers.handlers.refusal(actor, role, today=today)


_VERDICT_CACHE_SIZE = 4096


@attrs.frozen(kw_only=True)
class _Verdict:
    """The part of a decision that depends only on the policy and the context."""

    source: Mapping[str, FieldPolicy | None] | None = attrs.field(eq=False)
    reason: DenyReason | None
    fields: tuple[str, ...]
    categories: tuple[str, ...]
    #: Fields refused outright (they make the decision a denial).
    refused: tuple[str, ...]
    #: Refused and masked fields, as recorded in the decision.
    denied_fields: tuple[str, ...]
    #: Whether a field is special-care (acquiring it needs consent).
    special: bool = False


def _decide(
    policy: Policy,
    actor: str | None,
    role: str | None,
    purpose: str | None,
    fields: Mapping[str, FieldPolicy | None] | None,
    *,
    erase: bool = False,
) -> _Verdict:
    fields = fields or {}
    reason = _context_reason(policy, actor, role, purpose)
    refused: list[str] = []
    masked: list[str] = []
    if erase:
        # Erasing records is permitted by the purpose (the policy's
        # may_erase), not by the fields' purposes.
        if reason is None and not policy.may_erase(purpose):  # type: ignore[arg-type]
            reason = DenyReason.ERASURE_NOT_PERMITTED
    elif reason is None and purpose is not None:
        for name, fp in fields.items():
            if fp is None or not fp.purposes:
                refused.append(name)
                reason = DenyReason.UNTAGGED_FIELD
            elif is_my_number(fp.category) and not my_number_permitted(policy, purpose):
                refused.append(name)
                if reason is None:
                    reason = DenyReason.MY_NUMBER_NOT_PERMITTED
            elif not policy.permits(fp, purpose):
                if fp.on_violation == "mask":
                    masked.append(name)
                else:
                    refused.append(name)
                    if reason is None:
                        reason = DenyReason.PURPOSE_NOT_PERMITTED
    return _Verdict(
        source=fields,
        reason=reason,
        fields=tuple(fields),
        categories=tuple(
            sorted({fp.category for fp in fields.values() if fp is not None})
        ),
        refused=tuple(refused),
        denied_fields=(*refused, *masked),
        special=any(
            fp is not None
            and fp.category in policy.taxonomy
            and policy.taxonomy[fp.category].special_care
            for fp in fields.values()
        ),
    )


def _maskable(verdict: _Verdict) -> bool:
    """Whether every field of *verdict* reveals its mask on violation.

    Then the subjects of a batch who may not be read (no consent in force, use
    restricted) are masked and the others released; otherwise the batch is
    refused whole.
    """
    source = verdict.source
    if not source:
        return False
    return all(fp is not None and fp.on_violation == "mask" for fp in source.values())


def _check_arguments(policy: object, audit: object) -> None:
    # Checked at run time too: a policy path passed by mistake fails here, at
    # start-up, rather than at the first query.
    if not isinstance(policy, Policy):
        msg = f"policy must be a custdata.Policy, not {type(policy).__name__}"
        raise TypeError(msg)
    if audit is not None and not isinstance(audit, DecisionRecorder):
        msg = "audit must implement record_decision(decision)"
        raise TypeError(msg)


def _context_reason(
    policy: Policy, actor: str | None, role: str | None, purpose: str | None
) -> DenyReason | None:
    if actor is None:
        return DenyReason.NO_ACTOR
    if purpose is None:
        return DenyReason.NO_PURPOSE
    if purpose not in policy.purposes:
        return DenyReason.UNKNOWN_PURPOSE
    if role not in policy.roles:
        return DenyReason.UNKNOWN_ROLE
    if not policy.may_claim(role, purpose):  # type: ignore[arg-type]
        return DenyReason.PURPOSE_NOT_GRANTED
    return None


def _message(
    reason: DenyReason,
    *,
    actor: str | None,
    role: str | None,
    purpose: str | None,
    entity: str | None,
    fields: Sequence[str],
) -> str:
    if reason is DenyReason.NO_ACTOR:
        return "no actor is in force: wrap the access in custdata.acting_as(...)"
    if reason is DenyReason.NO_PURPOSE:
        return f"actor {actor!r} has no purpose in force: wrap the access in custdata.purpose(...)"
    if reason is DenyReason.UNKNOWN_PURPOSE:
        return f"purpose {purpose!r} is not declared in the policy"
    if reason is DenyReason.UNKNOWN_ROLE:
        return f"role {role!r} is not declared in the policy"
    if reason is DenyReason.PURPOSE_NOT_GRANTED:
        return f"role {role!r} may not claim purpose {purpose!r}"
    if reason is DenyReason.ERASURE_NOT_PERMITTED:
        return f"purpose {purpose!r} may not erase records of {entity or 'this table'}"
    where = f"{entity}." if entity else ""
    names = ", ".join(f"{where}{f}" for f in fields)
    if reason is DenyReason.UNTAGGED_FIELD:
        return f"field(s) {names} carry no purpose tags: access denied"
    if reason is DenyReason.MY_NUMBER_NOT_PERMITTED:
        return (
            f"field(s) {names} hold My Number (個人番号): purpose {purpose!r} "
            "is not a My Number Act purpose"
        )
    return f"purpose {purpose!r} is not permitted for field(s) {names}"


def current_custodian() -> Custodian:
    """Return the custodian in force: the activated one, else the process default.

    Raises:
        ConfigurationError: If no custodian has been made current.
    """
    custodian = _custodian.get() or _default_custodian[0]
    if custodian is None:
        msg = "no custdata.Custodian is current: call custodian.make_current() at start-up"
        raise ConfigurationError(msg)
    return custodian


def _consents_without(
    named: tuple[str, ...], consents: tuple[str, ...], dropped: Collection[str]
) -> tuple[str, ...]:
    """The consent ids of *named* (paired in order) left once *dropped* subjects are withheld."""
    if not consents:
        return consents
    kept = dict(zip(named, consents, strict=False))
    return tuple(kept[s] for s in named if s not in dropped and s in kept)
