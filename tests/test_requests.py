"""Data-subject requests (issue 15, point 2): the record, the state machine and its deadlines.

Every test runs on a frozen clock: the times are passed in, never read.
"""

from __future__ import annotations

import datetime as dt

from zoneinfo import ZoneInfo

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

import custdata

from custdata import (
    Policy,
    RequestError,
    RequestSettings,
    RequestTransitionError,
    UnknownRequestError,
)
from custdata.governance import (
    DataSubjectRequest,
    InMemoryRequestStore,
    RequestAction,
    RequestDesk,
    RequestState,
    request_due_at,
    request_findings,
    request_kind,
    request_kinds,
    rule_pack,
)


JST = ZoneInfo("Asia/Tokyo")
CANARY = "canary-subject@example.jp"
APPI_KINDS = {
    "appi_purpose_notice": "法32条2項",
    "appi_disclosure": "法33条1項",
    "appi_provision_records": "法33条5項",
    "appi_correction": "法34条1項",
    "appi_stop_use": "法35条1項・5項",
    "appi_stop_provision": "法35条3項・5項",
}
GDPR_KINDS = {
    "gdpr_access": "Art. 15",
    "gdpr_rectification": "Art. 16",
    "gdpr_erasure": "Art. 17",
    "gdpr_restriction": "Art. 18",
    "gdpr_portability": "Art. 20",
    "gdpr_objection": "Art. 21",
}


def jst(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=JST)


def desk(**settings: object) -> RequestDesk:
    return RequestDesk(
        InMemoryRequestStore(),
        settings=RequestSettings(**settings),  # type: ignore[arg-type]
        purposes={"support", "marketing"},
    )


def opened(
    d: RequestDesk, kind: str = "gdpr_access", **kw: object
) -> DataSubjectRequest:
    return d.open(
        kind,
        subject=CANARY,
        received_at=kw.pop("received_at", jst(2026, 1, 31, 10)),  # type: ignore[arg-type]
        actor="desk-1",
        request_id="REQ-1",
        **kw,  # type: ignore[arg-type]
    )


class TestKinds:
    def test_every_kind_with_its_article_from_the_packs(self) -> None:
        """The packs define the six APPI and six GDPR kinds with their articles."""
        kinds = request_kinds(dt.date(2026, 1, 1))
        assert {**APPI_KINDS, **GDPR_KINDS} == {k.key: k.article for k in kinds}
        assert {"appi-2024-04"} == {k.pack_id for k in kinds if k.regime == "appi"}
        assert {"gdpr-2018-05"} == {k.pack_id for k in kinds if k.regime == "gdpr"}

    def test_kind_by_regime_and_unknown(self) -> None:
        """Kinds filter by regime; an unknown kind or regime is a RequestError."""
        assert set(GDPR_KINDS) == {k.key for k in request_kinds(regime="gdpr")}
        with pytest.raises(RequestError, match="unknown request kind"):
            request_kind("appi_nothing")
        with pytest.raises(RequestError, match="unknown regime"):
            request_kinds(regime="ccpa")

    def test_fee_only_for_notices_and_disclosures(self) -> None:
        """法38条1項: a fee may be charged for a purpose notice or a disclosure only."""
        fee = {k.key for k in request_kinds(regime="appi") if k.fee}
        assert {
            "appi_purpose_notice",
            "appi_disclosure",
            "appi_provision_records",
        } == fee


