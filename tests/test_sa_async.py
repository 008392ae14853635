"""The SQLAlchemy integration under asyncio: aiosqlite, asyncpg, psycopg, asyncmy."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import os
import sys

from pathlib import Path

import pytest

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import custdata


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - fixtures
    CANARIES,
    CountingKeyring,
    billing,
    counting,
    keyring,
    make_models,
    marketing,
    recorder,
    sa_custodian,
    support,
)


@pytest.fixture(params=["aiosqlite", "asyncpg", "psycopg_async", "asyncmy"])
def async_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "aiosqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'async.db'}"
    if request.param == "asyncmy":
        env, dialect = "CUSTDATA_TEST_MYSQL_URL", "mysql"
    else:
        env, dialect = "CUSTDATA_TEST_POSTGRES_URL", "postgresql"
    url = os.environ.get(env)
    if not url:
        pytest.skip(f"set {env} to run this test against a real server")
    rest = url.split("://", 1)[1]
    return f"{dialect}+{request.param}://{rest}"


class TestAsync:
    """ORM reads and writes through AsyncSession keep every guarantee."""

    async def test_round_trip_and_denial(
        self,
        async_url: str,
        sa_custodian: custdata.Custodian,
        counting: CountingKeyring,
    ) -> None:
        """Allowed reads decrypt, denied reads raise without decrypting, search works."""
        models = make_models()
        engine = create_async_engine(async_url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(models.Base.metadata.create_all)
            with billing():
                async with AsyncSession(engine) as session:
                    c = models.Customer(
                        name=CANARIES["name"],
                        email=CANARIES["email"],
                        card=CANARIES["card"],
                    )
                    session.add(c)
                    await session.commit()
            with support():
                async with AsyncSession(engine) as session:
                    found = (
                        await session.scalars(
                            select(models.Customer).where(
                                models.Customer.email == CANARIES["email"]
                            )
                        )
                    ).one()
                    assert (CANARIES["name"], CANARIES["email"]) == (
                        found.name,
                        found.email,
                    )
                    before = counting.counts["decrypt"]
                    with pytest.raises(custdata.PurposeViolationError):
                        await session.scalars(select(models.Customer.card))
                    assert before == counting.counts["decrypt"]
            with billing():
                async with AsyncSession(engine) as session:
                    got = await session.get(models.Customer, found.id)
                    assert got is not None
                    assert CANARIES["card"] == got.card
        finally:
            async with engine.begin() as conn:
                await conn.run_sync(models.Base.metadata.drop_all)
            await engine.dispose()

    async def test_tasks_do_not_share_context(
        self, async_url: str, sa_custodian: custdata.Custodian
    ) -> None:
        """Two tasks with different purposes each get their own decision."""
        import asyncio

        models = make_models()
        engine = create_async_engine(async_url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(models.Base.metadata.create_all)
            with billing():
                async with AsyncSession(engine) as session:
                    session.add(
                        models.Customer(name="A", email="a@example.jp", card="4111")
                    )
                    await session.commit()

            async def read_card(ctx: object) -> object:
                with ctx:  # type: ignore[attr-defined]
                    async with AsyncSession(engine) as s:
                        try:
                            return (await s.scalars(select(models.Customer.card))).all()
                        except custdata.PurposeViolationError as exc:
                            return type(exc)

            results = await asyncio.gather(read_card(billing()), read_card(support()))
            assert [["4111"], custdata.PurposeViolationError] == list(results)
        finally:
            async with engine.begin() as conn:
                await conn.run_sync(models.Base.metadata.drop_all)
            await engine.dispose()
