"""The query strings loaded without marshmallow: each loader gives exactly what its schema
gives, or None (the schema then answers, errors included), and it does take the common cases."""
import pytest
from hypothesis import given, settings, strategies as st
from marshmallow import ValidationError

from usage_server.schemas import PLAIN_QUERIES, DetailsQuerySchema, EmptyQuerySchema, UsageQuerySchema

VALUES = {
    "startDate": ["2026-03-01", "2026-02-30", "2026-3-01", "1969-12-31", "9999-12-31", "0000-01-01", "٢٠٢٦-٠٣-٠١", ""],
    "endDate": ["2026-03-18", "2026-02-28", "2026-13-01", "9999-12-30", " 2026-03-18", "2026-03-18\n"],
    "period": ["today", "last_7_days", "current_year", "Today", "", "last_week"],
    "granularity": ["hour", "day", "week", "month", "year", "", "DAY"],
    "modelConfigId": ["cfg_a", "cfg.b-1", "x" * 64, "x" * 65, "bad id", "", "cfg/a"],
    "timezone": ["UTC", "Asia/Kathmandu", "America/St_Johns", "localtime", "utc", "", "Mars/Base"],
    "limit": ["1", "50", "1000", "0050", "1001", "0", "-1", "+5", "5.0", " 5", "", "x"],
    "unknown": ["1"],
}
queries = st.dictionaries(st.sampled_from(sorted(VALUES)), st.none(), max_size=5).flatmap(
    lambda keys: st.fixed_dictionaries({key: st.sampled_from(VALUES[key]) for key in keys}))


def schema_answer(schema, args):
    try:
        return schema().load(args)
    except ValidationError as err:
        return err


@settings(max_examples=600, deadline=None)
@given(args=queries, schema=st.sampled_from(sorted(PLAIN_QUERIES, key=lambda schema: schema.__name__)))
def test_a_plain_load_is_the_schemas_or_none(args, schema):
    plain = PLAIN_QUERIES[schema](args)
    if plain is not None:
        assert plain == schema_answer(schema, args)


@pytest.mark.parametrize("schema, args", [
    (UsageQuerySchema, {}),
    (UsageQuerySchema, {"period": "last_7_days", "granularity": "hour"}),
    (UsageQuerySchema, {"startDate": "2025-03-19", "endDate": "2026-03-18", "modelConfigId": "cfg_a",
                        "timezone": "Asia/Kathmandu"}),
    (UsageQuerySchema, {"endDate": "2026-03-18", "granularity": "month"}),
    (DetailsQuerySchema, {}),
    (DetailsQuerySchema, {"limit": "1000"}),
    (EmptyQuerySchema, {}),
])
def test_common_queries_skip_the_schema(schema, args):
    assert PLAIN_QUERIES[schema](args) == schema().load(args)
