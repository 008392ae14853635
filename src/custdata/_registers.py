"""The policy's registers: notice, handlers, safety measures and prohibitions.

These are the parts of the regulation a company decides and reviews, kept in
the policy file beside the purposes (R-GOV-1, R-GOV-3, R-GOV-5, R-SEC-6,
R-PUB-1):

``[notice]``
    The 公表事項 that are not purposes: address, representative, the request
    procedure and its fee, the complaint desk, the accredited organisation and
    the foreign countries where data is handled (:class:`Notice`).
``[handlers.<actor id>]``
    The registered handlers (取扱者): roles, effective dates and training date
    (:class:`Handler`). With ``[governance] strict_handlers = true`` an actor
    that is not registered, not yet or no longer effective, or whose training
    has expired is refused (:class:`HandlerRegister`).
``[measures.<id>]``
    The safety-measure register by the guideline's five categories
    (:class:`SafetyMeasure`, :class:`MeasureCategory`).
``[prohibitions.<id>]``
    Rules such as "special-care data × marketing → fail", evaluated by
    ``custdata check`` (:class:`Prohibition`).

Everything here is plain data; :class:`custdata.Policy` parses and validates it.
"""

from __future__ import annotations

import datetime as dt
import enum

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs

from ._errors import ConfigurationError
from ._retention import Period
from ._util import str_tuple


if TYPE_CHECKING:  # the policy module imports this one: types only
    from ._policy import Policy, _Reader


__all__ = [
    "Handler",
    "HandlerRegister",
    "MeasureCategory",
    "Notice",
    "Prohibition",
    "Registers",
    "SafetyMeasure",
]


@attrs.frozen(kw_only=True)
class Notice:
    """The 公表事項 of the privacy notice that are not purposes (APPI Art. 32(1)).

    Attributes:
        address: The business's address.
        representative: The representative's name (for a corporation).
        request_procedure_ja: How to make a request (disclosure, correction,
            stop of use...), in Japanese.
        request_procedure_en: The same in English.
        fee_ja: The fee for a disclosure or purpose notice, in Japanese.
        fee_en: The same in English.
        complaint_desk: Where complaints go (a desk, not a customer address).
        accredited_organisation: The accredited personal-information-protection
            organisation the business belongs to, if any.
        foreign_countries: Countries where personal data is handled (GL 10-7).
        published_url: Where the notice is published.
        next_review: When the published notice must next be reviewed.
    """

    address: str = ""
    representative: str = ""
    request_procedure_ja: str = ""
    request_procedure_en: str = ""
    fee_ja: str = ""
    fee_en: str = ""
    complaint_desk: str = ""
    accredited_organisation: str | None = None
    foreign_countries: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    published_url: str | None = None
    next_review: dt.date | None = None


@attrs.frozen(kw_only=True)
class Handler:
    """A registered handler (取扱者): an actor id and the roles it acts in.

    Attributes:
        actor: The actor id used with :func:`custdata.acting_as`.
        roles: The roles the handler may act in.
        effective_from: The first day the registration is in force.
        effective_until: The last day it is in force, if it ends.
        trained_on: The date of the handler's last privacy training.
        next_review: When the handler's role grants must next be reviewed.
    """

    actor: str
    roles: tuple[str, ...] = attrs.field(converter=str_tuple)
    effective_from: dt.date
    effective_until: dt.date | None = None
    trained_on: dt.date | None = None
    next_review: dt.date | None = None

    def training_expires(self, valid_for: Period | None) -> dt.date | None:
        """Return the last day the handler's training is valid, or ``None``.

        ``None`` means training never expires (no *valid_for*) or, with a
        *valid_for*, that the handler has no training date at all.
        """
        if valid_for is None or self.trained_on is None:
            return None
        start = dt.datetime.combine(self.trained_on, dt.time(), dt.timezone.utc)
        return valid_for.after(start).date()


