"""Helpers for the incident tests: incidents by scope, a frozen clock."""

from __future__ import annotations

import datetime as dt

from typing import Any

from custdata.governance import AffectedField, Incident, IncidentScope, KeyCustody


JST = dt.timezone(dt.timedelta(hours=9), "JST")
#: When the business knew, in the tests that do not vary it.
KNOWN = dt.datetime(2026, 2, 2, 10, 0, tzinfo=JST)

CUSTODY = KeyCustody(
    algorithm="AES-256-GCM",
    provider="AwsKmsKeyProvider",
    kek_id="arn:aws:kms:ap-northeast-1:111122223333:key/test",
    data_key_ids=(1, 2),
    keys_stored_apart=True,
)


def incident(
    categories: tuple[str, ...] = ("contact.email",),
    subjects: int = 1,
    *,
    encrypted: bool = False,
    detected_at: dt.datetime = KNOWN,
    incident_id: str = "INC-T",
    refs: tuple[str, ...] = (),
    **kw: Any,
) -> Incident:
    """An incident concerning *categories* of *subjects* data subjects."""
    values: dict[str, Any] = {
        "incident_id": incident_id,
        "detected_at": detected_at,
        "reporter": "u-sec",
        "kind": "leak",
        "scope": IncidentScope(
            fields=[
                AffectedField(
                    category=c,
                    entity="customers",
                    field=c.rsplit(".", 1)[-1],
                    encrypted=encrypted,
                    key_ids=(1,) if encrypted else (),
                )
                for c in categories
            ],
            subject_count=subjects,
            subject_refs=refs,
        ),
    }
    values.update(kw)
    return Incident(**values)
