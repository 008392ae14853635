"""Incident response: open, classify, follow the deadlines and report a ransomware case.

Runs on an embedded SQLite database in a temporary folder; prints the
classification, the due items and the 速報 in Japanese.

Run: ``python examples/incident_response.py``.
"""

from __future__ import annotations

import datetime as dt
import tempfile

from pathlib import Path

from sqlalchemy import create_engine

import custdata

from custdata.crypto import Keyring
from custdata.governance import (
    AffectedField,
    Incident,
    IncidentRegister,
    IncidentScope,
    key_custody,
)
from custdata.sqlalchemy import SqlIncidentStore


JST = dt.timezone(dt.timedelta(hours=9))


def main() -> None:
    policy = custdata.Policy.from_toml(
        Path(__file__).resolve().parent / "custdata.toml"
    )
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'app.db'}")
        try:
            store = SqlIncidentStore(engine)
            store.create_tables()
            register = IncidentRegister(
                store,
                taxonomy=policy.taxonomy,
                routes=policy.reporting,
                organisation=policy.organisation,
            )
            known = dt.datetime(2026, 2, 2, 10, 0, tzinfo=JST)
            register.open(
                Incident(
                    incident_id="INC-20260202-ransom",
                    detected_at=known,
                    reporter="u-sec",
                    kind="damage",
                    malicious=True,
                    cause="ランサムウェア感染（調査中）",
                    jurisdictions={"appi", "gdpr"},
                    scope=IncidentScope(
                        fields=[
                            AffectedField(category="contact.email", encrypted=True),
                            AffectedField(category="name", encrypted=True),
                        ],
                        subject_count=10,
                    ),
                ),
                actor="u-sec",
                now=known,
            )
            custody = key_custody(Keyring.generate(), keys_stored_apart=True)
            result = register.classify(
                "INC-20260202-ransom", actor="cpo", custody=custody, now=known
            )
            assert result.appi is not None
            print(
                f"APPI: {result.appi.status.value}, categories {result.appi.category_numbers}"
            )
            for item in register.deadlines("INC-20260202-ransom"):
                print(f"  {item.key}: {item.due_at or 'promptly'}")
            print(
                register.report("INC-20260202-ransom", stage="preliminary").render("ja")
            )
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
