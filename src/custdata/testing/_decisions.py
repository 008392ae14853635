"""The recorder and assertions behind custdata's pytest fixtures."""

from __future__ import annotations

import contextlib

from collections.abc import Callable, Iterable, Iterator
from typing import TypeAlias

from custdata._context import AccessContext, acting_as
from custdata._context import purpose as claim_purpose
from custdata._decision import AccessDecision, Action, DenyReason, Outcome


__all__ = ["Acting", "RecordedDecisions", "acting", "assert_denied", "assert_revealed"]

#: The type of :func:`acting` (and of the ``custdata_acting`` fixture).
Acting: TypeAlias = Callable[..., contextlib.AbstractContextManager[AccessContext]]


class RecordedDecisions:
    """A :class:`custdata.DecisionRecorder` that keeps every decision in memory.

    Iterate it, ``len()`` it, or read :attr:`allowed` and :attr:`denied`.
    """

    def __init__(self) -> None:
        self._decisions: list[AccessDecision] = []

    def record_decision(self, decision: AccessDecision) -> None:
        """Keep *decision* (the ``DecisionRecorder`` protocol)."""
        self._decisions.append(decision)

    def __iter__(self) -> Iterator[AccessDecision]:
        return iter(list(self._decisions))

    def __len__(self) -> int:
        return len(self._decisions)

    def __repr__(self) -> str:
        return f"<RecordedDecisions {len(self._decisions)} decisions>"

    @property
    def allowed(self) -> list[AccessDecision]:
        """The allowed decisions, oldest first."""
        return [d for d in self._decisions if d.outcome is Outcome.ALLOWED]

    @property
    def denied(self) -> list[AccessDecision]:
        """The denied decisions, oldest first."""
        return [d for d in self._decisions if d.outcome is Outcome.DENIED]

    def clear(self) -> None:
        """Forget what was recorded so far (e.g. after a test's set-up)."""
        self._decisions.clear()


@contextlib.contextmanager
def acting(actor: str, *, role: str, purpose: str) -> Iterator[AccessContext]:
    """Act as *actor* in *role* claiming *purpose*, for the block.

    The same as nesting :func:`custdata.acting_as` and :func:`custdata.purpose`;
    the claim is checked on entry, as there.
    """
    with acting_as(actor, role=role), claim_purpose(purpose) as ctx:
        yield ctx


def _describe(decision: AccessDecision) -> str:
    fields = ",".join(decision.fields) or "-"
    denied = f" denied_fields={','.join(decision.denied_fields)}" * bool(
        decision.denied_fields
    )
    reason = f" reason={decision.reason.value}" if decision.reason else ""
    return (
        f"{decision.outcome.value} {decision.action.value} entity={decision.entity} "
        f"fields={fields}{denied} actor={decision.actor} role={decision.role} "
        f"purpose={decision.purpose} count={decision.count}{reason}"
    )


def _subjects(subjects: Iterable[object] | None) -> set[str] | None:
    return None if subjects is None else {str(s) for s in subjects}


def _find(
    decisions: Iterable[AccessDecision],
    *,
    outcome: Outcome,
    what: str,
    fields: Iterable[str] | None,
    action: Action | None,
    actor: str | None,
    purpose_name: str | None,
    subjects: Iterable[object] | None,
    reason: DenyReason | None = None,
) -> AccessDecision:
    wanted = None if fields is None else set(fields)
    wanted_subjects = _subjects(subjects)
    recorded = list(decisions)
    for decision in recorded:
        named = set(decision.fields) | set(decision.denied_fields)
        if (
            decision.outcome is outcome
            and (action is None or decision.action is action)
            and (actor is None or decision.actor == actor)
            and (purpose_name is None or decision.purpose == purpose_name)
            and (reason is None or decision.reason is reason)
            and (wanted is None or wanted <= named)
            and (wanted_subjects is None or wanted_subjects <= set(decision.subjects))
        ):
            return decision
    asked = ", ".join(
        f"{name}={value!r}"
        for name, value in (
            ("fields", sorted(wanted) if wanted is not None else None),
            ("action", action.value if action else None),
            ("actor", actor),
            ("purpose", purpose_name),
            ("reason", reason.value if reason else None),
            ("subjects", len(wanted_subjects) if wanted_subjects else None),
        )
        if value is not None
    )
    listing = "\n".join(f"  {_describe(d)}" for d in recorded) or "  (none)"
    msg = f"no {what} decision with {asked or 'any terms'}; recorded:\n{listing}"
    raise AssertionError(msg)


def assert_revealed(
    decisions: Iterable[AccessDecision],
    *,
    fields: Iterable[str] | None = None,
    actor: str | None = None,
    purpose: str | None = None,
    subjects: Iterable[object] | None = None,
) -> AccessDecision:
    """Assert that values were released for reading, and return that decision.

    Matches an allowed ``read`` decision covering every field of *fields*
    (names as recorded, ``table.column`` or the model's field names as the
    decision lists them), and, when given, the actor, purpose and subjects.

    Raises:
        AssertionError: No recorded decision matches; the message lists them.
    """
    return _find(
        decisions,
        outcome=Outcome.ALLOWED,
        what="allowed read",
        fields=fields,
        action=Action.READ,
        actor=actor,
        purpose_name=purpose,
        subjects=subjects,
    )


def assert_denied(
    decisions: Iterable[AccessDecision],
    *,
    fields: Iterable[str] | None = None,
    action: Action | None = None,
    actor: str | None = None,
    purpose: str | None = None,
    reason: DenyReason | None = None,
    subjects: Iterable[object] | None = None,
) -> AccessDecision:
    """Assert that an access was refused and recorded, and return that decision.

    Matches a denied decision whose fields (or refused fields) include every
    field of *fields*, and, when given, the action, actor, purpose, reason and
    subjects.

    Raises:
        AssertionError: No recorded decision matches; the message lists them.
    """
    return _find(
        decisions,
        outcome=Outcome.DENIED,
        what="denied",
        fields=fields,
        action=action,
        actor=actor,
        purpose_name=purpose,
        subjects=subjects,
        reason=reason,
    )