@attrs.frozen(kw_only=True)
class HandlerRegister:
    """The handler register and how strictly it is enforced (R-GOV-1, R-GOV-3).

    Attributes:
        handlers: Handlers by actor id.
        strict: Refuse any actor that is not a registered, effective handler
            acting in one of its roles with valid training.
        training_valid_for: How long training stays valid (``P1Y``); ``None``
            means training dates are recorded but never expire.
    """

    handlers: Mapping[str, Handler] = attrs.field(factory=dict)
    strict: bool = False
    training_valid_for: Period | None = None

    def refusal(self, actor: str, role: str | None, *, today: dt.date) -> str | None:
        """Return why *actor* acting as *role* is refused on *today*, or ``None``.

        The reason names the actor and role (ids a user typed), never a value.
        Outside strict mode nothing is refused.
        """
        if not self.strict:
            return None
        handler = self.handlers.get(actor)
        if handler is None:
            return f"actor {actor!r} is not a registered handler"
        if today < handler.effective_from or (
            handler.effective_until is not None and today > handler.effective_until
        ):
            return f"handler {actor!r} is not in force on {today.isoformat()}"
        if role not in handler.roles:
            return f"handler {actor!r} is not registered for role {role!r}"
        if self.training_valid_for is not None:
            expires = handler.training_expires(self.training_valid_for)
            if expires is None or today > expires:
                return f"handler {actor!r} has no valid training on {today.isoformat()}"
        return None


class MeasureCategory(str, enum.Enum):
    """The five categories of safety measures of the PPC guidelines (GL 10-3…10-7)."""

    #: 組織的安全管理措置 (10-3).
    ORGANISATIONAL = "organisational"
    #: 人的安全管理措置 (10-4).
    HUMAN = "human"
    #: 物理的安全管理措置 (10-5).
    PHYSICAL = "physical"
    #: 技術的安全管理措置 (10-6).
    TECHNICAL = "technical"
    #: 外的環境の把握 (10-7).
    EXTERNAL_ENVIRONMENT = "external_environment"


@attrs.frozen(kw_only=True)
class SafetyMeasure:
    """One entry of the safety-measure register (R-SEC-6).

    Attributes:
        id: The measure's id.
        category: Its guideline category.
        text_ja: What is done, as published, in Japanese.
        text_en: The same in English.
        owner: The responsible person's id.
        evidence: Where the evidence is kept (a document or a link).
        next_review: When the measure must next be reviewed.
        generated: Whether custdata generated the entry from library state
            rather than reading it from the policy.
    """

    id: str
    category: MeasureCategory
    text_ja: str
    text_en: str
    owner: str | None = None
    evidence: str | None = None
    next_review: dt.date | None = None
    generated: bool = False


@attrs.frozen(kw_only=True)
class Prohibition:
    """A prohibition rule evaluated over the policy in CI (R-GOV-5).

    A purpose violates the rule when it, or a purpose above it, is one of
    *purposes*, and it uses a category in *categories* or one below it.

    Attributes:
        id: The rule's id.
        categories: Category keys (a key covers the categories below it).
        purposes: Purpose ids (a purpose covers the purposes below it).
        reason: Why the combination is forbidden, as printed by ``check``.
    """

    id: str
    categories: tuple[str, ...] = attrs.field(converter=str_tuple)
    purposes: tuple[str, ...] = attrs.field(converter=str_tuple)
    reason: str = ""

    def violations(self, policy: Policy) -> list[tuple[str, str]]:
        """Return the (purpose id, category key) pairs of *policy* that break the rule."""
        out: list[tuple[str, str]] = []
        for pid, purpose in sorted(policy.purposes.items()):
            if not set(policy.tree.ancestors(pid)) & set(self.purposes):
                continue
            out.extend(
                (pid, key)
                for key in purpose.categories
                if any(
                    _covers(rule_key, key) or _covers(key, rule_key)
                    for rule_key in self.categories
                )
            )
        return out


def _covers(upper: str, key: str) -> bool:
    return key == upper or key.startswith(f"{upper}.")