class TestDeadlines:
    @pytest.mark.parametrize(
        ("received", "due"),
        [
            (jst(2026, 1, 5, 9), jst(2026, 2, 5, 23, 59, 59)),
            (jst(2026, 1, 31, 10), jst(2026, 2, 28, 23, 59, 59)),
            (jst(2028, 1, 31, 10), jst(2028, 2, 29, 23, 59, 59)),
            (jst(2026, 3, 31, 0, 30), jst(2026, 4, 30, 23, 59, 59)),
            (jst(2026, 12, 15, 12), jst(2027, 1, 15, 23, 59, 59)),
            # 23:30 UTC on 31 January is 1 February in Japan.
            (
                dt.datetime(2026, 1, 31, 23, 30, tzinfo=dt.timezone.utc),
                jst(2026, 3, 1, 23, 59, 59),
            ),
        ],
    )
    def test_gdpr_one_calendar_month_month_end_safe(
        self, received: dt.datetime, due: dt.datetime
    ) -> None:
        """GDPR Art. 12(3): one calendar month after receipt, in the configured zone."""
        kind = request_kind("gdpr_access")
        assert due == request_due_at(kind, received, settings=RequestSettings())

    def test_gdpr_extension_three_months_from_receipt(self) -> None:
        """Extended by two further months: 31 January → 30 April, not 28 April."""
        kind = request_kind("gdpr_erasure")
        got = request_due_at(
            kind, jst(2026, 1, 31, 10), settings=RequestSettings(), extended=True
        )
        assert jst(2026, 4, 30, 23, 59, 59) == got

    def test_time_zone_from_the_settings(self) -> None:
        """22:30 UTC on 31 January is still January in Berlin but February in Japan."""
        kind = request_kind("gdpr_access")
        received = dt.datetime(2026, 1, 31, 22, 30, tzinfo=dt.timezone.utc)
        berlin = ZoneInfo("Europe/Berlin")
        got = request_due_at(
            kind, received, settings=RequestSettings(time_zone="Europe/Berlin")
        )
        assert dt.datetime(2026, 2, 28, 23, 59, 59, tzinfo=berlin) == got
        assert jst(2026, 3, 1, 23, 59, 59) == request_due_at(
            kind, received, settings=RequestSettings()
        )

    def test_appi_sla_days_after_the_day_of_receipt(self) -> None:
        """遅滞なく as the policy's SLA: the day of receipt is not counted."""
        kind = request_kind("appi_disclosure")
        got = request_due_at(
            kind, jst(2026, 2, 20, 23, 50), settings=RequestSettings(sla_days=10)
        )
        assert jst(2026, 3, 2, 23, 59, 59) == got

    def test_appi_has_no_extension(self) -> None:
        """The APPI pack has no statutory extension."""
        with pytest.raises(RequestError, match="no extension"):
            request_due_at(
                request_kind("appi_disclosure"),
                jst(2026, 2, 1),
                settings=RequestSettings(),
                extended=True,
            )

    def test_naive_receipt_refused(self) -> None:
        """A naive time is a RequestError."""
        with pytest.raises(RequestError, match="aware"):
            request_due_at(
                request_kind("gdpr_access"),
                dt.datetime(2026, 2, 1),
                settings=RequestSettings(),
            )


