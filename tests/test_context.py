"""The access context: actors, purposes, the decorator and isolation (R-PUR-3..5, R-SEC-4)."""

from __future__ import annotations

import asyncio
import threading

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog

import custdata

from custdata import (
    AccessDecision,
    Action,
    ActorRequiredError,
    AuditUnavailableError,
    Custodian,
    DenyReason,
    FieldPolicy,
    Outcome,
    Policy,
    PurposeNotGrantedError,
    PurposeRequiredError,
    PurposeViolationError,
)


class Recorder:
    """An in-memory DecisionRecorder."""

    def __init__(self) -> None:
        self.decisions: list[AccessDecision] = []

    def record_decision(self, decision: AccessDecision) -> None:
        self.decisions.append(decision)


class BrokenRecorder:
    """A recorder whose sink is down."""

    def record_decision(self, decision: AccessDecision) -> None:
        raise AuditUnavailableError("audit sink unavailable")


EMAIL = FieldPolicy(category="contact.email", purposes=["billing", "support"])
CARD = FieldPolicy(category="payment.card", purposes=["billing"])
CARD_MASKED = FieldPolicy(
    category="payment.card", purposes=["billing"], on_violation="mask"
)


@pytest.fixture
def recorder(sample_policy: Policy) -> Recorder:
    return Recorder()


@pytest.fixture
def audited(sample_policy: Policy, recorder: Recorder):  # type: ignore[no-untyped-def]
    c = Custodian(policy=sample_policy, audit=recorder)
    with c.activate():
        yield c


class TestContextManagers:
    def test_no_context(self) -> None:
        """Outside any block nothing is in force."""
        assert custdata.AccessContext() == custdata.current_access()

    def test_nesting_innermost_wins(self, custodian: Custodian) -> None:
        """Nested purposes: the innermost is in force and the outer returns on exit."""
        with custdata.acting_as("u-1", role="support_agent"):
            with custdata.purpose("support"):
                with custdata.purpose("support.identity_check"):
                    assert "support.identity_check" == custdata.current_access().purpose
                assert "support" == custdata.current_access().purpose
            assert custdata.current_access().purpose is None
        assert custdata.current_access().actor is None

    def test_new_actor_clears_purpose(self, custodian: Custodian) -> None:
        """An inner actor does not inherit the outer actor's purpose."""
        with (
            custdata.acting_as("u-1", role="support_agent"),
            custdata.purpose("support"),
        ):
            with custdata.acting_as("svc-2", role="billing_clerk"):
                assert custdata.current_access().purpose is None
                assert "svc-2" == custdata.current_access().actor

    def test_context_restored_after_exception(self, custodian: Custodian) -> None:
        """A block that raises still restores the outer context."""
        with custdata.acting_as("u-1", role="support_agent"):
            with pytest.raises(RuntimeError), custdata.purpose("support"):
                raise RuntimeError
            assert custdata.current_access().purpose is None

    @pytest.mark.parametrize(
        ("actor", "role", "error"),
        [
            (None, "x", TypeError),
            ("", "x", ValueError),
            ("u", " ", ValueError),
            ("u", 3, TypeError),
        ],
    )
    def test_acting_as_misuse(
        self, actor: object, role: object, error: type[Exception]
    ) -> None:
        """Bad actor or role values are misuse errors at the boundary."""
        with pytest.raises(error), custdata.acting_as(actor, role=role):  # type: ignore[arg-type]
            pass


