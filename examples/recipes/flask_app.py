"""Recipe: custdata in a Flask application.

- ``before_request`` binds the request id (``structlog.contextvars``, shared by
  log lines and audit events), makes the custodian current and acts as the
  authenticated user; ``teardown_request`` leaves all three, even when the
  view raised.
- Each view claims its purpose with ``@custdata.requires_purpose``.
- custdata's access errors become 403 responses naming the refused fields,
  never a value.

The tests drive it with Flask's test client.
"""

from __future__ import annotations

import contextlib
import sys
import uuid

from pathlib import Path

import structlog

from flask import Flask, abort, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine
from sqlalchemy.orm import Session


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shop"))

from models import Customer

import custdata


#: Bearer tokens of the demo's users: (actor id, role).
USERS = {
    "token-support": ("u-102", "support_agent"),
    "token-billing": ("c-9", "billing_clerk"),
}


def create_app(engine: Engine, custodian: custdata.Custodian) -> Flask:
    """The Flask app over *engine*, deciding every access with *custodian*."""
    app = Flask(__name__)

    @app.before_request
    def enter_context() -> ResponseReturnValue | None:
        stack = g.custdata_stack = contextlib.ExitStack()
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        g.request_id = request_id
        stack.enter_context(
            structlog.contextvars.bound_contextvars(request_id=request_id)
        )
        stack.enter_context(custodian.activate())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in USERS:
            return jsonify(error="unknown user"), 401
        actor, role = USERS[token]
        stack.enter_context(custdata.acting_as(actor, role=role))
        return None

    @app.after_request
    def tag(response: ResponseReturnValue) -> ResponseReturnValue:
        response.headers["X-Request-Id"] = g.request_id  # type: ignore[union-attr]
        return response

    @app.teardown_request
    def leave_context(_exc: BaseException | None) -> None:
        stack = g.pop("custdata_stack", None)
        if stack is not None:
            stack.close()

    @app.errorhandler(custdata.AccessDeniedError)
    def refused(exc: custdata.AccessDeniedError) -> ResponseReturnValue:
        return jsonify(error=type(exc).__name__, detail=str(exc)), 403

    def load(customer_id: str) -> tuple[Session, Customer]:
        session = Session(engine)
        customer = session.get(Customer, uuid.UUID(customer_id))
        if customer is None:
            session.close()
            abort(404)
        return session, customer

    @app.get("/customers/<customer_id>")
    @custdata.requires_purpose("support")
    def contact(customer_id: str) -> ResponseReturnValue:
        session, customer = load(customer_id)
        with session:
            return jsonify(name=customer.name, email=customer.email)

    @app.get("/customers/<customer_id>/card")
    @custdata.requires_purpose("support")
    def card(customer_id: str) -> ResponseReturnValue:
        session, customer = load(customer_id)
        with session:
            return jsonify(card=customer.card)  # support may not read it: 403

    @app.get("/billing/<customer_id>")
    @custdata.requires_purpose("billing")
    def billing(customer_id: str) -> ResponseReturnValue:
        session, customer = load(customer_id)
        with session:
            return jsonify(name=customer.name, card=customer.card)

    return app
