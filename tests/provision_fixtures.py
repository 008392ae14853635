"""Policies, a consent source and requests shared by the ``test_provision*`` tests."""

from __future__ import annotations

import copy
import datetime as dt
import sys

from pathlib import Path
from typing import Any

import custdata

from custdata.governance import (
    Basis,
    InMemoryProvisionRecordStore,
    ProvisionGate,
    ProvisionRecordStore,
    ProvisionRequest,
    Recipient,
)


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custdata.toml"
UTC = dt.timezone.utc
#: The frozen clock of the golden scenarios.
T0 = dt.datetime(2026, 11, 2, 9, 30, tzinfo=UTC)

PARTNER = Recipient(
    id="partner_hoshi",
    name="星野食品株式会社 (Hoshino Foods)",
    address="大阪府大阪市北区1-1",
    representative="代表取締役 星野 一",
)
DELIVERY = Recipient(id="hayate_delivery", name="はやて運輸株式会社")
GROUP_CARD = Recipient(id="sakura_card", name="株式会社さくらカード")
US_PARTNER = Recipient(id="acme_us", name="Acme Inc.", country="US")


def example_data() -> dict[str, Any]:
    """The example policy file, parsed (a fresh copy to modify)."""
    return copy.deepcopy(tomllib.loads(EXAMPLE.read_text(encoding="utf-8")))


def policy_with(**contractor_changes: Any) -> custdata.Policy:
    """The example policy with changes to the delivery contractor's entry."""
    data = example_data()
    data["third_party"]["contractors"]["hayate_delivery"].update(contractor_changes)
    return custdata.Policy.from_dict(data, source="test.toml")


def optout_policy() -> custdata.Policy:
    """The example policy of a company that notified the PPC of opt-out provision."""
    data = example_data()
    data["third_party"]["optout_notified"] = dt.date(2026, 4, 1)
    return custdata.Policy.from_dict(data)


class DictConsent:
    """A small in-test :class:`~custdata.governance.ConsentSource`.

    ``grants`` maps (subject, purpose) to (consent id, given at, withdrawn at).
    """

    def __init__(self) -> None:
        self.grants: dict[
            tuple[str, str], tuple[str, dt.datetime, dt.datetime | None]
        ] = {}
        self.asked: list[tuple[str, str, dt.datetime]] = []

    def give(
        self,
        subject: object,
        purpose: str,
        *,
        at: dt.datetime = T0 - dt.timedelta(days=30),
        withdrawn: dt.datetime | None = None,
    ) -> str:
        cid = f"consent-{len(self.grants) + 1}"
        self.grants[(str(subject), purpose)] = (cid, at, withdrawn)
        return cid

    def consent_in_force(
        self, subject: object, purpose: str, at: dt.datetime
    ) -> str | None:
        self.asked.append((str(subject), purpose, at))
        found = self.grants.get((str(subject), purpose))
        if found is None:
            return None
        cid, given, withdrawn = found
        if given > at or (withdrawn is not None and withdrawn <= at):
            return None
        return cid


def make_gate(
    policy: custdata.Policy | None = None,
    *,
    consent: DictConsent | None = None,
    records: ProvisionRecordStore | None = None,
) -> ProvisionGate:
    """A gate over the example policy with in-memory records."""
    return ProvisionGate(
        policy=policy or custdata.Policy.from_toml(EXAMPLE),
        records=records if records is not None else InMemoryProvisionRecordStore(),
        consent=consent,
    )


def request(**changes: Any) -> ProvisionRequest:
    """A consent-based provision of e-mail addresses to the partner, changed as asked."""
    base: dict[str, Any] = {
        "recipient": PARTNER,
        "basis": Basis.CONSENT_27_1,
        "purpose": "marketing.third_party",
        "subjects": ["s-1", "s-2"],
        "fields": ["email"],
        "categories": ["contact.email"],
    }
    base.update(changes)
    return ProvisionRequest(**base)


class RacingStore:
    """A record store where another writer extends the bulk record just before
    our first replace (the race two processes run into)."""

    def __init__(self, inner: ProvisionRecordStore, other: Any) -> None:
        self.inner = inner
        self.other = other  # called once, with the inner store, before our replace
        self.replaced: list[bool] = []

    def replace(self, record: Any) -> bool:
        if self.other is not None:
            other, self.other = self.other, None
            other(self.inner)
        done = self.inner.replace(record)
        self.replaced.append(done)
        return done

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
