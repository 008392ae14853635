"""Rule packs: the law's parameters as versioned data with an effective date.

A pack is a directory under ``custdata/governance/packs/`` named by its id
(``appi-2024-04``). Its ``pack.toml`` holds the pack's identity::

    jurisdiction = "appi"
    effective_date = 2024-04-01
    title = "..."
    source = "..."                # the law and rules the figures come from

Every other ``*.toml`` file in the directory is one *topic* (``incident.toml``,
``provision.toml``...) read as a table: ``pack.topic("incident")``. A topic a
later pack does not restate is inherited from the pack it supersedes in the
same jurisdiction, so a pack only carries what changed.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import sys

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from custdata._errors import ConfigurationError


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


__all__ = ["RulePack", "rule_pack", "rule_packs"]


@attrs.frozen
class RulePack:
    """One jurisdiction's legal parameters as in force from a date.

    Attributes:
        pack_id: The pack's id, e.g. ``"appi-2024-04"``; decisions record it.
        jurisdiction: ``"appi"`` or ``"gdpr"``.
        effective_date: The first day the pack applies.
        title: A human-readable title.
        source: The law, rules and guidelines the figures come from.
    """

    pack_id: str
    jurisdiction: str
    effective_date: dt.date
    title: str
    source: str
    _topics: Mapping[str, Mapping[str, Any]] = attrs.field(repr=False, alias="topics")

    @property
    def topics(self) -> frozenset[str]:
        """The names of the topics this pack carries (its own and inherited)."""
        return frozenset(self._topics)

    def topic(self, name: str) -> Mapping[str, Any]:
        """The parameters of one topic (read-only).

        Raises:
            ConfigurationError: The pack has no such topic.
        """
        try:
            return self._topics[name]
        except KeyError:
            msg = f"rule pack {self.pack_id!r} has no topic {name!r}"
            raise ConfigurationError(msg) from None


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _read_toml(data: str, where: str) -> dict[str, Any]:
    try:
        parsed: dict[str, Any] = tomllib.loads(data)
    except tomllib.TOMLDecodeError as exc:
        msg = f"rule pack file {where} is not valid TOML: {exc}"
        raise ConfigurationError(msg) from None
    return parsed


@functools.cache
def rule_packs() -> tuple[RulePack, ...]:
    """Every rule pack shipped with custdata, by jurisdiction and date."""
    root = importlib.resources.files("custdata.governance") / "packs"
    raw: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith(("_", ".")):
            continue
        meta: dict[str, Any] | None = None
        topics: dict[str, Any] = {}
        for item in sorted(entry.iterdir(), key=lambda e: e.name):
            if not item.name.endswith(".toml"):
                continue
            where = f"{entry.name}/{item.name}"
            parsed = _read_toml(item.read_text(encoding="utf-8"), where)
            if item.name == "pack.toml":
                meta = parsed
            else:
                topics[item.name.removesuffix(".toml")] = parsed
        if meta is None:
            msg = f"rule pack {entry.name!r} has no pack.toml"
            raise ConfigurationError(msg)
        raw.append((entry.name, meta, topics))

    packs: list[RulePack] = []
    inherited: dict[str, dict[str, Any]] = {}
    ordered = sorted(raw, key=lambda r: (r[1].get("jurisdiction", ""), _date(r)))
    for pack_id, meta, own in ordered:
        jurisdiction = str(meta["jurisdiction"])
        topics = {**inherited.get(jurisdiction, {}), **own}
        inherited[jurisdiction] = topics
        packs.append(
            RulePack(
                pack_id=pack_id,
                jurisdiction=jurisdiction,
                effective_date=_date((pack_id, meta, own)),
                title=str(meta.get("title", pack_id)),
                source=str(meta.get("source", "")),
                topics=_freeze(topics),
            )
        )
    return tuple(packs)


def _date(row: tuple[str, dict[str, Any], dict[str, Any]]) -> dt.date:
    value = row[1].get("effective_date")
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        msg = f"rule pack {row[0]!r}: effective_date must be a TOML date"
        raise ConfigurationError(msg)
    return value


def rule_pack(
    jurisdiction: str, at: dt.date | None = None, *, pack_id: str | None = None
) -> RulePack:
    """The pack of *jurisdiction* in force on *at* (today when omitted).

    Args:
        jurisdiction: ``"appi"`` or ``"gdpr"``.
        at: The day the decision is about (e.g. when an incident was detected).
        pack_id: Ask for one pack by id instead (to replay an old decision).

    Raises:
        ConfigurationError: No pack of that jurisdiction was in force on *at*,
            or no pack has that id.
    """
    packs = [p for p in rule_packs() if p.jurisdiction == jurisdiction]
    if pack_id is not None:
        for pack in packs:
            if pack.pack_id == pack_id:
                return pack
        msg = f"no {jurisdiction} rule pack with id {pack_id!r}"
        raise ConfigurationError(msg)
    day = at if at is not None else dt.datetime.now(dt.timezone.utc).date()
    in_force = [p for p in packs if p.effective_date <= day]
    if not in_force:
        msg = f"no {jurisdiction} rule pack was in force on {day.isoformat()}"
        raise ConfigurationError(msg)
    return in_force[-1]
