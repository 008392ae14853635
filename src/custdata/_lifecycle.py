"""Purpose lifecycle and My Number: when a purpose may be used, and for what.

R-PUR-7: a purpose is usable from its ``effective_from`` (and the policy's
``effective_date``) until its ``retired_on``; a purpose below another is
usable only while that one is too. :func:`compare_policies` flags a purpose
whose text, categories or basis changed without a new version, and changes
that need the subjects' consent or a notification (``custdata check
--previous``).

R-DEF-4: the built-in My Number category (個人番号) may be used only for a
purpose marked ``my_number_act`` (or one below such a purpose); a field that
declares it for any other purpose fails at declaration, and a read or write
for another purpose is refused.
"""

from __future__ import annotations

import datetime as dt

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._taxonomy import is_my_number


if TYPE_CHECKING:
    from ._check import Finding
    from ._policy import FieldPolicy, Policy
    from ._purposes import Purpose


__all__ = [
    "check_my_number_field",
    "check_purpose_lifecycle",
    "compare_policies",
    "lifecycle_message",
    "lifecycle_window",
    "my_number_permitted",
]

Problem = Callable[[str, str], None]


def check_purpose_lifecycle(purpose: Purpose, add: Problem) -> None:
    """Report a purpose retired on or before the day it took effect."""
    if (
        purpose.retired_on is not None
        and purpose.effective_from is not None
        and purpose.retired_on <= purpose.effective_from
    ):
        add(
            f"purposes.{purpose.id}.retired_on",
            "is not after the purpose's effective_from",
        )


def my_number_permitted(policy: Policy, purpose_id: str) -> bool:
    """Whether *purpose_id*, or a purpose above it, is a My Number Act purpose."""
    if purpose_id not in policy.tree:
        return False
    return any(
        policy.purposes[p].my_number_act for p in policy.tree.ancestors(purpose_id)
    )


def check_my_number_field(
    policy: Policy, field: FieldPolicy, where: str, add: Problem
) -> None:
    """Report a My Number field tagged with a purpose the My Number Act does not permit."""
    if not is_my_number(field.category):
        return
    for pid in field.purposes:
        if pid in policy.purposes and not my_number_permitted(policy, pid):
            add(
                f"{where}.purposes",
                f"My Number (個人番号) may be used only for My Number Act purposes; "
                f"{pid!r} is not marked my_number_act",
            )


def lifecycle_window(policy: Policy, purpose_id: str) -> tuple[dt.date, dt.date | None]:
    """The days *purpose_id* may be used: ``[start, end)``, ``end`` ``None`` if open.

    The start is the latest of the policy's effective date and the
    ``effective_from`` of the purpose and every purpose above it; the end is
    the earliest ``retired_on`` among them.
    """
    start = policy.effective_date
    end: dt.date | None = None
    for pid in policy.tree.ancestors(purpose_id):
        p = policy.purposes[pid]
        if p.effective_from is not None and p.effective_from > start:
            start = p.effective_from
        if p.retired_on is not None and (end is None or p.retired_on < end):
            end = p.retired_on
    return start, end


def lifecycle_message(policy: Policy, purpose_id: str, today: dt.date) -> str:
    """Why *purpose_id* is not usable on *today* (for the error message)."""
    start, end = lifecycle_window(policy, purpose_id)
    if today < policy.effective_date:
        return (
            f"policy version {policy.version!r} is not effective until "
            f"{policy.effective_date.isoformat()}"
        )
    if today < start:
        return f"purpose {purpose_id!r} is not effective until {start.isoformat()}"
    return f"purpose {purpose_id!r} was retired on {end.isoformat() if end else '?'}"


def compare_policies(old: Policy, new: Policy) -> list[Finding]:
    """Compare a policy with its previous version, for ``custdata check --previous``.

    Codes:
        POL101: a purpose's published text, categories or legal basis changed
            but its ``version`` did not.
        POL102: a purpose now uses categories it did not (a scope change): the
            data subjects must be notified, or asked for consent where the
            purpose needs consent (APPI Art. 17(2), 18, 21(3)).
        POL103: a purpose became consent-based or changed its legal basis: new
            consent is needed before data acquired earlier is used for it.
        POL104: a purpose was removed instead of retired (``retired_on``).

    Args:
        old: The previous policy (the published one).
        new: The policy to check.

    Returns:
        The findings, in a stable order.
    """
    from ._check import Finding  # noqa: PLC0415 - _check imports the policy

    findings: list[Finding] = []
    for pid in sorted(old.purposes):
        before = old.purposes[pid]
        after = new.purposes.get(pid)
        where = f"purposes.{pid}"
        if after is None:
            findings.append(
                Finding(
                    code="POL104",
                    key_path=where,
                    message="the purpose was removed: retire it with retired_on instead",
                )
            )
            continue
        changed = [
            name
            for name, a, b in (
                ("text_ja", before.text_ja, after.text_ja),
                ("text_en", before.text_en, after.text_en),
                ("categories", sorted(before.categories), sorted(after.categories)),
                ("appi_basis", before.appi_basis, after.appi_basis),
                ("gdpr_basis", before.gdpr_basis, after.gdpr_basis),
            )
            if a != b
        ]
        if changed and after.version <= before.version:
            findings.append(
                Finding(
                    code="POL101",
                    key_path=f"{where}.version",
                    message=(
                        f"{', '.join(changed)} changed without a new version "
                        f"(still {after.version})"
                    ),
                )
            )
        added = sorted(set(after.categories) - set(before.categories))
        if added:
            needs = "consent" if new.needs_consent(pid) else "notification"
            findings.append(
                Finding(
                    code="POL102",
                    key_path=f"{where}.categories",
                    message=(
                        f"now uses {', '.join(added)}: the subjects need {needs} "
                        "before data acquired earlier is used for it"
                    ),
                )
            )
        became_consent = new.needs_consent(pid) and not old.needs_consent(pid)
        if became_consent or before.appi_basis != after.appi_basis:
            findings.append(
                Finding(
                    code="POL103",
                    key_path=f"{where}.appi_basis",
                    message=(
                        "the legal basis changed: data acquired under the previous "
                        "basis needs the subjects' consent before this use"
                    ),
                )
            )
    return findings
