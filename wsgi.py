"""Entry point for gunicorn: `gunicorn wsgi:app`."""
from usage_server import create_app

app = create_app()
