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

from ._consent import ConsentSource as ConsentSource
from ._documents import DOCUMENTS as DOCUMENTS
from ._documents import EXTENSIONS as EXTENSIONS
from ._documents import Drift as Drift
from ._documents import FieldRecord as FieldRecord
from ._documents import markdown_to_html as markdown_to_html
from ._documents import notice_drift as notice_drift
from ._documents import render_document as render_document
from ._documents import render_documents as render_documents
from ._documents import safety_measures as safety_measures
from ._packs import RulePack as RulePack
from ._packs import rule_pack as rule_pack
from ._packs import rule_packs as rule_packs
from ._report import DataMap as DataMap
from ._report import TrailStatus as TrailStatus
from ._report import data_map as data_map
from ._report import render_report as render_report
from ._review import DUE_SOON_DAYS as DUE_SOON_DAYS
from ._review import ReviewItem as ReviewItem
from ._review import register_findings as register_findings
from ._review import review_items as review_items
from ._review import review_report as review_report
from ._review import review_snapshot as review_snapshot


__all__ = [
    "ConsentSource",
    "DOCUMENTS",
    "DUE_SOON_DAYS",
    "DataMap",
    "Drift",
    "EXTENSIONS",
    "FieldRecord",
    "ReviewItem",
    "RulePack",
    "TrailStatus",
    "data_map",
    "markdown_to_html",
    "notice_drift",
    "register_findings",
    "render_document",
    "render_documents",
    "render_report",
    "review_items",
    "review_report",
    "review_snapshot",
    "rule_pack",
    "rule_packs",
    "safety_measures",
]
