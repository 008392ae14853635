"""The policy: the regulation as data (clauses 1–4).

A :class:`Policy` holds the organisation, its responsible persons, the purposes
of use, the roles that may claim them, the retention rules and the category
taxonomy. It is built in Python or loaded from a ``custdata.toml`` file with
:meth:`Policy.from_toml`, and is validated completely when it is built: every
problem found is reported at once as one :class:`~custdata.ConfigurationError`
naming the file, the key path and the reason.
"""

from __future__ import annotations

import datetime as dt
import sys

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from ._errors import ConfigurationError
from ._lifecycle import check_my_number_field, check_purpose_lifecycle
from ._purposes import AppiBasis, GdprBasis, Purpose, PurposeTree
from ._registers import Registers
from ._reporting import ReportingRoutes, read_reporting_routes
from ._requests import RequestSettings, read_request_settings
from ._retention import (
    Anchor,
    ExpiryAction,
    LegalHold,
    Period,
    RetentionRule,
    RetentionStatus,
    resolve_retention,
)
from ._taxonomy import Category, Identifiability, Taxonomy
from ._thirdparty import ThirdPartyPolicy, read_third_party
from ._util import str_tuple


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["FieldPolicy", "Policy", "ResponsiblePerson", "Role"]

_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class ResponsiblePerson:
    """A person responsible under the regulation's management structure (clause 4).

    Attributes:
        id: Identifier used by purposes and roles to refer to the person.
        name: The person's name as it appears in the regulation document.
        title: Their title (個人情報保護管理者, 部門責任者, ...).
        department: Their department.
        contact: A business contact point (a desk, not a customer address).
    """

    id: str
    name: str
    title: str
    department: str | None = None
    contact: str | None = None


@attrs.frozen(kw_only=True)
class Role:
    """A role handlers act in, and the purposes it may claim (R-PUR-5).

    A role granted a purpose may also claim every purpose below it.

    Attributes:
        id: The role's identifier (``support_agent``).
        purposes: The purposes granted to the role.
        responsible: The id of the responsible person who answers for it.
        description: What the role does.
    """

    id: str
    purposes: tuple[str, ...] = attrs.field(converter=str_tuple)
    responsible: str | None = None
    description: str = ""


@attrs.frozen(kw_only=True)
class FieldPolicy:
    """What the policy says about one stored field.

    Attributes:
        category: Its category key in the taxonomy.
        purposes: The purposes it may be used for (AIP).
        prohibited: Purposes it must never be used for (PIP).
        retention: A retention rule id overriding the purposes' own rules.
        on_violation: ``"raise"`` to raise on an out-of-purpose read, or
            ``"mask"`` to reveal only the display mask.
        mask: The mask kind; defaults to the category's.
    """

    category: str
    purposes: tuple[str, ...] = attrs.field(converter=str_tuple)
    prohibited: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    retention: str | None = None
    on_violation: Literal["raise", "mask"] = attrs.field(
        default="raise", validator=attrs.validators.in_(("raise", "mask"))
    )
    mask: str | None = None