class TestStateMachine:
    def test_full_path_records_every_step(self) -> None:
        """received → verified → extended → in progress → fulfilled, each an event."""
        d = desk(verification_methods=("login", "id_document"))
        r = opened(d)
        assert RequestState.RECEIVED is r.state
        assert jst(2026, 2, 28, 23, 59, 59) == r.due_at
        r = d.verify(
            "REQ-1", method="id_document", at=jst(2026, 2, 1, 9), actor="desk-1"
        )
        assert (RequestState.IDENTITY_VERIFIED, "id_document", jst(2026, 2, 1, 9)) == (
            r.state,
            r.verification_method,
            r.verified_at,
        )
        r = d.extend("REQ-1", reason="many systems", at=jst(2026, 2, 27), actor="dpo")
        assert (RequestState.IDENTITY_VERIFIED, jst(2026, 4, 30, 23, 59, 59)) == (
            r.state,
            r.due_at,
        )
        r = d.decide("REQ-1", grant=True, at=jst(2026, 3, 1), actor="dpo")
        assert (RequestState.IN_PROGRESS, "granted") == (r.state, r.decision)
        r = d.fulfil("REQ-1", at=jst(2026, 3, 2), actor="dpo", result={"rows": 3})
        assert (RequestState.FULFILLED, jst(2026, 3, 2)) == (r.state, r.closed_at)
        stored = d.get("REQ-1")
        assert r == stored
        assert [
            RequestAction.OPENED,
            RequestAction.VERIFIED,
            RequestAction.EXTENDED,
            RequestAction.DECIDED,
            RequestAction.FULFILLED,
        ] == [e.action for e in stored.history]
        assert [1, 2, 3, 4, 5] == [e.seq for e in stored.history]
        assert ["desk-1", "desk-1", "dpo", "dpo", "dpo"] == [
            e.actor for e in stored.history
        ]
        assert {"rows": 3} == stored.history[-1].detail["result"]
        assert "gdpr-2018-05" == stored.history[3].detail["pack_id"]

    def test_refusal_with_grounds_and_reasons(self) -> None:
        """A disclosure refused on 法33条2項2号, with its reasons, closes the request."""
        d = desk()
        opened(d, "appi_disclosure", disclosure_format="electronic")
        d.verify("REQ-1", method="login", at=jst(2026, 2, 1), actor="desk-1")
        r = d.decide(
            "REQ-1",
            grant=False,
            grounds=["33_2_2"],
            reason="業務に著しい支障",
            at=jst(2026, 2, 2),
            actor="cpo",
        )
        assert (RequestState.REFUSED, "refused", ("33_2_2",), "業務に著しい支障") == (
            r.state,
            r.decision,
            r.refusal_grounds,
            r.refusal_reason,
        )
        assert "appi-2024-04" == r.history[-1].detail["pack_id"]

    def test_partial_fulfilment(self) -> None:
        """Part granted, part refused on a ground of the kind."""
        d = desk()
        opened(d, "gdpr_access")
        d.verify("REQ-1", method="login", at=jst(2026, 2, 1), actor="a")
        d.decide("REQ-1", grant=True, at=jst(2026, 2, 1), actor="a")
        r = d.fulfil(
            "REQ-1",
            partial=True,
            grounds=["15_4_rights_of_others"],
            reason="another customer's data withheld",
            at=jst(2026, 2, 3),
            actor="a",
        )
        assert (RequestState.PARTIALLY_FULFILLED, ("15_4_rights_of_others",)) == (
            r.state,
            r.refusal_grounds,
        )

    def test_refusal_before_verification_cites_identity_only(self) -> None:
        """Before the identity is verified, only identity_not_verified may be cited."""
        d = desk()
        opened(d, "appi_disclosure")
        with pytest.raises(RequestTransitionError, match="identity_not_verified"):
            d.decide(
                "REQ-1",
                grant=False,
                grounds=["33_2_2"],
                reason="x",
                at=jst(2026, 2, 1),
                actor="a",
            )
        r = d.decide(
            "REQ-1",
            grant=False,
            grounds=["identity_not_verified"],
            reason="本人確認書類の提出がない",
            at=jst(2026, 2, 1),
            actor="a",
        )
        assert RequestState.REFUSED is r.state

    def test_withdrawal_from_an_open_state(self) -> None:
        """The person withdraws: the request is closed and nothing is due."""
        d = desk()
        opened(d)
        d.verify("REQ-1", method="login", at=jst(2026, 2, 1), actor="a")
        r = d.withdraw("REQ-1", reason="by phone", at=jst(2026, 2, 2), actor="a")
        assert (RequestState.WITHDRAWN, True) == (r.state, r.state.closed)
        assert [] == request_findings(
            [r], settings=RequestSettings(), now=jst(2027, 1, 1)
        )

    @pytest.mark.parametrize(
        ("steps", "step"),
        [
            ((), "decide_grant"),  # grant before verification
            ((), "fulfil"),
            (("verify",), "verify"),
            (("verify",), "fulfil"),
            (("verify", "grant"), "decide_grant"),
            (("verify", "grant", "fulfil"), "withdraw"),
            (("verify", "grant", "fulfil"), "fulfil"),
            (("verify", "grant", "fulfil"), "extend"),
            (("withdraw",), "verify"),
            (("withdraw",), "withdraw"),
        ],
    )
    def test_illegal_transitions(self, steps: tuple[str, ...], step: str) -> None:
        """Each step the state does not allow is a RequestTransitionError; nothing is appended."""
        d = desk()
        opened(d)
        at = jst(2026, 2, 1)

        def run(name: str) -> None:
            if name == "verify":
                d.verify("REQ-1", method="login", at=at, actor="a")
            elif name in {"grant", "decide_grant"}:
                d.decide("REQ-1", grant=True, at=at, actor="a")
            elif name == "fulfil":
                d.fulfil("REQ-1", at=at, actor="a")
            elif name == "withdraw":
                d.withdraw("REQ-1", at=at, actor="a")
            elif name == "extend":
                d.extend("REQ-1", reason="r", at=at, actor="a")

        for s in steps:
            run(s)
        before = d.get("REQ-1")
        with pytest.raises(RequestTransitionError) as info:
            run(step)
        assert before.state.value == info.value.state
        assert before == d.get("REQ-1")

    def test_extension_rules(self) -> None:
        """GDPR only, once, with reasons, before the first deadline passes."""
        d = desk()
        opened(d, "appi_disclosure")
        with pytest.raises(RequestError, match="no extension"):
            d.extend("REQ-1", reason="r", at=jst(2026, 2, 1), actor="a")
        g = desk()
        opened(g, "gdpr_access")
        with pytest.raises(RequestError, match="reasons"):
            g.extend("REQ-1", reason=" ", at=jst(2026, 2, 1), actor="a")
        with pytest.raises(RequestError, match="after the deadline"):
            g.extend("REQ-1", reason="late", at=jst(2026, 3, 1), actor="a")
        g.extend("REQ-1", reason="complex", at=jst(2026, 2, 1), actor="a")
        with pytest.raises(RequestError, match="already extended"):
            g.extend("REQ-1", reason="again", at=jst(2026, 2, 2), actor="a")

    def test_refusal_grounds_checked_against_the_kind(self) -> None:
        """A ground of another kind, or none, or no reasons: RequestError."""
        d = desk()
        opened(d, "gdpr_erasure")
        d.verify("REQ-1", method="login", at=jst(2026, 2, 1), actor="a")
        for grounds, reason in ((["33_2_2"], "x"), ([], "x"), (["17_3_exception"], "")):
            with pytest.raises(RequestError):
                d.decide(
                    "REQ-1",
                    grant=False,
                    grounds=grounds,
                    reason=reason,
                    at=jst(2026, 2, 1),
                    actor="a",
                )
        r = d.decide(
            "REQ-1",
            grant=False,
            grounds=["17_3_exception"],
            reason="legal obligation",
            at=jst(2026, 2, 1),
            actor="a",
        )
        assert ("17_3_exception",) == r.refusal_grounds

    def test_concurrent_writer_loses(self) -> None:
        """Two desks read the same state; the second append finds its position taken."""
        store = InMemoryRequestStore()
        a = RequestDesk(store)
        b = RequestDesk(store)
        opened(a)
        stale = store.get("REQ-1")
        a.verify("REQ-1", method="login", at=jst(2026, 2, 1), actor="a")
        from custdata.governance import RequestEvent

        event = RequestEvent(
            request_id="REQ-1",
            seq=len(stale.history) + 1,
            at=jst(2026, 2, 1),
            actor="b",
            action=RequestAction.WITHDRAWN,
            detail={},
        )
        with pytest.raises(RequestTransitionError, match="changed meanwhile"):
            store.append(event)
        assert RequestState.IDENTITY_VERIFIED is b.get("REQ-1").state


