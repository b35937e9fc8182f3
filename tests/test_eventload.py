"""The fast path for event batches never accepts what the schema refuses, and loads what
it accepts exactly as the schema does."""
import json
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from usage_server.eventload import MAX_BATCH, fast_events
from usage_server.ingest import NewEvent
from usage_server.schemas import MAX_COST_USD, MAX_EXECUTION_SECONDS, MAX_TOKENS, EventBatchSchema

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
                          "cost", "executionTime", "billingSource", "cachedPromptTokens", "cacheWriteTokens",
                          "reasoningTokens", "extra"])


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


def one_event(**fields) -> dict:
    """A batch of VALID with `fields` changed (None: the field left out)."""
    event = {**VALID, **fields}
    return {"events": [{name: value for name, value in event.items() if value is not None}]}


# Every edge of every rule the fast path checks itself, tried on each run before the random
# batches (which hit a given edge only by luck).
NUMBERS = (0, 0.0, Decimal("0"), 1, 1.0, Decimal("1.5"), -1, -1.0, Decimal("-0.000001"), -(2**63) - 1, -(2**63),
           2**63 - 1, 2**63, 2**64, True, False, "1", [1], {"n": 1}, Decimal("NaN"), Decimal("Infinity"),
           float("nan"), float("inf"))
EDGES = [
    *[one_event(**{field: value}) for field in ("promptTokens", "completionTokens", "totalTokens", "cachedPromptTokens",
                                                "cacheWriteTokens", "reasoningTokens")
      for value in (*NUMBERS, MAX_TOKENS, MAX_TOKENS + 1, float(MAX_TOKENS), Decimal(MAX_TOKENS))],
    # the details within their counts (VALID: 10 prompt, 5 completion tokens), at and past the edge
    *[one_event(**details) for details in ({"cachedPromptTokens": 10}, {"cachedPromptTokens": 11},
                                           {"cacheWriteTokens": 10}, {"cacheWriteTokens": 11},
                                           {"cachedPromptTokens": 4, "cacheWriteTokens": 6},
                                           {"cachedPromptTokens": 4, "cacheWriteTokens": 7},
                                           {"reasoningTokens": 5}, {"reasoningTokens": 6},
                                           {"cachedPromptTokens": 11, "reasoningTokens": 6},
                                           {"promptTokens": MAX_TOKENS, "cachedPromptTokens": MAX_TOKENS,
                                            "cacheWriteTokens": 1})],
    {"events": [dict(VALID, cachedPromptTokens=None)]}, {"events": [dict(VALID, reasoningTokens=None)]},
    *[one_event(cost=value) for value in (*NUMBERS, MAX_COST_USD, Decimal(MAX_COST_USD) + Decimal("0.000001"))],
    *[one_event(executionTime=value) for value in (*NUMBERS, MAX_EXECUTION_SECONDS, MAX_EXECUTION_SECONDS + 1)],
    {"events": [dict(VALID, cost=None)]}, {"events": [dict(VALID, executionTime=None)]},
    {"events": [dict(VALID, promptTokens=None)]}, {"events": [dict(VALID, totalTokens=None)]},
    *[one_event(billingSource=value) for value in ("platform", "user", "Platform", "", 1, True)],
    *[one_event(id=value) for value in ("", "x" * 128, "x" * 129, "a:b.c-d_e", "a b", "é", 1)],
    *[one_event(modelConfigId=value) for value in ("", "x" * 64, "x" * 65, "cfg.a-b_c", "cfg:a", "cfg a", 1)],
    *[one_event(timestamp=value) for value in ("1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
                                               "1970-01-01T00:30:00+01:00", "9999-12-31T23:59:59Z",
                                               "9999-12-31T23:30:00-01:00", "2026-03-18", "2026-02-30T10:00:00Z",
                                               "2026-03-18T10:00:00+24:00", 1773828000)],
    *[{"events": [{name: value for name, value in VALID.items() if name != missing}]} for missing in VALID],
    one_event(extra=1), {"events": []}, {"events": [VALID] * MAX_BATCH}, {"events": [VALID] * (MAX_BATCH + 1)},
    {"events": [VALID], "more": 1}, {"events": VALID}, {"events": [1]}, {"events": None}, {},
]


def with_examples(documents):
    """Hypothesis' @example for each document."""
    def decorate(test):
        for document in documents:
            test = example(document)(test)
        return test
    return decorate


@settings(max_examples=400, deadline=None)
@with_examples(EDGES)
@given(batches())
def test_fast_path_agrees_with_the_schema(document):
    fast = fast_events(document)
    if fast is not None:
        assert fast == schema_events(document)


def test_plain_batches_take_the_fast_path():
    document = {"events": [VALID, dict(VALID, id="evt-2", cost=Decimal("0.25"), executionTime=1, totalTokens=20,
                                       billingSource="user", cachedPromptTokens=6, cacheWriteTokens=4,
                                       reasoningTokens=5)]}
    assert fast_events(document) == schema_events(document) is not None
    for odd in ({"events": []}, {"events": [VALID] * 1001}, {"events": [VALID], "more": 1}, {"events": [dict(VALID, cost=None)]}):
        assert fast_events(odd) is None
