"""The errors custdata raises.

Every error derives from :class:`CustdataError`; each failure kind has its own
subclass, mixing in the builtin exception it resembles so that generic handlers
keep working::

    CustdataError
    ├── ConfigurationError (ValueError)          bad policy, keyring or mapping
    │   └── UnclassifiedFieldError               a customer column without a category
    ├── AccessDeniedError (PermissionError)      the access context does not allow it
    │   ├── ActorRequiredError                   no actor is in force
    │   ├── PurposeRequiredError                 no purpose is in force
    │   ├── PurposeNotGrantedError               the actor's role may not claim the purpose
    │   ├── PurposeViolationError                the purpose is not permitted for a field
    │   ├── ConsentRequiredError                 the purpose needs consent that is missing
    │   └── LegalHoldError                       a legal hold keeps the data from disposal
    │   └── ProvisionRefusedError                the provision gate refused (APPI 27–31条)
    │       └── ContractorReviewOverdueError     the contractor's assessment/review is overdue
    │   ├── HandlerNotRegisteredError            strict mode: not a registered, trained handler
    │   ├── SubjectRestrictedError               the subject's data is restricted (利用停止, Art. 18)
    │   └── ConsentRequiredError                 the purpose needs consent that is missing
    ├── DecryptionError                          any authenticity or format failure
    │   ├── UnknownKeyError (LookupError)        the envelope names a key the keyring lacks
    │   └── KeyDestroyedError                    the key was destroyed (crypto-shredding)
    ├── KeyManagementError                       a key operation failed (provider, store)
    ├── AcquisitionError (ValueError)            a record's acquisition metadata is missing
    ├── UnsupportedOperationError (TypeError)    an operator that cannot work on ciphertext
    ├── ValueTypeError (TypeError)               a value its column's codec cannot encode
    ├── ReceiptRefusedError (ValueError)         received data lacks the 30条 confirmation items
    ├── SubjectNotFoundError (LookupError)       no data subject (or several) match an identifier
    ├── IncidentError (ValueError)               an incident record or report is invalid
    │   ├── UnknownIncidentError (LookupError)   no incident has that id
    │   └── IncidentReportIncompleteError        a final report lacks items
    ├── RequestError (ValueError)                a data-subject request is invalid
    │   ├── UnknownRequestError (LookupError)    no request has that id
    │   └── RequestTransitionError               the request's state does not allow that step
    └── AuditError
        └── AuditUnavailableError                an audit event could not be recorded

Messages name fields, purposes, roles and key ids; they never contain a customer
value, a key or a ciphertext.
"""

from __future__ import annotations

from pathlib import Path


__all__ = [
    "AccessDeniedError",
    "AcquisitionError",
    "ActorRequiredError",
    "AuditError",
    "AuditUnavailableError",
    "ConfigurationError",
    "ConsentRequiredError",
    "ContractorReviewOverdueError",
    "CustdataError",
    "DecryptionError",
    "HandlerNotRegisteredError",
    "IncidentError",
    "IncidentReportIncompleteError",
    "KeyDestroyedError",
    "KeyManagementError",
    "LegalHoldError",
    "ProvisionRefusedError",
    "PurposeNotGrantedError",
    "PurposeRequiredError",
    "PurposeViolationError",
    "ReceiptRefusedError",
    "RequestError",
    "RequestTransitionError",
    "SubjectNotFoundError",
    "SubjectRestrictedError",
    "UnclassifiedFieldError",
    "UnknownIncidentError",
    "UnknownKeyError",
    "UnknownRequestError",
    "UnsupportedOperationError",
    "ValueTypeError",
]


class CustdataError(Exception):
    """Base class of every error custdata raises."""


class ConfigurationError(CustdataError, ValueError):
    """A policy, keyring, mapping or other configuration is invalid.

    Attributes:
        reason: What is wrong, in one sentence.
        path: The file the configuration came from, if any.
        key_path: The dotted location inside that file or object
            (``purposes.billing.parent``), if known.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | Path | None = None,
        key_path: str | None = None,
    ) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        self.key_path = key_path
        where = []
        if self.path is not None:
            where.append(self.path)
        if key_path:
            where.append(key_path)
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class UnclassifiedFieldError(ConfigurationError):
    """A column of a table that holds customer data declares no category."""


class AccessDeniedError(CustdataError, PermissionError):
    """The access context in force does not allow the operation.

    Every subclass is raised before any value is decrypted or returned.
    """


class ActorRequiredError(AccessDeniedError):
    """No actor is in force; anonymous access to customer data is refused."""


class PurposeRequiredError(AccessDeniedError):
    """No purpose is in force for an operation that needs one."""


class PurposeNotGrantedError(AccessDeniedError):
    """The actor's role may not claim the purpose it asserted."""


