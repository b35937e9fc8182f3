"""CSV answers of the usage endpoints, for spreadsheets and data tools.

GET /v1/model-usage is written in long format: one row per time bucket and model, every
bucket of the range for every model with usage in the range (zeros included), models
in the JSON's `usageByModel` order within a bucket. A pivot or group-by then gives any
view, and the columns stay the same whatever the models. The details endpoint gives
one row per event, newest first. Amounts are written exactly, from the stored
micro-dollars, with 6 decimals.
"""
import csv
import io

from flask import Response, request

from . import queries, reports
from .pricing import SOURCE_NAMES
from .storage import Connection
from .timeranges import iso_instant

USAGE_COLUMNS = (
    "date", "modelId", "provider", "modelName", "requests", "unpricedRequests",
    "totalTokens", "platformTokens", "userTokens", "totalCost", "platformCost", "userCost",
    "promptTokens", "cachedPromptTokens", "reasoningTokens",
)
DETAILS_COLUMNS = (
    "id", "timestamp", "modelConfigId", "promptTokens", "completionTokens", "totalTokens",
    "estimatedCost", "executionTime", "billingSource", "priced", "priceSource",
    "cachedPromptTokens", "cacheWriteTokens", "reasoningTokens",
)
SUMS = reports.TOTAL_FIELDS


def wants_csv() -> bool:
    """CSV only when Accept prefers it; `*/*`, JSON or no Accept at all stay JSON."""
    return request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv"


def fixed6(millionths: int) -> str:
    """An integer count of millionths as exact decimal text: 1234567 -> "1.234567"."""
    sign = "-" if millionths < 0 else ""
    whole, fraction = divmod(abs(millionths), 1_000_000)
    return f"{sign}{whole}.{fraction:06d}"


def usage_rows(db: Connection, query: reports.UsageQuery):
    """(bucket, model) rows from the same rollup pieces as the JSON time series."""
    models = reports.usage_by_model(db, query, reports.series_totals(db, query))
    model_of = {row["id"]: row["model_id"] for row in db.execute(queries.OWNER_SERIES, {"owner_id": query.owner_id})}
    labels, pieces = reports.bucket_plan(query, reports.local_offsets(db))
    cells: dict[tuple[str, str], list[int]] = {}
    for grain, params, suffix in pieces:
        for row in db.execute(queries.BUCKET_SERIES[grain], params):
            sums = cells.setdefault((row["bucket"] + suffix, model_of[row["series_id"]]), [0] * len(SUMS))
            for index, field in enumerate(SUMS):
                sums[index] += row[field]
    empty = [0] * len(SUMS)
    for label in labels:
        for model_id, model in models.items():
            (requests, unpriced, platform_tokens, user_tokens, platform_cost, user_cost,
             prompt_tokens, cached_prompt_tokens, reasoning_tokens) = cells.get((label, model_id), empty)
            yield (
                label, model_id, model["provider"], model["modelName"], requests, unpriced,
                platform_tokens + user_tokens, platform_tokens, user_tokens,
                fixed6(platform_cost + user_cost), fixed6(platform_cost), fixed6(user_cost),
                prompt_tokens, cached_prompt_tokens, reasoning_tokens,
            )


def details_rows(config_id: str, events):
    for row in events:
        yield (
            row["event_id"], iso_instant(row["ts_us"]), config_id, row["prompt_tokens"],
            row["completion_tokens"], row["total_tokens"], fixed6(row["cost_micros"]),
            "" if row["execution_us"] is None else fixed6(row["execution_us"]),
            row["billing_source"], "true" if row["priced"] else "false", SOURCE_NAMES[row["price_source"]],
            row["cached_prompt_tokens"], row["cache_write_tokens"], row["reasoning_tokens"],
        )


def csv_response(columns, rows, filename: str) -> Response:
    """RFC 4180 text (CRLF, a header row), offered as a download named `filename`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(rows)
    response = Response(buffer.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def usage_csv(db: Connection, query: reports.UsageQuery) -> Response:
    scope = f"_{query.config_id}" if query.config_id else ""
    name = f"model-usage{scope}_{query.start}_{query.end}_{query.granularity}.csv"
    return csv_response(USAGE_COLUMNS, usage_rows(db, query), name)


def details_csv(config_id: str, events) -> Response:
    return csv_response(DETAILS_COLUMNS, details_rows(config_id, events), f"model-usage_{config_id}_recent.csv")
