"""Governance: the regulation's registers and decisions, without a database.

This layer sits between :mod:`custdata.audit` and :mod:`custdata.sqlalchemy`
(see the design's layers): consent, retention in force, provision and receipt
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
from ._retention_holds import HoldRecord as HoldRecord
from ._retention_holds import HoldStore as HoldStore
from ._retention_holds import InMemoryHoldStore as InMemoryHoldStore
from ._retention_holds import LegalHolds as LegalHolds


__all__ = [
    "Basis",
    "Consent",
    "ConsentLedger",
    "ConsentSource",
    "ConsentStore",
    "ForeignTransferInfo",
    "HoldRecord",
    "HoldStore",
    "InMemoryConsentStore",
    "InMemoryHoldStore",
    "InMemoryProvisionRecordStore",
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
    "RulePack",
    "UnknownConsentError",
    "consents_in_force",
    "contractor_findings",
    "disclose_records",
    "retain_until",
    "rule_pack",
    "rule_packs",
]
