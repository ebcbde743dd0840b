"""WSGI entry point for gunicorn: `app.wsgi:app` (see deploy/gunicorn.conf.py)."""

from app import create_app

app = create_app()
