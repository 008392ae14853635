"""Rule packs: the shipped legal parameters, chosen by the date a decision is about."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

import custdata

from custdata.governance import rule_pack, rule_packs


def test_each_jurisdiction_has_a_pack_in_force_today() -> None:
    assert rule_pack("appi").jurisdiction == "appi"
    assert rule_pack("gdpr").pack_id == "gdpr-2018-05"


def test_the_pack_in_force_is_chosen_by_the_date() -> None:
    assert rule_pack("appi", dt.date(2023, 3, 31)).pack_id == "appi-2022-04"
    assert rule_pack("appi", dt.date(2024, 4, 1)).pack_id == "appi-2024-04"


def test_a_day_before_any_pack_is_a_configuration_error() -> None:
    with pytest.raises(custdata.ConfigurationError, match="in force on 2020-01-01"):
        rule_pack("appi", dt.date(2020, 1, 1))


def test_an_old_pack_is_found_by_its_id() -> None:
    assert rule_pack("appi", pack_id="appi-2022-04").effective_date == dt.date(
        2022, 4, 1
    )
    with pytest.raises(custdata.ConfigurationError, match="no appi rule pack"):
        rule_pack("appi", pack_id="appi-1999-01")


def test_an_unknown_topic_is_a_configuration_error() -> None:
    with pytest.raises(custdata.ConfigurationError, match="no topic 'nonsense'"):
        rule_pack("appi").topic("nonsense")


def test_packs_are_sorted_and_unique() -> None:
    ids = [p.pack_id for p in rule_packs()]
    assert len(ids) == len(set(ids))
    for earlier, later in zip(rule_packs(), rule_packs()[1:], strict=False):
        if earlier.jurisdiction == later.jurisdiction:
            assert earlier.effective_date < later.effective_date


def test_governance_does_not_import_sqlalchemy() -> None:
    code = "import sys, custdata.governance; print('sqlalchemy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
