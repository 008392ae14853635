"""Access decisions: the record of every allow and deny.

Every purpose decision custdata makes, allowed or denied, is an
:class:`AccessDecision` produced by one function,
:meth:`custdata.Custodian.authorize`, and handed to the custodian's
:class:`DecisionRecorder` (the audit trail) before any value is released.
"""

from __future__ import annotations

import enum

from typing import Protocol, runtime_checkable

import attrs


__all__ = ["AccessDecision", "Action", "DecisionRecorder", "DenyReason", "Outcome"]


class Outcome(str, enum.Enum):
    """Whether an access was allowed."""

    ALLOWED = "allowed"
    DENIED = "denied"


class Action(str, enum.Enum):
    """What the actor tried to do with customer data."""

    #: Claim a purpose (checked when a purpose context is entered).
    CLAIM = "claim"
    #: Read (decrypt and reveal) field values.
    READ = "read"
    #: Write field values.
    WRITE = "write"
    #: Update rows in bulk.
    UPDATE = "update"
    #: Delete rows (erase records): needs a purpose that ``may_erase``.
    DELETE = "delete"
    #: Find rows by a field's value (blind-index equality search).
    SEARCH = "search"
    #: Hand data to a third party or out of the system.
    EXPORT = "export"


class DenyReason(str, enum.Enum):
    """Why an access was denied; ``None`` on an allowed decision."""

    NO_ACTOR = "no_actor"
    NO_PURPOSE = "no_purpose"
    UNKNOWN_PURPOSE = "unknown_purpose"
    UNKNOWN_ROLE = "unknown_role"
    PURPOSE_NOT_GRANTED = "purpose_not_granted"
    PURPOSE_NOT_PERMITTED = "purpose_not_permitted"
    UNTAGGED_FIELD = "untagged_field"
    ERASURE_NOT_PERMITTED = "erasure_not_permitted"
    #: A subject of the batch has no consent in force for a purpose that
    #: needs it, or for acquiring special-care data (R-CON-1, R-DEF-3).
    CONSENT_MISSING = "consent_missing"
    #: The purpose is not yet effective (``effective_from``) or retired
    #: (``retired_on``), or the policy is not yet effective (R-PUR-7).
    PURPOSE_NOT_EFFECTIVE = "purpose_not_effective"
    #: A My Number (個人番号) field used for a purpose not marked as a
    #: My Number Act purpose (R-DEF-4).
    MY_NUMBER_NOT_PERMITTED = "my_number_not_permitted"
    #: A legal hold keeps a subject's records from erasure (R-RET-3).
    LEGAL_HOLD = "legal_hold"
    #: The provision gate refused a third-party provision (APPI 27–31条).
    PROVISION_REFUSED = "provision_refused"
    #: Strict handler mode: the actor is not a registered, trained handler.
    UNREGISTERED_HANDLER = "unregistered_handler"
    #: The retention of the purpose in force has ended for a record read.
    RETENTION_EXPIRED = "retention_expired"
    #: The use of a subject's data is restricted (利用停止, GDPR Art. 18) and
    #: the purpose in force is not one the restriction allows.
    RESTRICTED = "restricted"
    #: The subject's data key was destroyed (crypto-shredding): its values
    #: can never be opened, so none is revealed (R-RET-4).
    KEY_DESTROYED = "key_destroyed"


@attrs.frozen(kw_only=True)
class AccessDecision:
    """One purpose decision, allowed or denied.

    It holds names and identifiers only, never a field value. ``subjects``
    holds the data subjects' raw identifiers as strings; the audit trail
    replaces them with keyed pseudonyms before anything is written.

    Attributes:
        outcome: Allowed or denied.
        reason: Why it was denied; ``None`` when allowed.
        action: What was attempted.
        actor: The actor in force, or ``None`` if there was none.
        role: The actor's role.
        purpose: The purpose in force.
        policy_version: The version of the policy that decided.
        entity: The table or model the fields belong to.
        fields: The fields the decision covers.
        categories: The data categories of those fields.
        denied_fields: The fields whose purpose tags refused the access.
        subjects: The data subjects concerned (raw ids; pseudonymised on write).
        count: How many (subject, field) values the decision releases or refuses.
        consents: The ids of the consent records the decision relied on (for a
            purpose that needs consent, or a special-care write), in the order
            of ``subjects``; empty when no consent was needed.
        request_id: The application's request id, if one is in force.
        trace_id: The distributed-tracing id, if one is in force.
        withheld: On an allowed read, the subjects of the batch whose values
            must be revealed only as their masks: subjects without consent in
            force, or whose use is restricted, when every field read says
            ``on_violation = "mask"``. Their denial is recorded as a decision
            of its own; ``subjects`` names only the released ones.
    """

    outcome: Outcome
    reason: DenyReason | None = None
    action: Action
    actor: str | None
    role: str | None
    purpose: str | None
    policy_version: str
    entity: str | None = None
    fields: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    denied_fields: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    count: int = 0
    request_id: str | None = None
    trace_id: str | None = None
    consents: tuple[str, ...] = ()
    withheld: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        """Whether the access was allowed."""
        return self.outcome is Outcome.ALLOWED


@runtime_checkable
class DecisionRecorder(Protocol):
    """Receives every access decision before its effect is released.

    :class:`custdata.audit.AuditTrail` implements it. ``record_decision`` must
    either record the decision durably enough for the trail's guarantees or raise
    :class:`custdata.AuditUnavailableError`; an allowed access whose decision
    cannot be recorded is then refused (fail closed).
    """

    def record_decision(self, decision: AccessDecision) -> None:
        """Record *decision*; raise ``AuditUnavailableError`` if it cannot be."""
