"""The web-framework and job recipes in examples/recipes, with the frameworks' test clients."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2 as httpx
import pytest

from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

import custdata

from custdata.crypto import Keyring
from custdata.testing import RecordedDecisions, assert_denied, assert_revealed


RECIPES = Path(__file__).resolve().parent.parent / "examples" / "recipes"
CARD = "4111-CANARY-1111-9876"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"recipe_{name}", RECIPES / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FASTAPI = _load("fastapi_app")
FLASK = _load("flask_app")
JOBS = _load("jobs")
Customer: Any = sys.modules["models"].Customer


@pytest.fixture
def decisions() -> RecordedDecisions:
    return RecordedDecisions()


@pytest.fixture
def custodian(
    sample_policy: custdata.Policy, decisions: RecordedDecisions
) -> custdata.Custodian:
    return custdata.Custodian(
        policy=sample_policy, keyring=Keyring.generate(), audit=decisions
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    Customer.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def hanako(
    engine: Engine, custodian: custdata.Custodian, decisions: RecordedDecisions
) -> uuid.UUID:
    cid = uuid.uuid4()
    with (
        custodian.activate(),
        custdata.acting_as("c-9", role="billing_clerk"),
        custdata.purpose("billing"),
        Session(engine) as session,
    ):
        session.add(
            Customer(id=cid, name="Yamada Hanako", email="hanako@example.jp", card=CARD)
        )
        session.commit()
    decisions.clear()
    return cid


SUPPORT = {"Authorization": "Bearer token-support"}
BILLING = {"Authorization": "Bearer token-billing"}


class TestFastAPI:
    """Middleware + async dependency set the context; routes claim purposes."""

    @pytest.fixture
    def client(self, engine: Engine, custodian: custdata.Custodian) -> TestClient:
        return TestClient(FASTAPI.create_app(engine, custodian))

    def test_allowed_read_recorded_with_the_request_id(
        self, client: TestClient, hanako: uuid.UUID, decisions: RecordedDecisions
    ) -> None:
        got = client.get(
            f"/customers/{hanako}", headers={**SUPPORT, "X-Request-Id": "req-1"}
        )
        assert 200 == got.status_code
        assert {"name": "Yamada Hanako", "email": "hanako@example.jp"} == got.json()
        assert "req-1" == got.headers["x-request-id"]
        decision = assert_revealed(
            decisions, actor="u-102", purpose="support", subjects=[hanako]
        )
        assert "req-1" == decision.request_id

    def test_sync_route_refused_field_is_403_and_recorded(
        self, client: TestClient, hanako: uuid.UUID, decisions: RecordedDecisions
    ) -> None:
        got = client.get(f"/customers/{hanako}/card", headers=SUPPORT)
        assert 403 == got.status_code
        assert "PurposeViolationError" == got.json()["error"]
        assert CARD not in got.text
        assert_denied(decisions, fields=["card"], actor="u-102", subjects=[hanako])

    def test_role_that_may_not_claim_the_purpose(
        self, client: TestClient, hanako: uuid.UUID, decisions: RecordedDecisions
    ) -> None:
        got = client.get(f"/billing/{hanako}", headers=SUPPORT)
        assert 403 == got.status_code
        assert "PurposeNotGrantedError" == got.json()["error"]
        assert_denied(decisions, actor="u-102", purpose="billing")
        assert 200 == client.get(f"/billing/{hanako}", headers=BILLING).status_code

    def test_unauthenticated_is_401_and_nothing_read(
        self, client: TestClient, hanako: uuid.UUID, decisions: RecordedDecisions
    ) -> None:
        assert 401 == client.get(f"/customers/{hanako}").status_code
        assert not decisions.allowed

    async def test_concurrent_requests_keep_their_own_actor(
        self,
        engine: Engine,
        custodian: custdata.Custodian,
        hanako: uuid.UUID,
        decisions: RecordedDecisions,
    ) -> None:
        """Interleaved requests of two users: each decision names its request's user."""
        app = FASTAPI.create_app(engine, custodian)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t"
        ) as client:
            calls = []
            for i in range(20):
                token, path = (
                    ("token-support", f"/customers/{hanako}")
                    if i % 2
                    else ("token-billing", f"/billing/{hanako}")
                )
                calls.append(
                    client.get(
                        path,
                        headers={
                            "Authorization": f"Bearer {token}",
                            "X-Request-Id": f"r-{i}",
                        },
                    )
                )
            responses = await asyncio.gather(*calls)
        assert {200} == {r.status_code for r in responses}
        reads = [d for d in decisions.allowed if d.action is custdata.Action.READ]
        assert 20 == len(reads)
        for d in reads:
            i = int(d.request_id.removeprefix("r-"))  # type: ignore[union-attr]
            expected = ("u-102", "support") if i % 2 else ("c-9", "billing")
            assert expected == (d.actor, d.purpose)
        assert custdata.current_access().actor is None


