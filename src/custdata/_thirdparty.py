"""The policy's third-party section: contractors and joint use (clause 6).

What a company decides about the parties it hands customer data to is policy
data, versioned with the code: the contractor registry (R-TPP-5; GL 3-4-4,
GDPR Art. 28) and the joint-use declarations with their five notice items (APPI
27条5項3号, R-TPP-6). The foreign countries named in the published safety
measures (PPC FAQ Q10-24, R-SEC-6) live in the notice (``[notice]
foreign_countries``); ``published_foreign_countries`` here is a deprecated
alias of them. It is read from the policy file's
``[third_party]`` table. The decisions made over it (may this provision go
ahead?) live in :mod:`custdata.governance`.
"""

from __future__ import annotations

import datetime as dt

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import attrs

from ._util import str_tuple


if TYPE_CHECKING:
    from ._policy import Policy, _Problems, _Reader

__all__ = ["Contractor", "JointUse", "SubContractor", "ThirdPartyPolicy"]

ReOutsourcing = Literal["forbidden", "prior_approval", "notify"]
_RE_OUTSOURCING = ("forbidden", "prior_approval", "notify")


@attrs.frozen(kw_only=True)
class SubContractor:
    """A sub-contractor (再委託先) of a contractor.

    Attributes:
        name: Its name.
        countries: ISO 3166 codes of the countries where it handles the data.
        approved: Whether the company approved it (needed unless the
            contractor's re-outsourcing rule is ``"notify"``).
    """

    name: str
    countries: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    approved: bool = False


@attrs.frozen(kw_only=True)
class Contractor:
    """One entry of the contractor registry (委託先, R-TPP-5).

    Attributes:
        id: The registry id, used as the recipient id of an outsourcing.
        name: The contractor's name.
        address: Its address.
        country: Where it is established (ISO code; 28条 looks at this).
        countries: Countries where it handles the data (GL 10-7 looks at these).
        contract_id: The outsourcing contract's reference.
        contract_date: When the contract was signed.
        purposes: The purposes (policy ids) entrusted to it.
        categories: The data categories entrusted to it.
        assessment_date: Its last security assessment, if any.
        assessment_result: ``"pass"`` or ``"fail"``.
        assessment_evidence: Where the assessment's evidence is kept.
        re_outsourcing: ``"forbidden"``, ``"prior_approval"`` or ``"notify"``.
        subcontractors: Its sub-contractors.
        next_review_due: When its handling must next be reviewed.
        breach_notice_hours: Within how many hours it must report a breach.
        return_destruction: The contract's clause on returning or destroying data.
    """

    id: str
    name: str
    address: str
    country: str = "JP"
    countries: tuple[str, ...] = attrs.field(default=("JP",), converter=str_tuple)
    contract_id: str = ""
    contract_date: dt.date | None = None
    purposes: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    categories: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    assessment_date: dt.date | None = None
    assessment_result: Literal["pass", "fail"] | None = None
    assessment_evidence: str = ""
    re_outsourcing: ReOutsourcing = "forbidden"
    subcontractors: tuple[SubContractor, ...] = ()
    next_review_due: dt.date | None = None
    breach_notice_hours: int | None = None
    return_destruction: str = ""

    def handling_countries(self) -> frozenset[str]:
        """Every country where it or its sub-contractors handle the data."""
        out = set(self.countries)
        for sub in self.subcontractors:
            out.update(sub.countries)
        return frozenset(out)


@attrs.frozen(kw_only=True)
class JointUse:
    """A joint-use declaration (共同利用) with the five notice items of 27条5項3号.

    Attributes:
        id: Its id, named by a joint-use provision.
        items: The data categories used jointly (notice item 2).
        users: The recipient ids within the scope of joint users (item 3).
        scope: The scope of joint users as published (item 3).
        purposes: The joint users' purposes (policy ids, item 4).
        responsible_name: The responsible party's name (item 5).
        responsible_address: Its address (item 5).
        responsible_representative: Its representative, for a corporation (item 5).
        notice_published: When the notice was published or given (item 1:
            that the data is used jointly).
    """

    id: str
    items: tuple[str, ...] = attrs.field(converter=str_tuple)
    users: tuple[str, ...] = attrs.field(converter=str_tuple)
    scope: str
    purposes: tuple[str, ...] = attrs.field(converter=str_tuple)
    responsible_name: str
    responsible_address: str
    responsible_representative: str = ""
    notice_published: dt.date | None = None


