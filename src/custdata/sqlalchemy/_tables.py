"""custdata's own tables, added to the application's metadata in one call."""

from __future__ import annotations

from sqlalchemy import MetaData, Table

from ._consent import consent_table
from ._holds import hold_table
from ._incidents import incident_tables
from ._keystore import subject_key_table
from ._provision import provision_tables
from ._requests import request_tables
from ._restrictions import restriction_table


__all__ = ["add_custdata_tables"]


def add_custdata_tables(
    metadata: MetaData,
    *,
    audit: bool = True,
    subject_keys: bool = True,
    consent: bool = True,
    holds: bool = True,
    audit_prefix: str = "custdata_audit",
    subject_key_table_name: str = "custdata_subject_keys",
    consent_table_name: str = "custdata_consent",
    hold_table_name: str = "custdata_legal_hold",
    restrictions: bool = True,
    restriction_table_name: str = "custdata_restriction",
    provision: bool = True,
    provision_prefix: str = "custdata_provision",
    incidents: bool = True,
    incident_prefix: str = "custdata_incident",
    requests: bool = True,
    request_prefix: str = "custdata_request",
) -> list[Table]:
    """Define every table custdata keeps in the application's database on *metadata*.

    Call it once on the metadata your migrations compare against (Alembic's
    ``target_metadata``), so that ``alembic revision --autogenerate`` creates
    custdata's tables with the application's and never proposes to drop them:
    the audit trail's SQL-sink tables (:class:`custdata.audit.SqlSink`; events,
    their subject index and checkpoints) and the per-subject key table
    (:class:`SqlSubjectKeyStore`), the consent ledger (:class:`SqlConsentStore`),
    the legal holds (:class:`SqlHoldStore`), the restrictions of use
    (:class:`SqlRestrictionStore`), the provision, receipt and
    related-information records (:class:`SqlProvisionRecordStore`) and the
    incident register (:class:`SqlIncidentStore`) and the data-subject request
    register (:class:`SqlRequestStore`). Tables custdata adds in later
    versions are added here too. Calling it again on the same metadata changes
    nothing.

    Then open the sink with ``SqlSink(url, prefix=audit_prefix, create=False)``
    and the store with ``SqlSubjectKeyStore(engine, metadata=metadata,
    table_name=subject_key_table_name)``: they use the tables your migrations
    created.

    Args:
        metadata: The application's metadata (``Base.metadata``).
        audit: Add the audit SQL-sink tables.
        subject_keys: Add the per-subject key table.
        audit_prefix: The audit tables' name prefix (as given to ``SqlSink``).
        subject_key_table_name: The per-subject key table's name.
        consent: Add the consent ledger's table (:class:`SqlConsentStore`).
        consent_table_name: The consent ledger table's name.
        holds: Add the legal-hold register's table (:class:`SqlHoldStore`).
        hold_table_name: The legal-hold table's name.
        restrictions: Add the restriction table (:class:`SqlRestrictionStore`).
        restriction_table_name: The restriction table's name.
        provision: Add the provision-record tables.
        provision_prefix: Their name prefix (as given to ``SqlProvisionRecordStore``).
        incidents: Add the incident register's tables.
        incident_prefix: Their name prefix (as given to ``SqlIncidentStore``).
        requests: Add the data-subject request register's tables.
        request_prefix: Their name prefix (as given to ``SqlRequestStore``).

    Returns:
        The tables, as defined on *metadata*.
    """
    from custdata.audit import audit_tables  # noqa: PLC0415 - a lower layer, lazily

    tables: list[Table] = []
    if audit:
        names = [
            f"{audit_prefix}_{part}" for part in ("event", "subject", "checkpoint")
        ]
        if all(name in metadata.tables for name in names):
            tables.extend(metadata.tables[name] for name in names)
        else:
            defined = audit_tables(metadata, prefix=audit_prefix)
            tables.extend((defined.event, defined.subject, defined.checkpoint))
    if subject_keys:
        tables.append(subject_key_table(metadata, subject_key_table_name))
    if consent:
        tables.append(consent_table(metadata, consent_table_name))
    if holds:
        tables.append(hold_table(metadata, hold_table_name))
    if restrictions:
        tables.append(restriction_table(metadata, restriction_table_name))
    if provision:
        defined_p = provision_tables(metadata, prefix=provision_prefix)
        tables.extend((defined_p.record, defined_p.subject))
    if incidents:
        t = incident_tables(metadata, prefix=incident_prefix)
        tables.extend((t.incident, t.timeline, t.subject))
    if requests:
        r = request_tables(metadata, prefix=request_prefix)
        tables.extend((r.request, r.event))
    return tables
