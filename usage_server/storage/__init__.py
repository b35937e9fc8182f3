"""The storage layer: connections and transactions, schema versions and their migrations,
and what differs per engine. The rest of the server imports only what is named here and
never which engine it is (SQLite or PostgreSQL); storage imports nothing of the services above it."""
from .connections import (Connection, DatabaseSetupError, Row, backup, check_database_path, checkpoint, database_size,
                          holds_data,
                          restore, restore_source, close_pools, connect,
                          database_exists, engine_name, engine_status, get_db, init_app, read_snapshot, redacted, same_database,
                          start_up_connection, sync_identities, unavailable_reason, write_transaction)
from .migrations import NewerSchemaError, Upgrade, drop_schema, migrate

__all__ = [
    "Connection", "DatabaseSetupError", "Row", "check_database_path", "close_pools", "connect", "database_exists",
    "engine_name",
    "get_db", "init_app", "read_snapshot", "start_up_connection", "write_transaction",
    "NewerSchemaError", "Upgrade", "drop_schema", "migrate",
    "backup", "checkpoint", "database_size", "holds_data", "restore", "restore_source", "engine_status", "redacted", "same_database", "sync_identities", "unavailable_reason",
]
