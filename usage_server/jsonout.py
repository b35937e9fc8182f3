"""Answers encoded by orjson: the same documents as Flask's own provider, several times faster
on a report of hundreds of buckets.

Out of debug mode Flask writes compact JSON with a newline at the end; so does this, keys in
insertion order (the server's order is part of the contract). Floats are written as their
shortest exact form by both, though orjson spells some differently (1e-6 for 1e-06, 0.00005
for 5e-05: the same number), and non-ASCII characters as UTF-8 rather than \\u escapes.
Whatever orjson does not take as it is (integers beyond 64 bits, non-string keys, dates,
dataclasses, debug mode's indentation) goes through Flask's provider, as before.
"""
import orjson
from flask.json.provider import DefaultJSONProvider

OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


class OrjsonProvider(DefaultJSONProvider):
    sort_keys = False

    def encode(self, obj) -> bytes | None:
        """orjson's bytes, or None where Flask's provider must write it."""
        try:
            return orjson.dumps(obj, default=self.default, option=OPTIONS | orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # orjson.JSONEncodeError: a value orjson refuses, e.g. an integer beyond 64 bits
            return None

    def response(self, *args, **kwargs):
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)
        body = self.encode(self._prepare_response_obj(args, kwargs))
        if body is None:
            return super().response(*args, **kwargs)
        return self._app.response_class(body, mimetype=self.mimetype)
