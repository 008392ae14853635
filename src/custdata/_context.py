"""The access context: who is acting, in which role, for which purpose.

Everything lives in :mod:`contextvars`, so threads and asyncio tasks never see
each other's actor or purpose. Contexts nest; the innermost wins and the outer
one is restored on exit, even when the block raises.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
import structlog

from ._errors import ActorRequiredError


if TYPE_CHECKING:
    from ._custodian import Custodian

if TYPE_CHECKING:  # pragma: no cover - typing only
    from typing_extensions import ParamSpec
else:
    try:
        from typing import ParamSpec
    except ImportError:  # pragma: no cover - Python 3.10 has it; belt and braces
        from typing_extensions import ParamSpec

__all__ = [
    "AccessContext",
    "acting_as",
    "add_access_context",
    "current_access",
    "purpose",
    "requires_purpose",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")


@attrs.frozen(kw_only=True)
class AccessContext:
    """The access context in force.

    Attributes:
        actor: The acting user or service id, or ``None`` (anonymous: refused).
        role: The role the actor acts in.
        purpose: The purpose claimed, or ``None``.
        request_id: The application's request id, carried into audit events.
        trace_id: A distributed-tracing id, carried into audit events.
    """

    actor: str | None = None
    role: str | None = None
    purpose: str | None = None
    request_id: str | None = None
    trace_id: str | None = None


_EMPTY = AccessContext()
_access: contextvars.ContextVar[AccessContext] = contextvars.ContextVar(
    "custdata_access", default=_EMPTY
)
_custodian: contextvars.ContextVar[Custodian | None] = contextvars.ContextVar(
    "custdata_custodian", default=None
)


def current_access() -> AccessContext:
    """Return the access context in force in this thread or task."""
    return _access.get()


def _bound_request_id() -> str | None:
    """The ``request_id`` bound in structlog's context variables, if a str."""
    bound = structlog.contextvars.get_contextvars().get("request_id")
    return bound if isinstance(bound, str) else None


def add_access_context(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: add the access context to the application's log lines.

    Adds ``actor``, ``role`` and ``purpose`` from the context in force and
    ``request_id`` (the context's, or the one bound with
    :func:`structlog.contextvars.bind_contextvars`), each only when set and
    never over a key the log call already has. Put it in the application's
    own processor chain, after ``merge_contextvars``::

        structlog.configure(processors=[
            structlog.contextvars.merge_contextvars,
            custdata.add_access_context,
            structlog.processors.JSONRenderer(),
        ])

    custdata never configures structlog itself.
    """
    del logger, method_name
    ctx = _access.get()
    request_id = ctx.request_id if ctx.request_id is not None else _bound_request_id()
    for key, value in (
        ("actor", ctx.actor),
        ("role", ctx.role),
        ("purpose", ctx.purpose),
        ("request_id", request_id),
    ):
        if value is not None:
            event_dict.setdefault(key, value)
    return event_dict


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str):
        msg = f"{what} must be a str, not {type(value).__name__}"
        raise TypeError(msg)
    if not value.strip():
        msg = f"{what} must not be empty"
        raise ValueError(msg)
    return value


@contextlib.contextmanager
def acting_as(
    actor: str,
    *,
    role: str,
    request_id: str | None = None,
    trace_id: str | None = None,
) -> Iterator[AccessContext]:
    """Act as *actor* in *role* for the duration of the block.

    Entering a new actor clears any purpose claimed by the outer actor: a purpose
    is claimed by someone, and the new actor must claim its own.

    Args:
        actor: A stable id of the user or service (not an e-mail address).
        role: The role, which must be declared in the policy for any access to
            succeed.
        request_id: Optional request id to carry into audit events. When
            omitted, the ``request_id`` the application bound with
            :func:`structlog.contextvars.bind_contextvars` (if any) when the
            block is entered.
        trace_id: Optional tracing id to carry into audit events.

    Raises:
        TypeError: If *actor* or *role* is not a string.
        ValueError: If *actor* or *role* is empty.
    """
    ctx = AccessContext(
        actor=_check_name(actor, "actor"),
        role=_check_name(role, "role"),
        request_id=request_id if request_id is not None else _bound_request_id(),
        trace_id=trace_id,
    )
    token = _access.set(ctx)
    try:
        yield ctx
    finally:
        _access.reset(token)


@contextlib.contextmanager
def purpose(name: str) -> Iterator[AccessContext]:
    """Claim the purpose *name* for the duration of the block.

    The claim is checked at once, before any data is touched: there must be an
    actor, and when a custodian is current its policy must declare the purpose
    and grant it (or a purpose above it) to the actor's role. The check is a
    decision like any other and is recorded in the audit trail.

    Raises:
        TypeError: If *name* is not a string.
        ValueError: If *name* is empty.
        ActorRequiredError: If no actor is in force.
        PurposeNotGrantedError: If the actor's role may not claim the purpose.
        PurposeViolationError: If the policy does not declare the purpose.
    """
    _check_name(name, "purpose")
    outer = _access.get()
    ctx = attrs.evolve(outer, purpose=name)
    custodian = _custodian.get() or _default_custodian[0]
    if custodian is not None:
        token = _access.set(ctx)
        try:
            custodian.check_claim()
        except BaseException:
            _access.reset(token)
            raise
    else:
        if outer.actor is None:
            msg = f"claiming purpose {name!r} needs an actor: use custdata.acting_as()"
            raise ActorRequiredError(msg)
        token = _access.set(ctx)
    try:
        yield ctx
    finally:
        _access.reset(token)


def requires_purpose(
    name: str,
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Run the decorated function under the purpose *name*.

    Each call claims the purpose exactly as ``with custdata.purpose(name):``
    would, so the caller must be acting as someone whose role may claim it.
    Works for plain and ``async`` functions and keeps their signatures.

    Raises:
        TypeError: If *name* is not a string.
        ValueError: If *name* is empty.
    """
    _check_name(name, "purpose")

    def decorate(func: Callable[_P, _R]) -> Callable[_P, _R]:
        if inspect.iscoroutinefunction(func):
            async_func = cast("Callable[_P, Awaitable[Any]]", func)

            @functools.wraps(func)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                with purpose(name):
                    return await async_func(*args, **kwargs)

            return cast("Callable[_P, _R]", async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with purpose(name):
                return func(*args, **kwargs)

        return wrapper

    return decorate


# The process-wide custodian set by Custodian.make_current(); a one-item list so
# the custodian module can replace it without a ``global`` statement there.
_default_custodian: list[Custodian | None] = [None]