class TestFlask:
    """Request hooks set and clear the context; views claim purposes."""

    @pytest.fixture
    def client(self, engine: Engine, custodian: custdata.Custodian) -> Any:
        return FLASK.create_app(engine, custodian).test_client()

    def test_allowed_read_recorded_with_the_request_id(
        self, client: Any, hanako: uuid.UUID, decisions: RecordedDecisions
    ) -> None:
        got = client.get(
            f"/customers/{hanako}", headers={**SUPPORT, "X-Request-Id": "req-9"}
        )
        assert 200 == got.status_code
        assert {"name": "Yamada Hanako", "email": "hanako@example.jp"} == got.get_json()
        assert "req-9" == got.headers["X-Request-Id"]
        decision = assert_revealed(decisions, actor="u-102", purpose="support")
        assert "req-9" == decision.request_id

    def test_refused_field_is_403_and_recorded(
        self, client: Any, hanako: uuid.UUID, decisions: RecordedDecisions
    ) -> None:
        got = client.get(f"/customers/{hanako}/card", headers=SUPPORT)
        assert 403 == got.status_code
        assert CARD not in got.get_data(as_text=True)
        assert_denied(decisions, fields=["card"], actor="u-102", subjects=[hanako])

    def test_billing_reads_the_card_and_context_is_left(
        self, client: Any, hanako: uuid.UUID
    ) -> None:
        got = client.get(f"/billing/{hanako}", headers=BILLING)
        assert CARD == got.get_json()["card"]
        assert 403 == client.get(f"/billing/{hanako}", headers=SUPPORT).status_code
        assert 401 == client.get(f"/billing/{hanako}").status_code
        assert custdata.current_access().actor is None


class TestJobs:
    """Jobs act as their own service actor; a job that does not is refused."""

    def test_jobs_run_as_the_service(
        self,
        engine: Engine,
        custodian: custdata.Custodian,
        hanako: uuid.UUID,
        decisions: RecordedDecisions,
    ) -> None:
        with custdata.acting_as("u-102", role="support_agent"):
            done = JOBS.run_invoices(engine, custodian, [hanako, uuid.uuid4()])
        assert ["invoice for Yamada Hanako", "gone"] == done
        decision = assert_revealed(decisions, actor="svc-invoicing", purpose="billing")
        assert f"job-{hanako}" == decision.request_id

    def test_a_job_without_an_actor_is_refused_not_run_as_the_caller(
        self,
        engine: Engine,
        custodian: custdata.Custodian,
        hanako: uuid.UUID,
        decisions: RecordedDecisions,
    ) -> None:
        with (
            custdata.acting_as("c-9", role="billing_clerk"),
            custdata.purpose("billing"),
        ):
            future = JOBS.ThreadPoolExecutor(1).submit(
                JOBS.forgetful_job, engine, custodian
            )
            with pytest.raises(custdata.ActorRequiredError):
                future.result()
        assert_denied(decisions, reason=custdata.DenyReason.NO_ACTOR)