class TestClaims:
    def test_missing_actor_refused(self, custodian: Custodian) -> None:
        """Claiming a purpose with no actor is refused."""
        with pytest.raises(ActorRequiredError), custdata.purpose("support"):
            pass

    def test_missing_actor_refused_without_custodian(self) -> None:
        """Even with no custodian current, an anonymous claim is refused."""
        with pytest.raises(ActorRequiredError), custdata.purpose("support"):
            pass

    def test_role_claiming_ungranted_purpose_refused(
        self, audited: Custodian, recorder: Recorder
    ) -> None:
        """A support agent asserting marketing is refused before any query, and audited."""
        with custdata.acting_as("u-1", role="support_agent"):
            with (
                pytest.raises(
                    PurposeNotGrantedError,
                    match="'support_agent' may not claim purpose 'marketing'",
                ),
                custdata.purpose("marketing"),
            ):
                pytest.fail("the block must not run")
            assert custdata.current_access().purpose is None
        [decision] = recorder.decisions
        assert (Outcome.DENIED, DenyReason.PURPOSE_NOT_GRANTED, Action.CLAIM) == (
            decision.outcome,
            decision.reason,
            decision.action,
        )

    def test_unknown_role_refused(self, custodian: Custodian) -> None:
        """An undeclared role can claim nothing."""
        with (
            custdata.acting_as("u-1", role="intern"),
            pytest.raises(PurposeNotGrantedError),
            custdata.purpose("support"),
        ):
            pass

    def test_unknown_purpose_refused(self, custodian: Custodian) -> None:
        """An undeclared purpose is denied (fail closed)."""
        with (
            custdata.acting_as("u-1", role="support_agent"),
            pytest.raises(PurposeViolationError),
            custdata.purpose("support.chat"),
        ):
            pass


class TestAuthorize:
    def test_allowed_read_is_recorded(
        self, audited: Custodian, recorder: Recorder
    ) -> None:
        """An allowed read yields and records a decision naming fields, never values."""
        with (
            custdata.acting_as("u-1", role="support_agent", request_id="req-9"),
            custdata.purpose("support"),
        ):
            decision = audited.authorize(
                action=Action.READ,
                entity="customers",
                fields={"email": EMAIL},
                subjects=["s-1", "s-2"],
                count=2,
            )
        assert decision.allowed
        assert decision == recorder.decisions[-1]
        assert (
            ("email",),
            ("contact.email",),
            ("s-1", "s-2"),
            2,
            "req-9",
            "2026.2",
        ) == (
            decision.fields,
            decision.categories,
            decision.subjects,
            decision.count,
            decision.request_id,
            decision.policy_version,
        )

    def test_no_stale_verdict(self, audited: Custodian, recorder: Recorder) -> None:
        """A verdict is reused only for the same context: another one is decided again."""
        fields = {"email": EMAIL}
        with (
            custdata.acting_as("u-1", role="support_agent"),
            custdata.purpose("support"),
        ):
            first = audited.authorize(action=Action.READ, fields=fields)
        # Same fields, another context: decided again, not memoised.
        with (
            custdata.acting_as("u-2", role="marketer"),
            custdata.purpose("marketing.email"),
            pytest.raises(custdata.PurposeViolationError),
        ):
            audited.authorize(action=Action.READ, fields=fields)
        assert first.allowed
        reads = [d for d in recorder.decisions if d.action is Action.READ]
        assert [(d.actor, d.outcome.value) for d in reads] == [
            ("u-1", "allowed"),
            ("u-2", "denied"),
        ]

    def test_out_of_purpose_field_denied(
        self, audited: Custodian, recorder: Recorder
    ) -> None:
        """Support reading the card is denied, names the field, and is recorded as denied."""
        with (
            custdata.acting_as("u-1", role="support_agent"),
            custdata.purpose("support"),
            pytest.raises(
                PurposeViolationError,
                match=r"'support' is not permitted for field\(s\) customers\.card",
            ),
        ):
            audited.authorize(
                action=Action.READ,
                entity="customers",
                fields={"email": EMAIL, "card": CARD},
            )
        denied = recorder.decisions[-1]
        assert (Outcome.DENIED, DenyReason.PURPOSE_NOT_PERMITTED, ("card",)) == (
            denied.outcome,
            denied.reason,
            denied.denied_fields,
        )

    def test_mask_on_violation(self, audited: Custodian) -> None:
        """A field that masks on violation does not raise; it is listed for masking."""
        with (
            custdata.acting_as("u-1", role="support_agent"),
            custdata.purpose("support"),
        ):
            decision = audited.authorize(
                action=Action.READ,
                entity="customers",
                fields={"email": EMAIL, "card": CARD_MASKED},
            )
        assert decision.allowed
        assert ("card",) == decision.denied_fields

    def test_untagged_field_denied(
        self, audited: Custodian, recorder: Recorder
    ) -> None:
        """A field with no purpose tags is denied."""
        with (
            custdata.acting_as("u-1", role="billing_clerk"),
            custdata.purpose("billing"),
        ):
            with pytest.raises(PurposeViolationError, match="carry no purpose tags"):
                audited.authorize(
                    action=Action.READ, entity="customers", fields={"notes": None}
                )
        assert DenyReason.UNTAGGED_FIELD == recorder.decisions[-1].reason

    def test_no_actor_denied(self, audited: Custodian, recorder: Recorder) -> None:
        """With no actor every access is denied and recorded."""
        with pytest.raises(ActorRequiredError):
            audited.authorize(
                action=Action.READ, entity="customers", fields={"email": EMAIL}
            )
        assert DenyReason.NO_ACTOR == recorder.decisions[-1].reason

    def test_no_purpose_denied(self, audited: Custodian, recorder: Recorder) -> None:
        """An actor without a purpose is denied."""
        with (
            custdata.acting_as("u-1", role="support_agent"),
            pytest.raises(PurposeRequiredError),
        ):
            audited.authorize(
                action=Action.READ, entity="customers", fields={"email": EMAIL}
            )
        assert DenyReason.NO_PURPOSE == recorder.decisions[-1].reason

    def test_audit_unavailable_refuses(self, sample_policy: Policy) -> None:
        """An allowed read whose decision cannot be recorded is refused (fail closed)."""
        c = Custodian(policy=sample_policy, audit=BrokenRecorder())
        with c.activate(), custdata.acting_as("u-1", role="support_agent"):
            with pytest.raises(AuditUnavailableError), custdata.purpose("support"):
                pass

    def test_custodian_misuse(self, sample_policy: Policy) -> None:
        """The constructor checks its arguments' types."""
        with pytest.raises(TypeError):
            Custodian(policy="custdata.toml")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Custodian(policy=sample_policy, audit=object())  # type: ignore[arg-type]

    def test_current_custodian(self, sample_policy: Policy) -> None:
        """activate() scopes a custodian; without one, current_custodian() says how to fix it."""
        c = Custodian(policy=sample_policy)
        with c.activate():
            assert c is custdata.current_custodian()
        previous = custdata._context._default_custodian[0]
        custdata._context._default_custodian[0] = None
        try:
            with pytest.raises(custdata.ConfigurationError, match="make_current"):
                custdata.current_custodian()
            c.make_current()
            assert c is custdata.current_custodian()
        finally:
            custdata._context._default_custodian[0] = previous


