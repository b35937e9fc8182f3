"""The fast path for event batches never accepts what the schema refuses, and loads what
it accepts exactly as the schema does."""
import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from usage_server.eventload import fast_events
from usage_server.ingest import NewEvent
from usage_server.schemas import EventBatchSchema

VALID = {"id": "evt-1", "timestamp": "2026-03-18T10:00:00.5+05:30", "modelConfigId": "cfg_a",
         "promptTokens": 10, "completionTokens": 5}
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.integers(10**12 - 1, 10**12 + 1), st.integers(2**63, 2**64),
    st.decimals(allow_nan=True, allow_infinity=True, places=7), st.text(max_size=8),
    st.sampled_from(["platform", "user", "Platform", "2026-03-18", "2026-03-18T10:00:00Z", "1969-12-31T23:59:59Z",
                     "cfg a", "x" * 65, "x" * 129, "id:with.colon-1"]),
    st.lists(st.integers(), max_size=1), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
FIELDS = st.sampled_from(["id", "timestamp", "modelConfigId", "promptTokens", "completionTokens", "totalTokens",
                          "cost", "executionTime", "billingSource", "extra"])


def schema_events(document):
    try:
        return [NewEvent.from_loaded(item) for item in EventBatchSchema().load(document)["events"]]
    except ValidationError:
        return None


@st.composite
def batches(draw):
    events = []
    for number in range(draw(st.integers(1, 4))):
        event = dict(VALID, id=f"evt-{number}")
        for field, value in draw(st.dictionaries(FIELDS, ODD_VALUES, max_size=3)).items():
            event[field] = value
        for field in draw(st.lists(FIELDS, max_size=1)):
            event.pop(field, None)
        events.append(event)
    document = {"events": events}
    if draw(st.booleans()):  # as the server sees it: parsed from JSON text with exact decimals
        try:
            document = json.loads(json.dumps(document, default=str), parse_float=Decimal)
        except ValueError:
            pass
    return document


@settings(max_examples=400, deadline=None)
@given(batches())
def test_fast_path_agrees_with_the_schema(document):
    fast = fast_events(document)
    if fast is not None:
        assert fast == schema_events(document)


def test_plain_batches_take_the_fast_path():
    document = {"events": [VALID, dict(VALID, id="evt-2", cost=Decimal("0.25"), executionTime=1, totalTokens=20,
                                       billingSource="user")]}
    assert fast_events(document) == schema_events(document) is not None
    for odd in ({"events": []}, {"events": [VALID] * 1001}, {"events": [VALID], "more": 1}, {"events": [dict(VALID, cost=None)]}):
        assert fast_events(odd) is None
