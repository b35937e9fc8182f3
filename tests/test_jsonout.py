"""Answers encoded by orjson say what Flask's own provider said: the same document, keys in
the server's order, compact, a newline at the end; what orjson refuses still goes out."""
import json
from datetime import date

from usage_server import create_app
from usage_server.jsonout import OrjsonProvider

DOCUMENT = {"zeta": 1, "alpha": [0.000001, 5e-05, 123456789.123456, 1e16], "name": "Café \u2028", "none": None,
            "nested": {"b": True, "a": -3}}


def body(app, document) -> bytes:
    with app.app_context():
        return app.json.response(document).get_data()


def test_orjson_writes_the_document_flask_wrote():
    app = create_app({"TESTING": True, "DATABASE": ":memory:"}, prepare_database=False)
    assert isinstance(app.json, OrjsonProvider)
    written = body(app, DOCUMENT)
    assert written.endswith(b"}\n") and b" " not in written.replace(b"Caf\xc3\xa9 ", b"")
    assert json.loads(written) == DOCUMENT and list(json.loads(written)) == list(DOCUMENT)
    assert written == json.dumps(DOCUMENT, separators=(",", ":"), ensure_ascii=False).replace(
        "1e-06", "1e-6").replace("5e-05", "0.00005").encode() + b"\n"


def test_what_orjson_refuses_goes_through_flask():
    app = create_app({"TESTING": True, "DATABASE": ":memory:"}, prepare_database=False)
    huge = {"tokens": 2**70, "day": date(2026, 3, 18), "3": "non-string key below", 4: "four"}
    assert json.loads(body(app, huge)) == {"tokens": 2**70, "day": "Wed, 18 Mar 2026 00:00:00 GMT",
                                           "3": "non-string key below", "4": "four"}