class PurposeViolationError(AccessDeniedError):
    """The purpose in force is not permitted for a field.

    Also raised for an unknown purpose and for a field that carries no purpose
    tags (fail closed).
    """


class HandlerNotRegisteredError(AccessDeniedError):
    """Strict handler mode refuses the actor (R-GOV-1, R-GOV-3).

    The actor is not a registered handler, its registration is not in force,
    it is not registered for the role it claims, or its training has expired.
    """


class ConsentRequiredError(AccessDeniedError):
    """The purpose requires the data subject's consent, which is not recorded."""


class LegalHoldError(AccessDeniedError):
    """A legal hold keeps the subject's data: shredding or erasing it is refused."""


class SubjectRestrictedError(AccessDeniedError):
    """The use of a subject's data is restricted (利用停止, GDPR Art. 18).

    Raised for a read, write or export under a purpose the restriction does
    not allow; the denial recorded names the restricted subjects.
    """


class DecryptionError(CustdataError):
    """A stored value could not be decrypted.

    One opaque error for every failure of authenticity or format: a flipped byte,
    a truncated envelope, an unknown version, a value moved to another column or
    subject, or a wrong key. Raised ``from None`` so no partial state leaks.
    """


class UnknownKeyError(DecryptionError, LookupError):
    """The envelope names a key id that the keyring does not hold."""


class KeyDestroyedError(DecryptionError):
    """The value's key was destroyed on purpose (crypto-shredding)."""


class KeyManagementError(CustdataError):
    """A key operation failed: a provider refused, a key store is inconsistent."""


class AcquisitionError(CustdataError, ValueError):
    """A record's acquisition metadata is missing or invalid (R-PUR-6).

    Raised on insert, before anything is sent: data acquired directly from the
    person needs the version of the privacy notice shown.
    """


class UnsupportedOperationError(CustdataError, TypeError):
    """An operation cannot work on encrypted values (LIKE, ordering, ranges)."""


class ValueTypeError(CustdataError, TypeError):
    """A value is not of its column's declared type (a ``str`` for a ``date``).

    Raised before anything is encrypted or sent; the message names the column
    (where it is known) and the types, never the value.
    """


class IncidentError(CustdataError, ValueError):
    """An incident record, timeline entry or report request is invalid.

    Messages name the incident id, the field or the report item, never a
    customer value.
    """


class UnknownIncidentError(IncidentError, LookupError):
    """No incident with that id is recorded."""


class IncidentReportIncompleteError(IncidentError):
    """A report that must be complete (the 確報) lacks required items.

    Attributes:
        missing: The keys of the items that are missing.
    """

    def __init__(self, message: str, *, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing


class RequestError(CustdataError, ValueError):
    """A data-subject request record, transition or setting is invalid.

    Messages name the request id, its kind and state, never the subject or a
    customer value.
    """


class UnknownRequestError(RequestError, LookupError):
    """No data-subject request with that id is recorded."""


class RequestTransitionError(RequestError):
    """The request's state does not allow the step asked for.

    Attributes:
        state: The state the request is in.
        action: The step that was refused.
    """

    def __init__(self, message: str, *, state: str = "", action: str = "") -> None:
        super().__init__(message)
        self.state = state
        self.action = action


class AuditError(CustdataError):
    """The audit trail failed."""


class AuditUnavailableError(AuditError):
    """An audit event could not be recorded, so the guarded operation is refused."""


class ProvisionRefusedError(AccessDeniedError):
    """The provision gate refused to hand customer data to a third party.

    Attributes:
        code: Why, as a stable code (``consent_missing``, ``special_care_optout``,
            ``foreign_info_missing``, ``outside_entrusted_categories``...).
        article: The article or rule that refuses it (``27条2項``).
    """

    def __init__(self, message: str, *, code: str, article: str) -> None:
        self.code = code
        self.article = article
        super().__init__(f"{message} ({article})")


class ContractorReviewOverdueError(ProvisionRefusedError):
    """The contractor's security assessment is missing or its review is overdue."""


class ReceiptRefusedError(CustdataError, ValueError):
    """Customer data offered by a third party lacks what 30条 requires to confirm.

    Attributes:
        missing: The names of the missing items (``how_acquired``...).
    """

    def __init__(self, message: str, *, missing: tuple[str, ...]) -> None:
        self.missing = missing
        super().__init__(message)


class SubjectNotFoundError(CustdataError, LookupError):
    """No data subject, or more than one, matches an identifier.

    Raised by :func:`custdata.sqlalchemy.locate_subject`; the message never
    contains the identifier's value.
    """