class TestDecorator:
    def test_sync(self, custodian: Custodian) -> None:
        """The decorator runs a function under the purpose and keeps its metadata."""

        @custdata.requires_purpose("billing")
        def charge(amount: int, *, currency: str = "JPY") -> str:
            """Charge the customer."""
            return f"{custdata.current_access().purpose}:{amount}{currency}"

        with custdata.acting_as("u-1", role="billing_clerk"):
            assert "billing:100JPY" == charge(100)
        assert "charge" == charge.__name__
        assert "Charge the customer." == charge.__doc__

    async def test_async(self, custodian: Custodian) -> None:
        """The decorator works on coroutine functions."""

        @custdata.requires_purpose("billing")
        async def charge(amount: int) -> str:
            await asyncio.sleep(0)
            return f"{custdata.current_access().purpose}:{amount}"

        with custdata.acting_as("u-1", role="billing_clerk"):
            assert "billing:5" == await charge(5)
        assert asyncio.iscoroutinefunction(charge)

    def test_decorated_refuses_ungranted_role(self, custodian: Custodian) -> None:
        """Calling a decorated function in a role without the grant is refused."""

        @custdata.requires_purpose("billing")
        def charge() -> None:
            pytest.fail("must not run")

        with (
            custdata.acting_as("u-1", role="support_agent"),
            pytest.raises(PurposeNotGrantedError),
        ):
            charge()

    def test_decorator_misuse(self) -> None:
        """The purpose name is checked when decorating."""
        with pytest.raises(TypeError):
            custdata.requires_purpose(None)  # type: ignore[arg-type]


ROLES = [
    ("support_agent", "support"),
    ("billing_clerk", "billing"),
    ("warehouse", "shipping"),
    ("marketer", "marketing.email"),
    ("nutritionist", "consultation"),
]


