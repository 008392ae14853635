"""Model lint for ``custdata check --models``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData, Table

from custdata._check import Finding
from custdata._errors import ConfigurationError
from custdata._policy import FieldPolicy, Policy

from ._binding import INFO_KEY, SUBJECT_INFO_KEY
from ._declare import CustomerDataInfo
from ._expiry import retention_coverage
from ._types import EncryptedType


__all__ = ["EXEMPT_INFO_KEY", "check_models"]

#: Mark a column of a customer table as holding no customer data with
#: ``info={"custdata_exempt": "why"}`` so ``custdata check`` accepts it untagged.
EXEMPT_INFO_KEY = "custdata_exempt"


def _metadata(base: Any) -> MetaData:
    if isinstance(base, MetaData):
        return base
    metadata = getattr(base, "metadata", None)
    if isinstance(metadata, MetaData):
        return metadata
    raise ConfigurationError(
        "check_models needs a declarative base, a registry or a MetaData"
    )


def _field_of(info: object) -> FieldPolicy | None:
    if isinstance(info, CustomerDataInfo):
        return info.field
    if isinstance(info, FieldPolicy):
        return info
    return None


def check_models(base: Any, policy: Policy) -> list[Finding]:
    """Lint the tables of a declarative base (or ``MetaData``) against *policy*.

    Findings:

    * ``SA001`` a column of a table that holds customer data carries no
      category: tag it with ``customer_data(...)``, or mark it
      ``info={"custdata_exempt": "reason"}`` (keys, foreign keys and blind-index
      companions are exempt by themselves);
    * ``SA002`` a column tagged with a special-care or financial-risk category
      (``info={"custdata": FieldPolicy(...)}``) is stored unencrypted;
    * ``SA003`` a field declaration does not match the policy (unknown
      category, purpose or retention rule);
    * ``SA004`` an encrypted column is in the transitional read mode
      (``legacy_plaintext=True``): legacy plaintext values are still accepted
      on read. Finish :func:`encrypt_plaintext_columns` and remove the flag;
    * ``SA005`` the models declare retention anchors, but this table's
      customer data (with retention rules) is not covered by the
      expired-is-not-readable check: its rows are neither one per subject with
      anchors nor a child whose subject key is a foreign key to such a table
      (:func:`custdata.sqlalchemy.retention_coverage`). Its expired values stay
      readable until the sweep runs.

    Returns:
        The findings, sorted by table and column.
    """
    findings: list[Finding] = []
    metadata = _metadata(base)
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        findings.extend(_check_table(table, policy))
    findings.extend(_uncovered(metadata, policy))
    # Stable: each table's column findings keep their order, SA005 after them.
    return sorted(findings, key=lambda f: f.key_path.split(".")[0])


def _uncovered(metadata: MetaData, policy: Policy) -> list[Finding]:
    """``SA005``: tables the expired-is-not-readable check cannot cover."""
    coverage = retention_coverage(metadata)
    if not any(by == name for name, by in coverage.items()):
        return []  # no anchors at all: nothing is enforced on read, by design
    findings: list[Finding] = []
    for name in sorted(n for n, by in coverage.items() if by is None):
        table = metadata.tables[name]
        kept = any(
            isinstance(c.type, EncryptedType)
            and (field := _field_of(c.info.get(INFO_KEY))) is not None
            and policy.retention_rules_for(field)
            for c in table.columns
        )
        if kept:
            findings.append(
                Finding(
                    code="SA005",
                    key_path=name,
                    message="expired values stay readable until the sweep runs: "
                    "the table is neither one row per subject with retention anchors "
                    "nor tied to such a table by its subject key's foreign key",
                )
            )
    return findings


def _check_table(table: Table, policy: Policy) -> list[Finding]:
    findings: list[Finding] = []
    holds = any(
        _field_of(c.info.get(INFO_KEY)) is not None or c.info.get(SUBJECT_INFO_KEY)
        for c in table.columns
    )
    for col in table.columns:
        where = f"{table.name}.{col.name}"
        field = _field_of(col.info.get(INFO_KEY))
        encrypted = isinstance(col.type, EncryptedType)
        if encrypted and col.type._binding.legacy_plaintext:  # type: ignore[attr-defined]  # noqa: SLF001
            findings.append(
                Finding(
                    code="SA004",
                    key_path=where,
                    message="transitional read mode (legacy_plaintext=True): values that are "
                    "not envelopes are read as plaintext; run encrypt_plaintext_columns until "
                    "nothing is left, then remove the flag",
                )
            )
        if field is not None:
            try:
                policy.validate_field(field, where=where)
            except ConfigurationError as exc:
                findings.append(
                    Finding(code="SA003", key_path=where, message=exc.reason)
                )
            category = policy.taxonomy.get(field.category)
            if (
                not encrypted
                and category is not None
                and (category.special_care or category.financial_damage_risk)
            ):
                kind = "special-care" if category.special_care else "financial-risk"
                findings.append(
                    Finding(
                        code="SA002",
                        key_path=where,
                        message=f"{kind} category {field.category!r} is stored unencrypted; "
                        "declare it with customer_data(...)",
                    )
                )
            continue
        if not holds or encrypted:
            if encrypted:
                findings.append(
                    Finding(
                        code="SA001",
                        key_path=where,
                        message="encrypted column without a category; declare it with customer_data(...)",
                    )
                )
            continue
        exempt = (
            col.primary_key
            or col.foreign_keys
            or col.info.get(SUBJECT_INFO_KEY)
            or col.info.get("custdata_blind_index_of")
            or col.info.get(EXEMPT_INFO_KEY)
        )
        if not exempt:
            findings.append(
                Finding(
                    code="SA001",
                    key_path=where,
                    message="column of a customer-data table has no category; tag it with "
                    "customer_data(...) or mark it info={'custdata_exempt': 'reason'}",
                )
            )
    return findings