@attrs.frozen(kw_only=True)
class Registers:
    """The registers of a policy.

    Attributes:
        notice: The 公表事項 that are not purposes.
        handlers: The handler register.
        measures: Safety measures by id, as declared in the policy.
        prohibitions: Prohibition rules by id.
        data_uses: The fideslang data use of each purpose (``[fideslang.data_uses]``);
            a purpose without one takes its parent's, else ``essential.service``.
    """

    notice: Notice = attrs.field(factory=Notice)
    handlers: HandlerRegister = attrs.field(factory=HandlerRegister)
    measures: Mapping[str, SafetyMeasure] = attrs.field(factory=dict)
    prohibitions: Mapping[str, Prohibition] = attrs.field(factory=dict)
    data_uses: Mapping[str, str] = attrs.field(factory=dict)

    def validate(self, policy: Policy, add: Callable[[str, str], None]) -> None:
        """Report references to unknown roles, persons, purposes and categories."""
        for aid, handler in self.handlers.handlers.items():
            for role in handler.roles:
                if role not in policy.roles:
                    add(f"handlers.{aid}.roles", f"unknown role {role!r}")
            if (
                handler.effective_until is not None
                and handler.effective_until < handler.effective_from
            ):
                add(f"handlers.{aid}.effective_until", "is before effective_from")
        for mid, measure in self.measures.items():
            if measure.owner is not None and measure.owner not in policy.persons:
                add(f"measures.{mid}.owner", f"unknown person {measure.owner!r}")
        for rid, rule in self.prohibitions.items():
            for key in rule.categories:
                if key not in policy.taxonomy:
                    add(f"prohibitions.{rid}.categories", f"unknown category {key!r}")
            for pid in rule.purposes:
                if pid not in policy.purposes:
                    add(f"prohibitions.{rid}.purposes", f"unknown purpose {pid!r}")
        for pid in self.data_uses:
            if pid not in policy.purposes:
                add(f"fideslang.data_uses.{pid}", f"unknown purpose {pid!r}")

    @classmethod
    def read(cls, root: _Reader) -> Registers:
        """Read the registers from the policy file's top-level tables."""
        r = _sub(root, "notice")
        notice = Notice(
            address=r.text("address", required=False) or "",
            representative=r.text("representative", required=False) or "",
            request_procedure_ja=r.text("request_procedure_ja", required=False) or "",
            request_procedure_en=r.text("request_procedure_en", required=False) or "",
            fee_ja=r.text("fee_ja", required=False) or "",
            fee_en=r.text("fee_en", required=False) or "",
            complaint_desk=r.text("complaint_desk", required=False) or "",
            accredited_organisation=r.text("accredited_organisation", required=False),
            foreign_countries=r.strings("foreign_countries", required=False),
            published_url=r.text("published_url", required=False),
            next_review=r.date("next_review", required=False),
        )
        r.finish()

        g = _sub(root, "governance")
        strict = g.flag("strict_handlers")
        valid_for: Period | None = None
        valid_text = g.text("training_valid_for", required=False)
        if valid_text is not None:
            try:
                valid_for = Period.parse(valid_text)
            except (ValueError, ConfigurationError) as exc:
                g.problems.add("governance.training_valid_for", str(exc))
        g.finish()

        handlers = {}
        for aid, r in root.tables("handlers").items():
            handlers[aid] = Handler(
                actor=aid,
                roles=r.strings("roles"),
                effective_from=r.date("effective_from") or dt.date.min,
                effective_until=r.date("effective_until", required=False),
                trained_on=r.date("trained_on", required=False),
                next_review=r.date("next_review", required=False),
            )
            r.finish()

        measures = {}
        for mid, r in root.tables("measures").items():
            category = r.enum("category", MeasureCategory)
            measures[mid] = SafetyMeasure(
                id=mid,
                category=category or MeasureCategory.ORGANISATIONAL,
                text_ja=r.text("text_ja") or "",
                text_en=r.text("text_en") or "",
                owner=r.text("owner", required=False),
                evidence=r.text("evidence", required=False),
                next_review=r.date("next_review", required=False),
            )
            r.finish()

        prohibitions = {}
        for rid, r in root.tables("prohibitions").items():
            prohibitions[rid] = Prohibition(
                id=rid,
                categories=r.strings("categories"),
                purposes=r.strings("purposes"),
                reason=r.text("reason", required=False) or "",
            )
            r.finish()

        fides = _sub(root, "fideslang")
        data_uses: dict[str, str] = {}
        for pid, use in fides.get(
            "data_uses", dict, "a table", required=False, default={}
        ).items():
            if isinstance(use, str):
                data_uses[pid] = use
            else:
                fides.problems.add(f"fideslang.data_uses.{pid}", "expected a string")
        fides.finish()

        return cls(
            notice=notice,
            handlers=HandlerRegister(
                handlers=handlers, strict=strict, training_valid_for=valid_for
            ),
            measures=measures,
            prohibitions=prohibitions,
            data_uses=data_uses,
        )


def _sub(root: _Reader, key: str) -> _Reader:
    """The reader of a single top-level table *key* (which must be a table)."""
    value = root.get(key, dict, "a table", required=False, default={})
    return type(root)(value, key, root.problems)