@attrs.frozen(kw_only=True)
class ThirdPartyPolicy:
    """The policy's ``[third_party]`` section.

    Attributes:
        home_country: Where the company is established (``"JP"``).
        published_foreign_countries: Deprecated alias of the notice's
            ``foreign_countries`` (``[notice]``, the one home of what the
            notice publishes): ``None`` unless the policy still gives it. A
            policy that gives it alone has it copied to the notice; one that
            gives both, differing, is refused; ``custdata check`` reports it
            as ``POL007``.
        optout_notified: When the company notified the PPC of its opt-out
            provision (27条2項); without it, opt-out provision is refused.
        on_review_overdue: ``"refuse"`` (default) or ``"warn"``: what the
            provision gate does for a contractor whose assessment is missing
            or whose review is overdue.
        contractors: The contractor registry by id.
        joint_uses: The joint-use declarations by id.
    """

    home_country: str = "JP"
    published_foreign_countries: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(str_tuple)
    )
    optout_notified: dt.date | None = None
    on_review_overdue: Literal["refuse", "warn"] = "refuse"
    contractors: Mapping[str, Contractor] = attrs.field(factory=dict)
    joint_uses: Mapping[str, JointUse] = attrs.field(factory=dict)

    def validate(self, policy: Policy, problems: _Problems) -> None:
        """Report references to undeclared purposes and categories."""
        for cid, c in self.contractors.items():
            self._refs(
                f"third_party.contractors.{cid}",
                c.purposes,
                c.categories,
                policy,
                problems,
            )
        for jid, j in self.joint_uses.items():
            self._refs(
                f"third_party.joint_use.{jid}", j.purposes, j.items, policy, problems
            )

    @staticmethod
    def _refs(
        where: str,
        purposes: tuple[str, ...],
        categories: tuple[str, ...],
        policy: Policy,
        problems: _Problems,
    ) -> None:
        for pid in purposes:
            if pid not in policy.purposes:
                problems.add(f"{where}.purposes", f"undeclared purpose {pid!r}")
        for cat in categories:
            if cat not in policy.taxonomy:
                problems.add(f"{where}.categories", f"unknown category {cat!r}")


def read_third_party(root: _Reader) -> ThirdPartyPolicy:
    """Read the ``[third_party]`` table of a policy file (problems are collected)."""
    table = root.get("third_party", dict, "a [third_party] table", required=False)
    if table is None:
        return ThirdPartyPolicy()
    r = type(root)(table, "third_party", root.problems)
    home = r.text("home_country", required=False) or "JP"
    published = (
        r.strings("published_foreign_countries", required=False)
        if "published_foreign_countries" in table
        else None
    )
    optout_notified = r.date("optout_notified", required=False)
    on_overdue = r.text("on_review_overdue", required=False) or "refuse"
    if on_overdue not in ("refuse", "warn"):
        r.problems.add("third_party.on_review_overdue", "expected 'refuse' or 'warn'")
        on_overdue = "refuse"
    contractors = {}
    for cid, c in r.tables("contractors").items():
        contractors[cid] = _read_contractor(cid, c)
        c.finish()
    joint = {}
    for jid, j in r.tables("joint_use").items():
        joint[jid] = JointUse(
            id=jid,
            items=j.strings("items"),
            users=j.strings("users"),
            scope=j.text("scope") or "",
            purposes=j.strings("purposes"),
            responsible_name=j.text("responsible_name") or "",
            responsible_address=j.text("responsible_address") or "",
            responsible_representative=j.text(
                "responsible_representative", required=False
            )
            or "",
            notice_published=j.date("notice_published", required=False),
        )
        j.finish()
    r.finish()
    return ThirdPartyPolicy(
        home_country=home,
        published_foreign_countries=published,
        optout_notified=optout_notified,
        on_review_overdue=on_overdue,  # type: ignore[arg-type]
        contractors=contractors,
        joint_uses=joint,
    )


def _read_contractor(cid: str, c: _Reader) -> Contractor:
    result = c.text("assessment_result", required=False)
    if result not in (None, "pass", "fail"):
        c.problems.add(f"{c.path}.assessment_result", "expected 'pass' or 'fail'")
        result = "fail"
    rule = c.text("re_outsourcing", required=False) or "forbidden"
    if rule not in _RE_OUTSOURCING:
        c.problems.add(
            f"{c.path}.re_outsourcing",
            "expected 'forbidden', 'prior_approval' or 'notify'",
        )
        rule = "forbidden"
    subs = []
    raw = c.get("subcontractors", list, "a list of tables", required=False, default=[])
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            c.problems.add(f"{c.path}.subcontractors[{i}]", "expected a table")
            continue
        s = type(c)(item, f"{c.path}.subcontractors[{i}]", c.problems)
        subs.append(
            SubContractor(
                name=s.text("name") or "",
                countries=s.strings("countries", required=False),
                approved=s.flag("approved"),
            )
        )
        s.finish()
    hours = c.get("breach_notice_hours", int, "a whole number of hours", required=False)
    return Contractor(
        id=cid,
        name=c.text("name") or "",
        address=c.text("address") or "",
        country=c.text("country", required=False) or "JP",
        countries=c.strings("countries", required=False) or ("JP",),
        contract_id=c.text("contract_id", required=False) or "",
        contract_date=c.date("contract_date", required=False),
        purposes=c.strings("purposes"),
        categories=c.strings("categories"),
        assessment_date=c.date("assessment_date", required=False),
        assessment_result=result,  # type: ignore[arg-type]
        assessment_evidence=c.text("assessment_evidence", required=False) or "",
        re_outsourcing=rule,  # type: ignore[arg-type]
        subcontractors=tuple(subs),
        next_review_due=c.date("next_review_due", required=False),
        breach_notice_hours=hours,
        return_destruction=c.text("return_destruction", required=False) or "",
    )
