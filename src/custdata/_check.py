"""Policy lint: what a valid policy may still get wrong (R-GOV-2, R-GOV-5).

A policy that loads is well-formed. :func:`check_policy` reports what the
regulation still requires of it: published texts, owners, responsible persons,
timely review, and consent for special-care data. ``custdata check`` runs it
(and the model checks of :mod:`custdata.sqlalchemy`) as a CI gate.
"""

from __future__ import annotations

import datetime as dt

import attrs

from ._policy import Policy


__all__ = ["Finding", "check_policy"]


@attrs.frozen(kw_only=True)
class Finding:
    """One thing ``custdata check`` reports.

    Attributes:
        code: A stable code (``POL001``) for suppressing or grepping.
        key_path: Where the problem is (``purposes.marketing.owner``,
            ``customers.email``).
        message: What is wrong and what to do, in one sentence.
    """

    code: str
    key_path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """Return the finding as a JSON-ready dict."""
        return {"code": self.code, "key_path": self.key_path, "message": self.message}


def check_policy(policy: Policy, *, today: dt.date) -> list[Finding]:
    """Return the findings for *policy* as of *today*, in a stable order.

    Codes:
        POL001: a purpose's published text is blank in Japanese or English.
        POL002: a purpose has no owner.
        POL003: the policy's review is overdue.
        POL004: a role has no responsible person.
        POL005: a special-care category is usable by a purpose that needs no
            consent (APPI Art. 20(2)).
        POL006: no chief privacy officer is designated.
        POL007: the policy uses a deprecated key (``[third_party]
            published_foreign_countries``, now ``[notice] foreign_countries``).
    """
    findings: list[Finding] = []
    if policy.cpo is None:
        findings.append(
            Finding(
                code="POL006",
                key_path="policy.cpo",
                message="no chief privacy officer (個人情報保護管理者) is designated",
            )
        )
    if policy.next_review < today:
        findings.append(
            Finding(
                code="POL003",
                key_path="policy.next_review",
                message=f"the review due on {policy.next_review.isoformat()} is overdue",
            )
        )
    for pid, purpose in sorted(policy.purposes.items()):
        where = f"purposes.{pid}"
        for lang, text in (("ja", purpose.text_ja), ("en", purpose.text_en)):
            if not text.strip():
                findings.append(
                    Finding(
                        code="POL001",
                        key_path=f"{where}.text_{lang}",
                        message="the published text is blank",
                    )
                )
        if purpose.owner is None:
            findings.append(
                Finding(
                    code="POL002",
                    key_path=f"{where}.owner",
                    message="the purpose has no owner",
                )
            )
        if not policy.needs_consent(pid):
            findings.extend(
                Finding(
                    code="POL005",
                    key_path=f"{where}.categories",
                    message=f"special-care category {key!r} is used by a purpose that needs no consent",
                )
                for key in purpose.categories
                if _covers_special_care(policy, key)
            )
    if policy.third_party.published_foreign_countries is not None:
        findings.append(
            Finding(
                code="POL007",
                key_path="third_party.published_foreign_countries",
                message="deprecated key: name the foreign countries of handling in "
                "notice.foreign_countries (the published notice's one home) instead",
            )
        )
    for rid, role in sorted(policy.roles.items()):
        if role.responsible is None:
            findings.append(
                Finding(
                    code="POL004",
                    key_path=f"roles.{rid}.responsible",
                    message="the role has no responsible person",
                )
            )
    return findings


def _covers_special_care(policy: Policy, key: str) -> bool:
    """A category is special-care, or is a parent of special-care categories."""
    return policy.taxonomy[key].special_care or any(
        policy.taxonomy[k].special_care
        for k in policy.taxonomy
        if k.startswith(f"{key}.")
    )
