"""Liveness and readiness probes for systemd, Docker, nginx and deploy gates."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import text

from app.extensions import db, get_redis, limiter

bp = Blueprint("health", __name__)

# A probe must see the process as it is now: never an answer a cache kept (nginx's microcache
# would otherwise store a 200 for a second).
LIVE = {"Cache-Control": "no-store"}


@bp.get("/healthz")
@limiter.exempt
def healthz() -> tuple[dict, int, dict]:
    """The process answers; touches nothing else, so it stays cheap and never flaps."""
    return {"status": "ok"}, 200, LIVE


def check_services() -> dict[str, str]:
    """Probe Postgres and Redis once each; the value is "ok" or a short reason."""
    results = {}
    try:
        db.session.execute(text("SELECT 1"))
        results["postgres"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        db.session.rollback()
        results["postgres"] = type(exc).__name__
    try:
        get_redis().ping()
        results["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        results["redis"] = type(exc).__name__
    return results


@bp.get("/readyz")
@limiter.exempt
def readyz() -> tuple[dict, int, dict]:
    results = check_services()
    ready = all(value == "ok" for value in results.values())
    return {"status": "ready" if ready else "unavailable", **results}, 200 if ready else 503, LIVE
