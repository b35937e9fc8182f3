"""Entry point for gunicorn: `gunicorn wsgi:app`."""
from usage_server import create_app, webhooks

app = create_app()
webhooks.serve(app)  # this worker's webhook delivery thread
# Production never runs in debug mode, whatever FLASK_DEBUG or USAGE_SERVER_DEBUG say:
# every failure is answered by the JSON error handlers, never propagated or shown.
app.debug = False
app.config["PROPAGATE_EXCEPTIONS"] = False
