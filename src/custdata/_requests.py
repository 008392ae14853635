"""The policy's ``[requests]`` table: how the business answers data-subject requests.

The APPI asks a business to answer requests "without delay" (遅滞なく, 法32条2項
to 35条) without naming a number of days; the company sets its own target
here, and the request workflow (:mod:`custdata.governance`) dates each APPI
request by it. GDPR deadlines come from the rule pack, not from here::

    [requests]
    sla_days = 14                      # APPI target: days after receipt (the day itself not counted)
    due_soon_days = 3                  # `custdata check` warns this many days ahead
    time_zone = "Asia/Tokyo"           # the calendar deadlines are counted in
    fee_yen = 1000                     # fee for a purpose notice or a disclosure (法38条)
    desk = "お客様相談窓口 privacy@example.co.jp"
    verification_methods = ["login", "id_document", "mail_back"]

The request procedure and the fee as the notice states them stay in
``[notice]`` (``request_procedure_ja`` ...); this table holds what the workflow
computes with.
"""

from __future__ import annotations

import zoneinfo

from collections.abc import Callable, Mapping
from typing import Any

import attrs


__all__ = ["RequestSettings", "read_request_settings"]


@attrs.frozen(kw_only=True)
class RequestSettings:
    """The policy's settings for data-subject requests (``[requests]``).

    Attributes:
        sla_days: The business's target for answering an APPI request, in
            calendar days after the day of receipt (遅滞なく has no number).
        due_soon_days: How many days before its due date an open request is
            reported as due soon (``custdata check`` REQ002).
        time_zone: The IANA time zone the calendar deadlines are counted in.
        fee_yen: The fee for a notice of purposes or a disclosure (法38条1項),
            or ``None`` when none is charged.
        desk: Where requests are received (a desk, never a person's address).
        verification_methods: The identity verification methods the business
            accepts; empty accepts any method named.
    """

    sla_days: int = 14
    due_soon_days: int = 3
    time_zone: str = "Asia/Tokyo"
    fee_yen: int | None = None
    desk: str = ""
    verification_methods: tuple[str, ...] = ()

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The time zone deadlines are counted in."""
        return zoneinfo.ZoneInfo(self.time_zone)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_request_settings(
    data: Mapping[str, Any], problem: Callable[[str, str], None]
) -> RequestSettings:
    """Read the policy's ``[requests]`` table, reporting each problem found.

    Args:
        data: The table's contents (empty when the policy has none).
        problem: Called with a key path and a reason for each problem.
    """
    defaults = RequestSettings()
    known = {
        "sla_days",
        "due_soon_days",
        "time_zone",
        "fee_yen",
        "desk",
        "verification_methods",
    }
    for key in data:
        if key not in known:
            problem(f"requests.{key}", "unknown key")
    values: dict[str, Any] = {}
    for key in ("sla_days", "due_soon_days", "fee_yen"):
        if key in data:
            if _count(data[key]):
                values[key] = data[key]
            else:
                problem(f"requests.{key}", "expected a whole number >= 0")
    if values.get("sla_days") == 0:
        problem("requests.sla_days", "expected a whole number of days >= 1")
        del values["sla_days"]
    zone = data.get("time_zone", defaults.time_zone)
    try:
        zoneinfo.ZoneInfo(str(zone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problem("requests.time_zone", f"{zone!r} is not an IANA time zone")
    else:
        if not isinstance(zone, str):
            problem("requests.time_zone", "expected a string")
        else:
            values["time_zone"] = zone
    desk = data.get("desk", "")
    if isinstance(desk, str):
        values["desk"] = desk
    else:
        problem("requests.desk", "expected a string")
    methods = data.get("verification_methods", [])
    if isinstance(methods, list) and all(isinstance(m, str) and m for m in methods):
        values["verification_methods"] = tuple(methods)
    else:
        problem("requests.verification_methods", "expected a list of strings")
    return RequestSettings(**values)
