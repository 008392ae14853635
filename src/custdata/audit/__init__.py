"""The tamper-evident audit trail.

Events are value-free structured bodies (schema v1) rendered through a structlog
pipeline custdata owns, sealed into one HMAC chain per writer process, written
to JSON-lines and SQL sinks, and anchored by Ed25519-signed checkpoints outside
the database. :func:`verify_trail` (``custdata audit verify``) names each kind
of tampering; :class:`AuditQuery` answers investigation questions.
"""

from __future__ import annotations

from ._accel import native_enabled as native_enabled
from ._chain import SealedRecord as SealedRecord
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import CheckpointAnchor as CheckpointAnchor
from ._checkpoint import Checkpointer as Checkpointer
from ._checkpoint import CheckpointSigner as CheckpointSigner
from ._checkpoint import CheckpointVerifier as CheckpointVerifier
from ._checkpoint import FileAnchor as FileAnchor
from ._keys import AuditKeySource as AuditKeySource
from ._query import AuditQuery as AuditQuery
from ._query import QueryResult as QueryResult
from ._query import find_events as find_events
from ._query import pseudonym_for as pseudonym_for
from ._redact import redact as redact
from ._schema import AuditAction as AuditAction
from ._schema import AuditOutcome as AuditOutcome
from ._sinks import AuditSink as AuditSink
from ._sinks import JsonLinesSink as JsonLinesSink
from ._sinks import MemorySink as MemorySink
from ._sql import AuditTables as AuditTables
from ._sql import SqlSink as SqlSink
from ._sql import audit_tables as audit_tables
from ._store import JsonLinesSource as JsonLinesSource
from ._store import SqlSource as SqlSource
from ._store import TrailSource as TrailSource
from ._trail import AuditTrail as AuditTrail
from ._verify import Finding as Finding
from ._verify import FindingKind as FindingKind
from ._verify import VerificationReport as VerificationReport
from ._verify import verify_trail as verify_trail


__all__ = [
    "AuditAction",
    "AuditKeySource",
    "AuditOutcome",
    "AuditQuery",
    "AuditSink",
    "AuditTables",
    "AuditTrail",
    "Checkpoint",
    "CheckpointAnchor",
    "CheckpointSigner",
    "CheckpointVerifier",
    "Checkpointer",
    "FileAnchor",
    "Finding",
    "FindingKind",
    "JsonLinesSink",
    "JsonLinesSource",
    "MemorySink",
    "QueryResult",
    "SealedRecord",
    "SqlSink",
    "SqlSource",
    "TrailSource",
    "VerificationReport",
    "audit_tables",
    "find_events",
    "native_enabled",
    "pseudonym_for",
    "redact",
    "verify_trail",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        _obj.__module__ = __name__
del _name, _obj
