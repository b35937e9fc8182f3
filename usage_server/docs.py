"""GET /docs: the OpenAPI description rendered by a vendored Swagger UI, no network needed.

Swagger UI (swagger-ui-dist, pinned in static/vendor/swagger-ui/VERSION) is served from the
app's static folder; the page's Content-Security-Policy lets a browser load nothing else.
"""
from flask import Blueprint, current_app, render_template

bp = Blueprint("docs", __name__)

POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
          "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")


@bp.get("/docs")
def page():
    response = current_app.make_response(render_template("docs.html"))
    response.headers["Content-Security-Policy"] = POLICY
    return response
