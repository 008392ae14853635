"""Contractor supervision: what the registry says is overdue or uncovered (R-TPP-5, R-SEC-6).

:func:`contractor_findings` is what ``custdata check`` and ``custdata
contractors check`` report about the policy's contractor registry
(:class:`custdata.Contractor`): reviews overdue, assessments missing or failed,
sub-contractors used without approval (GL 3-4-4, GDPR Art. 28), and countries
where customer data is handled that the published safety measures do not name
(GL 10-7, PPC FAQ Q10-24). The provision gate refuses a provision to such a
contractor (:class:`custdata.governance.ProvisionGate`).
"""

from __future__ import annotations

import datetime as dt

from custdata._check import Finding
from custdata._policy import Policy


__all__ = ["contractor_findings"]


def contractor_findings(policy: Policy, *, today: dt.date) -> list[Finding]:
    """The findings about *policy*'s contractor registry as of *today*.

    The codes:

    - ``CTR001``: a contractor's review is overdue or has no due date.
    - ``CTR002``: a contractor has no passed security assessment.
    - ``CTR003``: a sub-contractor is listed without the approval its
      contractor's re-outsourcing rule requires (or re-outsourcing is forbidden).
    - ``CTR004``: a country where a contractor or sub-contractor handles the
      data is not named in the published safety measures
      (``notice.foreign_countries``; PPC FAQ Q10-24).
    """
    tp = policy.third_party
    findings: list[Finding] = []
    published = set(policy.registers.notice.foreign_countries) | {tp.home_country}
    for cid, c in sorted(tp.contractors.items()):
        where = f"third_party.contractors.{cid}"
        due = c.next_review_due
        if due is None or due < today:
            when = "has no review date" if due is None else f"was due {due.isoformat()}"
            findings.append(
                Finding(
                    code="CTR001",
                    key_path=f"{where}.next_review_due",
                    message=f"the contractor's review {when} (法25条, GL 3-4-4)",
                )
            )
        if c.assessment_date is None or c.assessment_result != "pass":
            findings.append(
                Finding(
                    code="CTR002",
                    key_path=f"{where}.assessment_result",
                    message="no passed security assessment of the contractor (GL 3-4-4 ①)",
                )
            )
        for i, sub in enumerate(c.subcontractors):
            if c.re_outsourcing == "forbidden" or (
                c.re_outsourcing == "prior_approval" and not sub.approved
            ):
                findings.append(
                    Finding(
                        code="CTR003",
                        key_path=f"{where}.subcontractors[{i}]",
                        message=f"sub-contractor {sub.name!r} is not approved "
                        f"(re-outsourcing: {c.re_outsourcing})",
                    )
                )
        findings.extend(
            Finding(
                code="CTR004",
                key_path=f"{where}.countries",
                message=f"data is handled in {country}, which the published safety "
                "measures do not name (GL 10-7, PPC FAQ Q10-24)",
            )
            for country in sorted(c.handling_countries() - published)
        )
    return findings
