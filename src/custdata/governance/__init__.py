"""Governance: the regulation's registers and decisions, without a database.

This layer sits between :mod:`custdata.audit` and :mod:`custdata.sqlalchemy`
(see the design's layers): consent, restriction of use, retention in force, provision and receipt
records, contractors, incidents, data-subject requests, reviews and the
rendered documents. Everything here is a pure decision over a store protocol;
the in-memory stores serve tests and the SQL stores live in
:mod:`custdata.sqlalchemy`. Importing this package never imports SQLAlchemy.

The legal parameters these decisions use (special-care kinds, incident
categories and thresholds, deadlines, record items and their retention) are
:class:`RulePack` data shipped with the package, each with the date it took
effect; a decision records the pack it used (:attr:`RulePack.pack_id`).
"""

from __future__ import annotations

from ._consent import Consent as Consent
from ._consent import ConsentLedger as ConsentLedger
from ._consent import ConsentSource as ConsentSource
from ._consent import ConsentStore as ConsentStore
from ._consent import InMemoryConsentStore as InMemoryConsentStore
from ._consent import UnknownConsentError as UnknownConsentError
from ._consent import consents_in_force as consents_in_force
from ._contractors import contractor_findings as contractor_findings
from ._deadlines import DueItem as DueItem
from ._deadlines import Reminder as Reminder
from ._deadlines import deadlines as deadlines
from ._deadlines import due_item_label as due_item_label
from ._deadlines import reminders as reminders
from ._documents import DOCUMENTS as DOCUMENTS
from ._documents import EXTENSIONS as EXTENSIONS
from ._documents import Drift as Drift
from ._documents import FieldRecord as FieldRecord
from ._documents import markdown_to_html as markdown_to_html
from ._documents import notice_drift as notice_drift
from ._documents import render_document as render_document
from ._documents import render_documents as render_documents
from ._documents import safety_measures as safety_measures
from ._incidents import AffectedField as AffectedField
from ._incidents import Incident as Incident
from ._incidents import IncidentKind as IncidentKind
from ._incidents import IncidentScope as IncidentScope
from ._incidents import IncidentStore as IncidentStore
from ._incidents import InMemoryIncidentStore as InMemoryIncidentStore
from ._incidents import TimelineAction as TimelineAction
from ._incidents import TimelineEntry as TimelineEntry
from ._incidents import incident_from_dict as incident_from_dict
from ._incidents import incident_to_dict as incident_to_dict
from ._packs import RulePack as RulePack
from ._packs import rule_pack as rule_pack
from ._packs import rule_packs as rule_packs
from ._provision import Basis as Basis
from ._provision import ForeignTransferInfo as ForeignTransferInfo
from ._provision import InMemoryProvisionRecordStore as InMemoryProvisionRecordStore
from ._provision import Provider as Provider
from ._provision import ProvisionDecision as ProvisionDecision
from ._provision import ProvisionGate as ProvisionGate
from ._provision import ProvisionRecord as ProvisionRecord
from ._provision import ProvisionRecordStore as ProvisionRecordStore
from ._provision import ProvisionRequest as ProvisionRequest
from ._provision import ReceiptRequest as ReceiptRequest
from ._provision import Recipient as Recipient
from ._provision import RelatedInfoRequest as RelatedInfoRequest
from ._provision import disclose_records as disclose_records
from ._provision import retain_until as retain_until
from ._register import IncidentRegister as IncidentRegister
from ._register import RouteStatus as RouteStatus
from ._report import DataMap as DataMap
from ._report import TrailStatus as TrailStatus
from ._report import data_map as data_map
from ._report import open_incidents as open_incidents
from ._report import render_report as render_report
from ._reports import IncidentReport as IncidentReport
from ._reports import ReportItem as ReportItem
from ._reports import ReportKind as ReportKind
from ._reports import ReportStage as ReportStage
from ._reports import build_report as build_report
from ._requests import DataSubjectRequest as DataSubjectRequest
from ._requests import InMemoryRequestStore as InMemoryRequestStore
from ._requests import RequestAction as RequestAction
from ._requests import RequestDesk as RequestDesk
from ._requests import RequestEvent as RequestEvent
from ._requests import RequestKind as RequestKind
from ._requests import RequestState as RequestState
from ._requests import RequestStore as RequestStore
from ._requests import replay_request as replay_request
from ._requests import request_due_at as request_due_at
from ._requests import request_findings as request_findings
from ._requests import request_from_dict as request_from_dict
from ._requests import request_kind as request_kind
from ._requests import request_kinds as request_kinds
from ._requests import request_to_dict as request_to_dict
from ._restrictions import InMemoryRestrictionStore as InMemoryRestrictionStore
from ._restrictions import RestrictionError as RestrictionError
from ._restrictions import RestrictionRecord as RestrictionRecord
from ._restrictions import Restrictions as Restrictions
from ._restrictions import RestrictionStore as RestrictionStore
from ._restrictions import UnknownRestrictionError as UnknownRestrictionError
from ._retention_holds import HoldError as HoldError
from ._retention_holds import HoldRecord as HoldRecord
from ._retention_holds import HoldStore as HoldStore
from ._retention_holds import InMemoryHoldStore as InMemoryHoldStore
from ._retention_holds import LegalHolds as LegalHolds
from ._retention_holds import UnknownHoldError as UnknownHoldError
from ._review import DUE_SOON_DAYS as DUE_SOON_DAYS
from ._review import ReviewItem as ReviewItem
from ._review import register_findings as register_findings
from ._review import review_items as review_items
from ._review import review_report as review_report
from ._review import review_snapshot as review_snapshot
from ._triage import AppiAssessment as AppiAssessment
from ._triage import CategoryFinding as CategoryFinding
from ._triage import Classification as Classification
from ._triage import GdprAssessment as GdprAssessment
from ._triage import KeyCustody as KeyCustody
from ._triage import Reportability as Reportability
from ._triage import classify as classify
from ._triage import key_custody as key_custody


