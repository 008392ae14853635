"""Names a user can type (actor ids, roles, purposes) are recorded, never internal errors.

Issue 9, item 3: any actor id is valid and recorded; unknown, padded or
control-character roles and purposes give the documented public error and a
recorded denial, on the real :class:`~custdata.audit.AuditTrail` written to a
JSON-lines file that then verifies intact.
"""

from __future__ import annotations

import json
import sys

from collections.abc import Iterator
from pathlib import Path

import pytest

import custdata

from custdata._decision import Action


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import FakeKeys
from custdata.audit import AuditTrail, JsonLinesSink, JsonLinesSource, verify_trail
from custdata.audit._schema import NAME_MAX, audit_name


class Recorded:
    """A custodian whose trail writes to a JSON-lines file the test reads back."""

    def __init__(self, policy: custdata.Policy, path: Path) -> None:
        self.path = path
        self.keys = FakeKeys()
        self.trail = AuditTrail(
            self.keys, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
        )
        self.custodian = custdata.Custodian(policy=policy, audit=self.trail)

    def bodies(self) -> list[dict[str, object]]:
        lines = self.path.read_bytes().splitlines()
        return [json.loads(line)["body"] for line in lines]

    def decisions(self) -> list[dict[str, object]]:
        return [b for b in self.bodies() if not str(b["action"]).startswith("audit.")]

    def verify_intact(self) -> None:
        self.trail.close()
        report = verify_trail(JsonLinesSource(self.path), self.keys)
        assert [] == [str(f) for f in report.findings if not f.informational]


@pytest.fixture
def rec(sample_policy: custdata.Policy, tmp_path: Path) -> Iterator[Recorded]:
    r = Recorded(sample_policy, tmp_path / "audit.jsonl")
    with r.custodian.activate():
        yield r
    r.trail.close()


ACTOR_IDS = [
    "hanako@example.co.jp",
    "Hanako Yamada",
    "山田 花子",
    "u-1 ",
    "a" * NAME_MAX,
    'quote"and\\backslash',
]


class TestActorIds:
    @pytest.mark.parametrize("actor", ACTOR_IDS)
    def test_any_actor_id_is_recorded_as_given(self, rec: Recorded, actor: str) -> None:
        """Spaces, ``@``, non-ASCII, quotes: the allowed read succeeds and names the actor."""
        with (
            custdata.acting_as(actor, role="support_agent"),
            custdata.purpose("support"),
        ):
            rec.custodian.authorize(
                action=Action.READ, entity="customers", subjects=["c-1"], count=1
            )
        events = rec.decisions()
        assert [actor, actor] == [e["actor"]["id"] for e in events]  # type: ignore[index]
        assert ["purpose.check", "field.reveal"] == [e["action"] for e in events]
        rec.verify_intact()

    def test_control_characters_are_escaped(self, rec: Recorded) -> None:
        """An actor id with a NUL and a newline is recorded escaped, not refused."""
        with (
            custdata.acting_as("u-1\x00\n", role="support_agent"),
            custdata.purpose("support"),
        ):
            pass
        (event,) = rec.decisions()
        assert "u-1\\u0000\\u000a" == event["actor"]["id"]  # type: ignore[index]
        assert b"\x00" not in rec.path.read_bytes()
        rec.verify_intact()

    def test_overlong_actor_id_is_recorded_as_its_digest(self, rec: Recorded) -> None:
        """A name past 256 characters is recorded as ``sha256:`` and its digest."""
        actor = "x" * (NAME_MAX + 1)
        with (
            custdata.acting_as(actor, role="support_agent"),
            custdata.purpose("support"),
        ):
            pass
        (event,) = rec.decisions()
        assert audit_name(actor) == event["actor"]["id"]  # type: ignore[index]
        assert str(event["actor"]["id"]).startswith("sha256:")  # type: ignore[index]
        rec.verify_intact()


BAD_ROLES = ["auditor", "support_agent ", "support_agent\x00", " support_agent"]
BAD_PURPOSES = ["research", "support ", "support\x00", "support\t", "サポート"]


class TestRolesAndPurposes:
    @pytest.mark.parametrize("role", BAD_ROLES)
    def test_bad_role_is_a_recorded_public_error(
        self, rec: Recorded, role: str
    ) -> None:
        """Unknown, padded or control-character roles: PurposeNotGrantedError, recorded."""
        with (
            custdata.acting_as("u-1", role=role),
            pytest.raises(custdata.PurposeNotGrantedError),
            custdata.purpose("support"),
        ):
            pass  # pragma: no cover - the claim raises
        (event,) = rec.decisions()
        assert ("purpose.check", "denied") == (event["action"], event["outcome"])
        assert [audit_name(role)] == event["actor"]["roles"]  # type: ignore[index]
        rec.verify_intact()

    @pytest.mark.parametrize("purpose", BAD_PURPOSES)
    def test_bad_purpose_is_a_recorded_public_error(
        self, rec: Recorded, purpose: str
    ) -> None:
        """Unknown, padded or control-character purposes: PurposeViolationError, recorded."""
        with (
            custdata.acting_as("u-1", role="support_agent"),
            pytest.raises(custdata.PurposeViolationError),
            custdata.purpose(purpose),
        ):
            pass  # pragma: no cover - the claim raises
        (event,) = rec.decisions()
        assert ("purpose.check", "denied") == (event["action"], event["outcome"])
        assert audit_name(purpose) == event["purpose"]
        rec.verify_intact()

    @pytest.mark.parametrize("purpose", BAD_PURPOSES)
    def test_bad_purpose_on_read_records_the_denial_with_subjects(
        self, rec: Recorded, purpose: str
    ) -> None:
        """A read under a bad purpose (context set without a custodian) is a recorded denial."""
        with custdata.acting_as("u-1", role="support_agent"):
            token = custdata._context._access.set(
                custdata._context._access.get().__class__(
                    actor="u-1", role="support_agent", purpose=purpose
                )
            )
            try:
                with pytest.raises(custdata.PurposeViolationError):
                    rec.custodian.authorize(
                        action=Action.READ,
                        entity="customers",
                        subjects=["c-9"],
                        count=1,
                    )
            finally:
                custdata._context._access.reset(token)
        (event,) = rec.decisions()
        assert "denied" == event["outcome"]
        assert rec.trail.subject_ref("c-9") == event["subject_ref"]
        rec.verify_intact()


class TestNamesInTheTables:
    def test_recorded_names_verify_in_the_audit_tables(
        self, db_url: str, unique_suffix: str
    ) -> None:
        """E-mail, non-ASCII, padded and escaped names fill the derived columns and verify intact."""
        import sqlalchemy as sa

        from custdata._decision import AccessDecision, Outcome
        from custdata.audit import SqlSink, SqlSource

        keys = FakeKeys()
        sink = SqlSink(db_url, prefix=f"t_names_{unique_suffix}")
        trail = AuditTrail(keys, sinks=[sink], checkpoint_interval=None)
        names = [*ACTOR_IDS, "u-1\x00\n", "x" * (NAME_MAX + 1)]
        try:
            for actor in names:
                trail.record_decision(
                    AccessDecision(
                        outcome=Outcome.ALLOWED,
                        action=Action.READ,
                        actor=actor,
                        role="support_agent ",
                        purpose="support\x00",
                        policy_version="1",
                        entity="customers",
                        fields=("email",),
                        categories=("contact",),
                        subjects=("c-1",),
                        count=1,
                    )
                )
            trail.close()
            engine = sa.create_engine(db_url)
            try:
                report = verify_trail(SqlSource(engine, sink.tables), keys)
                with engine.connect() as conn:
                    stored = set(
                        conn.execute(sa.select(sink.tables.event.c.actor_id)).scalars()
                    )
            finally:
                sink.tables.metadata.drop_all(engine)
                engine.dispose()
        finally:
            trail.close()
        assert [] == [str(f) for f in report.findings if not f.informational]
        assert {audit_name(n) for n in names} <= stored
