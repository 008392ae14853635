"""Purposes of use and the purpose-based access-control rule.

Purposes form a tree. A field carries allowed purposes (AIP) and may carry
prohibited ones (PIP). Following Byun, Bertino and Li, an access purpose *p* is
compliant with a field when::

    p ∈ AIP↓ − PIP↕

where ``x↓`` is *x* and its descendants, ``x↑`` is *x* and its ancestors and
``x↕ = x↓ ∪ x↑``. Prohibiting ``marketing.third_party`` therefore also blocks
the generic ``marketing``, and prohibiting ``marketing`` blocks every kind of it.
"""

from __future__ import annotations

import datetime as dt
import enum

from collections.abc import Collection, Iterator, Mapping

import attrs

from ._util import str_tuple


__all__ = [
    "AppiBasis",
    "GdprBasis",
    "Purpose",
    "PurposeTree",
]


class AppiBasis(str, enum.Enum):
    """The APPI ground on which personal data is handled for a purpose."""

    #: Within the purpose published or notified under Art. 21 (the ordinary case).
    PUBLISHED_PURPOSE = "published_purpose"
    #: Necessary to perform a contract with the person.
    CONTRACT = "contract"
    #: The person's prior consent (Art. 18, 20(2), 27(1), 28).
    CONSENT = "consent"
    #: Required by laws and regulations (Art. 18(3)(i)).
    LAW = "law"
    #: Protection of life, body or property when consent is hard to get.
    VITAL_INTERESTS = "vital_interests"
    #: Public health or the sound growth of children.
    PUBLIC_HEALTH = "public_health"
    #: Cooperation with a public body performing statutory duties.
    PUBLIC_BODY = "public_body"
    #: Academic research.
    ACADEMIC_RESEARCH = "academic_research"


class GdprBasis(str, enum.Enum):
    """The GDPR Art. 6(1) lawful basis."""

    CONSENT = "consent"  # (a)
    CONTRACT = "contract"  # (b)
    LEGAL_OBLIGATION = "legal_obligation"  # (c)
    VITAL_INTERESTS = "vital_interests"  # (d)
    PUBLIC_TASK = "public_task"  # (e)
    LEGITIMATE_INTERESTS = "legitimate_interests"  # (f)


@attrs.frozen(kw_only=True)
class Purpose:
    """A purpose of use, as published in the privacy notice.

    Attributes:
        id: Dotted or plain identifier (``billing``, ``marketing.email``).
        parent: The parent purpose's id, or ``None`` for a root.
        text_ja: The published text in Japanese (利用目的).
        text_en: The published text in English.
        appi_basis: The APPI ground.
        gdpr_basis: The GDPR Art. 6(1) basis, or ``None`` where GDPR does not apply.
        consent_required: Use needs the data subject's recorded consent.
        owner: The id of the responsible person who owns the purpose.
        version: Incremented whenever the published scope changes.
        effective_from: The date the current version took effect.
        retention: The id of the retention rule that applies to data kept for
            it; a purpose without one inherits its parent's.
        categories: The data categories the purpose uses, as published.
        may_erase: Whether acting for this purpose (or one below it) may
            delete customer records; no purpose may unless it says so.
        subject_disclosure: Whether this is the purpose of disclosing data to
            the data subject it is about (APPI 33条, GDPR Art. 15 and 20): it
            is permitted for every tagged field without being listed on it,
            whatever the field prohibits (so its retention rule, which the
            documents show, never lengthens a field's). Grant it only to the
            role that answers requests.
        retired_on: The first day the purpose may no longer be used, or
            ``None`` while it is in use (R-PUR-7).
        my_number_act: Whether this is a purpose the My Number Act (番号法)
            permits; only such purposes may use My Number fields (R-DEF-4).
        next_review: When the purpose must next be reviewed (R-GOV-2).
    """

    id: str
    parent: str | None = None
    text_ja: str
    text_en: str
    appi_basis: AppiBasis = AppiBasis.PUBLISHED_PURPOSE
    gdpr_basis: GdprBasis | None = None
    consent_required: bool = False
    owner: str | None = None
    version: int = 1
    effective_from: dt.date | None = None
    retention: str | None = None
    categories: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    may_erase: bool = False
    subject_disclosure: bool = False
    retired_on: dt.date | None = None
    my_number_act: bool = False
    next_review: dt.date | None = None


@attrs.frozen(init=False, repr=False)
class PurposeTree:
    """The purposes of a policy, with the tree operations of the access rule.

    The tree must already be valid (known parents, no cycles):
    :class:`custdata.Policy` checks that before building one.
    """

    purposes: Mapping[str, Purpose]
    _ancestors: Mapping[str, frozenset[str]]
    _descendants: Mapping[str, frozenset[str]]

    def __init__(self, purposes: Mapping[str, Purpose]) -> None:
        ancestors: dict[str, frozenset[str]] = {}
        for pid in purposes:
            chain = [pid]
            parent = purposes[pid].parent
            while parent is not None:
                chain.append(parent)
                parent = purposes[parent].parent
            ancestors[pid] = frozenset(chain)
        descendants: dict[str, set[str]] = {pid: set() for pid in purposes}
        for pid, ups in ancestors.items():
            for up in ups:
                descendants[up].add(pid)
        object.__setattr__(self, "purposes", dict(purposes))
        object.__setattr__(self, "_ancestors", ancestors)
        object.__setattr__(
            self, "_descendants", {k: frozenset(v) for k, v in descendants.items()}
        )

    def __contains__(self, purpose_id: object) -> bool:
        return purpose_id in self.purposes

    def __iter__(self) -> Iterator[str]:
        return iter(self.purposes)

    def __repr__(self) -> str:
        return f"<PurposeTree of {len(self.purposes)} purposes>"

    def ancestors(self, purpose_id: str) -> frozenset[str]:
        """Return *purpose_id* and all purposes above it (``p↑``)."""
        return self._ancestors[purpose_id]

    def descendants(self, purpose_id: str) -> frozenset[str]:
        """Return *purpose_id* and all purposes below it (``p↓``)."""
        return self._descendants[purpose_id]

    def effective(
        self, allowed: Collection[str], prohibited: Collection[str] = ()
    ) -> frozenset[str]:
        """Return the compliant purposes ``AIP↓ − PIP↕`` for a field.

        Unknown ids contribute nothing, so a field tagged only with unknown
        purposes permits nothing (fail closed).
        """
        allowed_down: set[str] = set()
        for pid in allowed:
            allowed_down |= self._descendants.get(pid, frozenset())
        blocked: set[str] = set()
        for pid in prohibited:
            blocked |= self._descendants.get(pid, frozenset())
            blocked |= self._ancestors.get(pid, frozenset())
        return frozenset(allowed_down - blocked)

    def permits(
        self,
        access_purpose: str,
        allowed: Collection[str],
        prohibited: Collection[str] = (),
    ) -> bool:
        """Return whether *access_purpose* is compliant with a field's tags."""
        if access_purpose not in self.purposes or not allowed:
            return False
        ups = self._ancestors[access_purpose]
        if not any(a in ups for a in allowed):
            return False
        for pid in prohibited:
            if pid in ups or access_purpose in self._ancestors.get(pid, ()):
                return False
        return True
