"""custdata: a customer-data management regulation, built into the application.

The core namespace holds the policy (purposes, roles, retention, taxonomy), the
access context, the :class:`Custodian` that decides every access, masking and
the errors. Encryption is in :mod:`custdata.crypto`, the audit trail in
:mod:`custdata.audit` and the SQLAlchemy integration in
:mod:`custdata.sqlalchemy`. Importing this package imports none of the
optional dependencies (SQLAlchemy, boto3).
"""

from __future__ import annotations

import importlib.metadata as _metadata

from ._context import AccessContext as AccessContext
from ._context import acting_as as acting_as
from ._context import add_access_context as add_access_context
from ._context import current_access as current_access
from ._context import purpose as purpose
from ._context import requires_purpose as requires_purpose
from ._custodian import Custodian as Custodian
from ._custodian import current_custodian as current_custodian
from ._decision import AccessDecision as AccessDecision
from ._decision import Action as Action
from ._decision import DecisionRecorder as DecisionRecorder
from ._decision import DenyReason as DenyReason
from ._decision import Outcome as Outcome
from ._errors import AccessDeniedError as AccessDeniedError
from ._errors import AcquisitionError as AcquisitionError
from ._errors import ActorRequiredError as ActorRequiredError
from ._errors import AuditError as AuditError
from ._errors import AuditUnavailableError as AuditUnavailableError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import ConsentRequiredError as ConsentRequiredError
from ._errors import ContractorReviewOverdueError as ContractorReviewOverdueError
from ._errors import CustdataError as CustdataError
from ._errors import DecryptionError as DecryptionError
from ._errors import HandlerNotRegisteredError as HandlerNotRegisteredError
from ._errors import IncidentError as IncidentError
from ._errors import IncidentReportIncompleteError as IncidentReportIncompleteError
from ._errors import KeyDestroyedError as KeyDestroyedError
from ._errors import KeyManagementError as KeyManagementError
from ._errors import LegalHoldError as LegalHoldError
from ._errors import ProvisionRefusedError as ProvisionRefusedError
from ._errors import PurposeNotGrantedError as PurposeNotGrantedError
from ._errors import PurposeRequiredError as PurposeRequiredError
from ._errors import PurposeViolationError as PurposeViolationError
from ._errors import ReceiptRefusedError as ReceiptRefusedError
from ._errors import RequestError as RequestError
from ._errors import RequestTransitionError as RequestTransitionError
from ._errors import SubjectNotFoundError as SubjectNotFoundError
from ._errors import SubjectRestrictedError as SubjectRestrictedError
from ._errors import UnclassifiedFieldError as UnclassifiedFieldError
from ._errors import UnknownIncidentError as UnknownIncidentError
from ._errors import UnknownKeyError as UnknownKeyError
from ._errors import UnknownRequestError as UnknownRequestError
from ._errors import UnsupportedOperationError as UnsupportedOperationError
from ._errors import ValueTypeError as ValueTypeError
from ._masking import MASK_KINDS as MASK_KINDS
from ._masking import MaskingFilter as MaskingFilter
from ._masking import MaskingProcessor as MaskingProcessor
from ._masking import mask as mask
from ._policy import FieldPolicy as FieldPolicy
from ._policy import Policy as Policy
from ._policy import ResponsiblePerson as ResponsiblePerson
from ._policy import Role as Role
from ._purposes import AppiBasis as AppiBasis
from ._purposes import GdprBasis as GdprBasis
from ._purposes import Purpose as Purpose
from ._purposes import PurposeTree as PurposeTree
from ._registers import Handler as Handler
from ._registers import HandlerRegister as HandlerRegister
from ._registers import MeasureCategory as MeasureCategory
from ._registers import Notice as Notice
from ._registers import Prohibition as Prohibition
from ._registers import Registers as Registers
from ._registers import SafetyMeasure as SafetyMeasure
from ._reporting import ReportingRoutes as ReportingRoutes
from ._reporting import RouteStep as RouteStep
from ._requests import RequestSettings as RequestSettings
from ._retention import Anchor as Anchor
from ._retention import ExpiryAction as ExpiryAction
from ._retention import LegalHold as LegalHold
from ._retention import Period as Period
from ._retention import RetentionRule as RetentionRule
from ._retention import RetentionStatus as RetentionStatus
from ._retention import resolve_retention as resolve_retention
from ._taxonomy import BUILTIN_CATEGORIES as BUILTIN_CATEGORIES
from ._taxonomy import Category as Category
from ._taxonomy import Identifiability as Identifiability
from ._taxonomy import Taxonomy as Taxonomy
from ._thirdparty import Contractor as Contractor
from ._thirdparty import JointUse as JointUse
from ._thirdparty import SubContractor as SubContractor
from ._thirdparty import ThirdPartyPolicy as ThirdPartyPolicy


try:
    __version__ = _metadata.version("custdata")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AccessContext",
    "AccessDecision",
    "AccessDeniedError",
    "AcquisitionError",
    "Action",
    "ActorRequiredError",
    "Anchor",
    "AppiBasis",
    "AuditError",
    "AuditUnavailableError",
    "BUILTIN_CATEGORIES",
    "Category",
    "ConfigurationError",
    "ConsentRequiredError",
    "Contractor",
    "ContractorReviewOverdueError",
    "CustdataError",
    "Custodian",
    "DecisionRecorder",
    "DecryptionError",
    "DenyReason",
    "ExpiryAction",
    "FieldPolicy",
    "GdprBasis",
    "Handler",
    "HandlerNotRegisteredError",
    "HandlerRegister",
    "Identifiability",
    "IncidentError",
    "IncidentReportIncompleteError",
    "JointUse",
    "KeyDestroyedError",
    "KeyManagementError",
    "LegalHold",
    "LegalHoldError",
    "MASK_KINDS",
    "MaskingFilter",
    "MaskingProcessor",
    "MeasureCategory",
    "Notice",
    "Outcome",
    "Period",
    "Policy",
    "Prohibition",
    "ProvisionRefusedError",
    "Purpose",
    "PurposeNotGrantedError",
    "PurposeRequiredError",
    "PurposeTree",
    "PurposeViolationError",
    "ReceiptRefusedError",
    "Registers",
    "ReportingRoutes",
    "RequestError",
    "RequestSettings",
    "RequestTransitionError",
    "ResponsiblePerson",
    "RetentionRule",
    "RetentionStatus",
    "Role",
    "RouteStep",
    "SafetyMeasure",
    "SubContractor",
    "SubjectNotFoundError",
    "SubjectRestrictedError",
    "Taxonomy",
    "ThirdPartyPolicy",
    "UnclassifiedFieldError",
    "UnknownIncidentError",
    "UnknownKeyError",
    "UnknownRequestError",
    "UnsupportedOperationError",
    "ValueTypeError",
    "acting_as",
    "add_access_context",
    "current_access",
    "current_custodian",
    "mask",
    "purpose",
    "requires_purpose",
    "resolve_retention",
]

# Reprs and docs show the public path, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("custdata._"):
        _obj.__module__ = __name__
del _name, _obj