class TestOpening:
    def test_fee_defaults_from_the_policy_for_fee_kinds(self) -> None:
        """fee_yen comes from [requests] for a disclosure, not for a correction."""
        d = desk(fee_yen=1000)
        assert 1000 == opened(d, "appi_disclosure").fee_yen
        d2 = desk(fee_yen=1000)
        assert None is opened(d2, "appi_correction").fee_yen
        with pytest.raises(RequestError, match="no fee"):
            opened(desk(), "appi_correction", fee_yen=500)

    @pytest.mark.parametrize(
        ("kind", "kw", "match"),
        [
            ("appi_disclosure", {"disclosure_format": "fax"}, "formats"),
            ("gdpr_portability", {"disclosure_format": "paper"}, "formats"),
            ("appi_correction", {"purposes": ["support"]}, "purposes"),
            ("appi_stop_use", {"purposes": ["no_such"]}, "unknown purpose"),
            ("appi_stop_use", {"recipients": ["acme"]}, "recipients"),
            ("appi_stop_use", {"grounds": ["33_2_1"]}, "grounds"),
            ("appi_disclosure", {"fee_yen": -1}, "fee_yen"),
            ("appi_disclosure", {"fee_yen": True}, "fee_yen"),
            ("appi_disclosure", {"fee_yen": "100"}, "fee_yen"),
            ("appi_disclosure", {"received_at": dt.datetime(2026, 1, 1)}, "aware"),
            ("ccpa_delete", {}, "unknown request kind"),
        ],
    )
    def test_bad_openings(self, kind: str, kw: dict[str, object], match: str) -> None:
        """Each bad opening is a RequestError that never names the subject."""
        d = desk()
        with pytest.raises(RequestError, match=match) as info:
            opened(d, kind, **kw)
        assert CANARY not in str(info.value)
        assert () == d.store.requests()

    def test_stop_request_with_scope_and_grounds(self) -> None:
        """利用停止 under 35条5項 for one purpose; 第三者提供の停止 for one recipient."""
        d = desk()
        r = opened(
            d,
            "appi_stop_use",
            purposes=["marketing"],
            grounds=["35_5_no_longer_needed"],
        )
        assert (("marketing",), ("35_5_no_longer_needed",)) == (r.purposes, r.grounds)
        d2 = desk()
        r2 = opened(
            d2, "appi_stop_provision", recipients=["acme"], grounds=["35_3_art27"]
        )
        assert ("acme",) == r2.recipients

    def test_duplicate_id_and_unknown_request(self) -> None:
        """The same id twice is a RequestError; an unknown id an UnknownRequestError."""
        d = desk()
        opened(d)
        with pytest.raises(RequestError, match="already exists"):
            opened(d)
        with pytest.raises(UnknownRequestError):
            d.verify("REQ-404", method="login", at=jst(2026, 2, 1), actor="a")

    def test_verification_method_from_the_policy(self) -> None:
        """A method outside [requests] verification_methods is refused."""
        d = desk(verification_methods=("login",))
        opened(d)
        with pytest.raises(RequestError, match="not one of login"):
            d.verify("REQ-1", method="phone", at=jst(2026, 2, 1), actor="a")

    def test_appi_request_before_any_pack_is_a_request_error(self) -> None:
        """A request received before any APPI pack was in force: a RequestError."""
        d = desk()
        with pytest.raises(
            RequestError, match="no APPI rule pack was in force on 2022-03-31"
        ):
            opened(d, "appi_disclosure", received_at=jst(2022, 3, 31, 10))
        with pytest.raises(RequestError, match="no GDPR rule pack was in force"):
            request_kinds(dt.date(2018, 5, 24), regime="gdpr")
        assert () == d.store.requests()

    def test_subject_never_in_repr(self) -> None:
        """The subject as given stays out of the record's repr."""
        r = opened(desk())
        assert CANARY not in repr(r)
        assert CANARY == r.subject


