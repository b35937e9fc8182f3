"""GET /: the dashboard, one page that reads the public API with a key the user pastes.

The page holds no data and no key: static/dashboard.js asks the API from the browser,
keeping the key in sessionStorage and sending it only in the Authorization header.
A strict Content-Security-Policy (own scripts only, no inline code) guards that key.
"""
from flask import Blueprint, render_template

from .schemas import available_zone_names
from .timeranges import GRANULARITIES, MAX_BUCKETS, PERIODS

bp = Blueprint("dashboard", __name__)

PERIOD_LABELS = {
    "today": "Today",
    "yesterday": "Yesterday",
    "last_7_days": "Last 7 days",
    "last_30_days": "Last 30 days",
    "current_month": "This month",
    "last_month": "Last month",
    "current_year": "This year",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@bp.get("/")
def page():
    return render_template(
        "dashboard.html",
        periods={period: PERIOD_LABELS[period] for period in PERIODS},
        granularities=GRANULARITIES,
        zones=sorted(available_zone_names()),
        max_buckets=MAX_BUCKETS,
    )


@bp.after_request
def security_headers(response):
    response.headers.update(SECURITY_HEADERS)
    return response
