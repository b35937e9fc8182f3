"""ETags on the usage answers, so that polling costs a 304 when nothing changed.

A tag hashes the owner, the owner's usage version (bumped in the transaction of every
stored batch) and the resolved request: range, period, granularity, zone, config,
limit and format. New usage changes it at once; so does "today" moving on, since the
resolved range moves with it. Read the version in the same snapshot as the answer: a
tag is then never newer than the body it comes with.
"""
import hashlib
import json

from flask import Response, current_app, request

from . import __version__, queries
from .storage import Connection


def usage_tag(db: Connection, owner_id: int, resolved: list, version: int | None = None) -> str:
    """`version`: the owner's, if already read in this snapshot."""
    if version is None:
        version = db.execute(queries.OWNER_VERSION, {"owner_id": owner_id}).fetchone()[0]
    material = [__version__, current_app.config["DATA_SOURCE"], owner_id, version, resolved]
    return hashlib.sha256(json.dumps(material, default=str).encode()).hexdigest()[:32]


def conditional(db: Connection, owner_id: int, resolved: list, render, version: int | None = None) -> Response:
    """304 without a body when If-None-Match holds the current tag, else render()."""
    tag = usage_tag(db, owner_id, resolved, version)
    response = Response(status=304) if request.if_none_match.contains_weak(tag) else render()
    response.set_etag(tag)
    response.vary.update(("Accept", "Authorization"))
    return response
