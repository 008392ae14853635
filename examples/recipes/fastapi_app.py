"""Recipe: custdata in a FastAPI application.

- A middleware gives each request its id (bound with ``structlog.contextvars``,
  so the application's log lines and custdata's audit events share it) and
  makes the custodian current for the request.
- An async dependency authenticates the caller and acts as them
  (``custdata.acting_as``) for the rest of the request.
- Each route claims its purpose with a dependency (``claims("support")``); a
  role that may not claim it gets 403, recorded as a denial.
- custdata's access errors become 403 responses naming the refused fields,
  never a value.

Run it with ``uvicorn examples.recipes.fastapi_app:app``; the tests drive it
with FastAPI's ``TestClient``.
"""

from __future__ import annotations

import sys
import uuid

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import structlog

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.orm import Session


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shop"))

from models import Customer

import custdata


#: Bearer tokens of the demo's users: (actor id, role). A real application
#: verifies a session or a JWT here.
USERS = {
    "token-support": ("u-102", "support_agent"),
    "token-billing": ("c-9", "billing_clerk"),
    "token-marketing": ("m-7", "marketer"),
}

log = structlog.get_logger("shop.api")


async def acting_user(
    authorization: Annotated[str | None, Header()] = None,
) -> AsyncIterator[custdata.AccessContext]:
    """Authenticate the caller and act as them for the rest of the request."""
    token = (authorization or "").removeprefix("Bearer ")
    if token not in USERS:
        raise HTTPException(status_code=401, detail="unknown user")
    actor, role = USERS[token]
    with custdata.acting_as(actor, role=role) as ctx:
        yield ctx


def claims(purpose: str) -> Callable[..., AsyncIterator[custdata.AccessContext]]:
    """A dependency claiming *purpose* for the route (after authentication)."""

    async def claim(
        _user: Annotated[custdata.AccessContext, Depends(acting_user)],
    ) -> AsyncIterator[custdata.AccessContext]:
        with custdata.purpose(purpose) as ctx:
            yield ctx

    return claim


def create_app(engine: Engine, custodian: custdata.Custodian) -> FastAPI:
    """The API over *engine*, deciding every access with *custodian*."""
    app = FastAPI()

    @app.middleware("http")
    async def request_context(
        request: Request, call_next: Callable[[Request], Any]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        with (
            structlog.contextvars.bound_contextvars(request_id=request_id),
            custodian.activate(),
        ):
            response: Response = await call_next(request)
        response.headers["x-request-id"] = request_id
        return response

    @app.exception_handler(custdata.AccessDeniedError)
    async def refused(
        _request: Request, exc: custdata.AccessDeniedError
    ) -> JSONResponse:
        # The message names fields, purposes and roles only: safe to return.
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, 403)

    @app.get("/customers/{customer_id}")
    async def contact(
        customer_id: uuid.UUID,
        _ctx: Annotated[custdata.AccessContext, Depends(claims("support"))],
    ) -> dict[str, str | None]:
        with Session(engine) as session:
            customer = session.get(Customer, customer_id)
            if customer is None:
                raise HTTPException(status_code=404)
            log.info("contact looked up")
            return {"name": customer.name, "email": customer.email}

    @app.get("/customers/{customer_id}/card")
    def card(
        customer_id: uuid.UUID,
        _ctx: Annotated[custdata.AccessContext, Depends(claims("support"))],
    ) -> dict[str, str | None]:
        # A plain (sync) route runs in a worker thread with a copy of the
        # request's context: the actor and purpose are there too.
        with Session(engine) as session:
            customer = session.get(Customer, customer_id)
            if customer is None:
                raise HTTPException(status_code=404)
            return {"card": customer.card}  # support may not read it: 403

    @app.get("/billing/{customer_id}")
    def billing(
        customer_id: uuid.UUID,
        _ctx: Annotated[custdata.AccessContext, Depends(claims("billing"))],
    ) -> dict[str, str | None]:
        with Session(engine) as session:
            customer = session.get(Customer, customer_id)
            if customer is None:
                raise HTTPException(status_code=404)
            return {"name": customer.name, "card": customer.card}

    return app
