"""The probes the stack's deploy gate and load balancing ask: /healthz (the process answers)
and /readyz (and its database does)."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import text

from guestbook.extensions import db

bp = Blueprint("health", __name__)
NO_STORE = {"Cache-Control": "no-store"}


@bp.get("/healthz")
def healthz() -> tuple[dict, int, dict]:
    return {"status": "ok"}, 200, NO_STORE


@bp.get("/readyz")
def readyz() -> tuple[dict, int, dict]:
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        db.session.rollback()
        return {"status": "unavailable", "postgres": type(exc).__name__}, 503, NO_STORE
    return {"status": "ready", "postgres": "ok"}, 200, NO_STORE
