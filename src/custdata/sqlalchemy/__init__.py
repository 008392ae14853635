"""SQLAlchemy integration: customer-data columns that encrypt, check purpose and audit.

Declare customer-data columns with :func:`customer_data` and the data subject
with :func:`subject_key`; from then on every write is encrypted, every read is
authorized once per statement through :meth:`custdata.Custodian.authorize` and
recorded, and equality search goes through a blind index. Importing this module
installs the statement hooks on every engine and session.
"""

from __future__ import annotations

import contextlib

from ._anchors import AcquisitionSource as AcquisitionSource
from ._anchors import UtcDateTime as UtcDateTime
from ._anchors import acquisition_source as acquisition_source
from ._anchors import notice_version as notice_version
from ._anchors import retention_anchor as retention_anchor
from ._check import check_models as check_models
from ._consent import SqlConsentStore as SqlConsentStore
from ._declare import BLIND_INDEX_SUFFIX as BLIND_INDEX_SUFFIX
from ._declare import CustomerDataInfo as CustomerDataInfo
from ._declare import customer_data as customer_data
from ._declare import subject_key as subject_key
from ._declare import uuid7 as uuid7
from ._expiry import SqlRetentionGuard as SqlRetentionGuard
from ._expiry import retention_coverage as retention_coverage
from ._holds import SqlHoldStore as SqlHoldStore
from ._incidents import IncidentTables as IncidentTables
from ._incidents import SqlIncidentStore as SqlIncidentStore
from ._incidents import incident_scope_from_audit as incident_scope_from_audit
from ._incidents import incident_tables as incident_tables
from ._inventory import field_inventory as field_inventory
from ._jobs import KeyUsage as KeyUsage
from ._jobs import MigrationReport as MigrationReport
from ._jobs import ReencryptReport as ReencryptReport
from ._jobs import encrypt_plaintext_columns as encrypt_plaintext_columns
from ._jobs import index_usage as index_usage
from ._jobs import key_usage as key_usage
from ._jobs import reencrypt as reencrypt
from ._keystore import SqlSubjectKeyStore as SqlSubjectKeyStore
from ._keystore import blind_index_eraser as blind_index_eraser
from ._keystore import shred_subject as shred_subject
from ._legacy import legacy_plaintext_reads as legacy_plaintext_reads
from ._provision import Provision as Provision
from ._provision import SqlProvisionRecordStore as SqlProvisionRecordStore
from ._provision import provide as provide
from ._requests import RequestTables as RequestTables
from ._requests import SqlRequestStore as SqlRequestStore
from ._requests import answer_request as answer_request
from ._requests import plan_answer as plan_answer
from ._requests import request_tables as request_tables
from ._restrictions import SqlRestrictionStore as SqlRestrictionStore
from ._runtime import MASK_TEXT as MASK_TEXT
from ._runtime import install as install
from ._runtime import validate_models as validate_models
from ._subjects import DISCLOSURE_PURPOSE as DISCLOSURE_PURPOSE
from ._subjects import Disclosure as Disclosure
from ._subjects import ErasureResult as ErasureResult
from ._subjects import KeptValues as KeptValues
from ._subjects import SubjectFootprint as SubjectFootprint
from ._subjects import SubjectRows as SubjectRows
from ._subjects import disclose_subject as disclose_subject
from ._subjects import erase_subject as erase_subject
from ._subjects import locate_subject as locate_subject
from ._subjects import subject_reference as subject_reference
from ._sweep import SweepCount as SweepCount
from ._sweep import SweepReport as SweepReport
from ._sweep import replay_deletions as replay_deletions
from ._sweep import sweep as sweep
from ._tables import add_custdata_tables as add_custdata_tables
from ._types import EncryptedBoolean as EncryptedBoolean
from ._types import EncryptedBytes as EncryptedBytes
from ._types import EncryptedDate as EncryptedDate
from ._types import EncryptedDateTime as EncryptedDateTime
from ._types import EncryptedDecimal as EncryptedDecimal
from ._types import EncryptedEnum as EncryptedEnum
from ._types import EncryptedInteger as EncryptedInteger
from ._types import EncryptedJSON as EncryptedJSON
from ._types import EncryptedString as EncryptedString
from ._types import EncryptedTime as EncryptedTime
from ._types import EncryptedType as EncryptedType
from ._types import EncryptedUUID as EncryptedUUID
from ._types import bind_subject as bind_subject


__all__ = [
    "AcquisitionSource",
    "BLIND_INDEX_SUFFIX",
    "CustomerDataInfo",
    "DISCLOSURE_PURPOSE",
    "Disclosure",
    "EncryptedBoolean",
    "EncryptedBytes",
    "EncryptedDate",
    "EncryptedDateTime",
    "EncryptedDecimal",
    "EncryptedEnum",
    "EncryptedInteger",
    "EncryptedJSON",
    "EncryptedString",
    "EncryptedTime",
    "EncryptedType",
    "EncryptedUUID",
    "ErasureResult",
    "IncidentTables",
    "KeptValues",
    "KeyUsage",
    "MASK_TEXT",
    "MigrationReport",
    "Provision",
    "ReencryptReport",
    "RequestTables",
    "SqlConsentStore",
    "SqlHoldStore",
    "SqlIncidentStore",
    "SqlProvisionRecordStore",
    "SqlRequestStore",
    "SqlRestrictionStore",
    "SqlRetentionGuard",
    "SqlSubjectKeyStore",
    "SubjectFootprint",
    "SubjectRows",
    "SweepCount",
    "SweepReport",
    "UtcDateTime",
    "acquisition_source",
    "add_custdata_tables",
    "answer_request",
    "bind_subject",
    "blind_index_eraser",
    "check_models",
    "customer_data",
    "disclose_subject",
    "encrypt_plaintext_columns",
    "erase_subject",
    "field_inventory",
    "incident_scope_from_audit",
    "incident_tables",
    "index_usage",
    "install",
    "key_usage",
    "legacy_plaintext_reads",
    "locate_subject",
    "notice_version",
    "plan_answer",
    "provide",
    "reencrypt",
    "replay_deletions",
    "request_tables",
    "retention_anchor",
    "retention_coverage",
    "shred_subject",
    "subject_key",
    "subject_reference",
    "sweep",
    "uuid7",
    "validate_models",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj
