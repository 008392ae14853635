"""The compliance report: a static page set to look at (``custdata report --html``).

:func:`render_report` returns the pages as file names mapped to HTML: an
``index.html`` with a data-map picture (categories → purposes → the roles that
handle them, and the contractors and joint users the data goes to with their
countries, as inline SVG), the fields and how each is protected and kept,
consent coverage, open incidents with their deadlines (when an incident
register is given), reviews due and findings, and the audit trail's
verification status when one was verified; and the rendered documents of both languages, linked
from the index. Nothing is fetched at view time: no scripts, no fonts, no CDN.
"""

from __future__ import annotations

import datetime as dt

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from custdata._check import check_policy
from custdata._errors import IncidentError
from custdata._policy import FieldPolicy, Policy

from ._documents import (
    DOCUMENTS,
    EXTENSIONS,
    FieldRecord,
    country_name,
    render_documents,
)
from ._register import IncidentRegister
from ._requests import DataSubjectRequest
from ._review import register_findings, review_items


if TYPE_CHECKING:
    from ._provision import ProvisionRecord


__all__ = ["DataMap", "TrailStatus", "data_map", "open_incidents", "render_report"]


@attrs.frozen(kw_only=True)
class TrailStatus:
    """The verification status of an audit trail, as the report shows it.

    Attributes:
        source: What was verified (a file name or a database, without secrets).
        events: How many events were read.
        chains: How many writer chains.
        intact: Whether no tampering was found.
        findings: The kinds of the findings (``GAP``, ``FORK``...).
        verified_through: The checkpoint the trail is anchored to, if any.
    """

    source: str
    events: int
    chains: int
    intact: bool
    findings: tuple[str, ...] = ()
    verified_through: str | None = None

    @classmethod
    def from_report(cls, report: Any, *, source: str) -> TrailStatus:
        """Build it from a :class:`custdata.audit.VerificationReport`."""
        vt = report.verified_through
        return cls(
            source=source,
            events=report.events,
            chains=report.chains,
            intact=report.intact,
            findings=tuple(report.kinds()),
            verified_through=None
            if vt is None
            else f"checkpoint {vt.tree_size} at {vt.time.isoformat()}",
        )


@attrs.frozen(kw_only=True)
class DataMap:
    """The data-map picture: nodes in three columns and the edges between them.

    Attributes:
        categories: ``(key, label, kind)`` with kind ``"special"``,
            ``"financial"`` or ``"plain"``.
        purposes: ``(id, text)``.
        handlers: ``(role id, description)``: who handles the data.
        recipients: ``(id, name, kind, countries)``: the contractors (kind
            ``"contractor"``, with the countries where they and their
            sub-contractors handle the data) and the joint uses (kind
            ``"joint use"``) the data goes to, drawn under the roles.
        edges: ``(from, to)`` pairs of node ids (``c:<key>``, ``p:<id>``,
            ``r:<id>``, ``x:<id>``).
        width: The picture's width in pixels.
        height: The picture's height in pixels.
    """

    categories: tuple[tuple[str, str, str], ...]
    purposes: tuple[tuple[str, str], ...]
    handlers: tuple[tuple[str, str], ...]
    recipients: tuple[tuple[str, str, str, str], ...] = ()
    edges: tuple[tuple[str, str], ...] = ()
    width: int = 1100
    height: int = 0

    #: Vertical distance between nodes, and the top margin.
    ROW = 34
    TOP = 40

    def y(self, node: str) -> int:
        """The vertical centre of a node."""
        kind, _, key = node.partition(":")
        column = {
            "c": [c[0] for c in self.categories],
            "p": [p[0] for p in self.purposes],
            "r": [r[0] for r in self.handlers],
            "x": [r[0] for r in self.recipients],
        }[kind]
        below = self.recipients_top - self.TOP if kind == "x" else 0
        return self.TOP + below + column.index(key) * self.ROW + self.ROW // 2

    @property
    def recipients_top(self) -> int:
        """Where the recipients start: one row below the roles, under a heading."""
        return self.TOP + (len(self.handlers) + 1) * self.ROW

    def x(self, node: str) -> tuple[int, int]:
        """The left and right edges of a node's column."""
        return {"c": (10, 300), "p": (400, 760), "r": (860, 1090), "x": (860, 1090)}[
            node[0]
        ]


def data_map(policy: Policy, *, lang: str = "en") -> DataMap:
    """Return the data map of *policy*: categories → purposes → roles and recipients."""
    tax = policy.taxonomy
    used = sorted({c for p in policy.purposes.values() for c in p.categories})

    def kind(key: str) -> str:
        below = [tax[k] for k in tax if k == key or k.startswith(f"{key}.")]
        if any(c.special_care for c in below):
            return "special"
        if any(c.financial_damage_risk for c in below):
            return "financial"
        return "plain"

    categories = tuple(
        (key, tax[key].label_ja if lang == "ja" else tax[key].label_en, kind(key))
        for key in used
    )
    purposes = tuple(
        (p.id, p.text_ja if lang == "ja" else p.text_en)
        for p in policy.purposes.values()
    )
    handlers = tuple(
        (r.id, r.description) for r in sorted(policy.roles.values(), key=lambda r: r.id)
    )
    edges = [
        (f"c:{c}", f"p:{p.id}") for p in policy.purposes.values() for c in p.categories
    ]
    edges += [
        (f"p:{pid}", f"r:{rid}")
        for pid in policy.purposes
        for rid in sorted(policy.roles)
        if policy.may_claim(rid, pid)
    ]
    tp = policy.third_party
    recipients = [
        (
            f"contractor.{c.id}",
            c.name,
            "contractor",
            ", ".join(country_name(k, "en") for k in sorted(c.handling_countries())),
        )
        for c in sorted(tp.contractors.values(), key=lambda c: c.id)
    ]
    recipients += [
        (
            f"joint_use.{j.id}",
            j.scope,
            "joint use",
            "",
        )
        for j in sorted(tp.joint_uses.values(), key=lambda j: j.id)
    ]
    edges += [
        (f"p:{pid}", f"x:contractor.{c.id}")
        for c in sorted(tp.contractors.values(), key=lambda c: c.id)
        for pid in c.purposes
    ]
    edges += [
        (f"p:{pid}", f"x:joint_use.{j.id}")
        for j in sorted(tp.joint_uses.values(), key=lambda j: j.id)
        for pid in j.purposes
    ]
    rows = max(len(categories), len(purposes), len(handlers) + 2 + len(recipients))
    return DataMap(
        categories=categories,
        purposes=purposes,
        handlers=handlers,
        recipients=tuple(recipients),
        edges=tuple(edges),
        height=DataMap.TOP + rows * DataMap.ROW + 20,
    )


def render_report(
    policy: Policy,
    *,
    today: dt.date,
    fields: Sequence[FieldRecord] = (),
    trail: TrailStatus | None = None,
    requests: Sequence[DataSubjectRequest] = (),
    incidents: IncidentRegister | None = None,
    records: Sequence[ProvisionRecord] | None = None,
) -> dict[str, str]:
    """Render the compliance report; return file names mapped to their HTML.

    Args:
        policy: The policy.
        today: The report date (reviews and deadlines are judged against it).
        fields: The stored fields (see :func:`custdata.sqlalchemy.field_inventory`).
        trail: The audit trail's verification status, if one was verified.
        requests: The data-subject requests; the open ones are listed with
            their deadlines (overdue ones marked, judged at the end of *today*).
        incidents: The incident register: its open incidents are listed with
            each item still to do and its deadline (an unclassified incident
            with "classify").
        records: Provision records for the ledger and the record of
            processing (see :func:`render_document`).
    """
    import jinja2  # noqa: PLC0415 - only rendering needs the template engine

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("custdata.governance", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["country"] = country_name
    rules = {f"{f.table}.{f.column}": _kept(policy, f) for f in fields}
    documents = [
        (name, lang, f"{name}.{lang}.html")
        for lang in ("ja", "en")
        for name in DOCUMENTS
        if name != "fideslang"
    ]
    consent = [
        p
        for pid, p in policy.purposes.items()
        if any(policy.purposes[a].consent_required for a in policy.tree.ancestors(pid))
    ]
    page = env.get_template("report.html.j2").render(
        policy=policy,
        today=today.isoformat(),
        picture=data_map(policy),
        fields=sorted(fields, key=lambda f: (f.table, f.column)),
        rules=rules,
        consent=consent,
        items=review_items(policy, today=today),
        findings=[
            *check_policy(policy, today=today),
            *register_findings(policy, today=today),
        ],
        trail=trail,
        incidents=None if incidents is None else open_incidents(incidents, today=today),
        documents=documents,
        extensions=EXTENSIONS,
        requests=_open_requests(policy, requests, today),
    )
    pages = {"index.html": page}
    for lang in ("ja", "en"):
        pages.update(
            render_documents(
                policy, lang=lang, fmt="html", fields=fields, records=records
            )
        )
    return pages


def _open_requests(
    policy: Policy, requests: Sequence[DataSubjectRequest], today: dt.date
) -> list[dict[str, str]]:
    """The open requests as report rows, earliest due first (no subjects)."""
    end = dt.datetime.combine(today, dt.time(23, 59, 59), tzinfo=policy.requests.zone)
    rows = []
    for r in sorted(requests, key=lambda r: (r.due_at, r.request_id)):
        if r.state.closed:
            continue
        info = r.kind_info
        rows.append(
            {
                "id": r.request_id,
                "kind": f"{info.label_en} ({info.article})",
                "state": r.state.value,
                "received": r.received_at.isoformat(),
                "due": r.due_at.isoformat(),
                "status": "overdue" if r.overdue(end) else "open",
            }
        )
    return rows


def open_incidents(
    register: IncidentRegister, *, today: dt.date
) -> list[dict[str, Any]]:
    """The incidents with something left to do, and what, as the report lists them.

    An incident is open while it is unclassified or one of its due items
    (:meth:`IncidentRegister.deadlines`) is not recorded as done. Each open item
    has its label, its deadline (``"promptly"`` when none) and a status:
    ``"overdue"`` when the deadline's day is before *today*, else ``"open"``.
    """
    out = []
    for incident in sorted(
        register.store.incidents(), key=lambda i: (i.detected_at, i.incident_id)
    ):
        iid = incident.incident_id
        try:
            due = register.deadlines(iid)
        except IncidentError:
            items = [
                {"label": "classify the incident", "due": "promptly", "status": "open"}
            ]
        else:
            done = register.done_items(iid)
            items = [
                {
                    "label": item.label_en,
                    "due": "promptly"
                    if item.due_at is None
                    else item.due_at.isoformat(),
                    "status": "overdue"
                    if item.due_at is not None and item.due_at.date() < today
                    else "open",
                }
                for item in due
                if item.key not in done
            ]
        if items:
            out.append(
                {
                    "id": iid,
                    "detected_at": incident.detected_at.isoformat(),
                    "kind": incident.kind.value,
                    "items": items,
                }
            )
    return out


def _kept(policy: Policy, record: FieldRecord) -> str:
    """How long a field is kept: its rules' periods and actions."""
    if record.retention is not None and record.retention not in policy.retention_rules:
        return f"unknown retention rule {record.retention!r}"
    field = FieldPolicy(
        category=record.category,
        purposes=record.purposes,
        prohibited=record.prohibited,
        retention=record.retention,
    )
    return ", ".join(
        f"{r.id}: {r.period} → {r.action.value}"
        for r in policy.retention_rules_for(field)
    )