class TestFindings:
    def test_overdue_and_due_soon(self) -> None:
        """REQ001 once the due time has passed; REQ002 within due_soon_days; none after."""
        d = desk(due_soon_days=3, sla_days=14)
        opened(d, "appi_disclosure", received_at=jst(2026, 2, 1, 10))  # due 2/15 end
        settings = d.settings
        reqs = d.store.requests()
        assert [] == request_findings(reqs, settings=settings, now=jst(2026, 2, 12, 23))
        soon = request_findings(reqs, settings=settings, now=jst(2026, 2, 13, 0, 0, 1))
        assert ["REQ002"] == [f.code for f in soon]
        assert ["REQ002"] == [
            f.code
            for f in request_findings(
                reqs, settings=settings, now=jst(2026, 2, 15, 23, 59, 59)
            )
        ]
        late = request_findings(reqs, settings=settings, now=jst(2026, 2, 16))
        assert ["REQ001"] == [f.code for f in late]
        assert "requests.REQ-1" == late[0].key_path
        assert CANARY not in late[0].message
        assert "法33条1項" in late[0].message


class TestPolicySection:
    def test_requests_table_read(self, tmp_path: object) -> None:
        """[requests] is read into Policy.requests."""
        policy = Policy.from_dict(
            {
                **_minimal(),
                "requests": {
                    "sla_days": 10,
                    "due_soon_days": 2,
                    "time_zone": "Europe/Berlin",
                    "fee_yen": 800,
                    "desk": "privacy desk",
                    "verification_methods": ["login"],
                },
            }
        )
        assert (
            RequestSettings(
                sla_days=10,
                due_soon_days=2,
                time_zone="Europe/Berlin",
                fee_yen=800,
                desk="privacy desk",
                verification_methods=("login",),
            )
            == policy.requests
        )

    @pytest.mark.parametrize(
        ("table", "key"),
        [
            ({"sla_days": 0}, "requests.sla_days"),
            ({"sla_days": "14"}, "requests.sla_days"),
            ({"fee_yen": True}, "requests.fee_yen"),
            ({"time_zone": "Mars/Olympus"}, "requests.time_zone"),
            ({"verification_methods": "login"}, "requests.verification_methods"),
            ({"desk": 3}, "requests.desk"),
            ({"deadline": 3}, "requests.deadline"),
        ],
    )
    def test_bad_requests_table(self, table: dict[str, object], key: str) -> None:
        """Each bad key is a ConfigurationError naming its key path."""
        with pytest.raises(custdata.ConfigurationError) as info:
            Policy.from_dict({**_minimal(), "requests": table})
        assert key == info.value.key_path


def _minimal() -> dict[str, object]:
    return {
        "policy": {
            "organisation": "Example KK",
            "version": "1",
            "effective_date": dt.date(2026, 1, 1),
            "next_review": dt.date(2027, 1, 1),
        },
        "retention": {
            "short": {"period": "P1Y", "anchor": "acquired", "action": "delete"}
        },
        "purposes": {
            "support": {
                "text_ja": "サポート",
                "text_en": "Support",
                "retention": "short",
            }
        },
    }


