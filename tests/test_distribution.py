"""The PostgreSQL schema is ready to be distributed by owner (Citus, docs/scaling.md).

Read from a migrated database's catalogue: every key, index and foreign key of a table that
holds owner data leads with owner_id, so each owner's rows can live on one node and every
constraint can be checked there. The tables every request reads before it knows its owner
(the owner named, the key presented) and those without owner data are reference tables:
small, copied to every node, and free of this rule.
"""
import pytest

from usage_server import create_app
from usage_server.storage import connect

REFERENCE_TABLES = {
    "owner": "looked up by name, and referenced by every distributed table",
    "api_key": "looked up by the key's hash before the owner is known",
    "model": "the model catalogue, shared by every owner",
    "rollup_offset": "the UTC offsets the local rollups are kept at, for every owner",
    "retention": "one row: the retention horizon, for every owner",
    "schema_version": "the schema's migrations",
}
OWNER_COLUMN = "owner_id"

TABLES = """
SELECT relname
FROM pg_class
WHERE relnamespace = current_schema()::regnamespace
  AND relkind IN ('r', 'p')
"""

# every index (primary keys and unique constraints have one) and its leading column;
# an expression index has no column in indkey[0] and so none here
INDEXES = """
SELECT tables.relname AS table_name, indexes.relname AS index_name, head.attname AS leading_column
FROM pg_index
JOIN pg_class AS tables ON tables.oid = pg_index.indrelid
JOIN pg_class AS indexes ON indexes.oid = pg_index.indexrelid
LEFT JOIN pg_attribute AS head ON head.attrelid = tables.oid AND head.attnum = pg_index.indkey[0]
WHERE tables.relnamespace = current_schema()::regnamespace
"""

# every key and foreign key, with the leading column on each side
CONSTRAINTS = """
SELECT tables.relname AS table_name, conname AS constraint_name, contype AS kind,
       head.attname AS leading_column,
       referenced.relname AS referenced_table, referenced_head.attname AS referenced_column
FROM pg_constraint
JOIN pg_class AS tables ON tables.oid = pg_constraint.conrelid
JOIN pg_attribute AS head ON head.attrelid = conrelid AND head.attnum = conkey[1]
LEFT JOIN pg_class AS referenced ON referenced.oid = confrelid
LEFT JOIN pg_attribute AS referenced_head
       ON referenced_head.attrelid = confrelid AND referenced_head.attnum = confkey[1]
WHERE tables.relnamespace = current_schema()::regnamespace
  AND contype IN ('p', 'u', 'f', 'x')
"""


@pytest.fixture(scope="module")
def catalogue(postgres):
    """Tables, indexes and constraints of a database the server has migrated."""
    app = create_app({"DATABASE": postgres.new_schema()})
    conn = connect(app.config)
    try:
        return {"tables": {row[0] for row in conn.execute(TABLES)},
                "indexes": [tuple(row) for row in conn.execute(INDEXES)],
                "constraints": [tuple(row) for row in conn.execute(CONSTRAINTS)]}
    finally:
        conn.close()


def distributed(catalogue) -> set[str]:
    return catalogue["tables"] - set(REFERENCE_TABLES)


def test_every_table_is_either_distributed_by_owner_or_a_reference_table(catalogue):
    """A new table must be placed: it either has owner_id or is named a reference table."""
    assert set(REFERENCE_TABLES) <= catalogue["tables"]
    indexed = {table for table, *_ in catalogue["indexes"]}
    assert distributed(catalogue) <= indexed  # every distributed table has a key
    assert {"usage_event", "usage_series", "model_config", "rollup_day", "owner_version"} <= distributed(catalogue)


def test_every_index_of_owner_data_leads_with_owner_id(catalogue):
    wrong = [(table, index, column) for table, index, column in catalogue["indexes"]
             if table in distributed(catalogue) and column != OWNER_COLUMN]
    assert wrong == []


def test_every_key_and_foreign_key_of_owner_data_leads_with_owner_id(catalogue):
    """Foreign keys too: one between two distributed tables must join them on owner_id, so
    that both rows live on the same node; one to a reference table may point anywhere."""
    wrong = []
    for table, name, kind, column, referenced, referenced_column in catalogue["constraints"]:
        if table not in distributed(catalogue):
            assert referenced is None or referenced in REFERENCE_TABLES, (table, name)  # no reference to owner data
            continue
        if column != OWNER_COLUMN:
            wrong.append((table, name))
        elif referenced in distributed(catalogue) and referenced_column != OWNER_COLUMN:
            wrong.append((table, name, referenced))
    assert wrong == []
    assert any(kind == "f" for _, _, kind, *_ in catalogue["constraints"])  # the query found the foreign keys
