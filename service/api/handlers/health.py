"""/health and /health/ready: for load balancers and orchestrators; no auth, no /api/v1."""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.api.responses import json_response
from service.api.transaction import get_database
from service.problems import ServiceUnavailableProblem

logger = logging.getLogger("storekeeper.health")


def get_liveness():
    return json_response({"status": "ok"})


def get_readiness():
    try:
        with get_database().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        logger.warning("readiness check failed: %s", exc.__class__.__name__)
        raise ServiceUnavailableProblem("The database cannot be reached.", retry_after=5) from exc
    return json_response({"status": "ok", "checks": {"database": "ok"}})