class TestIsolation:
    async def test_asyncio_tasks_isolated(self, custodian: Custodian) -> None:
        """100 concurrent tasks with distinct actors and purposes never see each other's."""
        seen: list[tuple[str, str, str | None, str | None]] = []

        async def work(i: int) -> None:
            role, purpose = ROLES[i % len(ROLES)]
            with custdata.acting_as(f"actor-{i}", role=role), custdata.purpose(purpose):
                for _ in range(5):
                    await asyncio.sleep(0)
                    ctx = custdata.current_access()
                    seen.append((f"actor-{i}", purpose, ctx.actor, ctx.purpose))

        await asyncio.gather(*(work(i) for i in range(100)))
        assert 500 == len(seen)
        assert all(
            actor == got_actor and purpose == got_purpose
            for actor, purpose, got_actor, got_purpose in seen
        )

    def test_threads_isolated(self, sample_policy: Policy) -> None:
        """8 threads with distinct actors and purposes never see each other's."""
        custodian = Custodian(policy=sample_policy)
        barrier = threading.Barrier(8)
        mismatches: list[str] = []
        done: list[int] = []

        def work(i: int) -> None:
            role, purpose = ROLES[i % len(ROLES)]
            with (
                custodian.activate(),
                custdata.acting_as(f"t-{i}", role=role),
                custdata.purpose(purpose),
            ):
                barrier.wait()
                for _ in range(2000):
                    ctx = custdata.current_access()
                    if (ctx.actor, ctx.purpose) != (f"t-{i}", purpose):
                        mismatches.append(f"t-{i}")
            done.append(i)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [] == mismatches
        assert list(range(8)) == sorted(done)
        assert custdata.current_access().actor is None


class TestStructlogIntegration:
    """add_access_context for the application's logs; request ids from structlog."""

    @pytest.fixture(autouse=True)
    def _clean_contextvars(self) -> Iterator[None]:
        structlog.contextvars.clear_contextvars()
        yield
        structlog.contextvars.clear_contextvars()

    def test_processor_adds_the_context(self, sample_policy: Policy) -> None:
        with (
            Custodian(policy=sample_policy).activate(),
            custdata.acting_as("u-1", role="support_agent", request_id="r-9"),
            custdata.purpose("support"),
        ):
            event = custdata.add_access_context(None, "info", {"event": "looked up"})
        assert {
            "event": "looked up",
            "actor": "u-1",
            "role": "support_agent",
            "purpose": "support",
            "request_id": "r-9",
        } == event

    def test_processor_adds_nothing_outside_a_context(self) -> None:
        assert {"event": "x"} == custdata.add_access_context(
            None, "info", {"event": "x"}
        )

    def test_processor_never_overwrites_the_log_calls_keys(self) -> None:
        with custdata.acting_as("u-1", role="support_agent"):
            event = custdata.add_access_context(None, "info", {"actor": "batch-7"})
        assert {"actor": "batch-7", "role": "support_agent"} == event

    def test_request_id_bound_with_structlog_reaches_logs_and_decisions(
        self, sample_policy: Policy
    ) -> None:
        recorder = Recorder()
        structlog.contextvars.bind_contextvars(request_id="req-42")
        with Custodian(policy=sample_policy, audit=recorder).activate():
            assert {"request_id": "req-42"} == custdata.add_access_context(
                None, "info", {}
            )
            with (
                custdata.acting_as("u-1", role="support_agent"),
                custdata.purpose("support"),
            ):
                pass
            with custdata.acting_as("u-2", role="support_agent", request_id="own"):
                assert "own" == custdata.current_access().request_id
        assert ["req-42"] == [d.request_id for d in recorder.decisions]

    def test_in_a_real_structlog_pipeline(self) -> None:
        logged: list[MutableMapping[str, Any]] = []

        def keep(_l: object, _m: str, event: MutableMapping[str, Any]) -> str:
            logged.append(dict(event))
            return ""

        log = structlog.wrap_logger(
            structlog.testing.ReturnLogger(),
            processors=[
                structlog.contextvars.merge_contextvars,
                custdata.add_access_context,
                keep,
            ],
        )
        structlog.contextvars.bind_contextvars(request_id="req-1")
        with custdata.acting_as("u-1", role="support_agent"):
            log.info("hello")
        assert [
            {
                "event": "hello",
                "request_id": "req-1",
                "actor": "u-1",
                "role": "support_agent",
            }
        ] == logged
