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
from ._packs import RulePack as RulePack
from ._packs import rule_pack as rule_pack
from ._packs import rule_packs as rule_packs
from ._retention_holds import HoldRecord as HoldRecord
from ._retention_holds import HoldStore as HoldStore
from ._retention_holds import InMemoryHoldStore as InMemoryHoldStore
from ._retention_holds import LegalHolds as LegalHolds


__all__ = [
    "Consent",
    "ConsentLedger",
    "ConsentSource",
    "ConsentStore",
    "HoldRecord",
    "HoldStore",
    "InMemoryConsentStore",
    "InMemoryHoldStore",
    "LegalHolds",
    "RulePack",
    "UnknownConsentError",
    "consents_in_force",
    "rule_pack",
    "rule_packs",
]