def test_packs_carry_the_requests_topic() -> None:
    """Both regimes' packs carry the requests topic; the APPI one inherits it."""
    assert "requests" in rule_pack("appi", pack_id="appi-2024-04").topics
    assert "sla" == rule_pack("appi").topic("requests")["deadline"]["basis"]
    assert 2 == rule_pack("gdpr").topic("requests")["deadline"]["extension_months"]


class TestDocumentsAndReport:
    def test_notice_and_regulation_render_the_requests_section(self) -> None:
        """The request section comes from [requests] and the packs' kinds, not an extension point."""
        from custdata.governance import render_document

        policy = Policy.from_dict(
            {
                **_minimal(),
                "requests": {
                    "sla_days": 9,
                    "desk": "窓口X",
                    "verification_methods": ["login"],
                },
            }
        )
        notice = render_document(policy, "notice", lang="ja")
        assert "[extension point: requests]" not in notice
        assert "受付窓口: 窓口X" in notice
        assert "受付日の翌日から9日以内" in notice
        assert "第三者提供記録の開示（法33条5項）：手数料の対象" in notice
        regulation = render_document(policy, "regulation", lang="en")
        assert "[extension point: requests]" not in regulation
        assert "| Right to data portability | Art. 20 |" in regulation
        assert "within 9 days" in regulation

    def test_report_lists_open_requests_with_deadlines(self) -> None:
        """Open requests appear in the HTML report, overdue ones marked; closed ones do not."""
        from custdata.governance import render_report

        policy = Policy.from_dict(_minimal())
        d = desk()
        opened(d, "appi_disclosure", received_at=jst(2026, 2, 1, 10))
        d.open(
            "gdpr_access",
            subject=CANARY,
            received_at=jst(2026, 2, 1),
            actor="a",
            request_id="REQ-2",
        )
        d.withdraw("REQ-2", at=jst(2026, 2, 2), actor="a")
        page = render_report(
            policy, today=dt.date(2026, 2, 16), requests=d.store.requests()
        )["index.html"]
        assert "REQ-1" in page
        assert "2026-02-15T23:59:59+09:00 (overdue)" in page
        assert "REQ-2" not in page
        assert CANARY not in page


_STEPS = (
    "verify",
    "grant",
    "refuse",
    "fulfil",
    "partial",
    "withdraw",
    "extend",
    "note",
)


class TestStateMachineProperties:
    @given(st.lists(st.sampled_from(_STEPS), max_size=8))
    @settings(max_examples=60, deadline=None)
    def test_any_sequence_keeps_the_store_and_the_machine_in_step(
        self, steps: list[str]
    ) -> None:
        """Whatever steps are tried, the stored request replays to what the desk returned.

        A refused step appends nothing; a closed request accepts nothing but
        notes; the history is numbered without gaps; once closed, it stays closed.
        """
        d = desk()
        current = opened(d, "gdpr_erasure")
        at = jst(2026, 2, 1)
        was_closed = False
        for n, step in enumerate(steps):
            when = at + dt.timedelta(hours=n)
            before = d.get("REQ-1")
            try:
                if step == "verify":
                    current = d.verify("REQ-1", method="login", at=when, actor="a")
                elif step == "grant":
                    current = d.decide("REQ-1", grant=True, at=when, actor="a")
                elif step == "refuse":
                    current = d.decide(
                        "REQ-1",
                        grant=False,
                        grounds=["identity_not_verified"],
                        reason="r",
                        at=when,
                        actor="a",
                    )
                elif step == "fulfil":
                    current = d.fulfil("REQ-1", at=when, actor="a")
                elif step == "partial":
                    current = d.fulfil(
                        "REQ-1",
                        partial=True,
                        grounds=["17_3_exception"],
                        reason="r",
                        at=when,
                        actor="a",
                    )
                elif step == "withdraw":
                    current = d.withdraw("REQ-1", at=when, actor="a")
                elif step == "extend":
                    current = d.extend("REQ-1", reason="r", at=when, actor="a")
                else:
                    current = d.note("REQ-1", "n", at=when, actor="a")
            except RequestError:
                assert before == d.get("REQ-1")
                continue
            stored = d.get("REQ-1")
            assert current == stored
            assert list(range(1, len(stored.history) + 1)) == [
                e.seq for e in stored.history
            ]
            if was_closed:
                assert step == "note"
                assert before.state is stored.state
            was_closed = stored.state.closed