__all__ = [
    "AffectedField",
    "AppiAssessment",
    "Basis",
    "CategoryFinding",
    "Classification",
    "Consent",
    "ConsentLedger",
    "ConsentSource",
    "ConsentStore",
    "DOCUMENTS",
    "DUE_SOON_DAYS",
    "DataMap",
    "DataSubjectRequest",
    "Drift",
    "DueItem",
    "EXTENSIONS",
    "FieldRecord",
    "ForeignTransferInfo",
    "GdprAssessment",
    "HoldError",
    "HoldRecord",
    "HoldStore",
    "InMemoryConsentStore",
    "InMemoryHoldStore",
    "InMemoryIncidentStore",
    "InMemoryProvisionRecordStore",
    "InMemoryRequestStore",
    "InMemoryRestrictionStore",
    "Incident",
    "IncidentKind",
    "IncidentRegister",
    "IncidentReport",
    "IncidentScope",
    "IncidentStore",
    "KeyCustody",
    "LegalHolds",
    "Provider",
    "ProvisionDecision",
    "ProvisionGate",
    "ProvisionRecord",
    "ProvisionRecordStore",
    "ProvisionRequest",
    "ReceiptRequest",
    "Recipient",
    "RelatedInfoRequest",
    "Reminder",
    "ReportItem",
    "ReportKind",
    "ReportStage",
    "Reportability",
    "RequestAction",
    "RequestDesk",
    "RequestEvent",
    "RequestKind",
    "RequestState",
    "RequestStore",
    "RestrictionError",
    "RestrictionRecord",
    "RestrictionStore",
    "Restrictions",
    "ReviewItem",
    "RouteStatus",
    "RulePack",
    "TimelineAction",
    "TimelineEntry",
    "TrailStatus",
    "UnknownConsentError",
    "UnknownHoldError",
    "UnknownRestrictionError",
    "build_report",
    "classify",
    "consents_in_force",
    "contractor_findings",
    "data_map",
    "deadlines",
    "disclose_records",
    "due_item_label",
    "incident_from_dict",
    "incident_to_dict",
    "key_custody",
    "markdown_to_html",
    "notice_drift",
    "open_incidents",
    "register_findings",
    "reminders",
    "render_document",
    "render_documents",
    "render_report",
    "replay_request",
    "request_due_at",
    "request_findings",
    "request_from_dict",
    "request_kind",
    "request_kinds",
    "request_to_dict",
    "retain_until",
    "review_items",
    "review_report",
    "review_snapshot",
    "rule_pack",
    "rule_packs",
    "safety_measures",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith(__name__ + "._"):
        _obj.__module__ = __name__
del _name, _obj