class _Problems:
    """Collects every problem found while validating, then raises once."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.items: list[tuple[str, str]] = []

    def add(self, key_path: str, reason: str) -> None:
        self.items.append((key_path, reason))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        key_path, reason = self.items[0]
        if len(self.items) > 1:
            rest = "; ".join(f"{k}: {r}" for k, r in self.items[1:])
            reason = f"{reason} (and {len(self.items) - 1} more: {rest})"
        err = ConfigurationError(reason, path=self.source, key_path=key_path)
        err.problems = tuple(self.items)  # type: ignore[attr-defined]
        raise err


class _Reader:
    """Typed access to a TOML table that records problems with key paths."""

    def __init__(
        self, table: Mapping[str, Any], path: str, problems: _Problems
    ) -> None:
        self.table = table
        self.path = path
        self.problems = problems
        self.known: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(
        self,
        key: str,
        kind: type[_T] | tuple[type, ...],
        what: str,
        *,
        required: bool = True,
        default: Any = None,
    ) -> Any:
        self.known.add(key)
        if key not in self.table:
            if required:
                self.problems.add(self._key(key), f"missing required key ({what})")
            return default
        value = self.table[key]
        # bool is an int subclass; a flag is never a number and vice versa.
        bad_bool = isinstance(value, bool) and kind is int
        if not isinstance(value, kind) or bad_bool:
            self.problems.add(
                self._key(key), f"expected {what}, got {type(value).__name__}"
            )
            return default
        return value

    def text(self, key: str, *, required: bool = True) -> str | None:
        return self.get(key, str, "a string", required=required)  # type: ignore[no-any-return]

    def flag(self, key: str, *, default: bool = False) -> bool:
        return self.get(key, bool, "true or false", required=False, default=default)  # type: ignore[no-any-return]

    def date(self, key: str, *, required: bool = True) -> dt.date | None:
        value = self.get(key, dt.date, "a date (YYYY-MM-DD)", required=required)
        if isinstance(value, dt.datetime):
            self.problems.add(self._key(key), "expected a date, got a date-time")
            return None
        return value  # type: ignore[no-any-return]

    def strings(self, key: str, *, required: bool = True) -> tuple[str, ...]:
        value = self.get(key, list, "a list of strings", required=required, default=[])
        if not all(isinstance(v, str) for v in value):
            self.problems.add(self._key(key), "expected a list of strings")
            return ()
        return tuple(value)

    def enum(self, key: str, kind: type[_T], *, required: bool = True) -> _T | None:
        raw = self.text(key, required=required)
        if raw is None:
            return None
        try:
            return kind(raw)  # type: ignore[call-arg]
        except ValueError:
            choices = ", ".join(repr(m.value) for m in kind)  # type: ignore[attr-defined]
            self.problems.add(self._key(key), f"{raw!r} is not one of {choices}")
            return None

    def tables(self, key: str) -> dict[str, _Reader]:
        value = self.get(key, dict, "a table", required=False, default={})
        out: dict[str, _Reader] = {}
        for name, sub in value.items():
            sub_path = self._key(f"{key}.{name}")
            if not isinstance(sub, dict):
                self.problems.add(
                    sub_path, f"expected a table, got {type(sub).__name__}"
                )
                continue
            out[name] = _Reader(sub, sub_path, self.problems)
        return out

    def finish(self) -> None:
        for key in self.table:
            if key not in self.known:
                self.problems.add(self._key(key), "unknown key")


def _index(
    items: Iterable[_T], key: Callable[[_T], str], what: str, problems: _Problems
) -> dict[str, _T]:
    out: dict[str, _T] = {}
    for item in items:
        k = key(item)
        if k in out:
            problems.add(f"{what}.{k}", "duplicate id")
        out[k] = item
    return out


@attrs.frozen(kw_only=True, eq=False)
class Policy:
    """The customer-data management regulation as data.

    Build it in Python or with :meth:`from_toml`. It is validated when built.

    Attributes:
        organisation: The business the regulation belongs to.
        version: The policy's version, recorded with every access decision.
        effective_date: When this version took effect.
        next_review: When it must next be reviewed (R-GOV-2).
        cpo: The id of the chief privacy officer (個人情報保護管理者).
        persons: Responsible persons by id.
        purposes: Purposes of use by id.
        roles: Roles by id.
        retention_rules: Retention rules by id.
        taxonomy: The category taxonomy (built-in plus the policy's own).
        reporting: The incident reporting routes (``[reporting]``).
        registers: The notice, handler, safety-measure and prohibition
            registers (:class:`custdata.Registers`).
        requests: How data-subject requests are answered (``[requests]``).
        source: The file the policy was loaded from, if any.
        third_party: Contractors and joint use (the ``[third_party]`` table).

    Raises:
        ConfigurationError: With every problem found: unknown or duplicate ids,
            cycles in the purpose tree, roles claiming undeclared purposes,
            purposes without a retention rule, and so on.
    """

    organisation: str
    version: str
    effective_date: dt.date
    next_review: dt.date
    cpo: str | None = None
    persons: Mapping[str, ResponsiblePerson] = attrs.field(factory=dict)
    purposes: Mapping[str, Purpose] = attrs.field(factory=dict)
    roles: Mapping[str, Role] = attrs.field(factory=dict)
    retention_rules: Mapping[str, RetentionRule] = attrs.field(factory=dict)
    taxonomy: Taxonomy = attrs.field(factory=Taxonomy.default)
    reporting: ReportingRoutes = attrs.field(factory=ReportingRoutes)
    registers: Registers = attrs.field(factory=Registers)
    requests: RequestSettings = attrs.field(factory=RequestSettings)
    source: str | None = None
    third_party: ThirdPartyPolicy = attrs.field(factory=ThirdPartyPolicy)
    tree: PurposeTree = attrs.field(init=False, repr=False)
    #: The purposes that disclose to the data subject (``subject_disclosure``
    #: on them or above them).
    disclosure_purposes: frozenset[str] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        problems = _Problems(self.source)
        self._resolve_foreign_countries(problems)
        self._validate(problems)
        problems.raise_if_any()
        object.__setattr__(self, "tree", PurposeTree(self.purposes))
        object.__setattr__(
            self,
            "disclosure_purposes",
            frozenset(p for p in self.purposes if self._discloses(p)),
        )

    def _resolve_foreign_countries(self, problems: _Problems) -> None:
        """Fold the deprecated ``published_foreign_countries`` into the notice.

        The notice's ``foreign_countries`` is the one home of the foreign
        countries of handling; the old ``[third_party]`` key is read as an
        alias when the notice names none, and refused when the two differ.
        """
        alias = self.third_party.published_foreign_countries
        if alias is None:
            return
        notice = self.registers.notice
        if not notice.foreign_countries:
            notice = attrs.evolve(notice, foreign_countries=alias)
            registers = attrs.evolve(self.registers, notice=notice)
            object.__setattr__(self, "registers", registers)
        elif set(notice.foreign_countries) != set(alias):
            problems.add(
                "third_party.published_foreign_countries",
                "deprecated alias of notice.foreign_countries, and the two differ: "
                "keep notice.foreign_countries only",
            )

    @classmethod
    def build(
        cls,
        *,
        organisation: str,
        version: str,
        effective_date: dt.date,
        next_review: dt.date,
        persons: Sequence[ResponsiblePerson] = (),
        purposes: Sequence[Purpose] = (),
        roles: Sequence[Role] = (),
        retention_rules: Sequence[RetentionRule] = (),
        categories: Sequence[Category] = (),
        cpo: str | None = None,
        third_party: ThirdPartyPolicy | None = None,
        registers: Registers | None = None,
        requests: RequestSettings | None = None,
    ) -> Policy:
        """Build a policy from sequences, checking ids are unique.

        Raises:
            ConfigurationError: On a duplicate id or any other invalid part.
        """
        problems = _Problems(None)
        by_person = _index(persons, lambda p: p.id, "persons", problems)
        by_purpose = _index(purposes, lambda p: p.id, "purposes", problems)
        by_role = _index(roles, lambda r: r.id, "roles", problems)
        by_rule = _index(retention_rules, lambda r: r.id, "retention", problems)
        problems.raise_if_any()
        return cls(
            organisation=organisation,
            version=version,
            effective_date=effective_date,
            next_review=next_review,
            cpo=cpo,
            persons=by_person,
            purposes=by_purpose,
            roles=by_role,
            retention_rules=by_rule,
            taxonomy=Taxonomy.default().with_categories(*categories),
            third_party=third_party or ThirdPartyPolicy(),
            registers=registers or Registers(),
            requests=requests or RequestSettings(),
        )

    # -- loading ---------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path) -> Policy:
        """Load and validate a policy from a ``custdata.toml`` file.

        Raises:
            ConfigurationError: If the file cannot be read, is not valid TOML, or
                describes an invalid policy; the error names the file and key path.
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the policy file ({exc.strerror})", path=path
            ) from None
        except UnicodeDecodeError:
            raise ConfigurationError(
                "the policy file is not UTF-8", path=path
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"not valid TOML: {exc}", path=path) from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Policy:
        """Build and validate a policy from the parsed contents of a policy file.

        The layout is documented in the "policy file" page of the docs.

        Raises:
            ConfigurationError: Naming *source*, the key path and the reason.
        """
        problems = _Problems(source)
        root = _Reader(data, "", problems)
        meta_table = root.get("policy", dict, "a [policy] table", default={})
        meta = _Reader(meta_table, "policy", problems)
        organisation = meta.text("organisation") or ""
        version = meta.text("version") or ""
        effective = meta.date("effective_date")
        review = meta.date("next_review")
        cpo = meta.text("cpo", required=False)
        meta.finish()

        persons = []
        for pid, r in root.tables("persons").items():
            persons.append(
                ResponsiblePerson(
                    id=pid,
                    name=r.text("name") or "",
                    title=r.text("title") or "",
                    department=r.text("department", required=False),
                    contact=r.text("contact", required=False),
                )
            )
            r.finish()

        rules = []
        for rid, r in root.tables("retention").items():
            rule = cls._read_rule(rid, r)
            r.finish()
            if rule is not None:
                rules.append(rule)

        purposes = []
        for pid, r in root.tables("purposes").items():
            effective_from = r.date("effective_from", required=False)
            version_no = r.get(
                "version", int, "a whole number", required=False, default=1
            )
            purposes.append(
                Purpose(
                    id=pid,
                    parent=r.text("parent", required=False),
                    text_ja=r.text("text_ja") or "",
                    text_en=r.text("text_en") or "",
                    appi_basis=r.enum("appi_basis", AppiBasis, required=False)
                    or AppiBasis.PUBLISHED_PURPOSE,
                    gdpr_basis=r.enum("gdpr_basis", GdprBasis, required=False),
                    consent_required=r.flag("consent_required"),
                    owner=r.text("owner", required=False),
                    version=version_no,
                    effective_from=effective_from,
                    retention=r.text("retention", required=False),
                    categories=r.strings("categories", required=False),
                    may_erase=r.flag("may_erase"),
                    subject_disclosure=r.flag("subject_disclosure"),
                    retired_on=r.date("retired_on", required=False),
                    my_number_act=r.flag("my_number_act"),
                    next_review=r.date("next_review", required=False),
                )
            )
            r.finish()

        roles = []
        for rid, r in root.tables("roles").items():
            roles.append(
                Role(
                    id=rid,
                    purposes=r.strings("purposes"),
                    responsible=r.text("responsible", required=False),
                    description=r.text("description", required=False) or "",
                )
            )
            r.finish()

        categories = []
        for key, r in root.tables("categories").items():
            ident = r.enum("identifiability", Identifiability)
            try:
                categories.append(
                    Category(
                        key=key,
                        label_ja=r.text("label_ja") or "",
                        label_en=r.text("label_en") or "",
                        identifiability=ident or Identifiability.ATTRIBUTE,
                        fideslang=r.text("fideslang", required=False) or "user",
                        financial_damage_risk=r.flag("financial_damage_risk"),
                        special_care=r.flag("special_care"),
                        may_contain_sensitive=r.flag("may_contain_sensitive"),
                        mask=r.text("mask", required=False) or "default",
                    )
                )
            except ConfigurationError as exc:
                problems.add(f"categories.{key}", exc.reason)
            r.finish()
        third_party = read_third_party(root)
        reporting = read_reporting_routes(
            root.get("reporting", dict, "a [reporting] table", required=False) or {},
            problems.add,
        )
        requests = read_request_settings(
            root.get("requests", dict, "a [requests] table", required=False) or {},
            problems.add,
        )
        registers = Registers.read(root)
        if (
            third_party.published_foreign_countries is not None
            and isinstance(data.get("notice"), dict)
            and "foreign_countries" in data["notice"]
            and set(third_party.published_foreign_countries)
            != set(registers.notice.foreign_countries)
        ):
            problems.add(
                "third_party.published_foreign_countries",
                "deprecated alias of notice.foreign_countries, and the two differ: "
                "keep notice.foreign_countries only",
            )
        root.finish()
        problems.raise_if_any()

        taxonomy = Taxonomy.default()
        try:
            taxonomy = taxonomy.with_categories(*categories)
        except ConfigurationError as exc:
            problems.add(exc.key_path or "categories", exc.reason)
        problems.raise_if_any()
        assert effective is not None  # noqa: S101 - guaranteed by raise_if_any
        assert review is not None  # noqa: S101
        return cls(
            organisation=organisation,
            version=version,
            effective_date=effective,
            next_review=review,
            cpo=cpo,
            persons={p.id: p for p in persons},
            purposes={p.id: p for p in purposes},
            roles={r.id: r for r in roles},
            retention_rules={r.id: r for r in rules},
            taxonomy=taxonomy,
            reporting=reporting,
            registers=registers,
            requests=requests,
            source=source,
            third_party=third_party,
        )

    @staticmethod
    def _read_rule(rid: str, r: _Reader) -> RetentionRule | None:
        period_text = r.text("period")
        minimum_text = r.text("statutory_minimum", required=False)
        anchor = r.enum("anchor", Anchor)
        action = r.enum("action", ExpiryAction)
        custom = r.text("custom_anchor", required=False)
        basis = r.text("legal_basis", required=False) or ""
        next_review = r.date("next_review", required=False)
        periods: list[Period | None] = []
        for key, text in (("period", period_text), ("statutory_minimum", minimum_text)):
            if text is None:
                periods.append(None)
                continue
            try:
                periods.append(Period.parse(text))
            except ValueError as exc:
                r.problems.add(f"{r.path}.{key}", str(exc))
                return None
        if anchor is Anchor.CUSTOM and not custom:
            r.problems.add(
                f"{r.path}.custom_anchor", "required when anchor is 'custom'"
            )
            return None
        if periods[0] is None or anchor is None or action is None:
            return None
        return RetentionRule(
            id=rid,
            period=periods[0],
            anchor=anchor,
            custom_anchor=custom,
            action=action,
            legal_basis=basis,
            statutory_minimum=periods[1],
            next_review=next_review,
        )

    # -- validation ------------------------------------------------------------

    def _validate(self, problems: _Problems) -> None:
        if not self.organisation.strip():
            problems.add("policy.organisation", "must not be empty")
        if not self.version.strip():
            problems.add("policy.version", "must not be empty")
        if self.next_review < self.effective_date:
            problems.add("policy.next_review", "is before the effective date")
        if self.cpo is not None and self.cpo not in self.persons:
            problems.add("policy.cpo", f"unknown person {self.cpo!r}")
        for pid, p in self.purposes.items():
            where = f"purposes.{pid}"
            if p.parent is not None and p.parent not in self.purposes:
                problems.add(f"{where}.parent", f"unknown purpose {p.parent!r}")
            if p.owner is not None and p.owner not in self.persons:
                problems.add(f"{where}.owner", f"unknown person {p.owner!r}")
            if p.retention is not None and p.retention not in self.retention_rules:
                problems.add(
                    f"{where}.retention", f"unknown retention rule {p.retention!r}"
                )
            for cat in p.categories:
                if cat not in self.taxonomy:
                    problems.add(f"{where}.categories", f"unknown category {cat!r}")
            check_purpose_lifecycle(p, problems.add)
        cyclic = self._cyclic_purposes()
        for pid in cyclic:
            problems.add(
                f"purposes.{pid}.parent", "the purpose tree has a cycle through here"
            )
        if not cyclic:
            for pid in self.purposes:
                if self._rule_id_for_purpose(pid) is None:
                    problems.add(
                        f"purposes.{pid}.retention",
                        "no retention rule: set one on the purpose or an ancestor",
                    )
        for rid, role in self.roles.items():
            for claimed in role.purposes:
                if claimed not in self.purposes:
                    problems.add(
                        f"roles.{rid}.purposes", f"undeclared purpose {claimed!r}"
                    )
            if role.responsible is not None and role.responsible not in self.persons:
                problems.add(
                    f"roles.{rid}.responsible", f"unknown person {role.responsible!r}"
                )
        self.third_party.validate(self, problems)
        self.registers.validate(self, problems.add)

    def _cyclic_purposes(self) -> list[str]:
        cyclic = []
        for start in self.purposes:
            seen = {start}
            parent = self.purposes[start].parent
            while parent is not None and parent in self.purposes:
                if parent in seen:
                    cyclic.append(start)
                    break
                seen.add(parent)
                parent = self.purposes[parent].parent
        return cyclic

    def _discloses(self, purpose_id: str) -> bool:
        """Whether the purpose or one above it says ``subject_disclosure``."""
        current: str | None = purpose_id
        seen: set[str] = set()
        while current is not None and current in self.purposes and current not in seen:
            seen.add(current)
            if self.purposes[current].subject_disclosure:
                return True
            current = self.purposes[current].parent
        return False

    def _rule_id_for_purpose(self, purpose_id: str) -> str | None:
        current: str | None = purpose_id
        # An unknown parent is reported on its own; the chain stops there.
        while current is not None and current in self.purposes:
            purpose = self.purposes[current]
            if purpose.retention is not None:
                return purpose.retention
            current = purpose.parent
        return None

    # -- questions the other layers ask ------------------------------------------

    def validate_field(self, field: FieldPolicy, *, where: str) -> None:
        """Check a field declaration against the policy.

        Args:
            field: The field's declaration.
            where: Where it was declared (``customers.email``), for the message.

        Raises:
            ConfigurationError: On an unknown category, purpose or retention rule,
                or a field with no purposes.
        """
        problems = _Problems(self.source)
        if field.category not in self.taxonomy:
            problems.add(f"{where}.category", f"unknown category {field.category!r}")
        if not field.purposes:
            problems.add(
                f"{where}.purposes", "a customer-data field needs at least one purpose"
            )
        for kind, ids in (
            ("purposes", field.purposes),
            ("prohibited", field.prohibited),
        ):
            for pid in ids:
                if pid not in self.purposes:
                    problems.add(
                        f"{where}.{kind}",
                        f"purpose {pid!r} is not declared in the policy",
                    )
        if field.retention is not None and field.retention not in self.retention_rules:
            problems.add(
                f"{where}.retention", f"unknown retention rule {field.retention!r}"
            )
        check_my_number_field(self, field, where, problems.add)
        problems.raise_if_any()

    def permits(self, field: FieldPolicy, purpose_id: str) -> bool:
        """Return whether *purpose_id* is a compliant purpose for *field*.

        A ``subject_disclosure`` purpose is compliant with every field that
        has purposes at all: the data subject may see all of its data.
        """
        if purpose_id in self.disclosure_purposes:
            return bool(field.purposes)
        return self.tree.permits(purpose_id, field.purposes, field.prohibited)

    def may_claim(self, role_id: str, purpose_id: str) -> bool:
        """Return whether a role may claim a purpose (a granted one or below it)."""
        role = self.roles.get(role_id)
        if role is None or purpose_id not in self.tree:
            return False
        ups = self.tree.ancestors(purpose_id)
        return any(granted in ups for granted in role.purposes)

    def needs_consent(self, purpose_id: str) -> bool:
        """Return whether *purpose_id*, or a purpose above it, says ``consent_required``."""
        if purpose_id not in self.tree:
            return False
        return any(
            self.purposes[p].consent_required for p in self.tree.ancestors(purpose_id)
        )

    def may_erase(self, purpose_id: str) -> bool:
        """Return whether acting for *purpose_id* may delete customer records.

        It may when the purpose, or a purpose above it, says ``may_erase``.
        """
        if purpose_id not in self.tree:
            return False
        return any(self.purposes[p].may_erase for p in self.tree.ancestors(purpose_id))

    def retention_rule_for_use(
        self, field: FieldPolicy, purpose_id: str
    ) -> RetentionRule | None:
        """The retention rule that bounds using *field* for *purpose_id*.

        The field's own override, else the purpose's rule (inherited from the
        nearest ancestor purpose); ``None`` for an unknown purpose.
        """
        if field.retention is not None:
            return self.retention_rules[field.retention]
        rid = self._rule_id_for_purpose(purpose_id)
        return None if rid is None else self.retention_rules[rid]

    def retention_rules_for(self, field: FieldPolicy) -> tuple[RetentionRule, ...]:
        """Return the retention rules that govern *field*.

        That is the field's own override, or else one rule per purpose that
        justifies it (inherited from the nearest ancestor purpose).
        """
        if field.retention is not None:
            return (self.retention_rules[field.retention],)
        rule_ids = {
            rid
            for pid in field.purposes
            if pid in self.purposes
            and (rid := self._rule_id_for_purpose(pid)) is not None
        }
        return tuple(self.retention_rules[rid] for rid in sorted(rule_ids))

    def retention_status(
        self,
        field: FieldPolicy,
        anchors: Mapping[str, dt.datetime],
        *,
        now: dt.datetime,
        holds: Sequence[LegalHold] = (),
    ) -> RetentionStatus:
        """Return the retention status of a value of *field* at *now*.

        See :func:`custdata.resolve_retention` for the rule.
        """
        return resolve_retention(
            self.retention_rules_for(field), anchors, now=now, holds=holds
        )

    def expires_at(
        self,
        field: FieldPolicy,
        anchors: Mapping[str, dt.datetime],
        *,
        now: dt.datetime,
        holds: Sequence[LegalHold] = (),
    ) -> dt.datetime | None:
        """Return when a value of *field* expires, or ``None`` if it does not yet.

        A value expires only when every purpose that justifies it has expired and
        no statutory minimum applies; while a legal hold is in force the value
        does not expire (``None``).
        """
        status = self.retention_status(field, anchors, now=now, holds=holds)
        if status.held:
            return None
        return status.expires_at

    def __repr__(self) -> str:
        return (
            f"<Policy {self.organisation!r} v{self.version} "
            f"purposes={len(self.purposes)} roles={len(self.roles)}>"
        )
